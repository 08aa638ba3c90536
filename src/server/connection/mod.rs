//! One client's thread (`hws-conn-<id>`): the handshake, then a loop that owns the socket and
//! sleeps in `poll(2)` on the socket, the connection's wake descriptor and the next timer
//! (heartbeat, pong, idle, authentication, handler deadlines, close handshake). It reads until
//! `WouldBlock`, writes what other threads queued, and never holds a lock across I/O.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;
use parking_lot::{MappedMutexGuard, MutexGuard};
use serde_json::json;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error as WsError, WebSocket};

use crate::message::ReplyTo;
use crate::server::context::ServerContext;
use crate::server::events::event::{EventBody, unsequenced_event};
use crate::server::events::session::Session;
use crate::server::net::admission;
use crate::server::net::handshake::{self, Outcome};
use crate::server::net::stream::Transport;
use crate::server::registry::handle::{ConnectionHandle, Outbound};
use crate::server::registry::histogram::LocalHistogram;
use crate::server::registry::state::ConnState;
use crate::server::runtime::threads::{self, ThreadRole};
use crate::server::security::identity::Identity;
use crate::server::security::limits::TokenBucket;
use crate::wake::{self, Interest, Readiness, Waker};

pub(crate) mod incoming;
mod outgoing;
mod reading;
pub(crate) mod system;
mod timers;

/// Commands one client may have waiting for a handler at once; more get `rate_limited`.
const MAX_IN_FLIGHT: usize = 64;

/// Registers a freshly accepted socket, with the wake descriptor other threads will use to
/// wake its thread, and starts its `hws-conn-<id>` thread. On failure (no thread could be
/// started) the socket comes back with the error, for the caller to answer the client.
pub(crate) fn spawn(
    ctx: &Arc<ServerContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    waker: Waker,
) -> Result<(), (io::Error, Arc<TcpStream>)> {
    let tcp = Arc::new(tcp);
    if let Err(e) = tcp.set_nonblocking(true) {
        return Err((e, tcp));
    }
    let _ = tcp.set_nodelay(true);
    let id = ctx.next_connection_id();
    let (tx, rx) = crossbeam_channel::unbounded();
    let for_refusal = tcp.clone();
    let shared = Arc::new(ConnectionHandle::new(
        id,
        peer,
        Arc::downgrade(&tcp),
        tx,
        waker,
    ));
    ctx.metrics.states[ConnState::Connecting as usize].fetch_add(1, Ordering::Relaxed);
    {
        let mut registry = ctx.connections.lock();
        registry.by_id.insert(id, shared.clone());
        *registry.per_ip.entry(peer.ip()).or_insert(0) += 1;
    }
    let (thread_ctx, thread_shared) = (ctx.clone(), shared.clone());
    let spawned = ctx.threads.spawn(
        ThreadRole::Connection,
        format!("hws-conn-{id}"),
        ctx.config.thread_stack_size,
        Some(shared.clone()),
        move |_tag| run(thread_ctx, thread_shared, tcp, rx),
    );
    if let Err(e) = spawned {
        unregister(ctx, &shared, ConnState::Failed);
        return Err((e, for_refusal));
    }
    Ok(())
}

