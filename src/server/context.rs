//! Shared server state, guarded the way the C design guards it: the connection mutex (the
//! registry of live connections), the context mutex (bound addresses and other server state),
//! atomics for counters, and the shutdown flag with the condvar every background thread waits
//! on. Locks are held for a few instructions and never across I/O; when two are needed they
//! are taken in the order connection → context.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use tungstenite::WebSocket;

use crate::config::Config;
use crate::server::dispatch::handlers::Dispatcher;
use crate::server::dispatch::services::Services;
use crate::server::events::direct::Flusher;
use crate::server::events::{EventBody, EventBus};
use crate::server::net::stream::ClientStream;
use crate::server::runtime::threads::ThreadRegistry;
use crate::server::security::auth::{Authenticator, Identity};
use crate::server::security::jwt::JwtVerifier;
use crate::server::security::limits::Limits;
use crate::server::security::session_tokens::SessionTokens;
use crate::server::security::signature::SignedCommands;
use crate::server::status::ProcessSampler;
use crate::wake::Waker;

/// The connection states (docs/protocol.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ConnState {
    Connecting = 0,
    Verifying,
    Established,
    Connected,
    Heartbeat,
    Inactive,
    Closing,
    Closed,
    Failed,
    Rejected,
}

pub(crate) const STATE_COUNT: usize = 10;

impl ConnState {
    pub(crate) const ALL: [ConnState; STATE_COUNT] = [
        ConnState::Connecting,
        ConnState::Verifying,
        ConnState::Established,
        ConnState::Connected,
        ConnState::Heartbeat,
        ConnState::Inactive,
        ConnState::Closing,
        ConnState::Closed,
        ConnState::Failed,
        ConnState::Rejected,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnState::Connecting => "connecting",
            ConnState::Verifying => "verifying",
            ConnState::Established => "established",
            ConnState::Connected => "connected",
            ConnState::Heartbeat => "heartbeat",
            ConnState::Inactive => "inactive",
            ConnState::Closing => "closing",
            ConnState::Closed => "closed",
            ConnState::Failed => "failed",
            ConnState::Rejected => "rejected",
        }
    }

    /// Closed, Failed and Rejected are where a connection ends; status counts them as totals.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            ConnState::Closed | ConnState::Failed | ConnState::Rejected
        )
    }
}

/// Something for a connection thread to do, queued by another thread.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame to send as is (a command forwarded to a service).
    Text(String),
    /// An event of the session, with the seq it has there.
    Event { seq: u64, body: Arc<EventBody> },
    /// A handler's response to command `id`; dropped if that command already timed out.
    Reply { id: String, text: String },
    /// Close the connection with this code and reason (after what is queued before it).
    Close { code: u16, reason: &'static str },
}

/// The part of a connection other threads can see and reach.
#[derive(Debug)]
pub(crate) struct ConnectionShared {
    pub id: u64,
    pub peer: SocketAddr,
    /// The socket, for the hard shutdown of shutdown phase 5. Weak: the connection thread
    /// owns the socket, and the descriptor closes when that thread drops it.
    socket: Weak<TcpStream>,
    outbound: Sender<Outbound>,
    queued: AtomicUsize,
    pub waker: Waker,
    state: AtomicU8,
    pub identity: Mutex<Option<Identity>>,
    /// Milliseconds since server start of the last message from the client.
    pub last_activity_ms: AtomicU64,
    /// OS thread id of the connection thread (for the thread dump).
    pub tid: AtomicU64,
    /// The newest status event not yet sent: status is coalesced, never queued.
    status_slot: Mutex<Option<Arc<str>>>,
    /// A close that must not wait behind the queue (slow client): code, or 0.
    urgent_close: std::sync::atomic::AtomicU16,
    /// The connection's WebSocket, once upgraded: the connection's write lock. The
    /// connection thread takes it for each read and write (never across a wait); a
    /// publisher takes it to write an event straight to an idle subscriber
    /// (`connection::direct`).
    pub(crate) ws: Mutex<Option<WebSocket<ClientStream>>>,
    /// Set by the connection thread while it sleeps with nothing waiting to be written (no
    /// queue, no batch, no replay, no close, socket writable): events may then be written
    /// straight to the socket, in order, without waking the thread.
    pub(crate) idle_writable: AtomicBool,
    /// This connection wrote events to other connections without flushing them (it is a
    /// service publishing several events in one read round): they are flushed together at
    /// the end of the round, one `send(2)` per subscriber for the lot.
    pub(crate) corked: Mutex<Vec<Arc<ConnectionShared>>>,
    /// Events were written to this connection's buffer by a corked publisher and not yet
    /// flushed (it is in that publisher's `corked` list).
    pub(crate) awaiting_flush: AtomicBool,
}

/// The client's queue is over OutboundQueueLimit.
#[derive(Debug)]
pub(crate) struct QueueFull;

