//! `config.json` → [`Config`]: defaults, `${env.NAME}` substitution, Hydrogen aliases, and
//! validation errors that name the key, the value and the allowed range (docs/protocol.md §7).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use reader::Section;
use sections::{parse_delivery, parse_jwt, parse_keys, parse_level, parse_rate_limit};

use crate::error::Error;
use crate::server::security::identity::{ApiKey, Role, Secret};
use crate::server::security::jwt::JwtConfig;
use crate::server::security::session_tokens::SessionTokenConfig;

/// The server's settings: the `WebSocketServer` section of `config.json`.
///
/// Build one with [`Config::default`] (every default of docs/protocol.md §7, no API key) and change
/// the fields, or load a file with [`Config::load`]. Durations are already converted from the
/// file's milliseconds/seconds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `Enabled` (true): false makes the binary log that the server is disabled and exit 0.
    pub enabled: bool,
    /// `Port` (5001): first port tried; 0 asks the OS for any free port.
    pub port: u16,
    /// `PortFallbackCount` (10): ports `Port .. Port+Count-1` are tried in order.
    pub port_fallback_count: u16,
    /// `Interface` ("0.0.0.0").
    pub interface: IpAddr,
    /// `EnableIPv4` (true).
    pub enable_ipv4: bool,
    /// `EnableIPv6` (false): also listen on `::` (or `::1` when `Interface` is loopback).
    pub enable_ipv6: bool,
    /// `Protocol` ("hydrogen-protocol"): the subprotocol echoed in `Sec-WebSocket-Protocol`.
    pub protocol: String,
    /// `RequireProtocol` (true): a client offering no matching subprotocol gets HTTP 400.
    pub require_protocol: bool,
    /// `SecureMode` ("none"): true for "tls" (wss://, rustls, TLS 1.2 and 1.3).
    pub tls: bool,
    /// `CertificatePath`: PEM certificate chain; required with TLS.
    pub certificate_path: Option<PathBuf>,
    /// `KeyPath`: PEM private key; required with TLS.
    pub key_path: Option<PathBuf>,
    /// `AuthRequired` (true): false admits every client with role `viewer`.
    pub auth_required: bool,
    /// `EchoMode` (false): every text and binary message of an authenticated (or, without
    /// `AuthRequired`, any) client is sent back as it is, by the same connection code, instead
    /// of being read as a command. For protocol test suites (Autobahn); never in production.
    pub echo_mode: bool,
    /// `Key` (from `HYDROGEN_API_KEY`) and `Keys`: accepted API keys with their roles.
    pub keys: Vec<ApiKey>,
    /// `MaxConnections` (100): established clients; more get HTTP 503.
    pub max_connections: usize,
    /// `MaxConnectionsPerIp` (20): connections from one address, handshaking ones included;
    /// more get HTTP 429 before their request is read.
    pub max_connections_per_ip: usize,
    /// `MaxMessageSize` (65536 bytes): larger messages close the connection with 1009.
    pub max_message_size: usize,
    /// `HandshakeTimeoutMs` (5000): the whole HTTP upgrade must finish in this time.
    pub handshake_timeout: Duration,
    /// `AuthTimeoutMs` (5000): late authentication must finish in this time.
    pub auth_timeout: Duration,
    /// `HeartbeatIntervalMs` (30000): ping after this much silence from the client.
    pub heartbeat_interval: Duration,
    /// `PongTimeoutMs` (10000): no frame within this after a ping closes with 1011.
    pub pong_timeout: Duration,
    /// `IdleTimeout` (300 s; 0 = never): no message from the client closes with 1000.
    pub idle_timeout: Option<Duration>,
    /// `ThreadPoolSize` (4): workers running application handlers.
    pub thread_pool_size: usize,
    /// `ThreadStackSize` (262144 bytes): stack of each connection thread.
    pub thread_stack_size: usize,
    /// `OutboundQueueLimit` (1024): messages queued for one client before it is closed 1013.
    pub outbound_queue_limit: usize,
    /// `StatusIntervalMs` (1000; 0 = only on request): period of the status event.
    pub status_interval: Option<Duration>,
    /// `ShutdownTimeouts.CloseWaitMs` (2000): wait for close handshakes at shutdown.
    pub close_wait: Duration,
    /// `ShutdownTimeouts.JoinMs` (5000): deadline for joining every thread at shutdown.
    pub join_timeout: Duration,
    /// `LogLevel` ("info"), or the top-level `Logging.Level`.
    pub log_level: String,
    /// `HandlerTimeoutMs` (10000): a command whose handler has not answered by then gets
    /// `timeout`.
    pub handler_timeout: Duration,
    /// `Delivery`: acknowledgements, sessions and replay.
    pub delivery: DeliveryConfig,
    /// `RateLimit`: per-connection message rate, blocking abusive addresses.
    pub rate_limit: RateLimitConfig,
    /// `Jwt` (off): verify `Authorization: Bearer` / `?token=` JWTs.
    pub jwt: Option<JwtConfig>,
    /// `SessionTokens` (off): RS256 session tokens issued by the server.
    pub session_tokens: Option<SessionTokenConfig>,
    /// `MaxChannelsPerSession` (64): channels one session may subscribe to; a subscribe past
    /// it gets `invalid_message` naming the limit. Action filters hold at most
    /// [`MAX_ACTIONS_PER_CHANNEL`] actions per channel.
    pub max_channels_per_session: usize,
    /// `MaxSessionsPerIdentity` (0 = MaxConnections): sessions one identity (key, JWT
    /// subject) may hold; past it the oldest detached ones are expired early. Attached
    /// sessions are never expired (their connections are bounded by MaxConnections). Read it
    /// through [`Config::sessions_per_identity`].
    pub max_sessions_per_identity: usize,
    /// `SensitiveActions` (["system/disconnect"]): `channel/action`s that must carry a valid
    /// `auth.signature` with a fresh timestamp.
    pub sensitive_actions: Vec<String>,
}

