//! The server: [`Server::start`] binds, starts the accept thread and the worker pool, and
//! returns the running [`Server`] to register handlers, publish, read status, and shut down.

mod bridge;
mod connection;
pub(crate) mod context;
mod dispatch;
mod events;
mod exposition;
mod net;
mod publisher;
mod registry;
mod runtime;
pub(crate) mod security;
mod shutdown;
pub(crate) mod status;
pub(crate) mod status_types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

#[cfg(feature = "fuzzing")]
pub(crate) use bridge::decode_packets as fuzzing_mqtt_decode;
pub use dispatch::handlers::{HandlerResult, Request};
pub use events::event::{Event, Priority};
pub use publisher::Publisher;
pub use runtime::threads::StuckThread;
pub use security::identity::{ApiKey, AuthMethod, Identity, Role, Secret};
pub use security::jwt::JwtConfig;
pub use security::session_tokens::SessionTokenConfig;
pub use shutdown::ShutdownReport;
pub use status_types::{
    BridgeStatus, EventFigures, ProcessStatus, ServiceFigures, Status, SystemInfo,
};

use crate::config::Config;
use crate::error::Error;
use context::ServerContext;
use dispatch::handlers::HandlerFn;
use net::{listener, tls};
use runtime::service_manager::ServiceManager;
use runtime::threads::ThreadRole;
use security::{jwt, session_tokens};

/// Stack of the accept thread: it only polls and spawns.
const ACCEPT_STACK: usize = 128 * 1024;
/// Stack of the flush thread: it only flushes sockets.
const FLUSH_STACK: usize = 128 * 1024;
/// Stack of the status thread: builds the status object and JSON.
const STATUS_STACK: usize = 256 * 1024;

/// A running server: [`Server::start`] (or [`Server::builder`]) binds, starts the accept
/// thread, the worker pool and the status and flush threads, and returns it. Dropping it
/// shuts the server down (as [`Server::shutdown`]).
///
/// All methods may be called from any thread.
#[derive(Debug)]
pub struct Server {
    ctx: Arc<ServerContext>,
    report: Mutex<Option<ShutdownReport>>,
}

/// A server not started yet: handlers registered here serve their channels from the first
/// connection on (see [`Server::builder`]).
pub struct ServerBuilder {
    config: Config,
    handlers: Vec<(String, Arc<HandlerFn>)>,
    notify_service_manager: bool,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels: Vec<&str> = self.handlers.iter().map(|(c, _)| c.as_str()).collect();
        f.debug_struct("ServerBuilder")
            .field("handlers", &channels)
            .finish()
    }
}

impl ServerBuilder {
    /// Routes commands on `channel` to `handler` from the start (see
    /// [`Server::register_handler`] for what a handler gets and must do). A bad channel name
    /// makes [`ServerBuilder::start`] fail with [`Error::InvalidArgument`].
    pub fn handler<F>(mut self, channel: &str, handler: F) -> Self
    where
        F: Fn(&Request) -> HandlerResult + Send + Sync + 'static,
    {
        self.handlers.push((channel.to_owned(), Arc::new(handler)));
        self
    }

    /// With `true`, the server speaks systemd's notify protocol when `NOTIFY_SOCKET` is set
    /// (the `hydrogen-ws` binary asks for it; default off, for applications that notify
    /// systemd themselves): `READY=1` once it listens, `WATCHDOG=1` every half
    /// `WATCHDOG_USEC` while its accept and status threads answer, `STOPPING=1` when
    /// shutdown starts.
    pub fn notify_service_manager(mut self, on: bool) -> Self {
        self.notify_service_manager = on;
        self
    }

    /// Starts the server with the handlers given so far: as [`Server::start`].
    pub fn start(self) -> Result<Server, Error> {
        for (channel, _) in &self.handlers {
            check_channel(channel)?;
        }
        let mut ctx = prepare(self.config)?;
        ctx.service_manager = ServiceManager::from_env(self.notify_service_manager);
        let ctx = Arc::new(ctx);
        for (channel, handler) in self.handlers {
            ctx.dispatch.register(&channel, handler);
            log::info!("handler registered for channel {channel}");
        }
        let server = Server {
            ctx,
            report: Mutex::new(None),
        };
        server.start_threads()?;
        server.ctx.service_manager.ready(&server.bound_addrs());
        Ok(server)
    }
}