impl ConnectionShared {
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        socket: Weak<TcpStream>,
        outbound: Sender<Outbound>,
        waker: Waker,
    ) -> Self {
        ConnectionShared {
            id,
            peer,
            socket,
            outbound,
            queued: AtomicUsize::new(0),
            waker,
            state: AtomicU8::new(ConnState::Connecting as u8),
            identity: Mutex::new(None),
            last_activity_ms: AtomicU64::new(0),
            tid: AtomicU64::new(0),
            status_slot: Mutex::new(None),
            urgent_close: std::sync::atomic::AtomicU16::new(0),
            ws: Mutex::new(None),
            idle_writable: AtomicBool::new(false),
            corked: Mutex::new(Vec::new()),
            awaiting_flush: AtomicBool::new(false),
        }
    }

    /// Queues `msg` and wakes the connection thread. Never blocks. Fails when the queue holds
    /// `limit` messages already (the slow-client policy then closes the client).
    pub(crate) fn push(&self, msg: Outbound, limit: usize) -> Result<(), QueueFull> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= limit
            && !matches!(msg, Outbound::Close { .. })
        {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueFull);
        }
        if self.outbound.send(msg).is_err() {
            // The connection thread is gone; nothing will read this.
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        self.waker.wake();
        Ok(())
    }

    /// Shuts the socket down (both directions) if it is still open: the connection thread's
    /// next `poll` returns at once and its reads and writes fail. Returns whether it was open.
    pub(crate) fn shutdown_socket(&self) -> bool {
        match self.socket.upgrade() {
            Some(tcp) => tcp.shutdown(std::net::Shutdown::Both).is_ok(),
            None => false,
        }
    }

    /// Asks the connection to close with `code` at once, dropping what is queued (its
    /// session keeps the events for a resume).
    pub(crate) fn close_urgently(&self, code: u16) {
        self.urgent_close.store(code, Ordering::Release);
        self.waker.wake();
    }

    /// The urgent close code, if one was asked for.
    pub(crate) fn urgent_close(&self) -> Option<u16> {
        Some(self.urgent_close.load(Ordering::Acquire)).filter(|c| *c != 0)
    }

    /// Offers the newest status event; replaces one not yet sent, then wakes the thread.
    pub(crate) fn offer_status(&self, text: Arc<str>) {
        *self.status_slot.lock() = Some(text);
        self.waker.wake();
    }

    /// Whether a status event waits to be sent.
    pub(crate) fn has_status(&self) -> bool {
        self.status_slot.lock().is_some()
    }

    /// Takes the pending status event, if any.
    pub(crate) fn take_status(&self) -> Option<Arc<str>> {
        self.status_slot.lock().take()
    }

    /// Called by the connection thread for each message it takes off the queue.
    pub(crate) fn took_one(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn state(&self) -> ConnState {
        ConnState::ALL[self.state.load(Ordering::Acquire) as usize]
    }

    /// Moves to `to`, keeping the per-state counts in `metrics` right. Logged at debug.
    pub(crate) fn set_state(&self, to: ConnState, metrics: &Metrics) {
        let from = ConnState::ALL[self.state.swap(to as u8, Ordering::AcqRel) as usize];
        if from == to {
            return;
        }
        metrics.states[from as usize].fetch_sub(1, Ordering::Relaxed);
        metrics.states[to as usize].fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "conn {} {}: {} -> {}",
            self.id,
            self.peer,
            from.as_str(),
            to.as_str()
        );
    }
}

/// Counters (atomics: never behind a lock).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Current count per live state; cumulative for the terminal states.
    pub states: [AtomicUsize; STATE_COUNT],
    pub total_connections: AtomicU64,
    pub total_requests: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub rejected: Mutex<HashMap<&'static str, u64>>,
}

impl Metrics {
    pub(crate) fn count_rejection(&self, reason: &'static str) {
        *self.rejected.lock().entry(reason).or_insert(0) += 1;
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The registry of live connections (the connection mutex of the C design).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub by_id: HashMap<u64, Arc<ConnectionShared>>,
    /// Connections per address, from accept to the end (handshaking ones included): what
    /// the accept loop holds to MaxConnectionsPerIp.
    pub per_ip: HashMap<IpAddr, usize>,
    /// Upgraded (WebSocket) connections: what MaxConnections limits.
    pub established: usize,
}

/// Server state that changes rarely (the context mutex of the C design).
#[derive(Debug, Default)]
pub(crate) struct ServerState {
    pub bound: Vec<SocketAddr>,
}

/// The shutdown flag, the condvar every background thread waits on, and a wake descriptor
/// for the accept loop's `poll`.
#[derive(Debug)]
pub(crate) struct ShutdownSignal {
    requested: AtomicBool,
    /// When the first request came and how many connections were open then (the report's
    /// phase 1 starts there, even when the shutdown itself runs later on another thread).
    first_request: OnceLock<(Instant, usize)>,
    skip_waits: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
    pub waker: Waker,
}

impl ShutdownSignal {
    fn new() -> std::io::Result<Self> {
        Ok(ShutdownSignal {
            requested: AtomicBool::new(false),
            first_request: OnceLock::new(),
            skip_waits: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            waker: Waker::new()?,
        })
    }