fn run(
    ctx: Arc<ServerContext>,
    shared: Arc<ConnectionHandle>,
    tcp: Arc<TcpStream>,
    rx: Receiver<Outbound>,
) {
    shared
        .last_activity_ms
        .store(ctx.uptime_ms(), Ordering::Relaxed);
    match handshake::perform(&ctx, &shared, tcp) {
        Outcome::Finished => {
            let end = if shared.state().is_terminal() {
                shared.state()
            } else {
                ConnState::Failed
            };
            unregister(&ctx, &shared, end);
        }
        Outcome::Upgraded { ws, identity } => {
            // The handshake's deep frames are done with: an idle connection keeps only the
            // pages its loop uses.
            threads::release_stack_below();
            shared
                .compressed
                .store(ws.get_ref().compressed(), Ordering::Relaxed);
            ctx.metrics
                .total_connections
                .fetch_add(1, Ordering::Relaxed);
            let mut conn = Connection::new(ctx.clone(), shared.clone(), *ws, rx, identity);
            let end = conn.serve();
            conn.log_leave(end);
            if let Some(session) = &conn.session {
                ctx.events
                    .detach(session, shared.id, ctx.config.sessions_per_identity());
            }
            ctx.services.service_gone(shared.id);
            for forwarded in conn.in_flight.drain(..).filter_map(|f| f.forwarded_as) {
                ctx.services.forget(&forwarded);
            }
            admission::release_slot(&ctx);
            // Unregister first: the socket must stay open while phase 5 may still reach it.
            unregister(&ctx, &shared, end);
            drop(conn);
            // Sessions may still point at this connection: the socket goes now, with it.
            drop(shared.ws.lock().take());
        }
    }
}

fn unregister(ctx: &ServerContext, shared: &ConnectionHandle, end: ConnState) {
    shared.set_state(end, &ctx.metrics);
    let mut registry = ctx.connections.lock();
    if registry.by_id.remove(&shared.id).is_some() {
        let ip = shared.peer.ip();
        if let Some(n) = registry.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                registry.per_ip.remove(&ip);
            }
        }
    }
    drop(registry);
    log::debug!(
        "conn {} {}: gone ({})",
        shared.id,
        shared.peer,
        end.as_str()
    );
}

/// Whether the loop goes on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct InFlight {
    to: ReplyTo,
    deadline: Instant,
    /// The id a service got the command under, when a service (not a handler) has it.
    forwarded_as: Option<String>,
}

struct Connection {
    ctx: Arc<ServerContext>,
    shared: Arc<ConnectionHandle>,
    rx: Receiver<Outbound>,
    identity: Option<Identity>,
    /// Set while Verifying: late authentication must finish by then.
    auth_deadline: Option<Instant>,
    /// Last frame of any kind from the client (heartbeat).
    last_frame: Instant,
    /// Last message (text, binary, ping) from the client (idle timeout).
    last_message: Instant,
    ping_sent: Option<Instant>,
    /// Set once we sent or received a close frame: give up waiting for the peer then.
    close_deadline: Option<Instant>,
    /// Set when the server is shutting down and this connection noticed it.
    shutdown_deadline: Option<Instant>,
    write_blocked: bool,
    /// The socket may hold input not read yet: set when `poll` says readable (or was not
    /// asked), cleared when a read reached `WouldBlock` (TLS included: its plaintext is
    /// drained by then). A round woken only for queued output skips the useless `recv`.
    input_pending: bool,
    broken: bool,
    /// The client broke the protocol: once our close frame is out, drop the TCP connection
    /// instead of waiting for its reply (RFC 6455 §7.1.7, "fail the WebSocket connection").
    fail_after_flush: bool,
    /// The `system/welcome` event, until the client's first envelope message.
    welcome: Option<String>,
    /// The close code of the close handshake (ours or the client's, whichever came first),
    /// for the "left" log line.
    close_code: Option<u16>,
    /// When the connection was upgraded.
    since: Instant,
    rejected: bool,
    in_flight: Vec<InFlight>,
    ready: Vec<Readiness>,
    /// The session, once authenticated: subscriptions, seq, replay, unacked events.
    session: Option<Arc<Session>>,
    /// Redelivery timers of reliable events sent, in send order: (due, seq).
    ack_timers: VecDeque<(Instant, u64)>,
    /// Events taken off the queue, written highest priority first.
    batch: Vec<(u64, Arc<EventBody>)>,
    /// Events a resume replays, written (with `redelivered`) before anything else queued,
    /// as fast as the client takes them.
    replay: VecDeque<(u64, Arc<EventBody>)>,
    /// Publish-to-write latencies of the events written since the last flush (merged into
    /// the server's histogram then).
    latency: LocalHistogram,
    /// This connection's message allowance (RateLimit).
    bucket: TokenBucket,
    /// Violations of this authenticated connection (see `violation`).
    violations: u32,
    /// Messages read since the corked writes were last flushed.
    messages_this_round: usize,
}