/// The `RateLimit` section (docs/protocol.md §7).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// `MessagesPerSecond` (50): sustained messages per connection; 0 = unlimited.
    pub messages_per_second: u32,
    /// `Burst` (100): messages a connection may send at once before the rate applies.
    pub burst: u32,
    /// `ViolationsBeforeBlock` (20): rate-limited messages and failed authentications from one
    /// address before it is blocked.
    pub violations_before_block: u32,
    /// `BlockSeconds` (60): how long a blocked address gets 429.
    pub block: Duration,
    /// `HandshakesPerMinutePerIp` (120): upgrade attempts per address per minute; 0 = unlimited.
    pub handshakes_per_minute_per_ip: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            messages_per_second: 50,
            burst: 100,
            violations_before_block: 20,
            block: Duration::from_secs(60),
            handshakes_per_minute_per_ip: 120,
        }
    }
}

/// The `Delivery` section (docs/protocol.md §5).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliveryConfig {
    /// `AckTimeoutMs` (5000): an unacknowledged reliable event is sent again after this.
    pub ack_timeout: Duration,
    /// `MaxRetries` (5): redeliveries before the client is closed with 1008.
    pub max_retries: u32,
    /// `SessionResumeSeconds` (120): how long a disconnected session can be resumed.
    pub session_resume: Duration,
    /// `ReplayBufferEvents` (1000): events kept per session for replay on resume.
    pub replay_buffer_events: usize,
    /// `ReliableChannels` ([]): every event on these channels is reliable.
    pub reliable_channels: Vec<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            ack_timeout: Duration::from_millis(5000),
            max_retries: 5,
            session_resume: Duration::from_secs(120),
            replay_buffer_events: 1000,
            reliable_channels: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            port: 5001,
            port_fallback_count: 10,
            interface: IpAddr::from([0, 0, 0, 0]),
            enable_ipv4: true,
            enable_ipv6: false,
            protocol: "hydrogen-protocol".into(),
            require_protocol: true,
            tls: false,
            certificate_path: None,
            key_path: None,
            auth_required: true,
            echo_mode: false,
            keys: Vec::new(),
            max_connections: 100,
            max_connections_per_ip: 20,
            max_message_size: 65536,
            handshake_timeout: Duration::from_millis(5000),
            auth_timeout: Duration::from_millis(5000),
            heartbeat_interval: Duration::from_millis(30000),
            pong_timeout: Duration::from_millis(10000),
            idle_timeout: Some(Duration::from_secs(300)),
            thread_pool_size: 4,
            thread_stack_size: 262144,
            outbound_queue_limit: 1024,
            status_interval: Some(Duration::from_millis(1000)),
            close_wait: Duration::from_millis(2000),
            join_timeout: Duration::from_millis(5000),
            log_level: "info".into(),
            handler_timeout: Duration::from_millis(10000),
            delivery: DeliveryConfig::default(),
            rate_limit: RateLimitConfig::default(),
            jwt: None,
            sensitive_actions: vec!["system/disconnect".into()],
            session_tokens: None,
            max_channels_per_session: 64,
            max_sessions_per_identity: 0,
        }
    }
}

