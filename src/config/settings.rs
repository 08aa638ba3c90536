//! The settings table: every key of the `WebSocketServer` section, declared once (doc, type,
//! default, key, kind, aliases). `Config`, `RateLimitConfig` and `DeliveryConfig`, their
//! defaults, their reading and their redacted view are generated from it
//! ([`settings_table`]); docs/protocol.md §7 lists the same keys for users.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::reader::{Given, LoadReport, Section};
use crate::config::table::settings_table;
use crate::config::values::{Kind, SettingValue};
use crate::error::Error;
use crate::message::is_valid_name;
use crate::server::security::identity::ApiKey;
use crate::server::security::jwt::JwtConfig;
use crate::server::security::session_tokens::SessionTokenConfig;

/// A subprotocol token: visible ASCII without commas.
fn protocol_token(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        Ok(())
    } else {
        Err("is not a valid subprotocol token".into())
    }
}

/// `channel/action`, both valid names.
fn qualified_action(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(c, a)| is_valid_name(c) && is_valid_name(a))
}

settings_table! {
    /// The server's settings: the `WebSocketServer` section of `config.json`.
    ///
    /// Build one with [`Config::default`] (every default of docs/protocol.md §7, no API key)
    /// and change the fields, or load a file with [`Config::load`]. Durations are already
    /// converted from the file's milliseconds/seconds.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct Config {
        /// `Enabled` (true): false makes the binary log that the server is disabled and exit 0.
        enabled: bool = true, "Enabled" => Kind::Flag;
        /// `Port` (5001): first port tried; 0 asks the OS for any free port.
        port: u16 = 5001, "Port" => Kind::Int(0, 65535);
        /// `PortFallbackCount` (10): ports `Port .. Port+Count-1` are tried in order.
        port_fallback_count: u16 = 10, "PortFallbackCount" => Kind::Int(1, 1000);
        /// `Interface` ("0.0.0.0").
        interface: IpAddr = IpAddr::from([0, 0, 0, 0]), "Interface" => Kind::Address;
        /// `EnableIPv4` (true).
        enable_ipv4: bool = true, "EnableIPv4" => Kind::Flag;
        /// `EnableIPv6` (false): also listen on `::` (or `::1` when `Interface` is loopback).
        enable_ipv6: bool = false, "EnableIPv6" => Kind::Flag;
        /// `Protocol` ("hydrogen-protocol"): the subprotocol echoed in `Sec-WebSocket-Protocol`.
        protocol: String = "hydrogen-protocol".into(), "Protocol" => Kind::Text(protocol_token);
        /// `RequireProtocol` (true): a client offering no matching subprotocol gets HTTP 400.
        require_protocol: bool = true, "RequireProtocol" => Kind::Flag;
        /// `SecureMode` ("none"): true for "tls" (wss://, rustls, TLS 1.2 and 1.3).
        tls: bool = false, "SecureMode" => Kind::Switch("none", "tls");
        /// `CertificatePath`: PEM certificate chain; required with TLS.
        certificate_path: Option<PathBuf> = None, "CertificatePath" => Kind::Path;
        /// `KeyPath`: PEM private key; required with TLS.
        key_path: Option<PathBuf> = None, "KeyPath" => Kind::Path;
        /// `RateLimit`: per-connection message rate, blocking abusive addresses.
        rate_limit: RateLimitConfig = RateLimitConfig::default(), "RateLimit" => Kind::Section;
        /// `SensitiveActions` (["system/disconnect"]): `channel/action`s that must carry a
        /// valid `auth.signature` with a fresh timestamp.
        sensitive_actions: Vec<String> = vec!["system/disconnect".into()],
            "SensitiveActions" => Kind::Names(qualified_action, "\"channel/action\" name");
        /// `Jwt` (off): verify `Authorization: Bearer` / `?token=` JWTs.
        jwt: Option<JwtConfig> = None, "Jwt" => Kind::Jwt;
        /// `SessionTokens` (off): RS256 session tokens issued by the server.
        session_tokens: Option<SessionTokenConfig> = None, "SessionTokens" => Kind::SessionTokens;
        /// `AuthRequired` (true): false admits every client with role `viewer`.
        auth_required: bool = true, "AuthRequired" => Kind::Flag;
        /// `EchoMode` (false): every text and binary message of an authenticated (or, without
        /// `AuthRequired`, any) client is sent back as it is, by the same connection code,
        /// instead of being read as a command. For protocol test suites (Autobahn); never in
        /// production.
        echo_mode: bool = false, "EchoMode" => Kind::Flag;
        /// `Key` (from `HYDROGEN_API_KEY`, role admin) and `Keys`: accepted API keys with
        /// their roles. Secret: the redacted view shows a key's first characters at most.
        keys: Vec<ApiKey> = Vec::new(), "Keys" => Kind::Keys;
        /// `MaxConnections` (100): established clients; more get HTTP 503.
        max_connections: usize = 100, "MaxConnections" => Kind::Int(1, 1_000_000);
        /// `MaxConnectionsPerIp` (20): connections from one address, handshaking ones
        /// included; more get HTTP 429 before their request is read.
        max_connections_per_ip: usize = 20, "MaxConnectionsPerIp" => Kind::Int(1, 1_000_000);
        /// `MaxMessageSize` (65536 bytes): larger messages close the connection with 1009.
        max_message_size: usize = 65536, "MaxMessageSize" => Kind::Int(125, 64 << 20);
        /// `HandshakeTimeoutMs` (5000): the whole HTTP upgrade must finish in this time.
        handshake_timeout: Duration = Duration::from_millis(5000),
            "HandshakeTimeoutMs" => Kind::Millis(10, 600_000);
        /// `AuthTimeoutMs` (5000): late authentication must finish in this time.
        auth_timeout: Duration = Duration::from_millis(5000),
            "AuthTimeoutMs" => Kind::Millis(10, 600_000);
        /// `HeartbeatIntervalMs` (30000): ping after this much silence from the client.
        heartbeat_interval: Duration = Duration::from_millis(30000),
            "HeartbeatIntervalMs" => Kind::Millis(10, 86_400_000);
        /// `PongTimeoutMs` (10000): no frame within this after a ping closes with 1011.
        pong_timeout: Duration = Duration::from_millis(10000),
            "PongTimeoutMs" => Kind::Millis(10, 86_400_000);
        /// `IdleTimeout` (300 s; 0 = never; or `IdleTimeoutMs`): no message from the client
        /// closes with 1000.
        idle_timeout: Option<Duration> = Some(Duration::from_secs(300)),
            "IdleTimeout" => Kind::Secs(0, 31_536_000),
            overridden_by "IdleTimeoutMs" => Kind::Millis(0, 31_536_000_000);
        /// `ThreadPoolSize` (4): workers running application handlers.
        thread_pool_size: usize = 4, "ThreadPoolSize" => Kind::Int(1, 256);
        /// `ThreadStackSize` (262144 bytes): stack of each connection thread.
        thread_stack_size: usize = 262144, "ThreadStackSize" => Kind::Int(131_072, 64 << 20);
        /// `MaxChannelsPerSession` (64): channels one session may subscribe to; a subscribe
        /// past it gets `invalid_message` naming the limit. Action filters hold at most
        /// [`crate::config::MAX_ACTIONS_PER_CHANNEL`] actions per channel.
        max_channels_per_session: usize = 64, "MaxChannelsPerSession" => Kind::Int(1, 100_000);
        /// `MaxSessionsPerIdentity` (0 = MaxConnections): sessions one identity (key, JWT
        /// subject) may hold; past it the oldest detached ones are expired early. Attached
        /// sessions are never expired (their connections are bounded by MaxConnections).
        /// Read it through [`Config::sessions_per_identity`].
        max_sessions_per_identity: usize = 0,
            "MaxSessionsPerIdentity" => Kind::Int(0, 1_000_000);
        /// `OutboundQueueLimit` (1024): messages queued for one client before it is closed 1013.
        outbound_queue_limit: usize = 1024, "OutboundQueueLimit" => Kind::Int(1, 1_000_000);
        /// `LegacyStatusPush` (false): a connection that has sent no envelope message (a
        /// client of Hydrogen's first protocol, which only listens) gets the bare status
        /// object every StatusIntervalMs.
        legacy_status_push: bool = false, "LegacyStatusPush" => Kind::Flag;
        /// `StatusIntervalMs` (1000; 0 = only on request): period of the status event.
        status_interval: Option<Duration> = Some(Duration::from_millis(1000)),
            "StatusIntervalMs" => Kind::Millis(0, 86_400_000);
        /// `HandlerTimeoutMs` (10000): a command whose handler has not answered by then gets
        /// `timeout`.
        handler_timeout: Duration = Duration::from_millis(10000),
            "HandlerTimeoutMs" => Kind::Millis(10, 3_600_000);
        /// `Delivery`: acknowledgements, sessions and replay.
        delivery: DeliveryConfig = DeliveryConfig::default(), "Delivery" => Kind::Section;
        /// `ShutdownTimeouts.CloseWaitMs` (2000; Hydrogen's
        /// `ConnectionTimeouts.ShutdownWaitSeconds`): wait for close handshakes at shutdown.
        close_wait: Duration = Duration::from_millis(2000),
            alias "ConnectionTimeouts.ShutdownWaitSeconds" => Kind::Secs(0, 3600),
            "ShutdownTimeouts.CloseWaitMs" => Kind::Millis(0, 3_600_000);
        /// `ShutdownTimeouts.JoinMs` (5000; Hydrogen's `ConnectionTimeouts.ExitWaitSeconds`):
        /// deadline for joining every thread at shutdown.
        join_timeout: Duration = Duration::from_millis(5000),
            alias "ConnectionTimeouts.ExitWaitSeconds" => Kind::Secs(0, 3600),
            "ShutdownTimeouts.JoinMs" => Kind::Millis(0, 3_600_000);
        /// `LogLevel` ("info"), or the top-level `Logging.Level`.
        log_level: String = "info".into(), "LogLevel" => Kind::Level;
        /// `Metrics`: `GET /metrics`, Prometheus text (docs/behaviour.md, "Metrics").
        metrics: MetricsConfig = MetricsConfig::default(), "Metrics" => Kind::Section;
        /// `Compression`: permessage-deflate (docs/behaviour.md, "Compression").
        compression: CompressionConfig = CompressionConfig::default(), "Compression" => Kind::Section;
        /// `StatusPage` (true): `GET /` from a browser answers the built-in live status page
        /// (it logs in with a key over the WebSocket, like any client).
        status_page: bool = true, "StatusPage" => Kind::Flag;
        /// `Mqtt` (off): the bridge to an MQTT broker (docs/behaviour.md, "MQTT bridge").
        mqtt: Option<crate::config::mqtt::MqttConfig> = None, "Mqtt" => Kind::Section;
    }
}

