//! What a client is told before it connects: where, as whom, and how patient to be.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// How the client proves who it is in the upgrade request (`Authorization` header).
#[derive(Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// `Authorization: Key <key>`: an API key from the server's config.
    Key(Secret),
    /// `Authorization: Bearer <jwt>`: a JWT the server accepts, or a session token it issued.
    Bearer(Secret),
}

impl Credentials {
    /// An API key.
    pub fn key(key: impl Into<String>) -> Credentials {
        Credentials::Key(Secret::new(key))
    }

    /// A bearer token (JWT or server-issued session token).
    pub fn bearer(token: impl Into<String>) -> Credentials {
        Credentials::Bearer(Secret::new(token))
    }

    pub(crate) fn header_value(&self) -> String {
        match self {
            Credentials::Key(k) => format!("Key {}", k.expose()),
            Credentials::Bearer(t) => format!("Bearer {}", t.expose()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Key(_) => f.write_str("Key(<redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Which certificate authorities a `wss://` client trusts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The operating system's store (`/etc/ssl/certs` and friends, via rustls-native-certs).
    #[default]
    System,
    /// Only the CA certificates in this PEM file (a device's own CA, a test CA).
    CaFile(PathBuf),
}

/// When and how often to try again after the link drops.
///
/// The delay before attempt `n` (1-based) is `initial_delay * multiplier^(n-1)`, capped at
/// `max_delay`, then spread by ±`jitter` (a fraction: 0.2 means ±20 %) so that many clients of
/// a restarted server do not all come back in the same millisecond. A link that stayed up for
/// `reset_after` starts the count again at 1; one that drops sooner keeps backing off.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// Reconnect at all. Default `true`.
    pub enabled: bool,
    /// Delay before the first attempt. Default 100 ms.
    pub initial_delay: Duration,
    /// Upper bound of the delay. Default 30 s.
    pub max_delay: Duration,
    /// Growth per attempt. Default 2.0.
    pub multiplier: f64,
    /// Random spread, a fraction of the delay in `0.0..=1.0`. Default 0.2.
    pub jitter: f64,
    /// Give up after this many attempts without a link that stayed up for `reset_after`;
    /// `None` (default) never gives up.
    pub max_attempts: Option<u32>,
    /// A link up this long resets the attempt count. Default 60 s.
    pub reset_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl ReconnectPolicy {
    /// The delay before attempt `attempt` (1-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let growth = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let ms = self.initial_delay.as_secs_f64() * 1000.0 * growth;
        let capped = ms.min(self.max_delay.as_secs_f64() * 1000.0);
        Duration::from_micros((capped * 1000.0) as u64)
    }

    /// The delay before attempt `attempt` with jitter applied; `unit` is a random number in
    /// `0.0..1.0`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let spread = self.jitter.clamp(0.0, 1.0) * (unit.clamp(0.0, 1.0) * 2.0 - 1.0);
        Duration::from_secs_f64((base * (1.0 + spread)).max(0.0))
    }
}

/// Everything a [`Client`](super::Client) needs. `ClientConfig::new(url)` gives the defaults
/// listed on each field.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/path` or `wss://...`.
    pub url: String,
    /// Subprotocol offered in the upgrade; default `Some("hydrogen-protocol")`.
    pub protocol: Option<String>,
    /// Credentials sent in the upgrade; default none (the server may then want `system/auth`).
    pub credentials: Option<Credentials>,
    /// The host name lookup, and the TCP connect to each address tried. Default 5 s.
    pub connect_timeout: Duration,
    /// TLS plus WebSocket handshake, and the wait for the server's `system/welcome`.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Silence after which the client pings. Default 15 s.
    pub heartbeat_interval: Duration,
    /// No frame at all this long after a ping: the link is dead (a half-open socket after a
    /// network cut) and the client reconnects. Default 10 s.
    pub pong_timeout: Duration,
    /// Timeout of the requests the client makes for you (`subscribe`, `unsubscribe`).
    /// Default 10 s.
    pub request_timeout: Duration,
    /// How long `disconnect()` (and `Drop`) waits for the server's close frame. Default 2 s.
    pub close_timeout: Duration,
    /// Capacity of each queue `subscribe` creates. Default 1024 deliveries.
    pub queue_capacity: usize,
    /// Messages waiting for the I/O thread (sends, requests). Default 1024; `send` says
    /// [`Error::QueueFull`](crate::Error::QueueFull) beyond it.
    pub outbound_capacity: usize,
    /// Reconnect behaviour.
    pub reconnect: ReconnectPolicy,
    /// Trusted CAs for `wss://`. Default the system store.
    pub tls_roots: TlsRoots,
    /// Largest message accepted from the server. Default 16 MiB.
    pub max_message_size: usize,
    /// Offer permessage-deflate (RFC 7692) and use it when the server accepts. Default true:
    /// messages of 256 bytes or more are compressed at level 1, without context takeover
    /// either way (no DEFLATE state is held between messages).
    pub compression: bool,
    /// With `compression`, ask for DEFLATE context takeover both ways: smaller messages when
    /// consecutive ones repeat each other, for a compressor (about 300 KiB) and an inflater
    /// (about 40 KiB) held on each side for the connection's life. Default false.
    pub compression_context_takeover: bool,
}

impl ClientConfig {
    /// The defaults, for `url`.
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            protocol: Some("hydrogen-protocol".to_owned()),
            credentials: None,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            queue_capacity: 1024,
            outbound_capacity: 1024,
            reconnect: ReconnectPolicy::default(),
            tls_roots: TlsRoots::System,
            max_message_size: 16 << 20,
            compression: true,
            compression_context_takeover: false,
        }
    }

    /// Sets the credentials (builder style).
    pub fn with_credentials(mut self, credentials: Credentials) -> ClientConfig {
        self.credentials = Some(credentials);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let zero = [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("pong_timeout", self.pong_timeout),
            ("request_timeout", self.request_timeout),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("ClientConfig.{name} must be more than zero"));
        }
        if self.queue_capacity == 0 || self.outbound_capacity == 0 {
            return Err("ClientConfig queue capacities must be at least 1".into());
        }
        let r = &self.reconnect;
        if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
            return Err("ClientConfig.reconnect.multiplier must be a number >= 1.0".into());
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err("ClientConfig.reconnect.jitter must be within 0.0..=1.0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            multiplier: 2.0,
            ..ReconnectPolicy::default()
        };
        let ms: Vec<u128> = (1..=6).map(|n| p.base_delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = ReconnectPolicy {
            jitter: 0.25,
            ..ReconnectPolicy::default()
        };
        let base = p.base_delay(3).as_secs_f64();
        assert!((p.delay(3, 0.0).as_secs_f64() - base * 0.75).abs() < 1e-6);
        assert!((p.delay(3, 0.999_999).as_secs_f64() - base * 1.25).abs() < 1e-5);
        assert!((p.delay(3, 0.5).as_secs_f64() - base).abs() < 1e-6);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = ClientConfig::new("ws://127.0.0.1:1/");
        c.pong_timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().contains("pong_timeout"));
        let mut c = ClientConfig::new("ws://127.0.0.1:1/");
        c.reconnect.jitter = 2.0;
        assert!(c.validate().unwrap_err().contains("jitter"));
    }
}