impl Connection {
    fn new(
        ctx: Arc<ServerContext>,
        shared: Arc<ConnectionHandle>,
        ws: WebSocket<Transport>,
        rx: Receiver<Outbound>,
        identity: Option<Identity>,
    ) -> Self {
        let now = Instant::now();
        let auth_deadline = identity.is_none().then(|| now + ctx.config.auth_timeout);
        let ctx_rate = ctx.config.rate_limit.clone();
        *shared.ws.lock() = Some(ws);
        *shared.identity.lock() = identity.clone();
        shared.set_state(ConnState::Established, &ctx.metrics);
        shared.set_state(
            if identity.is_some() {
                ConnState::Connected
            } else {
                ConnState::Verifying
            },
            &ctx.metrics,
        );
        match &identity {
            Some(id) => log::info!(
                "conn {} {}: connected as {} ({})",
                shared.id,
                shared.peer,
                id.name,
                id.role.as_str()
            ),
            None => log::info!(
                "conn {} {}: connected, awaiting system/auth",
                shared.id,
                shared.peer
            ),
        }
        Connection {
            ctx,
            shared,
            rx,
            identity,
            auth_deadline,
            last_frame: now,
            last_message: now,
            ping_sent: None,
            close_deadline: None,
            shutdown_deadline: None,
            write_blocked: false,
            input_pending: true,
            broken: false,
            fail_after_flush: false,
            welcome: None,
            close_code: None,
            since: Instant::now(),
            rejected: false,
            in_flight: Vec::new(),
            ready: Vec::with_capacity(2),
            session: None,
            ack_timers: VecDeque::new(),
            batch: Vec::new(),
            latency: LocalHistogram::default(),
            replay: VecDeque::new(),
            bucket: TokenBucket::new(&ctx_rate),
            violations: 0,
            messages_this_round: 0,
        }
    }

    /// Starts the session of a freshly authenticated client; returns its id.
    fn start_session(&mut self, identity: &Identity) -> String {
        if let Some(old) = self.session.take() {
            self.ctx.events.discard(&old);
        }
        let session = self.ctx.events.create_session(
            identity.clone(),
            &self.shared,
            self.ctx.config.sessions_per_identity(),
        );
        let id = session.id.clone();
        self.session = Some(session);
        id
    }

    /// The loop. Returns the state the connection ends in.
    fn serve(&mut self) -> ConnState {
        // EchoMode peers (protocol test suites) get nothing but their own messages back.
        if let Some(identity) = self.identity.clone().filter(|_| !self.ctx.config.echo_mode) {
            // The server never speaks first: the welcome waits for the client's first
            // envelope message (docs/protocol.md §5).
            let session_id = self.start_session(&identity);
            let mut welcome = json!({"session_id": session_id, "connection_id": self.shared.id, "role": identity.role.as_str()});
            if let Some(tokens) = self.ctx.auth.session_tokens() {
                welcome["session_token"] = json!(tokens.issue(&identity, &session_id));
            }
            self.welcome = Some(unsequenced_event("system", "welcome", &welcome));
        }
        loop {
            // A publisher's direct write may have left output the socket did not take.
            if !self.write_blocked && self.ws().get_ref().output_pending() {
                self.write_blocked = true;
            }
            if self.write_blocked {
                // Woken for writability (or anything else): see whether it cleared first.
                self.flush();
            }
            // Backpressure: while the socket takes no more output, take no more input.
            if (!self.write_blocked && self.input_pending && self.read_frames() == Flow::Stop)
                || self.broken
            {
                break;
            }
            self.drain_outbound();
            if self.check_timers() == Flow::Stop || self.broken {
                break;
            }
            self.flush();
            if self.broken || (self.fail_after_flush && !self.write_blocked) {
                break;
            }
            // The waker was reset when this round began; output that could not be taken
            // while the socket was blocked has no wake-up coming, so go round again now.
            if !self.write_blocked && self.close_deadline.is_none() && self.has_output_waiting() {
                continue;
            }
            if self.sleep() == Flow::Stop {
                break;
            }
        }
        if self.rejected {
            ConnState::Rejected
        } else {
            ConnState::Closed
        }
    }