settings_table! {
    /// The `Compression` section: permessage-deflate (RFC 7692), negotiated with every
    /// client that offers it (browsers, Python `websockets` and Node `ws` all do).
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct CompressionConfig {
        /// `Enabled` (true): false declines every offer.
        enabled: bool = true, "Enabled" => Kind::Flag;
        /// `MinSize` (256): messages shorter than this many bytes go uncompressed.
        min_size: usize = 256, "MinSize" => Kind::Int(0, 1 << 30);
        /// `Level` (1): DEFLATE level, 1 (fastest) to 9 (smallest).
        level: u32 = 1, "Level" => Kind::Int(1, 9);
        /// `ContextTakeover` (false): keep the DEFLATE context between messages, both ways
        /// (smaller messages, but every connection then holds a compressor of about 300 KiB
        /// and an inflater of about 40 KiB for its whole life).
        context_takeover: bool = false, "ContextTakeover" => Kind::Flag;
        /// `MaxWindowBits` (15): the largest LZ77 window (2^bits bytes) our side uses.
        max_window_bits: u32 = 15, "MaxWindowBits" => Kind::Int(8, 15);
    }
}

impl CompressionConfig {
    /// The settings a connection negotiates with.
    pub(crate) fn settings(&self) -> crate::deflate::Settings {
        crate::deflate::Settings {
            enabled: self.enabled,
            min_size: self.min_size,
            level: self.level,
            context_takeover: self.context_takeover,
            max_window_bits: self.max_window_bits as u8,
        }
    }
}

