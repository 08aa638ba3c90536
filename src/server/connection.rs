//! One client's thread (`hws-conn-<id>`): the handshake, then a loop that owns the socket and
//! sleeps in `poll(2)` on the socket, the connection's wake descriptor and the next timer
//! (heartbeat, pong, idle, authentication, handler deadlines, close handshake). It reads until
//! `WouldBlock`, writes what other threads queued, and never holds a lock across I/O.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::message::{self, Command, ErrorCode, Incoming, ReplyTo, WireError};
use crate::server::auth::{Credential, Identity, Role};
use crate::server::context::{ConnState, ConnectionShared, Metrics, Outbound, ServerContext};
use crate::server::dispatch::Dispatcher;
use crate::server::events::{self, EventBody, Redelivery, Session};
use crate::server::handshake::{self, ClientStream, Outcome};
use crate::server::threads::{ThreadRegistry, ThreadRole};
use crate::server::{status, system_channel};
use crate::wake::{self, Interest, Readiness, Waker};

/// Commands one client may have waiting for a handler at once; more get `rate_limited`.
const MAX_IN_FLIGHT: usize = 64;
/// Events taken off the queue before they are written (and sorted by priority).
const EVENT_BATCH: usize = 64;
/// Command ids remembered per connection for the replay guard (SPEC §6).
const RECENT_IDS: usize = 1024;

/// Registers a freshly accepted socket and starts its `hws-conn-<id>` thread.
pub(crate) fn spawn(ctx: &Arc<ServerContext>, tcp: TcpStream, peer: SocketAddr) -> io::Result<()> {
    tcp.set_nonblocking(true)?;
    let _ = tcp.set_nodelay(true);
    let id = ctx.next_connection_id();
    let (tx, rx) = crossbeam_channel::unbounded();
    let tcp = Arc::new(tcp);
    let shared = Arc::new(ConnectionShared::new(
        id,
        peer,
        Arc::downgrade(&tcp),
        tx,
        Waker::new()?,
    ));
    ctx.metrics.states[ConnState::Connecting as usize].fetch_add(1, Ordering::Relaxed);
    ctx.connections.lock().by_id.insert(id, shared.clone());
    let (thread_ctx, thread_shared) = (ctx.clone(), shared.clone());
    let spawned = ThreadRegistry::spawn(
        ctx,
        ThreadRole::Connection,
        format!("hws-conn-{id}"),
        ctx.config.thread_stack_size,
        Some(shared.clone()),
        move |_tag| run(thread_ctx, thread_shared, tcp, rx),
    );
    if let Err(e) = spawned {
        unregister(ctx, &shared, ConnState::Failed);
        return Err(e);
    }
    Ok(())
}

fn run(
    ctx: Arc<ServerContext>,
    shared: Arc<ConnectionShared>,
    tcp: Arc<TcpStream>,
    rx: Receiver<Outbound>,
) {
    // SAFETY: gettid has no preconditions.
    shared
        .tid
        .store(unsafe { libc::gettid() } as u64, Ordering::Relaxed);
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
        Outcome::Upgraded {
            ws,
            identity,
            counted,
        } => {
            ctx.metrics
                .total_connections
                .fetch_add(1, Ordering::Relaxed);
            let mut conn = Connection::new(ctx.clone(), shared.clone(), *ws, rx, identity);
            let end = conn.serve();
            if let Some(session) = &conn.session {
                ctx.events.detach(session, shared.id);
            }
            ctx.services.service_gone(shared.id);
            if counted {
                handshake::release_slot(&ctx, &shared);
            }
            // Unregister first: the socket must stay open while phase 5 may still reach it.
            unregister(&ctx, &shared, end);
            drop(conn);
        }
    }
}

fn unregister(ctx: &ServerContext, shared: &ConnectionShared, end: ConnState) {
    shared.set_state(end, &ctx.metrics);
    ctx.connections.lock().by_id.remove(&shared.id);
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
}

/// The last [`RECENT_IDS`] command ids, kept as keyed hashes (16 bytes each at most).
struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64>,
    hasher: RandomState,
}

impl RecentIds {
    /// Records `id`; true if it was already among the recent ones.
    fn seen_before(&mut self, id: &str) -> bool {
        let h = self.hasher.hash_one(id);
        if !self.set.insert(h) {
            return true;
        }
        self.order.push_back(h);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        false
    }
}

