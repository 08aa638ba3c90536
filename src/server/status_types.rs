//! The typed status ([`Status`]) that `Server::status` returns and `system/status` sends as
//! JSON (docs/protocol.md §3): the serialized field names are the wire names.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Serialize;

/// What the server is doing now: the object `system/status` answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// When the server started (ISO 8601 UTC).
    pub server_start_time: String,
    /// Upgraded connections (what MaxConnections limits).
    pub active_connections: usize,
    /// Connections upgraded since start.
    pub total_connections: u64,
    /// Commands received since start.
    pub total_requests: u64,
    /// The kernel the server runs on.
    pub system: SystemInfo,
    /// The process: running or shutting down, threads, memory (Hydrogen's names).
    pub status: ProcessStatus,
    /// Every address the server listens on.
    pub bound: Vec<String>,
    /// The port of the first of them.
    pub port: Option<u16>,
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Connection threads (handshaking or established).
    pub connection_threads: usize,
    /// Connections per state; cumulative for the end states (closed, failed, rejected).
    pub connections_by_state: BTreeMap<String, usize>,
    /// Messages received from clients.
    pub messages_in: u64,
    /// Messages sent to clients.
    pub messages_out: u64,
    /// Bytes of messages received.
    pub bytes_in: u64,
    /// Bytes of messages sent.
    pub bytes_out: u64,
    /// Refusals (handshake rejections, rate limits, ...) by error code.
    pub rejected: BTreeMap<String, u64>,
    /// Commands waiting for a worker.
    pub handler_backlog: usize,
    /// Addresses blocked after repeated violations.
    pub blocked_addresses: usize,
    /// Sessions and event delivery.
    pub events: EventFigures,
    /// Service connections and the commands forwarded to them.
    pub services: ServiceFigures,
    /// The MQTT bridge, when the config has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<BridgeStatus>,
}

/// The kernel's `uname(2)` fields.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemInfo {
    /// `Linux`.
    pub sysname: String,
    /// The host name.
    pub nodename: String,
    /// The kernel release.
    pub release: String,
    /// The kernel build.
    pub version: String,
    /// The machine (`x86_64`, `aarch64`, ...).
    pub machine: String,
}

/// The process, under the names Hydrogen's clients read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessStatus {
    /// Not shutting down.
    pub running: bool,
    /// A shutdown was requested.
    pub shutting_down: bool,
    /// Threads of the process.
    #[serde(rename = "totalThreads")]
    pub total_threads: u64,
    /// Virtual memory of the process.
    #[serde(rename = "totalVirtualMemoryBytes")]
    pub total_virtual_memory_bytes: u64,
    /// Resident memory of the process.
    #[serde(rename = "totalResidentMemoryBytes")]
    pub total_resident_memory_bytes: u64,
    /// When the server started (as `server_start_time`).
    pub server_started: String,
}

/// Sessions, subscriptions and event delivery since start.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventFigures {
    /// Sessions (attached or waiting for a resume).
    pub sessions: usize,
    /// Sessions with a connection.
    pub sessions_attached: usize,
    /// Sessions waiting for a resume.
    pub sessions_detached: usize,
    /// Channel subscriptions over all sessions.
    pub subscriptions: usize,
    /// Reliable events not yet acknowledged.
    pub unacked_events: usize,
    /// Events kept for replay.
    pub replay_buffered_events: usize,
    /// Events published.
    pub events_published: u64,
    /// Events queued to busy connections.
    pub events_queued: u64,
    /// Events written straight to idle connections.
    pub events_delivered: u64,
    /// Reliable events sent again.
    pub events_redelivered: u64,
    /// Reliable events dropped from a full outbox.
    pub events_dropped: u64,
    /// Connections closed (1013) for not reading.
    pub slow_client_closes: u64,
    /// Status events offered to subscribers.
    pub status_offered: u64,
    /// Status events sent.
    pub status_sent: u64,
}

/// Service connections and forwarded commands.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceFigures {
    /// Channels served by service connections.
    pub service_channels: usize,
    /// Commands forwarded to services since start.
    pub forwarded_commands: u64,
    /// Forwarded commands still waiting for an answer.
    pub forwarded_pending: usize,
}

/// The MQTT bridge (docs/behaviour.md, "MQTT bridge").
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Connections made to the broker since start.
    pub connects: u64,
    /// Events published to the broker (at QoS 1: acknowledged by it).
    pub events_sent: u64,
    /// Events waiting for the broker (it is away or slow).
    pub events_buffered: usize,
    /// Events dropped because more than BufferEvents waited.
    pub events_dropped: u64,
    /// Requests received on `<prefix>/request`.
    pub commands: u64,
}