settings_table! {
    /// The `Metrics` section: `GET /metrics` in Prometheus's text format.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct MetricsConfig {
        /// `Enabled` (true): false answers `/metrics` like any other non-upgrade path (426).
        enabled: bool = true, "Enabled" => Kind::Flag;
        /// `AllowUnauthenticated` (false): true serves `/metrics` without a credential;
        /// otherwise a key or token of any role is needed (`Authorization: Key ...` or
        /// `Bearer ...`, which Prometheus's `authorization` block sends, or `?key=`).
        allow_unauthenticated: bool = false, "AllowUnauthenticated" => Kind::Flag;
    }
}

settings_table! {
    /// The `RateLimit` section (docs/protocol.md §7).
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct RateLimitConfig {
        /// `MessagesPerSecond` (50): sustained messages per connection; 0 = unlimited.
        messages_per_second: u32 = 50, "MessagesPerSecond" => Kind::Int(0, 1_000_000);
        /// `Burst` (100): messages a connection may send at once before the rate applies.
        burst: u32 = 100, "Burst" => Kind::Int(1, 1_000_000);
        /// `ViolationsBeforeBlock` (20): rate-limited messages and failed authentications
        /// from one address before it is blocked.
        violations_before_block: u32 = 20, "ViolationsBeforeBlock" => Kind::Int(1, 1_000_000);
        /// `BlockSeconds` (60; or `BlockMs`): how long a blocked address gets 429.
        block: Duration = Duration::from_secs(60),
            "BlockSeconds" => Kind::Secs(0, 86_400),
            overridden_by "BlockMs" => Kind::Millis(0, 86_400_000);
        /// `HandshakesPerMinutePerIp` (120): upgrade attempts per address per minute;
        /// 0 = unlimited.
        handshakes_per_minute_per_ip: u32 = 120,
            "HandshakesPerMinutePerIp" => Kind::Int(0, 1_000_000);
    }
}