/// A channel a handler may take: a valid name, not `system`.
fn check_channel(channel: &str) -> Result<(), Error> {
    if crate::message::is_valid_name(channel) && !crate::message::is_reserved_channel(channel) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "cannot register channel {channel:?}: reserved or not [a-z0-9_.-]{{1,64}}"
    )))
}

/// Validates `config`, loads its key material, binds, and builds the shared state; no
/// thread runs yet.
fn prepare(config: Config) -> Result<ServerContext, Error> {
    config.validate()?;
    for name in config.short_keys() {
        log::warn!(
            "API key {name:?} is shorter than {} characters: easy to guess; use a longer one",
            crate::config::SHORT_KEY_CHARS
        );
    }
    if config.echo_mode {
        log::warn!(
            "EchoMode is on: messages are echoed back, not processed as commands (for protocol test suites only)"
        );
    }
    let tls = match (&config.certificate_path, &config.key_path) {
        (Some(cert), Some(key)) if config.tls => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let jwt = config
        .jwt
        .as_ref()
        .map(jwt::JwtVerifier::load)
        .transpose()?;
    let session_tokens = config
        .session_tokens
        .as_ref()
        .map(session_tokens::SessionTokens::load)
        .transpose()?;
    let listeners = listener::bind(&config)?;
    let ctx = ServerContext::new(config, tls, jwt, session_tokens, listeners)
        .map_err(|e| Error::io("creating the shutdown wake descriptor", e))?;
    Ok(ctx)
}

impl Server {
    /// Validates `config`, binds (with port fallback), starts the `hws-accept` thread and
    /// `ThreadPoolSize` `hws-worker-<n>` threads, and returns at once.
    ///
    /// Errors: [`Error::Config`] (e.g. AuthRequired without a key), [`Error::Bind`] when no
    /// port in the range could be bound, [`Error::Io`] when a thread or descriptor could not
    /// be created.
    pub fn start(config: Config) -> Result<Server, Error> {
        Server::builder(config).start()
    }

    /// A server to start with handlers in place from its first connection on:
    /// `Server::builder(config).handler("print", on_print).start()`.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            handlers: Vec::new(),
            notify_service_manager: false,
        }
    }

    /// The worker pool, the MQTT bridge, then the accept, status and flush threads.
    fn start_threads(&self) -> Result<(), Error> {
        let ctx = &self.ctx;
        ctx.dispatch
            .start_workers(&ctx.threads, ctx.config.thread_pool_size, ctx.started_at)
            .map_err(|e| Error::io("starting worker threads", e))?;
        // The bridge's tap is in place before the first client can publish.
        bridge::start(ctx)?;
        let listeners = ctx.take_listeners();
        let accept_ctx = ctx.clone();
        ctx.threads
            .spawn(
                ThreadRole::Accept,
                "hws-accept".into(),
                ACCEPT_STACK,
                None,
                move |tag| listener::accept_loop(accept_ctx, listeners, tag),
            )
            .map_err(|e| Error::io("starting the accept thread", e))?;
        let status_ctx = ctx.clone();
        ctx.threads
            .spawn(
                ThreadRole::Status,
                "hws-status".into(),
                STATUS_STACK,
                None,
                move |tag| status::status_loop(status_ctx, tag),
            )
            .map_err(|e| Error::io("starting the status thread", e))?;
        let flush_ctx = ctx.clone();
        ctx.threads
            .spawn(
                ThreadRole::Flush,
                "hws-flush".into(),
                FLUSH_STACK,
                None,
                move |_tag| flush_ctx.flusher.run(),
            )
            .map_err(|e| Error::io("starting the flush thread", e))?;
        Ok(())
    }

    /// The first address the server listens on (with the port actually bound).
    pub fn bound_addr(&self) -> SocketAddr {
        self.ctx.state.lock().bound[0]
    }

    /// Every address the server listens on (IPv4 and IPv6 when both are enabled).
    pub fn bound_addrs(&self) -> Vec<SocketAddr> {
        self.ctx.state.lock().bound.clone()
    }

    /// Routes commands on `channel` to `handler`, replacing any earlier handler.
    ///
    /// The handler runs on the worker pool (never on a connection thread), gets the command
    /// and the caller's identity, and returns the response data or a [`crate::WireError`].
    /// Callers need role `operator` or above. A handler that panics makes its caller get
    /// `server_error` and close 1011; other clients are not affected. A handler that takes
    /// longer than HandlerTimeoutMs (10 s) makes its caller get `timeout`.
    ///
    /// Errors: [`Error::InvalidArgument`] for `system` or a name not matching
    /// `[a-z0-9_.-]{1,64}`.
    pub fn register_handler<F>(&self, channel: &str, handler: F) -> Result<(), Error>
    where
        F: Fn(&Request) -> HandlerResult + Send + Sync + 'static,
    {
        check_channel(channel)?;
        self.ctx.dispatch.register(channel, Arc::new(handler));
        log::info!("handler registered for channel {channel}");
        Ok(())
    }

    /// A handle to publish events to subscribers (docs/protocol.md §5); clone it into controller
    /// threads.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            ctx: self.ctx.clone(),
        }
    }

    /// The status object of docs/protocol.md §3 (what `system/status` answers).
    pub fn status(&self) -> Status {
        status::status_object(&self.ctx)
    }

    /// The thread dump that `system/threads` answers (README, Operating it).
    pub fn thread_dump(&self) -> Value {
        Value::Array(self.ctx.threads.dump(self.ctx.uptime_ms()))
    }

    /// Writes the thread dump to the log at info level (the binary does this on SIGUSR1).
    pub fn log_thread_dump(&self) {
        let dump = self.ctx.threads.dump(self.ctx.uptime_ms());
        log::info!("thread dump: {} threads", dump.len());
        for t in dump {
            log::info!("thread {t}");
        }
    }

    /// Connections open or handshaking right now.
    pub fn connection_count(&self) -> usize {
        self.ctx.live_connections()
    }

    /// Asks for a shutdown without waiting for it (safe from a signal-handling thread).
    /// Whoever waits in [`Server::join`] or [`Server::wait_for_shutdown_request`]
    /// wakes up.
    pub fn request_shutdown(&self) {
        if self.ctx.request_shutdown() {
            log::info!("shutdown requested");
        }
    }

    /// Ends the remaining shutdown waits at once (a second signal).
    pub fn skip_shutdown_waits(&self) {
        log::warn!("second shutdown request: skipping the remaining waits");
        self.ctx.shutdown.skip_waits();
        self.ctx.wake_all_connections();
    }

    /// Whether a shutdown was requested.
    pub fn is_shutdown_requested(&self) -> bool {
        self.ctx.shutdown.is_requested()
    }

    /// Blocks until a shutdown is requested, or `timeout` passes (`None`: forever). Returns
    /// whether it was requested.
    pub fn wait_for_shutdown_request(&self, timeout: Option<Duration>) -> bool {
        self.ctx.shutdown.wait_requested(timeout)
    }

    /// Shuts down now (the five phases: docs/behaviour.md, Shutdown) and returns what happened.
    /// Takes about a millisecond per few dozen well-behaved clients; at most CloseWaitMs + JoinMs
    /// plus a few hundred ms with clients that do not answer. Calling it again returns the first
    /// report.
    pub fn shutdown(&self) -> ShutdownReport {
        let mut report = self.report.lock();
        if report.is_none() {
            *report = Some(shutdown::run(&self.ctx));
        }
        report.clone().unwrap_or_default()
    }

    /// Waits for a shutdown request (a signal, [`Server::request_shutdown`], ...) and
    /// then shuts down.
    pub fn join(self) -> ShutdownReport {
        self.wait_for_shutdown_request(None);
        self.shutdown()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.report.lock().is_none() {
            self.shutdown();
        }
    }
}
