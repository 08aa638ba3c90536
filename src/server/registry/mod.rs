//! The connections the server has, as every layer may see them: the registry (the connection
//! mutex of the C design), each connection's [`handle::ConnectionHandle`], its state and the
//! counters. A leaf: it knows no other part of the server but the identity a connection has and
//! the stream its WebSocket runs on.
#![forbid(unsafe_code)]

pub(crate) mod handle;
pub(crate) mod histogram;
pub(crate) mod metrics;
pub(crate) mod state;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use handle::ConnectionHandle;

/// The registry of live connections (the connection mutex of the C design).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub by_id: HashMap<u64, Arc<ConnectionHandle>>,
    /// Connections per address, from accept to the end (handshaking ones included): what
    /// the accept loop holds to MaxConnectionsPerIp.
    pub per_ip: HashMap<IpAddr, usize>,
    /// Upgraded (WebSocket) connections: what MaxConnections limits.
    pub established: usize,
}