    /// Sets the flag and wakes every waiter; the first call also notes the time and
    /// `open_connections` for the shutdown report. Returns false if it was already set.
    pub(crate) fn request(&self, open_connections: usize) -> bool {
        let _ = self.first_request.set((Instant::now(), open_connections));
        let first = !self.requested.swap(true, Ordering::SeqCst);
        self.notify();
        self.waker.wake();
        first
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// When shutdown was first requested, and how many connections were open then.
    pub(crate) fn first_request(&self) -> Option<(Instant, usize)> {
        self.first_request.get().copied()
    }

    /// A second signal: the remaining shutdown waits end at once.
    pub(crate) fn skip_waits(&self) {
        self.skip_waits.store(true, Ordering::SeqCst);
        self.notify();
        self.waker.wake();
    }

    pub(crate) fn waits_skipped(&self) -> bool {
        self.skip_waits.load(Ordering::SeqCst)
    }

    /// Wakes everything waiting on the condvar (a thread exited, a phase may proceed).
    pub(crate) fn notify(&self) {
        let _g = self.lock.lock();
        self.cond.notify_all();
    }

    /// Waits until `done()` holds, the deadline passes, or (when `skippable`) waits are
    /// skipped. Re-checks whenever the condvar is notified. Returns `done()`.
    pub(crate) fn wait_until(
        &self,
        deadline: Instant,
        skippable: bool,
        mut done: impl FnMut() -> bool,
    ) -> bool {
        let mut g = self.lock.lock();
        loop {
            if done() {
                return true;
            }
            if (skippable && self.waits_skipped()) || Instant::now() >= deadline {
                return done();
            }
            self.cond.wait_until(&mut g, deadline);
        }
    }

    /// Blocks until shutdown is requested or `timeout` passes; true when requested.
    pub(crate) fn wait_requested(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(crate::wake::after);
        let mut g = self.lock.lock();
        while !self.is_requested() {
            match deadline {
                Some(d) => {
                    if self.cond.wait_until(&mut g, d).timed_out() {
                        break;
                    }
                }
                None => self.cond.wait(&mut g),
            }
        }
        self.is_requested()
    }
}

/// Everything the server's threads share.
#[derive(Debug)]
pub(crate) struct ServerContext {
    pub config: Config,
    pub auth: Authenticator,
    pub connections: Mutex<Registry>,
    pub state: Mutex<ServerState>,
    pub metrics: Metrics,
    pub shutdown: ShutdownSignal,
    pub threads: ThreadRegistry,
    pub dispatch: Dispatcher,
    pub events: EventBus,
    pub services: Services,
    pub limits: Limits,
    /// Signed commands of the last minute (replay guard).
    pub signed: SignedCommands,
    /// The `hws-flush` thread's queue: `Publisher` writes to flush.
    pub flusher: Flusher,
    pub sampler: ProcessSampler,
    /// TLS settings when SecureMode is "tls".
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub started: SystemTime,
    pub started_at: Instant,
    next_connection_id: AtomicU64,
}

impl ServerContext {
    pub(crate) fn new(
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        jwt: Option<JwtVerifier>,
        session_tokens: Option<SessionTokens>,
    ) -> std::io::Result<Self> {
        let auth = Authenticator::new(
            config.keys.clone(),
            config.auth_required,
            jwt,
            session_tokens,
        );
        Ok(ServerContext {
            auth,
            connections: Mutex::new(Registry::default()),
            state: Mutex::new(ServerState::default()),
            metrics: Metrics::default(),
            shutdown: ShutdownSignal::new()?,
            threads: ThreadRegistry::default(),
            dispatch: Dispatcher::new(),
            signed: SignedCommands::default(),
            flusher: Flusher::default(),
            events: EventBus::default(),
            services: Services::default(),
            limits: Limits::new(config.rate_limit.clone()),
            sampler: ProcessSampler::new(),
            tls,
            started: SystemTime::now(),
            started_at: Instant::now(),
            next_connection_id: AtomicU64::new(1),
            config,
        })
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
        let all: Vec<Arc<ConnectionShared>> =
            self.connections.lock().by_id.values().cloned().collect();
        for c in &all {
            c.waker.wake();
        }
        all.len()
    }

    pub(crate) fn connection(&self, id: u64) -> Option<Arc<ConnectionShared>> {
        self.connections.lock().by_id.get(&id).cloned()
    }
}
