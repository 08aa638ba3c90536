//! Shared server state, guarded the way the C design guards it: the connection mutex (the
//! registry of live connections), the context mutex (bound addresses and other server state),
//! atomics for counters, and the shutdown flag with the condvar every background thread waits
//! on. Locks are held for a few instructions and never across I/O; when two are needed they
//! are taken in the order connection → context.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use crate::config::Config;
use crate::server::dispatch::handlers::Dispatcher;
use crate::server::dispatch::services::Services;
use crate::server::events::bus::EventBus;
use crate::server::events::direct::Flusher;
use crate::server::net::tls::TlsConfig;
use crate::server::registry::Registry;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::registry::metrics::Metrics;
use crate::server::runtime::sampler::ProcessSampler;
use crate::server::runtime::service_manager::ServiceManager;
use crate::server::runtime::signal::ShutdownSignal;
use crate::server::runtime::threads::ThreadRegistry;
use crate::server::security::auth::Authenticator;
use crate::server::security::jwt::JwtVerifier;
use crate::server::security::limits::Limits;
use crate::server::security::session_tokens::SessionTokens;
use crate::server::security::signature::SignedCommands;

/// Server state that changes rarely (the context mutex of the C design).
#[derive(Debug, Default)]
pub(crate) struct ServerState {
    pub bound: Vec<SocketAddr>,
    /// The bound listeners until the accept thread takes them.
    listeners: Vec<TcpListener>,
}

/// Everything the server's threads share.
#[derive(Debug)]
pub(crate) struct ServerContext {
    pub config: Config,
    pub auth: Authenticator,
    pub connections: Mutex<Registry>,
    pub state: Mutex<ServerState>,
    pub metrics: Metrics,
    pub shutdown: Arc<ShutdownSignal>,
    pub threads: Arc<ThreadRegistry>,
    pub dispatch: Arc<Dispatcher>,
    pub events: EventBus,
    pub services: Services,
    pub limits: Limits,
    /// Signed commands of the last minute (replay guard).
    pub signed: SignedCommands,
    /// The `hws-flush` thread's queue: `Publisher` writes to flush.
    pub flusher: Flusher,
    pub sampler: ProcessSampler,
    /// systemd's notify socket, when the server was asked to use it.
    pub service_manager: ServiceManager,
    /// TLS settings when SecureMode is "tls".
    pub tls: Option<TlsConfig>,
    /// The MQTT bridge's handle, when it runs: the status thread offers it the bare status
    /// object every StatusIntervalMs, coalesced like a connection's.
    pub bridge: OnceLock<Arc<ConnectionHandle>>,
    pub started: SystemTime,
    pub started_at: Instant,
    next_connection_id: AtomicU64,
}

impl ServerContext {
    pub(crate) fn new(
        config: Config,
        tls: Option<TlsConfig>,
        jwt: Option<JwtVerifier>,
        session_tokens: Option<SessionTokens>,
        listeners: Vec<TcpListener>,
    ) -> std::io::Result<Self> {
        let auth = Authenticator::new(
            config.keys.clone(),
            config.auth_required,
            jwt,
            session_tokens,
        );
        let shutdown = Arc::new(ShutdownSignal::new()?);
        let metrics = Metrics::default();
        Ok(ServerContext {
            auth,
            connections: Mutex::new(Registry::default()),
            state: Mutex::new(ServerState {
                bound: listeners
                    .iter()
                    .filter_map(|l| l.local_addr().ok())
                    .collect(),
                listeners,
            }),
            dispatch: Arc::new(Dispatcher::new(metrics.command_duration.clone())),
            metrics,
            threads: Arc::new(ThreadRegistry::new(shutdown.clone())),
            shutdown,
            signed: SignedCommands::new(config.sensitive_actions.clone()),
            flusher: Flusher::default(),
            events: EventBus::default(),
            services: Services::new(config.outbound_queue_limit),
            limits: Limits::new(config.rate_limit.clone()),
            sampler: ProcessSampler::new(),
            service_manager: ServiceManager::disabled(),
            tls,
            bridge: OnceLock::new(),
            started: SystemTime::now(),
            started_at: Instant::now(),
            next_connection_id: AtomicU64::new(1),
            config,
        })
    }

    /// The bound listeners, for the accept thread (empty after the first call).
    pub(crate) fn take_listeners(&self) -> Vec<TcpListener> {
        std::mem::take(&mut self.state.lock().listeners)
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Milliseconds since the server started (for cheap "last activity" stamps).
    pub(crate) fn uptime_ms(&self) -> u64 {
        self.started_at.elapsed().as_millis() as u64
    }

    /// Raises the shutdown flag (phase 1); the first request notes the open connections for
    /// the shutdown report. Returns false if it was already raised.
    pub(crate) fn request_shutdown(&self) -> bool {
        let first = self.shutdown.request(self.live_connections());
        self.flusher.stop();
        if first {
            self.service_manager.stopping();
        }
        first
    }

    /// Connections from `ip`, handshaking ones included.
    pub(crate) fn connections_from(&self, ip: IpAddr) -> usize {
        self.connections
            .lock()
            .per_ip
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    /// Live connection threads (handshaking or established).
    pub(crate) fn live_connections(&self) -> usize {
        self.connections.lock().by_id.len()
    }

    /// Wakes every connection thread (they look at the shutdown flag); returns how many.
    pub(crate) fn wake_all_connections(&self) -> usize {
        let all: Vec<Arc<ConnectionHandle>> =
            self.connections.lock().by_id.values().cloned().collect();
        for c in &all {
            c.waker.wake();
        }
        all.len()
    }

    pub(crate) fn connection(&self, id: u64) -> Option<Arc<ConnectionHandle>> {
        self.connections.lock().by_id.get(&id).cloned()
    }
}