    /// Sleeps until the socket or the wake descriptor is ready or the next timer is due.
    fn sleep(&mut self) -> Flow {
        let fd = self.ws().get_ref().raw_fd();
        let interests = [
            Interest {
                fd,
                read: !self.write_blocked,
                write: self.write_blocked,
            },
            Interest {
                fd: self.shared.waker.raw_fd(),
                read: true,
                write: false,
            },
            // The shutdown descriptor stays readable once written, so one write wakes every
            // connection at once; watched only until this connection noticed the shutdown.
            Interest {
                fd: self.ctx.shutdown.waker.raw_fd(),
                read: true,
                write: false,
            },
        ];
        let watched = if self.shutdown_deadline.is_none() {
            3
        } else {
            2
        };
        let idle = self.is_idle_writable();
        self.shared.idle_writable.store(idle, Ordering::Release);
        let waited = wake::wait(&interests[..watched], self.next_deadline(), &mut self.ready);
        self.shared.idle_writable.store(false, Ordering::Release);
        if let Err(e) = waited {
            log::error!("conn {}: poll failed: {e}", self.shared.id);
            return Flow::Stop;
        }
        // Asked for writability only, readability is unknown: read on the next round.
        if self.ready[0].readable || !interests[0].read {
            self.input_pending = true;
        }
        if self.ready[1].readable {
            self.shared.waker.reset();
        }
        Flow::Continue
    }

    /// Whether publishers may write events straight to the socket while this thread sleeps:
    /// a session, nothing batched, replayed or queued, no close, the socket writable.
    fn is_idle_writable(&self) -> bool {
        self.session.is_some()
            && !self.write_blocked
            && !self.broken
            && self.close_deadline.is_none()
            && self.shutdown_deadline.is_none()
            && self.batch.is_empty()
            && self.replay.is_empty()
            && self.rx.is_empty()
    }

    /// One info line when the client leaves: who, how (close code, or none when the link
    /// just broke), after how long, in which end state.
    fn log_leave(&self, end: ConnState) {
        let who = self
            .identity
            .as_ref()
            .map_or("unauthenticated".to_string(), |i| i.name.clone());
        let code = self
            .close_code
            .map_or("no close frame".to_string(), |c| format!("close {c}"));
        log::info!(
            "conn {} {}: left ({who}, {code}, {} after {:.1} s)",
            self.shared.id,
            self.shared.peer,
            end.as_str(),
            self.since.elapsed().as_secs_f64()
        );
    }

    fn start_close(&mut self, code: u16, reason: &'static str) {
        if self.close_deadline.is_some() {
            return;
        }
        log::debug!(
            "conn {} {}: closing with {code} ({reason})",
            self.shared.id,
            self.shared.peer
        );
        self.shared.set_state(ConnState::Closing, &self.ctx.metrics);
        self.close_deadline = Some(wake::after(self.ctx.config.close_wait));
        self.close_code.get_or_insert(code);
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let closed = self.ws().close(Some(frame));
        match closed {
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true
            }
            Err(_) => self.broken = true,
        }
    }

    /// The connection's WebSocket, under the connection's write lock (see
    /// [`ConnectionHandle::ws`]). Hold the guard for one operation only.
    fn ws(&self) -> MappedMutexGuard<'_, WebSocket<Transport>> {
        MutexGuard::map(self.shared.ws.lock(), |ws| {
            ws.as_mut().expect("the WebSocket is set at upgrade")
        })
    }

    /// `EchoMode`: messages go back as they are, once the client is past authentication.
    fn echoes(&self) -> bool {
        self.ctx.config.echo_mode && self.shared.state() != ConnState::Verifying
    }
}
