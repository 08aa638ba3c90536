//! The `hwc-io` thread: owns the socket, sleeps in `poll(2)` on it and on its wake descriptor,
//! and does everything that touches the link — writes what the API queued, reads frames,
//! answers waiting requests, routes events to subscription queues, acks reliable events,
//! restores the session after a reconnect, and runs the callbacks.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::callbacks::{self, Callbacks, ConnectInfo, DisconnectInfo, ReconnectInfo};
use super::link::{self, Socket};
use super::shared::{IoCommand, LinkEvent, Shared};
use super::subscription::{ClientEvent, GapReason, SeenSeqs};
use crate::error::Error;
use crate::message::{ErrorCode, WireError};
use crate::wake::{self, Interest};

/// Requests the I/O thread makes itself while restoring a session.
enum Internal {
    /// The first message on a link with credentials: a `system/ping`, which the server
    /// answers with the welcome first (it never speaks first).
    Hello,
    /// `system/resume` of the previous session.
    Resume,
    /// `system/subscribe` of every local channel on a new session.
    Resubscribe,
    /// Subscriptions added or removed to make the server's set match ours.
    Reconcile,
}

enum Phase {
    /// Credentials were sent: the server's `system/welcome` comes first.
    AwaitingWelcome { deadline: Instant },
    /// Waiting for the answer to a resume or re-subscribe.
    Restoring { deadline: Instant },
    /// Open for the application.
    Ready,
}

struct Link {
    ws: Socket,
    generation: u64,
    phase: Phase,
    /// Reconnection attempts it took (0 for the first link).
    attempts: u32,
    up_at: Instant,
    /// Messages from the API while the session is being restored (text, request id).
    held: Vec<(String, Option<String>)>,
    internal: HashMap<String, Internal>,
    write_blocked: bool,
    /// Set when the link must end: (close code, reason).
    broken: Option<(u16, String)>,
    /// The close frame the server sent.
    close_received: Option<(u16, String)>,
    /// `disconnect()`: our close frame is out; wait for the server's until then.
    close_deadline: Option<Instant>,
    resumed: bool,
    gap: bool,
    welcome: Value,
}

pub(crate) struct Io {
    shared: Arc<Shared>,
    callbacks: Callbacks,
    commands: Receiver<IoCommand>,
    link_events: Receiver<LinkEvent>,
    link: Option<Link>,
    session_id: Option<String>,
    seen: SeenSeqs,
    links_so_far: u64,
    /// `disconnect()` was called: no more links.
    stopping: bool,
}

impl Io {
    pub(crate) fn new(
        shared: Arc<Shared>,
        callbacks: Callbacks,
        commands: Receiver<IoCommand>,
        link_events: Receiver<LinkEvent>,
        first: Socket,
    ) -> Io {
        let mut io = Io {
            shared,
            callbacks,
            commands,
            link_events,
            link: None,
            session_id: None,
            seen: SeenSeqs::default(),
            links_so_far: 0,
            stopping: false,
        };
        io.take_link(first, 0);
        io
    }

    pub(crate) fn run(mut self) {
        let mut ready = Vec::with_capacity(2);
        loop {
            self.shared.io_waker.reset();
            while let Ok(ev) = self.link_events.try_recv() {
                self.on_link_event(ev);
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.on_command(cmd);
            }
            if !self.stopping && self.shared.close_requested.load(Ordering::SeqCst) {
                self.start_close();
            }
            if self.link.is_some() {
                self.pump();
            }
            if self.stopping && self.link.is_none() {
                break;
            }
            let mut interests = vec![Interest {
                fd: self.shared.io_waker.raw_fd(),
                read: true,
                write: false,
            }];
            let mut deadline = None;
            if let Some(link) = &self.link {
                interests.push(Interest {
                    fd: link.ws.get_ref().raw_fd(),
                    read: true,
                    write: link.write_blocked,
                });
                deadline = link.close_deadline.or(match link.phase {
                    Phase::AwaitingWelcome { deadline } | Phase::Restoring { deadline } => {
                        Some(deadline)
                    }
                    Phase::Ready => None,
                });
            }
            if let Err(e) = wake::wait(&interests, deadline, &mut ready) {
                log::error!("client: poll failed: {e}; the client stops");
                self.stopping = true;
                if let Some(link) = self.link.take() {
                    link.ws.get_ref().shutdown();
                }
                break;
            }
        }
        self.fail_pending();
        self.shared.stop_everything();
    }

