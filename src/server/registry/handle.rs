//! What every thread may see of a connection and do to it: its queue (the queue mutex of the
//! C design is the channel's), its wake descriptor, its state, its identity, and its WebSocket
//! (the connection's write lock). The connection thread owns the socket; everybody else holds
//! an `Arc<ConnectionHandle>`.
#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tungstenite::WebSocket;

use crate::server::events::event::EventBody;
use crate::server::net::stream::Transport;
use crate::server::registry::metrics::Metrics;
use crate::server::registry::state::ConnState;
use crate::server::security::identity::Identity;
use crate::wake::Waker;

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
pub(crate) struct ConnectionHandle {
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
    /// The newest status event not yet sent: status is coalesced, never queued.
    status_slot: Mutex<Option<Arc<str>>>,
    /// A close that must not wait behind the queue (slow client): code, or 0.
    urgent_close: AtomicU16,
    /// The connection's WebSocket, once upgraded: the connection's write lock. The
    /// connection thread takes it for each read and write (never across a wait); a
    /// publisher takes it to write an event straight to an idle subscriber
    /// (`connection::direct`).
    pub(crate) ws: Mutex<Option<WebSocket<Transport>>>,
    /// Set by the connection thread while it sleeps with nothing waiting to be written (no
    /// queue, no batch, no replay, no close, socket writable): events may then be written
    /// straight to the socket, in order, without waking the thread.
    pub(crate) idle_writable: AtomicBool,
    /// This connection wrote events to other connections without flushing them (it is a
    /// service publishing several events in one read round): they are flushed together at
    /// the end of the round, one `send(2)` per subscriber for the lot.
    pub(crate) corked: Mutex<Vec<Arc<ConnectionHandle>>>,
    /// Events were written to this connection's buffer by a corked publisher and not yet
    /// flushed (it is in that publisher's `corked` list).
    pub(crate) awaiting_flush: AtomicBool,
    /// The client has sent an envelope message (command, ack, response): it speaks the
    /// envelope protocol, so LegacyStatusPush no longer sends it bare status objects.
    pub(crate) spoke_envelope: AtomicBool,
    /// permessage-deflate was negotiated (thread dump, `/metrics`).
    pub(crate) compressed: AtomicBool,
}

/// The client's queue is over OutboundQueueLimit.
#[derive(Debug)]
pub(crate) struct QueueFull;

impl ConnectionHandle {
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        socket: Weak<TcpStream>,
        outbound: Sender<Outbound>,
        waker: Waker,
    ) -> Self {
        ConnectionHandle {
            id,
            peer,
            socket,
            outbound,
            queued: AtomicUsize::new(0),
            waker,
            state: AtomicU8::new(ConnState::Connecting as u8),
            identity: Mutex::new(None),
            last_activity_ms: AtomicU64::new(0),
            status_slot: Mutex::new(None),
            urgent_close: AtomicU16::new(0),
            ws: Mutex::new(None),
            idle_writable: AtomicBool::new(false),
            corked: Mutex::new(Vec::new()),
            awaiting_flush: AtomicBool::new(false),
            spoke_envelope: AtomicBool::new(false),
            compressed: AtomicBool::new(false),
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