settings_table! {
    /// The `Delivery` section (docs/protocol.md §5).
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct DeliveryConfig {
        /// `AckTimeoutMs` (5000): an unacknowledged reliable event is sent again after this.
        ack_timeout: Duration = Duration::from_millis(5000),
            "AckTimeoutMs" => Kind::Millis(10, 3_600_000);
        /// `MaxRetries` (5): redeliveries before the client is closed with 1008.
        max_retries: u32 = 5, "MaxRetries" => Kind::Int(0, 1000);
        /// `SessionResumeSeconds` (120; or `SessionResumeMs`): how long a disconnected session
        /// can be resumed.
        session_resume: Duration = Duration::from_secs(120),
            "SessionResumeSeconds" => Kind::Secs(0, 86_400),
            overridden_by "SessionResumeMs" => Kind::Millis(0, 86_400_000);
        /// `ReplayBufferEvents` (1000): events kept per session for replay on resume.
        replay_buffer_events: usize = 1000, "ReplayBufferEvents" => Kind::Int(1, 1_000_000);
        /// `ReliableChannels` ([]): every event on these channels is reliable.
        reliable_channels: Vec<String> = Vec::new(),
            "ReliableChannels" => Kind::Names(is_valid_name, "channel name ([a-z0-9_.-]{1,64})");
    }
}

/// Reads a nested object with its own table, from its defaults; its unknown keys are warned
/// about.
fn read_nested<T: Default>(
    given: Given,
    report: &mut LoadReport,
    read_rows: fn(&mut T, &mut Section, &mut LoadReport) -> Result<(), Error>,
) -> Result<T, Error> {
    let mut section = Section::new(&given.key, Section::object(given.value, &given.key)?);
    let mut value = T::default();
    read_rows(&mut value, &mut section, report)?;
    report.warnings.extend(section.unknown_keys());
    Ok(value)
}

impl SettingValue for RateLimitConfig {
    fn parse(given: Given, _: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        read_nested(given, report, RateLimitConfig::read_rows)
    }

    fn show(&self, _: &Kind) -> serde_json::Value {
        serde_json::Value::Object(self.show_rows())
    }
}

impl SettingValue for CompressionConfig {
    fn parse(given: Given, _: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        read_nested(given, report, CompressionConfig::read_rows)
    }

    fn show(&self, _: &Kind) -> serde_json::Value {
        serde_json::Value::Object(self.show_rows())
    }
}

impl SettingValue for MetricsConfig {
    fn parse(given: Given, _: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        read_nested(given, report, MetricsConfig::read_rows)
    }

    fn show(&self, _: &Kind) -> serde_json::Value {
        serde_json::Value::Object(self.show_rows())
    }
}

impl SettingValue for DeliveryConfig {
    fn parse(given: Given, _: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        read_nested(given, report, DeliveryConfig::read_rows)
    }

    fn show(&self, _: &Kind) -> serde_json::Value {
        serde_json::Value::Object(self.show_rows())
    }
}
