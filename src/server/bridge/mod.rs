//! The MQTT bridge (docs/behaviour.md, "MQTT bridge"): one `hws-mqtt` thread that keeps a
//! connection to a broker and publishes there the events of the bridged channels, the
//! status object and the server's presence, and (with `Commands`) runs the commands that
//! arrive on `<prefix>/request`. Synchronous like the rest: it sleeps in `poll(2)` on the
//! broker's socket, the event tap's and the command desk's wake descriptors and the shutdown
//! descriptor, with the next timer as timeout. A broker that is down or slow never stalls a
//! publisher or a client: the tap is a bounded queue that drops its oldest (counted,
//! logged), and the bridge reconnects with the client library's backoff.
#![forbid(unsafe_code)]

mod commands;
mod inflight;
mod link;
mod session;
mod topics;

#[cfg(feature = "fuzzing")]
pub(crate) use link::decode_packets;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::client::ReconnectPolicy;
use crate::client::tls::ClientTls;
use crate::config::{MqttConfig, MqttUrl};
use crate::error::Error;
use crate::server::context::ServerContext;
use crate::server::events::tap::EventTap;
use crate::server::runtime::threads::{Activity, ThreadRole, ThreadTag};
use commands::{CommandDesk, Reply};
use inflight::Inflight;
use link::{BrokerLink, Hello};
use topics::Topics;

/// A link the broker closes sooner than this after CONNACK gets the ClientId hint.
const TAKEOVER_HINT_WITHIN: Duration = Duration::from_secs(5);
/// Stack of the bridge's thread: it builds the status object and runs TLS handshakes.
const BRIDGE_STACK: usize = 256 * 1024;

/// Why a connected stretch ended.
enum End {
    Shutdown,
    /// The broker closed the connection (end of stream).
    Closed,
    /// The link failed otherwise: why, for the log.
    Lost(String),
}

/// What the bridge's thread owns.
struct Bridge {
    ctx: Arc<ServerContext>,
    config: MqttConfig,
    url: MqttUrl,
    tls: Option<ClientTls>,
    tap: Arc<EventTap>,
    desk: CommandDesk,
    topics: Topics,
    inflight: Inflight,
    /// Replies waiting for room in the QoS 1 window.
    replies: VecDeque<Reply>,
    /// `tap.dropped` when the last overflow was logged.
    dropped_logged: u64,
}

/// Starts the bridge when the config has an `Mqtt` section. Errors: an unreadable CA file or
/// an empty system store for `mqtts://` ([`Error::Tls`]), a thread that cannot start.
pub(crate) fn start(ctx: &Arc<ServerContext>) -> Result<(), Error> {
    let Some(config) = ctx.config.mqtt.clone() else {
        return Ok(());
    };
    let url = config.broker()?;
    let tls = url.tls.then(|| tls_settings(&config)).transpose()?;
    let io_error = |e| Error::io("starting the MQTT bridge", e);
    let tap =
        Arc::new(EventTap::new(config.channels.clone(), config.buffer_events).map_err(io_error)?);
    let _ = ctx.events.tap.set(tap.clone());
    let topics = Topics::new(&config.topic_prefix);
    let desk = CommandDesk::new(ctx, config.command_role, topics.clone()).map_err(io_error)?;
    let _ = ctx.bridge.set(desk.handle().clone());
    let bridge = Bridge {
        ctx: ctx.clone(),
        config,
        url,
        tls,
        tap,
        desk,
        topics,
        inflight: Inflight::default(),
        replies: VecDeque::new(),
        dropped_logged: 0,
    };
    ctx.threads
        .spawn(
            ThreadRole::Bridge,
            "hws-mqtt".into(),
            BRIDGE_STACK,
            None,
            move |tag| bridge.run(&tag),
        )
        .map_err(io_error)
}

#[cfg(feature = "tls")]
fn tls_settings(config: &MqttConfig) -> Result<ClientTls, Error> {
    let roots = match &config.ca_path {
        Some(path) => crate::client::TlsRoots::CaFile(path.clone()),
        None => crate::client::TlsRoots::System,
    };
    crate::client::tls::client_config(&roots)
}

