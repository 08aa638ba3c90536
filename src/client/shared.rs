//! What the API and the client's three threads share: the link state under one mutex with a
//! condvar (the heartbeat and reconnect threads sleep on it), the waiting requests, the
//! subscription table, and the queue to the I/O thread. Each lock is held for a few
//! instructions, never across I/O or a callback, and never two at once.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use serde_json::Value;

use super::config::{ClientConfig, Credentials};
use super::link::{Dialer, Socket};
use super::subscription::SubscriptionTable;
use crate::error::Error;
use crate::wake::Waker;

/// What the API and the heartbeat ask of the I/O thread.
pub(crate) enum IoCommand {
    /// A text message; `request` is its id when someone waits for the response.
    Send {
        text: String,
        request: Option<String>,
    },
    /// The link has been silent for the heartbeat interval.
    Ping { generation: u64 },
    /// No frame within the pong timeout after a ping.
    LinkDead { generation: u64, why: String },
}

/// What the reconnect thread tells the I/O thread.
pub(crate) enum LinkEvent {
    Up { socket: Box<Socket>, attempts: u32 },
    AttemptFailed { error: Error },
    GaveUp { error: Error },
}

#[derive(Debug, Default)]
pub(crate) struct LinkState {
    /// The I/O thread holds a socket.
    pub link_up: bool,
    /// ... and the session is restored: the API may send.
    pub ready: bool,
    /// Increases with every link, so a late ping or verdict for an old one is ignored.
    pub generation: u64,
    /// Links that became ready so far.
    pub ready_count: u64,
    /// The reconnect thread should dial.
    pub want_link: bool,
    /// The last link was up long enough to reset the backoff.
    pub reset_backoff: bool,
    /// The reconnect thread stopped trying (max attempts, or a refusal it cannot fix).
    pub gave_up: bool,
    /// Everything is ending.
    pub stopping: bool,
    /// Client threads still running.
    pub running_threads: usize,
    pub session_id: Option<String>,
}

pub(crate) struct Shared {
    pub config: ClientConfig,
    pub dialer: Dialer,
    pub credentials: Mutex<Option<Credentials>>,
    pub state: Mutex<LinkState>,
    /// Notified on every change of `state`.
    pub changed: Condvar,
    pub pending: Mutex<HashMap<String, Sender<Result<Value, Error>>>>,
    pub subscriptions: Mutex<SubscriptionTable>,
    pub to_io: Sender<IoCommand>,
    pub link_events: Sender<LinkEvent>,
    pub io_waker: Waker,
    pub io_thread: OnceLock<ThreadId>,
    /// `disconnect()` was called (a flag, not a queued command, so a full queue cannot stop it).
    pub close_requested: AtomicBool,
    next_id: AtomicU64,
    origin: Instant,
    /// Nanoseconds after `origin` of the last frame received.
    last_frame_ns: AtomicU64,
    /// Nanoseconds after `origin` of the outstanding ping, 0 when none.
    ping_sent_ns: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: ClientConfig,
        dialer: Dialer,
        to_io: Sender<IoCommand>,
        link_events: Sender<LinkEvent>,
        io_waker: Waker,
    ) -> Shared {
        Shared {
            credentials: Mutex::new(config.credentials.clone()),
            config,
            dialer,
            state: Mutex::new(LinkState::default()),
            changed: Condvar::new(),
            pending: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(SubscriptionTable::default()),
            to_io,
            link_events,
            io_waker,
            io_thread: OnceLock::new(),
            close_requested: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            origin: Instant::now(),
            last_frame_ns: AtomicU64::new(0),
            ping_sent_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn next_request_id(&self) -> String {
        format!("c-{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn ns_now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }

    fn at(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns.saturating_sub(1))
    }

    /// Any frame from the server: the link is alive, no ping outstanding.
    pub(crate) fn frame_arrived(&self) {
        self.last_frame_ns.store(self.ns_now(), Ordering::Relaxed);
        self.ping_sent_ns.store(0, Ordering::Relaxed);
    }

    pub(crate) fn last_frame(&self) -> Instant {
        self.at(self.last_frame_ns.load(Ordering::Relaxed))
    }

    pub(crate) fn ping_sent(&self) -> Option<Instant> {
        match self.ping_sent_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.at(ns)),
        }
    }

    pub(crate) fn note_ping_sent(&self) {
        self.ping_sent_ns.store(self.ns_now(), Ordering::Relaxed);
    }

    /// A new link: returns its generation.
    pub(crate) fn link_up(&self) -> u64 {
        let mut st = self.state.lock();
        st.link_up = true;
        st.ready = false;
        st.want_link = false;
        st.generation += 1;
        let generation = st.generation;
        drop(st);
        self.changed.notify_all();
        generation
    }

    pub(crate) fn ready(&self, session_id: Option<String>) {
        let mut st = self.state.lock();
        st.ready = true;
        st.ready_count += 1;
        st.session_id = session_id;
        drop(st);
        self.changed.notify_all();
    }

    pub(crate) fn link_down(&self, reconnect: bool, stable: bool) {
        let mut st = self.state.lock();
        st.link_up = false;
        st.ready = false;
        st.want_link = reconnect && !st.stopping;
        st.reset_backoff = stable;
        if !reconnect {
            st.gave_up = true;
        }
        drop(st);
        self.changed.notify_all();
    }

    /// The I/O thread has ended: the others end too.
    pub(crate) fn stop_everything(&self) {
        let mut st = self.state.lock();
        st.stopping = true;
        st.link_up = false;
        st.ready = false;
        drop(st);
        self.changed.notify_all();
    }

    /// Called by each client thread as it ends.
    pub(crate) fn thread_exited(&self) {
        let mut st = self.state.lock();
        st.running_threads = st.running_threads.saturating_sub(1);
        drop(st);
        self.changed.notify_all();
    }
}