/// What loading produced besides the config: warnings for the caller to log.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// One line per unknown key or ignored setting, naming it.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads `path`. Errors name the key and the allowed values ([`Error::Config`]); a file
    /// that cannot be read or parsed is reported under the key `<file>`.
    pub fn load(path: &Path) -> Result<(Config, LoadReport), Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config("<file>", format!("cannot read {}: {e}", path.display())))?;
        Config::from_json_str(&text)
    }

    /// Parses a whole config document (with or without other top-level sections).
    pub fn from_json_str(text: &str) -> Result<(Config, LoadReport), Error> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::config("<file>", format!("not valid JSON: {e}")))?;
        let Value::Object(root) = root else {
            return Err(Error::config(
                "<file>",
                "the top level must be a JSON object",
            ));
        };
        let mut report = LoadReport::default();
        let empty = Map::new();
        let section = match root.get("WebSocketServer") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(Error::config(
                    "WebSocketServer",
                    format!("must be an object, got {other}"),
                ));
            }
        };
        let mut cfg = Config::default();
        let mut s = Section::new("WebSocketServer", section);
        // The default of `Key` is itself an environment reference (docs/protocol.md §7).
        let key = match s.take("Key") {
            Some(v) => Some(v),
            None if s.has("Key") => None,
            // The default of `Key` is itself an environment reference (docs/protocol.md §7).
            None => std::env::var("HYDROGEN_API_KEY").ok().map(Value::String),
        };
        if let Some(v) = s.take_bool("Enabled")? {
            cfg.enabled = v;
        }
        if let Some(v) = s.take_int("Port", 0, 65535)? {
            cfg.port = v as u16;
        }
        if let Some(v) = s.take_int("PortFallbackCount", 1, 1000)? {
            cfg.port_fallback_count = v as u16;
        }
        if let Some(v) = s.take_str("Interface")? {
            cfg.interface = v.parse().map_err(|_| {
                Error::config(
                    "WebSocketServer.Interface",
                    format!("{v:?} is not an IPv4 or IPv6 address literal"),
                )
            })?;
        }
        if let Some(v) = s.take_bool("EnableIPv4")? {
            cfg.enable_ipv4 = v;
        }
        if let Some(v) = s.take_bool("EnableIPv6")? {
            cfg.enable_ipv6 = v;
        }
        if let Some(v) = s.take_str("Protocol")? {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(Error::config(
                    "WebSocketServer.Protocol",
                    format!("{v:?} is not a valid subprotocol token"),
                ));
            }
            cfg.protocol = v;
        }
        if let Some(v) = s.take_bool("RequireProtocol")? {
            cfg.require_protocol = v;
        }
        if let Some(v) = s.take_str("SecureMode")? {
            cfg.tls = match v.as_str() {
                "none" => false,
                "tls" => true,
                _ => {
                    return Err(Error::config(
                        "WebSocketServer.SecureMode",
                        format!("{v:?}: allowed \"none\" or \"tls\""),
                    ));
                }
            };
        }
        if let Some(v) = s.take_str("CertificatePath")? {
            cfg.certificate_path = Some(PathBuf::from(v));
        }
        if let Some(v) = s.take_str("KeyPath")? {
            cfg.key_path = Some(PathBuf::from(v));
        }
        if let Some(v) = s.take("RateLimit") {
            cfg.rate_limit = parse_rate_limit(&v, &mut report)?;
        }
        if let Some(v) = s.take("SensitiveActions") {
            let names: Option<Vec<String>> = v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect());
            cfg.sensitive_actions = names
                .filter(|n| {
                    n.iter().all(|a| {
                        a.split_once('/').is_some_and(|(c, x)| {
                            crate::message::is_valid_name(c) && crate::message::is_valid_name(x)
                        })
                    })
                })
                .ok_or_else(|| {
                    Error::config(
                        "WebSocketServer.SensitiveActions",
                        "must be an array of \"channel/action\" names",
                    )
                })?;
        }
        if let Some(v) = s.take("Jwt") {
            cfg.jwt = Some(parse_jwt(&v, &mut report)?);
        }
        if let Some(v) = s.take("SessionTokens") {
            let map = Section::as_object(&v, "WebSocketServer.SessionTokens")?;
            let mut t = Section::new("WebSocketServer.SessionTokens", &map);
            let path = t.take_str("PrivateKeyPath")?.ok_or_else(|| {
                Error::config(
                    "WebSocketServer.SessionTokens.PrivateKeyPath",
                    "required: a PEM RSA private key",
                )
            })?;
            let ttl = Duration::from_secs(t.take_int("TtlSeconds", 1, 31_536_000)?.unwrap_or(3600));
            report.warnings.extend(t.unknown_keys());
            cfg.session_tokens = Some(SessionTokenConfig {
                private_key_path: PathBuf::from(path),
                ttl,
            });
        }
        if let Some(v) = s.take_bool("AuthRequired")? {
            cfg.auth_required = v;
        }
        if let Some(v) = s.take_bool("EchoMode")? {
            cfg.echo_mode = v;
        }
        if let Some(v) = key
            && let Some(k) = Section::string_value(v, "WebSocketServer.Key")?
        {
            let setting = if s.has("Key") {
                "WebSocketServer.Key"
            } else {
                "HYDROGEN_API_KEY"
            };
            cfg.keys.push(ApiKey::new(
                "default",
                non_blank_key(k, setting)?,
                Role::Admin,
            ));
        }
        if let Some(v) = s.take("Keys") {
            cfg.keys.extend(parse_keys(&v)?);
        }
        if let Some(v) = s.take_int("MaxConnections", 1, 1_000_000)? {
            cfg.max_connections = v as usize;
        }
        if let Some(v) = s.take_int("MaxConnectionsPerIp", 1, 1_000_000)? {
            cfg.max_connections_per_ip = v as usize;
        }
        if let Some(v) = s.take_int("MaxMessageSize", 125, 64 << 20)? {
            cfg.max_message_size = v as usize;
        }
        let ms = |v: u64| Duration::from_millis(v);
        if let Some(v) = s.take_int("HandshakeTimeoutMs", 10, 600_000)? {
            cfg.handshake_timeout = ms(v);
        }
        if let Some(v) = s.take_int("AuthTimeoutMs", 10, 600_000)? {
            cfg.auth_timeout = ms(v);
        }
        if let Some(v) = s.take_int("HeartbeatIntervalMs", 10, 86_400_000)? {
            cfg.heartbeat_interval = ms(v);
        }
        if let Some(v) = s.take_int("PongTimeoutMs", 10, 86_400_000)? {
            cfg.pong_timeout = ms(v);
        }
        if let Some(v) = s.take_int("IdleTimeout", 0, 31_536_000)? {
            cfg.idle_timeout = (v > 0).then(|| Duration::from_secs(v));
        }
        if let Some(v) = s.take_int("IdleTimeoutMs", 0, 31_536_000_000)? {
            cfg.idle_timeout = (v > 0).then(|| ms(v));
        }
        if let Some(v) = s.take_int("ThreadPoolSize", 1, 256)? {
            cfg.thread_pool_size = v as usize;
        }
        if let Some(v) = s.take_int("ThreadStackSize", 131_072, 64 << 20)? {
            cfg.thread_stack_size = v as usize;
        }
        if let Some(v) = s.take_int("MaxChannelsPerSession", 1, 100_000)? {
            cfg.max_channels_per_session = v as usize;
        }
        if let Some(v) = s.take_int("MaxSessionsPerIdentity", 0, 1_000_000)? {
            cfg.max_sessions_per_identity = v as usize;
        }
        if let Some(v) = s.take_int("OutboundQueueLimit", 1, 1_000_000)? {
            cfg.outbound_queue_limit = v as usize;
        }
        if let Some(v) = s.take_int("StatusIntervalMs", 0, 86_400_000)? {
            cfg.status_interval = (v > 0).then(|| ms(v));
        }
        if let Some(v) = s.take_int("HandlerTimeoutMs", 10, 3_600_000)? {
            cfg.handler_timeout = ms(v);
        }
        if let Some(v) = s.take("Delivery") {
            cfg.delivery = parse_delivery(&v, &mut report)?;
        }
        // Hydrogen's names first, so that our own names win when both are given.
        if let Some(v) = s.take("ConnectionTimeouts") {
            let map = Section::as_object(&v, "WebSocketServer.ConnectionTimeouts")?;
            let mut t = Section::new("WebSocketServer.ConnectionTimeouts", &map);
            if let Some(v) = t.take_int("ShutdownWaitSeconds", 0, 3600)? {
                cfg.close_wait = Duration::from_secs(v);
            }
            if let Some(v) = t.take_int("ExitWaitSeconds", 0, 3600)? {
                cfg.join_timeout = Duration::from_secs(v);
            }
            report.warnings.extend(t.unknown_keys());
        }
        if let Some(v) = s.take("ShutdownTimeouts") {
            let map = Section::as_object(&v, "WebSocketServer.ShutdownTimeouts")?;
            let mut t = Section::new("WebSocketServer.ShutdownTimeouts", &map);
            if let Some(v) = t.take_int("CloseWaitMs", 0, 3_600_000)? {
                cfg.close_wait = ms(v);
            }
            if let Some(v) = t.take_int("JoinMs", 0, 3_600_000)? {
                cfg.join_timeout = ms(v);
            }
            report.warnings.extend(t.unknown_keys());
        }
        if let Some(Value::Object(logging)) = root.get("Logging")
            && let Some(level) = logging.get("Level")
        {
            cfg.log_level = parse_level(level, "Logging.Level")?;
        }
        if let Some(v) = s.take("LogLevel") {
            cfg.log_level = parse_level(&v, "WebSocketServer.LogLevel")?;
        }
        report.warnings.extend(s.unknown_keys());
        Ok((cfg, report))
    }

    /// Checks what only makes sense for the whole config: with `AuthRequired`, at least one
    /// key must exist. The error says how to set `HYDROGEN_API_KEY`.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(k) = self
            .keys
            .iter()
            .find(|k| k.secret.expose().trim().is_empty())
        {
            return Err(Error::config(
                format!("WebSocketServer.Keys[{}].Key", k.name),
                "is empty: an empty key would admit anyone; give every key a real value",
            ));
        }
        if self.auth_required && self.keys.is_empty() && self.jwt.is_none() {
            return Err(Error::config(
                "WebSocketServer.Key",
                "no API key: AuthRequired is true but HYDROGEN_API_KEY is unset. Set one with \
                 `export HYDROGEN_API_KEY=$(head -c 24 /dev/urandom | base64)` (clients send \
                 `Authorization: Key <key>`), or list keys under WebSocketServer.Keys",
            ));
        }
        if self.tls {
            for (key, path) in [
                ("CertificatePath", &self.certificate_path),
                ("KeyPath", &self.key_path),
            ] {
                if path.is_none() {
                    return Err(Error::config(
                        format!("WebSocketServer.{key}"),
                        "SecureMode is \"tls\": give the PEM file's path",
                    ));
                }
            }
        }
        if !self.enable_ipv4 && !self.enable_ipv6 {
            return Err(Error::config(
                "WebSocketServer.EnableIPv4",
                "EnableIPv4 and EnableIPv6 are both false: nothing to listen on",
            ));
        }
        if self.interface.is_ipv4()
            && !self.enable_ipv4
            && !self.interface.is_unspecified()
            && !self.interface.is_loopback()
        {
            return Err(Error::config(
                "WebSocketServer.Interface",
                "an IPv4 interface with EnableIPv4=false",
            ));
        }
        Ok(())
    }

    /// The session cap per identity in force: `MaxSessionsPerIdentity`, or MaxConnections
    /// when that is 0 (so clients sharing one key, up to the server's capacity, all keep
    /// resumable sessions).
    pub fn sessions_per_identity(&self) -> usize {
        match self.max_sessions_per_identity {
            0 => self.max_connections,
            n => n,
        }
    }

    /// Names of the keys shorter than [`SHORT_KEY_CHARS`] characters (guessable; the server
    /// warns about each at start-up, naming the key, never showing it).
    pub fn short_keys(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|k| k.secret.expose().chars().count() < SHORT_KEY_CHARS)
            .map(|k| k.name.as_str())
            .collect()
    }

    /// The effective config as JSON, secrets redacted (for `--check-config`).
    pub fn to_redacted_json(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| json!({"Name": k.name, "Key": k.secret.redacted(), "Role": k.role.as_str()}))
            .collect();
        let ms = |d: Duration| d.as_millis() as u64;
        json!({"WebSocketServer": {
            "Enabled": self.enabled, "Port": self.port, "PortFallbackCount": self.port_fallback_count,
            "Interface": self.interface.to_string(), "EnableIPv4": self.enable_ipv4, "EnableIPv6": self.enable_ipv6,
            "Protocol": self.protocol, "RequireProtocol": self.require_protocol,
            "SecureMode": if self.tls { "tls" } else { "none" },
            "CertificatePath": self.certificate_path.as_ref().map(|p| p.display().to_string()),
            "KeyPath": self.key_path.as_ref().map(|p| p.display().to_string()),
            "AuthRequired": self.auth_required, "EchoMode": self.echo_mode, "Keys": keys,
            "MaxConnections": self.max_connections, "MaxConnectionsPerIp": self.max_connections_per_ip,
            "MaxMessageSize": self.max_message_size, "HandshakeTimeoutMs": ms(self.handshake_timeout),
            "AuthTimeoutMs": ms(self.auth_timeout), "HeartbeatIntervalMs": ms(self.heartbeat_interval),
            "PongTimeoutMs": ms(self.pong_timeout), "IdleTimeout": self.idle_timeout.map_or(0, |d| d.as_secs()),
            "ThreadPoolSize": self.thread_pool_size, "ThreadStackSize": self.thread_stack_size,
            "OutboundQueueLimit": self.outbound_queue_limit,
            "MaxChannelsPerSession": self.max_channels_per_session,
            "MaxSessionsPerIdentity": self.sessions_per_identity(),
            "StatusIntervalMs": self.status_interval.map_or(0, ms), "HandlerTimeoutMs": ms(self.handler_timeout),
            "ShutdownTimeouts": {"CloseWaitMs": ms(self.close_wait), "JoinMs": ms(self.join_timeout)},
            "RateLimit": {
                "MessagesPerSecond": self.rate_limit.messages_per_second, "Burst": self.rate_limit.burst,
                "ViolationsBeforeBlock": self.rate_limit.violations_before_block,
                "BlockSeconds": self.rate_limit.block.as_secs(),
                "HandshakesPerMinutePerIp": self.rate_limit.handshakes_per_minute_per_ip,
            },
            "Jwt": self.jwt.as_ref().map(|j| json!({
                "PublicKeyPath": j.public_key_path.as_ref().map(|p| p.display().to_string()),
                "JwksPath": j.jwks_path.as_ref().map(|p| p.display().to_string()),
                "Issuer": j.issuer, "Audience": j.audience, "Algorithms": j.algorithms,
                "RoleClaim": j.role_claim, "LeewaySeconds": j.leeway_seconds,
            })),
            "SensitiveActions": self.sensitive_actions,
            "SessionTokens": self.session_tokens.as_ref().map(|t| json!({
                "PrivateKeyPath": t.private_key_path.display().to_string(), "TtlSeconds": t.ttl.as_secs(),
            })),
            "Delivery": {
                "AckTimeoutMs": ms(self.delivery.ack_timeout), "MaxRetries": self.delivery.max_retries,
                "SessionResumeSeconds": self.delivery.session_resume.as_secs(),
                "ReplayBufferEvents": self.delivery.replay_buffer_events,
                "ReliableChannels": self.delivery.reliable_channels,
            },
            "LogLevel": self.log_level,
        }})
    }
}

/// A key that can authenticate: an empty or blank key would admit anyone who sends an empty
/// one (`?key=`), so it is a config error naming `setting`.
pub(crate) fn non_blank_key(key: String, setting: &str) -> Result<Secret, Error> {
    if key.trim().is_empty() {
        return Err(Error::config(
            setting,
            "is empty: an empty key would admit anyone. Set a real key, for example \
             `export HYDROGEN_API_KEY=$(head -c 24 /dev/urandom | base64)`, or remove the setting",
        ));
    }
    Ok(Secret::new(key))
}

/// Actions one channel's filter may name (`system/subscribe` with `actions`).
pub const MAX_ACTIONS_PER_CHANNEL: usize = 256;

/// Keys shorter than this are accepted with a warning at start-up.
pub const SHORT_KEY_CHARS: usize = 16;

/// Where the binary looks when no `--config` is given.
pub fn default_path() -> PathBuf {
    PathBuf::from("config.json")
}

mod reader;
mod sections;
#[cfg(test)]
mod tests;