struct Connection {
    ctx: Arc<ServerContext>,
    shared: Arc<ConnectionShared>,
    ws: WebSocket<ClientStream>,
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
    broken: bool,
    rejected: bool,
    in_flight: Vec<InFlight>,
    recent_ids: RecentIds,
    ready: Vec<Readiness>,
    /// The session, once authenticated: subscriptions, seq, replay, unacked events.
    session: Option<Arc<Session>>,
    /// Redelivery timers of reliable events sent, in send order: (due, seq).
    ack_timers: VecDeque<(Instant, u64)>,
    /// Events taken off the queue, written highest priority first.
    batch: Vec<(u64, Arc<EventBody>)>,
}

impl Connection {
    fn new(
        ctx: Arc<ServerContext>,
        shared: Arc<ConnectionShared>,
        ws: WebSocket<ClientStream>,
        rx: Receiver<Outbound>,
        identity: Option<Identity>,
    ) -> Self {
        let now = Instant::now();
        let auth_deadline = identity.is_none().then(|| now + ctx.config.auth_timeout);
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
            ws,
            rx,
            identity,
            auth_deadline,
            last_frame: now,
            last_message: now,
            ping_sent: None,
            close_deadline: None,
            shutdown_deadline: None,
            write_blocked: false,
            broken: false,
            rejected: false,
            in_flight: Vec::new(),
            recent_ids: RecentIds {
                order: VecDeque::new(),
                set: HashSet::new(),
                hasher: RandomState::new(),
            },
            ready: Vec::with_capacity(2),
            session: None,
            ack_timers: VecDeque::new(),
            batch: Vec::new(),
        }
    }

    /// Starts the session of a freshly authenticated client; returns its id.
    fn start_session(&mut self, identity: &Identity) -> String {
        if let Some(old) = self.session.take() {
            self.ctx.events.detach(&old, self.shared.id);
        }
        let session = self
            .ctx
            .events
            .create_session(identity.clone(), &self.shared);
        let id = session.id.clone();
        self.session = Some(session);
        id
    }

    /// The loop. Returns the state the connection ends in.
    fn serve(&mut self) -> ConnState {
        if let Some(identity) = self.identity.clone() {
            let session_id = self.start_session(&identity);
            let welcome = json!({"session_id": session_id, "connection_id": self.shared.id, "role": identity.role.as_str()});
            self.send(events::unsequenced_event("system", "welcome", &welcome));
        }
        loop {
            if self.write_blocked {
                // Woken for writability (or anything else): see whether it cleared first.
                self.flush();
            }
            // Backpressure: while the socket takes no more output, take no more input.
            if (!self.write_blocked && self.read_frames() == Flow::Stop) || self.broken {
                break;
            }
            self.drain_outbound();
            if self.check_timers() == Flow::Stop || self.broken {
                break;
            }
            self.flush();
            if self.broken {
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

    /// Reads every complete frame available without blocking.
    fn read_frames(&mut self) -> Flow {
        loop {
            match self.ws.read() {
                Ok(msg) => {
                    let now = Instant::now();
                    self.last_frame = now;
                    if self.ping_sent.take().is_some()
                        && self.shared.state() == ConnState::Heartbeat
                    {
                        self.shared
                            .set_state(ConnState::Connected, &self.ctx.metrics);
                    }
                    match msg {
                        Message::Text(text) => {
                            self.last_message = now;
                            self.shared
                                .last_activity_ms
                                .store(self.ctx.uptime_ms(), Ordering::Relaxed);
                            Metrics::add(&self.ctx.metrics.messages_in, 1);
                            Metrics::add(&self.ctx.metrics.bytes_in, text.len() as u64);
                            self.ctx
                                .metrics
                                .total_requests
                                .fetch_add(1, Ordering::Relaxed);
                            if self.close_deadline.is_none() {
                                // Events queued before this message arrived go out before
                                // its response: a command is a barrier for the client.
                                self.drain_outbound();
                                let outcome =
                                    catch_unwind(AssertUnwindSafe(|| self.on_text(text.as_str())));
                                if outcome.is_err() {
                                    log::error!(
                                        "conn {} {}: panic while handling a message; closing with 1011",
                                        self.shared.id,
                                        self.shared.peer
                                    );
                                    self.start_close(1011, "internal error");
                                }
                            }
                        }
                        Message::Binary(_) => {
                            self.last_message = now;
                            let err = WireError::new(
                                ErrorCode::InvalidMessage,
                                "binary frames are not accepted: send JSON text frames",
                            );
                            self.send(message::bare_error(&err));
                        }
                        Message::Ping(_) => self.last_message = now,
                        Message::Pong(_) | Message::Frame(_) => {}
                        Message::Close(_) => {
                            // tungstenite queued the reply; flushing sends it, then the next
                            // read reports the connection closed.
                            if self.close_deadline.is_none() {
                                self.close_deadline = Some(wake::after(self.ctx.config.close_wait));
                                self.shared.set_state(ConnState::Closing, &self.ctx.metrics);
                            }
                        }
                    }
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Flow::Continue;
                }
                Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => return Flow::Stop,
                Err(WsError::Capacity(e)) => {
                    log::info!(
                        "conn {} {}: {e}; closing with 1009",
                        self.shared.id,
                        self.shared.peer
                    );
                    let err = WireError::new(
                        ErrorCode::MessageTooLarge,
                        format!(
                            "message larger than MaxMessageSize ({} bytes)",
                            self.ctx.config.max_message_size
                        ),
                    );
                    self.send(message::bare_error(&err));
                    self.start_close(1009, "message too large");
                    return Flow::Continue;
                }
                Err(WsError::Utf8(_)) => {
                    self.start_close(1007, "invalid UTF-8 in text frame");
                    return Flow::Continue;
                }
                Err(WsError::Protocol(p)) => {
                    if self.close_deadline.is_some() {
                        return Flow::Stop;
                    }
                    log::info!(
                        "conn {} {}: protocol error: {p}",
                        self.shared.id,
                        self.shared.peer
                    );
                    if matches!(
                        p,
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
                    ) {
                        return Flow::Stop;
                    }
                    self.start_close(1002, "protocol error");
                    return Flow::Continue;
                }
                Err(e) => {
                    log::debug!(
                        "conn {} {}: read ended: {e}",
                        self.shared.id,
                        self.shared.peer
                    );
                    return Flow::Stop;
                }
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        let incoming = message::parse_incoming(text);
        if self.identity.is_none() {
            return match incoming {
                Ok(Incoming::Command(cmd)) if cmd.channel == "system" && cmd.action == "auth" => {
                    self.late_auth(cmd)
                }
                other => {
                    let to = match &other {
                        Ok(Incoming::Command(c)) => Some(ReplyTo::from(c)),
                        Err(inv) => inv.reply_to.clone(),
                        _ => None,
                    };
                    self.fail_auth(to.as_ref(), "authenticate first: the only command accepted before authentication is system/auth");
                }
            };
        }
        match incoming {
            Err(invalid) => self.send(message::error_reply(
                invalid.reply_to.as_ref(),
                &invalid.error,
            )),
            Ok(Incoming::LegacyStatus) => self.send(status::status_object(&self.ctx).to_string()),
            Ok(Incoming::Ack { id }) => {
                let known = self
                    .session
                    .as_ref()
                    .is_some_and(|s| self.ctx.events.ack(s, Some(&id), None));
                if !known {
                    log::debug!("conn {}: ack {id} for no outstanding event", self.shared.id);
                }
            }
            Ok(Incoming::Command(cmd)) => self.on_command(cmd),
            Ok(Incoming::Response(response)) => {
                let id = response.id.clone();
                let is_service = self
                    .identity
                    .as_ref()
                    .is_some_and(|i| i.role.allows(Role::Service));
                let routed = if is_service {
                    self.ctx.services.on_response(self.shared.id, response)
                } else {
                    Err(WireError::new(
                        ErrorCode::Forbidden,
                        "only service connections send responses",
                    ))
                };
                if let Err(err) = routed {
                    let err = err.with_details(json!({"id": id}));
                    self.send(message::bare_error(&err));
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let to = ReplyTo::from(&cmd);
        if self.recent_ids.seen_before(&cmd.id) {
            let err = WireError::new(
                ErrorCode::DuplicateId,
                format!("command id {:?} was already used in this session", cmd.id),
            );
            return self.send(message::response_error(&to, &err));
        }
        if self.ctx.shutdown.is_requested() {
            let err = WireError::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down; reconnect later",
            );
            return self.send(message::response_error(&to, &err));
        }
        let identity = self
            .identity
            .clone()
            .expect("commands are only handled once authenticated");
        if cmd.channel == "system" {
            if cmd.action == "auth" {
                return self.late_auth(cmd);
            }
            if cmd.action == "resume" {
                return self.resume(cmd);
            }
            let session = self
                .session
                .clone()
                .expect("authenticated connections have a session");
            let result = system_channel::handle(&self.ctx, &self.shared, &identity, &session, &cmd);
            return self.send(match result {
                Ok(data) => message::response_ok(&to, &data),
                Err(err) => message::response_error(&to, &err),
            });
        }
        if !identity.role.allows(Role::Operator) {
            let err = WireError::new(
                ErrorCode::Forbidden,
                format!(
                    "role {} may not send commands on {}",
                    identity.role.as_str(),
                    cmd.channel
                ),
            );
            return self.send(message::response_error(&to, &err));
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let err = WireError::new(
                ErrorCode::RateLimited,
                format!(
                    "{MAX_IN_FLIGHT} commands already wait for a handler; wait for their responses"
                ),
            );
            return self.send(message::response_error(&to, &err));
        }
        match Dispatcher::dispatch(&self.ctx, &self.shared, &identity, cmd) {
            Ok(()) => self.in_flight.push(InFlight {
                to,
                deadline: wake::after(self.ctx.config.handler_timeout),
            }),
            Err(err) => self.send(message::response_error(&to, &err)),
        }
    }

    fn late_auth(&mut self, cmd: Command) {
        let to = ReplyTo::from(&cmd);
        let credential = match (cmd.data.get("key"), cmd.data.get("token")) {
            (Some(Value::String(k)), _) => Credential::Key(k.clone()),
            (_, Some(Value::String(t))) => Credential::Bearer(t.clone()),
            _ => {
                return self.fail_auth(
                    Some(&to),
                    "system/auth needs data {\"key\": \"...\"} or {\"token\": \"...\"}",
                );
            }
        };
        match self.ctx.auth.verify(&credential) {
            Ok(identity) => {
                log::info!(
                    "conn {} {}: authenticated as {} ({})",
                    self.shared.id,
                    self.shared.peer,
                    identity.name,
                    identity.role.as_str()
                );
                let session_id = self.start_session(&identity);
                let data = json!({"role": identity.role.as_str(), "name": identity.name,
                    "connection_id": self.shared.id, "session_id": session_id});
                *self.shared.identity.lock() = Some(identity.clone());
                self.identity = Some(identity);
                self.auth_deadline = None;
                if self.shared.state() == ConnState::Verifying {
                    self.shared
                        .set_state(ConnState::Connected, &self.ctx.metrics);
                }
                self.send(message::response_ok(&to, &data));
            }
            Err(why) => self.fail_auth(Some(&to), why.0),
        }
    }

    /// `system/resume`: take over a detached session and replay what the client missed.
    fn resume(&mut self, cmd: Command) {
        let to = ReplyTo::from(&cmd);
        let current = self
            .session
            .clone()
            .expect("authenticated connections have a session");
        match self.ctx.events.resume(&current, &self.shared, &cmd.data) {
            Err(err) => self.send(message::response_error(&to, &err)),
            Ok(resumed) => {
                log::info!(
                    "conn {} {}: resumed session {} ({} events to replay)",
                    self.shared.id,
                    self.shared.peer,
                    resumed.session.id,
                    resumed.replay.len()
                );
                self.session = Some(resumed.session);
                // Events queued for the discarded session are not this client's any more.
                self.ack_timers.clear();
                self.send(message::response_ok(&to, &resumed.response));
                for (seq, body) in resumed.replay {
                    self.send_event(seq, &body, true);
                }
            }
        }
    }

    /// Writes one event of the session and arms its redelivery timer when reliable.
    fn send_event(&mut self, seq: u64, body: &EventBody, redelivered: bool) {
        self.send(body.text(seq, redelivered));
        self.ctx
            .events
            .metrics
            .delivered
            .fetch_add(1, Ordering::Relaxed);
        if body.reliable {
            let due = wake::after(self.ctx.config.delivery.ack_timeout);
            self.ack_timers.push_back((due, seq));
        }
    }

    /// `auth_failed` (as a response when the id is known) and close 1008.
    fn fail_auth(&mut self, to: Option<&ReplyTo>, why: &str) {
        log::info!(
            "conn {} {}: authentication failed: {why}",
            self.shared.id,
            self.shared.peer
        );
        self.ctx.metrics.count_rejection("auth_failed");
        let err = WireError::new(ErrorCode::AuthFailed, why);
        self.send(message::error_reply(to, &err));
        self.rejected = true;
        self.start_close(1008, "authentication failed");
    }

    /// Takes queued messages while the socket accepts writes.
    fn drain_outbound(&mut self) {
        if let Some(code) = self.shared.urgent_close()
            && self.close_deadline.is_none()
        {
            // Slow client: what is queued stays in its session for a resume.
            self.batch.clear();
            while self.rx.try_recv().is_ok() {
                self.shared.took_one();
            }
            self.start_close(code, "too slow: resume the session");
            return;
        }
        self.write_batch();
        while !self.write_blocked && self.close_deadline.is_none() && !self.broken {
            let Ok(msg) = self.rx.try_recv() else { break };
            self.shared.took_one();
            match msg {
                Outbound::Text(text) => {
                    self.write_batch();
                    self.send(text);
                }
                Outbound::Event { seq, body } => {
                    self.batch.push((seq, body));
                    if self.batch.len() >= EVENT_BATCH {
                        self.write_batch();
                    }
                }
                Outbound::Reply { id, text } => {
                    if let Some(i) = self.in_flight.iter().position(|f| f.to.id == id) {
                        self.in_flight.swap_remove(i);
                        self.send(text);
                    }
                }
                Outbound::Close { code, reason } => {
                    self.write_batch();
                    self.start_close(code, reason);
                }
            }
        }
        self.write_batch();
        if !self.write_blocked
            && self.close_deadline.is_none()
            && let Some(status) = self.shared.take_status()
        {
            self.send(status.to_string());
            self.ctx
                .events
                .metrics
                .status_sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queued or batched output, a pending status, or an urgent close.
    fn has_output_waiting(&self) -> bool {
        !self.rx.is_empty()
            || !self.batch.is_empty()
            || self.shared.has_status()
            || self.shared.urgent_close().is_some()
    }

    /// Writes batched events, highest priority first (stable: publish order within a
    /// priority), until the socket stops accepting; the rest wait for the next round.
    fn write_batch(&mut self) {
        if self.batch.is_empty() || self.close_deadline.is_some() {
            return;
        }
        self.batch.sort_by_key(|(_, body)| body.priority);
        let mut written = 0;
        while written < self.batch.len() && !self.write_blocked && !self.broken {
            let (seq, body) = self.batch[written].clone();
            self.send_event(seq, &body, false);
            written += 1;
        }
        self.batch.drain(..written);
    }

    /// Fires due timers; returns Stop when the connection must end now.
    fn check_timers(&mut self) -> Flow {
        let now = Instant::now();
        let ctx = self.ctx.clone();
        let config = &ctx.config;
        if self.ctx.shutdown.is_requested() {
            if self.ctx.shutdown.waits_skipped() {
                return Flow::Stop;
            }
            // Half of CloseWaitMs to flush the queue and collect answers of commands still
            // with a handler; the other half for the close handshake.
            let deadline = *self
                .shutdown_deadline
                .get_or_insert_with(|| wake::after(config.close_wait / 2));
            let flushed = self.rx.is_empty()
                && self.batch.is_empty()
                && !self.write_blocked
                && self.in_flight.is_empty();
            if self.close_deadline.is_none() && (flushed || now >= deadline) {
                for pending in std::mem::take(&mut self.in_flight) {
                    let err = WireError::new(
                        ErrorCode::ShuttingDown,
                        "the server shut down before the handler answered",
                    );
                    self.send(message::response_error(&pending.to, &err));
                }
                self.start_close(1001, "server shutting down");
            }
        }
        if let Some(d) = self.close_deadline {
            return if now >= d { Flow::Stop } else { Flow::Continue };
        }
        if self.auth_deadline.is_some_and(|d| now >= d) {
            self.fail_auth(
                None,
                "authentication timeout: send system/auth within AuthTimeoutMs",
            );
            return Flow::Continue;
        }
        match self.ping_sent {
            Some(sent) if now >= sent + config.pong_timeout => {
                log::info!(
                    "conn {} {}: no frame within {:?} of a ping; closing",
                    self.shared.id,
                    self.shared.peer,
                    config.pong_timeout
                );
                self.start_close(1011, "heartbeat timeout");
                return Flow::Continue;
            }
            None if now >= self.last_frame + config.heartbeat_interval => {
                self.ping_sent = Some(now);
                self.shared
                    .set_state(ConnState::Heartbeat, &self.ctx.metrics);
                self.send_message(Message::Ping(Default::default()));
            }
            _ => {}
        }
        if let Some(idle) = config.idle_timeout
            && now >= self.last_message + idle
        {
            // A subscriber is listening, not idle; the heartbeat watches its liveness.
            if self.session.as_ref().is_some_and(|s| s.has_subscriptions()) {
                self.last_message = now;
            } else {
                self.shared
                    .set_state(ConnState::Inactive, &self.ctx.metrics);
                self.start_close(1000, "idle timeout");
                return Flow::Continue;
            }
        }
        while let Some(&(due, seq)) = self.ack_timers.front() {
            if now < due {
                break;
            }
            self.ack_timers.pop_front();
            let Some(session) = self.session.clone() else {
                break;
            };
            match self
                .ctx
                .events
                .redeliver(&session, seq, config.delivery.max_retries)
            {
                Redelivery::Acked => {}
                Redelivery::Resend(text) => {
                    self.send(text);
                    self.ack_timers
                        .push_back((wake::after(config.delivery.ack_timeout), seq));
                }
                Redelivery::GiveUp => {
                    log::info!(
                        "conn {} {}: event seq {seq} not acknowledged after {} redeliveries; closing",
                        self.shared.id,
                        self.shared.peer,
                        config.delivery.max_retries
                    );
                    self.start_close(1008, "events not acknowledged");
                    return Flow::Continue;
                }
            }
        }
        let mut expired = Vec::new();
        self.in_flight.retain(|f| {
            let keep = now < f.deadline;
            if !keep {
                expired.push(f.to.clone());
            }
            keep
        });
        for to in expired {
            let err = WireError::new(
                ErrorCode::Timeout,
                format!(
                    "no response from the {} handler within {:?}",
                    to.channel, config.handler_timeout
                ),
            );
            self.send(message::response_error(&to, &err));
        }
        Flow::Continue
    }

    fn next_deadline(&self) -> Option<Instant> {
        let c = &self.ctx.config;
        if self.close_deadline.is_some() {
            return self.close_deadline;
        }
        let heartbeat = match self.ping_sent {
            Some(sent) => sent + c.pong_timeout,
            None => self.last_frame + c.heartbeat_interval,
        };
        wake::earliest([
            Some(heartbeat),
            self.auth_deadline,
            self.shutdown_deadline,
            c.idle_timeout.map(|i| self.last_message + i),
            self.in_flight.iter().map(|f| f.deadline).min(),
            self.ack_timers.front().map(|(due, _)| *due),
        ])
    }

    /// Sleeps until the socket or the wake descriptor is ready or the next timer is due.
    fn sleep(&mut self) -> Flow {
        let fd = self.ws.get_ref().raw_fd();
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
        if let Err(e) = wake::wait(&interests[..watched], self.next_deadline(), &mut self.ready) {
            log::error!("conn {}: poll failed: {e}", self.shared.id);
            return Flow::Stop;
        }
        if self.ready[1].readable {
            self.shared.waker.reset();
        }
        Flow::Continue
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
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        match self.ws.close(Some(frame)) {
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true
            }
            Err(_) => self.broken = true,
        }
    }

    fn send(&mut self, text: String) {
        self.send_message(Message::Text(text.into()));
    }

    fn send_message(&mut self, msg: Message) {
        let len = msg.len() as u64;
        match self.ws.write(msg) {
            Ok(()) => {}
            // The frame is in tungstenite's buffer; the socket is full for now.
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true
            }
            Err(WsError::WriteBufferFull(_)) => {
                log::info!(
                    "conn {} {}: not reading its responses; dropping it",
                    self.shared.id,
                    self.shared.peer
                );
                self.broken = true;
                return;
            }
            Err(e) => {
                log::debug!("conn {}: write failed: {e}", self.shared.id);
                self.broken = true;
                return;
            }
        }
        Metrics::add(&self.ctx.metrics.messages_out, 1);
        Metrics::add(&self.ctx.metrics.bytes_out, len);
    }

    fn flush(&mut self) {
        match self.ws.flush() {
            Ok(()) => self.write_blocked = false,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true
            }
            Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => self.broken = true,
            Err(e) => {
                log::debug!("conn {}: flush failed: {e}", self.shared.id);
                self.broken = true;
            }
        }
    }
}