/// Without the `tls` feature the config check refuses `mqtts://` before this runs.
#[cfg(not(feature = "tls"))]
fn tls_settings(_: &MqttConfig) -> Result<ClientTls, Error> {
    Err(Error::InvalidArgument(
        "mqtts:// needs the `tls` feature".into(),
    ))
}

impl Bridge {
    /// Connects, serves, and reconnects with backoff until the server shuts down.
    fn run(mut self, tag: &ThreadTag) {
        let policy = ReconnectPolicy {
            max_delay: self.config.reconnect_max,
            ..ReconnectPolicy::default()
        };
        let mut attempt = 0u32;
        let mut failures_logged = 0u32;
        while !self.ctx.shutdown.is_requested() {
            tag.set(Activity::Running, self.ctx.uptime_ms());
            match self.connect() {
                Ok(link) => {
                    log::info!(
                        "mqtt: connected to {}:{} as {:?}",
                        self.url.host,
                        self.url.port,
                        self.config.client_id
                    );
                    failures_logged = 0;
                    let up = Instant::now();
                    match self.serve(link, tag) {
                        End::Shutdown => break,
                        End::Closed => self.log_closed(up.elapsed()),
                        End::Lost(why) => log::warn!("mqtt: lost the broker ({why}); reconnecting"),
                    }
                    if up.elapsed() >= policy.reset_after {
                        attempt = 0;
                    }
                }
                Err(why) => {
                    // The first failures in a row at warn, then one line a minute at most.
                    failures_logged += 1;
                    if failures_logged <= 3 {
                        log::warn!(
                            "mqtt: cannot connect to {}:{}: {why}",
                            self.url.host,
                            self.url.port
                        );
                    } else {
                        log::debug!(
                            "mqtt: cannot connect to {}:{}: {why}",
                            self.url.host,
                            self.url.port
                        );
                    }
                }
            }
            attempt = attempt.saturating_add(1);
            let delay = policy.delay(attempt, crate::client::reconnect::random_unit());
            tag.set(Activity::Waiting, self.ctx.uptime_ms());
            if self.ctx.shutdown.wait_requested(Some(delay)) {
                break;
            }
        }
        self.log_undelivered();
    }

    /// One attempt: TCP, TLS, CONNECT with the last will, CONNACK.
    fn connect(&self) -> Result<BrokerLink, String> {
        let will = topics::offline("lost").to_string().into_bytes();
        let hello = Hello {
            config: &self.config,
            will_topic: &self.topics.online,
            will_payload: will,
        };
        let deadline = crate::wake::after(self.config.connect_timeout);
        // A request can be as large as a WebSocket message, plus the topic and headers.
        let max_packet = self.ctx.config.max_message_size + 1024;
        BrokerLink::open(&self.url, self.tls.as_ref(), &hello, max_packet, deadline)
    }

    /// A link the broker closed, with a hint when that came soon after accepting it: that
    /// is what a broker does when another client connects with the same ClientId.
    fn log_closed(&self, up: Duration) {
        if up < TAKEOVER_HINT_WITHIN {
            log::warn!(
                "mqtt: the broker closed the link {:.1} s after accepting it; is another client \
                 connected with ClientId {:?}? (each would take over the other's link); reconnecting",
                up.as_secs_f64(),
                self.config.client_id
            );
        } else {
            log::warn!("mqtt: the broker closed the link; reconnecting");
        }
    }

    /// Logs the tap's overflow since the last time (never silently).
    fn log_dropped(&mut self) {
        let dropped = self.tap.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_logged {
            log::warn!(
                "mqtt: {} events dropped for the broker ({} in all): more than BufferEvents ({}) waited",
                dropped - self.dropped_logged,
                dropped,
                self.config.buffer_events
            );
            self.dropped_logged = dropped;
        }
    }

    /// At shutdown: what never reached the broker ends with the server, said once.
    fn log_undelivered(&mut self) {
        self.log_dropped();
        let left = self.tap.len() + self.inflight.events();
        if left > 0 {
            log::warn!("mqtt: {left} events not delivered to the broker end with the server");
        }
    }
}

/// How long the bridge's goodbye (offline presence, DISCONNECT) may take at shutdown.
fn goodbye_wait(ctx: &ServerContext) -> Duration {
    ctx.config.close_wait.min(Duration::from_secs(2))
}