    // ----- links coming and going -------------------------------------------------------

    fn take_link(&mut self, ws: Socket, attempts: u32) {
        let generation = self.shared.link_up();
        let deadline = wake::after(self.shared.config.handshake_timeout);
        let phase = if self.shared.credentials.lock().is_some() {
            Phase::AwaitingWelcome { deadline }
        } else {
            Phase::Restoring { deadline }
        };
        self.link = Some(Link {
            ws,
            generation,
            phase,
            attempts,
            up_at: Instant::now(),
            held: Vec::new(),
            internal: HashMap::new(),
            write_blocked: false,
            broken: None,
            close_received: None,
            close_deadline: None,
            resumed: false,
            gap: false,
            welcome: Value::Null,
        });
        self.shared.frame_arrived();
        match self.link.as_ref().map(|l| &l.phase) {
            // No credentials, so no welcome and no session to resume.
            Some(Phase::Restoring { .. }) => self.restore(None),
            Some(Phase::AwaitingWelcome { .. }) => {
                self.internal_request("ping", json!({}), Internal::Hello)
            }
            _ => {}
        }
    }

    fn on_link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Up { socket, attempts } => {
                if self.stopping || self.link.is_some() {
                    drop(socket);
                    return;
                }
                self.take_link(*socket, attempts);
            }
            LinkEvent::AttemptFailed { error } => {
                callbacks::call(&mut self.callbacks.error, &error)
            }
            LinkEvent::GaveUp { error } => {
                log::warn!("client: gave up reconnecting: {error}");
                callbacks::call(&mut self.callbacks.error, &error);
            }
        }
    }

    /// Ends the current link: fails what waits on it, tells the reconnect thread whether to
    /// dial again, and calls `on_disconnect`.
    fn drop_link(&mut self, code: u16, reason: String) {
        let Some(link) = self.link.take() else {
            return;
        };
        link.ws.get_ref().shutdown();
        let lost_sends = link.held.iter().filter(|(_, r)| r.is_none()).count();
        drop(link.ws);
        let policy = &self.shared.config.reconnect;
        let will_reconnect = !self.stopping && policy.enabled && link::close_allows_reconnect(code);
        let stable = link.up_at.elapsed() >= policy.reset_after;
        self.shared.link_down(will_reconnect, stable);
        self.fail_pending();
        log::info!("client: link closed ({code} {reason}); reconnect: {will_reconnect}");
        if lost_sends > 0 {
            let err = Error::Disconnected;
            callbacks::call(&mut self.callbacks.error, &err);
        }
        let info = DisconnectInfo {
            code,
            reason,
            will_reconnect,
        };
        callbacks::call(&mut self.callbacks.disconnect, &info);
    }

    /// Fails every waiting request with `Disconnected`.
    fn fail_pending(&mut self) {
        let waiting: Vec<_> = self.shared.pending.lock().drain().collect();
        for (_, tx) in waiting {
            let _ = tx.try_send(Err(Error::Disconnected));
        }
    }

    // ----- commands from the API and the heartbeat --------------------------------------

    fn on_command(&mut self, cmd: IoCommand) {
        match cmd {
            IoCommand::Send { text, request } => {
                // A request whose caller was already answered (Disconnected by a link that
                // dropped since, or Timeout) is not sent: it must not run unbeknown to it.
                if let Some(id) = &request
                    && !self.shared.pending.lock().contains_key(id)
                {
                    return;
                }
                match &mut self.link {
                    Some(link) if matches!(link.phase, Phase::Ready) => write_text(link, text),
                    Some(link) => link.held.push((text, request)),
                    None => match request {
                        Some(id) => {
                            if let Some(tx) = self.shared.pending.lock().remove(&id) {
                                let _ = tx.try_send(Err(Error::Disconnected));
                            }
                        }
                        None => callbacks::call(&mut self.callbacks.error, &Error::Disconnected),
                    },
                }
            }
            IoCommand::Ping { generation } => {
                if let Some(link) = &mut self.link
                    && link.generation == generation
                    && link.close_deadline.is_none()
                {
                    match link.ws.write(Message::Ping(Vec::new().into())) {
                        Ok(()) => {}
                        Err(e) => note_write_error(link, e),
                    }
                }
            }
            IoCommand::LinkDead { generation, why } => {
                if self
                    .link
                    .as_ref()
                    .is_some_and(|l| l.generation == generation)
                {
                    self.drop_link(1006, why);
                }
            }
        }
    }

    /// `disconnect()`: send a close frame and wait (until `close_timeout`) for the server's.
    fn start_close(&mut self) {
        self.stopping = true;
        if let Some(link) = &mut self.link {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "client disconnect".into(),
            };
            link.close_deadline = Some(wake::after(self.shared.config.close_timeout));
            if let Err(e) = link.ws.close(Some(frame)) {
                note_write_error(link, e);
            }
        }
    }

    // ----- reading ----------------------------------------------------------------------

    /// Reads until the socket has nothing more, writes what is queued, checks deadlines.
    fn pump(&mut self) {
        loop {
            let Some(link) = &mut self.link else { return };
            if link.broken.is_some() {
                break;
            }
            match link.ws.read() {
                Ok(msg) => {
                    self.shared.frame_arrived();
                    match msg {
                        Message::Text(t) => self.on_text(t.as_str()),
                        Message::Close(frame) => {
                            link.close_received = Some(match frame {
                                Some(f) => (u16::from(f.code), f.reason.to_string()),
                                None => (1005, String::new()),
                            });
                        }
                        Message::Binary(_) => {
                            log::debug!("client: binary message from the server ignored")
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    let (code, reason) = link
                        .close_received
                        .take()
                        .unwrap_or((1006, "connection closed".into()));
                    link.broken = Some((code, reason));
                }
                Err(e) => {
                    let closed = link.close_received.take();
                    link.broken = Some(closed.unwrap_or((1006, e.to_string())));
                }
            }
        }
        let Some(link) = &mut self.link else { return };
        if link.broken.is_none() {
            match link.ws.flush() {
                Ok(()) => link.write_blocked = false,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    link.write_blocked = true
                }
                Err(e) => note_write_error(link, e),
            }
        }
        let now = Instant::now();
        if link.broken.is_none() {
            if link.close_deadline.is_some_and(|d| now >= d) {
                link.broken = Some((1006, "no close frame from the server in time".into()));
            } else if let Phase::AwaitingWelcome { deadline } = link.phase
                && now >= deadline
            {
                link.broken = Some((1006, "no system/welcome from the server in time".into()));
            } else if let Phase::Restoring { deadline } = link.phase
                && now >= deadline
            {
                link.broken = Some((1006, "session not restored in time".into()));
            }
        }
        if let Some((code, reason)) = link.broken.take() {
            self.drop_link(code, reason);
        }
    }

    fn on_text(&mut self, text: &str) {
        let msg: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("client: the server sent text that is not JSON ({e})");
                return;
            }
        };
        match msg.get("type").and_then(Value::as_str) {
            Some("response") => {
                if self.on_response(&msg) {
                    return;
                }
            }
            Some("event") => self.on_event(&msg),
            _ => {
                if let Some(err) = msg.get("error") {
                    let e = Error::Server(wire_error(err));
                    callbacks::call(&mut self.callbacks.error, &e);
                }
            }
        }
        if let Some(f) = &mut self.callbacks.text {
            f(text);
        }
        callbacks::call(&mut self.callbacks.message, &msg);
    }

    /// Routes a response to its request; true when it answered the client's own request.
    fn on_response(&mut self, msg: &Value) -> bool {
        let Some(id) = msg.get("id").and_then(Value::as_str) else {
            return false;
        };
        let result = if msg.get("status").and_then(Value::as_str) == Some("ok") {
            Ok(msg.get("data").cloned().unwrap_or(Value::Null))
        } else {
            Err(Error::Server(wire_error(&msg["error"])))
        };
        if let Some(internal) = self.link.as_mut().and_then(|l| l.internal.remove(id)) {
            self.on_internal(internal, result);
            return true;
        }
        if let Some(tx) = self.shared.pending.lock().remove(id) {
            let _ = tx.try_send(result);
        }
        false
    }

    fn on_event(&mut self, msg: &Value) {
        let event = ClientEvent::from_message(msg);
        if event.channel == "system" && event.action == "welcome" {
            return self.on_welcome(event.data);
        }
        if let Some(seq) = event.seq
            && self.seen.contains(seq)
        {
            // Already handed over (a replay overlapping what arrived before the cut).
            if event.reliable {
                self.ack(&event.id);
            }
            return;
        }
        let routed = self.shared.subscriptions.lock().route(&event);
        if routed.delivered {
            if let Some(seq) = event.seq {
                self.seen.mark(seq);
            }
            if event.reliable {
                self.ack(&event.id);
            }
        }
        for channel in routed.full {
            let e = Error::QueueFull(format!("subscription queue of channel {channel}"));
            callbacks::call(&mut self.callbacks.error, &e);
        }
        for channel in routed.abandoned {
            self.internal_request(
                "unsubscribe",
                json!({"channels": [channel]}),
                Internal::Reconcile,
            );
        }
    }

    fn ack(&mut self, id: &str) {
        if let Some(link) = &mut self.link {
            write_text(link, json!({"type": "ack", "id": id}).to_string());
        }
    }

    // ----- restoring the session --------------------------------------------------------

    fn on_welcome(&mut self, data: Value) {
        let Some(link) = &mut self.link else { return };
        if !matches!(link.phase, Phase::AwaitingWelcome { .. }) {
            return;
        }
        link.phase = Phase::Restoring {
            deadline: wake::after(self.shared.config.handshake_timeout),
        };
        link.welcome = data.clone();
        let new_session = data["session_id"].as_str().map(str::to_owned);
        match self.session_id.clone() {
            Some(old) if self.links_so_far > 0 => {
                let last_seq = self.seen.through();
                self.internal_request(
                    "resume",
                    json!({"session_id": old, "last_seq": last_seq}),
                    Internal::Resume,
                );
            }
            _ => self.restore(new_session),
        }
    }

    /// Starts `session` (new, or none) and subscribes again to every local channel.
    fn restore(&mut self, session: Option<String>) {
        self.session_id = session;
        self.seen.restart_at(1);
        let channels = self.shared.subscriptions.lock().channels();
        if self.links_so_far == 0 || channels.is_empty() {
            return self.become_ready();
        }
        if let Some(link) = &mut self.link {
            link.gap = true;
        }
        self.shared
            .subscriptions
            .lock()
            .mark_gap(GapReason::SessionLost);
        self.internal_request(
            "subscribe",
            json!({"channels": channels}),
            Internal::Resubscribe,
        );
    }

    fn on_internal(&mut self, internal: Internal, result: Result<Value, Error>) {
        match (internal, result) {
            (Internal::Resume, Ok(data)) => {
                let resumed = data["resumed"].as_bool() == Some(true);
                self.session_id = data["session_id"].as_str().map(str::to_owned);
                if let Some(link) = &mut self.link {
                    link.resumed = true;
                    link.gap = !resumed;
                }
                if !resumed {
                    self.seen.restart_at(data["next_seq"].as_u64().unwrap_or(1));
                    self.shared
                        .subscriptions
                        .lock()
                        .mark_gap(GapReason::ReplayOverflow);
                }
                self.reconcile(&data);
                self.become_ready();
            }
            (Internal::Resume, Err(e)) => {
                log::info!("client: session not resumed ({e}); subscribing again");
                let new_session = self
                    .link
                    .as_ref()
                    .and_then(|l| l.welcome["session_id"].as_str().map(str::to_owned));
                self.restore(new_session);
            }
            (Internal::Resubscribe, result) => {
                if let Err(e) = result {
                    callbacks::call(&mut self.callbacks.error, &e);
                }
                self.become_ready();
            }
            (Internal::Hello, _) => {}
            (Internal::Reconcile, Err(e)) => callbacks::call(&mut self.callbacks.error, &e),
            (Internal::Reconcile, Ok(_)) => {}
        }
    }

    /// After a resume the server has the old session's subscriptions: add ours it lacks,
    /// drop the ones nobody here wants any more.
    fn reconcile(&mut self, data: &Value) {
        let theirs: Vec<String> = data["subscriptions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["channel"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let ours = self.shared.subscriptions.lock().channels();
        let missing: Vec<&String> = ours.iter().filter(|c| !theirs.contains(c)).collect();
        let extra: Vec<&String> = theirs.iter().filter(|c| !ours.contains(c)).collect();
        if !missing.is_empty() {
            self.internal_request(
                "subscribe",
                json!({"channels": missing}),
                Internal::Reconcile,
            );
        }
        if !extra.is_empty() {
            self.internal_request(
                "unsubscribe",
                json!({"channels": extra}),
                Internal::Reconcile,
            );
        }
    }

    fn become_ready(&mut self) {
        let Some(link) = &mut self.link else { return };
        link.phase = Phase::Ready;
        for (text, request) in std::mem::take(&mut link.held) {
            let answered = request
                .as_ref()
                .is_some_and(|id| !self.shared.pending.lock().contains_key(id));
            if !answered {
                write_text(link, text);
            }
        }
        let reconnects = self.links_so_far;
        self.links_so_far += 1;
        let info = ConnectInfo {
            session_id: self.session_id.clone(),
            connection_id: link.welcome["connection_id"].as_u64(),
            role: link.welcome["role"].as_str().map(str::to_owned),
            reconnects,
        };
        let again = (reconnects > 0).then_some(ReconnectInfo {
            attempts: link.attempts,
            resumed: link.resumed && !link.gap,
            gap: link.gap,
        });
        self.shared.ready(self.session_id.clone());
        callbacks::call(&mut self.callbacks.connect, &info);
        if let Some(again) = again {
            callbacks::call(&mut self.callbacks.reconnect, &again);
        }
    }

    fn internal_request(&mut self, action: &str, data: Value, kind: Internal) {
        let Some(link) = &mut self.link else { return };
        let id = self.shared.next_request_id();
        let text = json!({"type": "command", "id": id, "channel": "system", "action": action, "data": data});
        link.internal.insert(id, kind);
        write_text(link, text.to_string());
    }
}

fn write_text(link: &mut Link, text: String) {
    if link.broken.is_some() || link.close_deadline.is_some() {
        return;
    }
    match link.ws.write(Message::Text(text.into())) {
        Ok(()) => {}
        Err(e) => note_write_error(link, e),
    }
}

fn note_write_error(link: &mut Link, e: WsError) {
    match e {
        WsError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => link.write_blocked = true,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            let closed = link.close_received.take();
            link.broken = Some(closed.unwrap_or((1006, "connection closed".into())));
        }
        // A write that fails after the server's close frame arrived (tungstenite refuses to
        // send after closing) ends the link with the server's code, not as a broken link:
        // otherwise a 1008 would look like 1006 and be retried.
        other => {
            let closed = link.close_received.take();
            link.broken = Some(closed.unwrap_or((1006, format!("write failed: {other}"))));
        }
    }
}

/// An error object from the server; a code this version does not know is `server_error`.
fn wire_error(err: &Value) -> WireError {
    WireError::from_object(err).unwrap_or_else(|(_, message, details)| {
        WireError::new(ErrorCode::ServerError, message).with_details(details)
    })
}
