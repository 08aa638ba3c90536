//! The five callbacks, each a closure with its own state. They all run on the `hwc-io` thread,
//! one at a time, with no lock held. A callback may call `send`; `request`, `subscribe` and
//! `unsubscribe` wait for an answer only that thread could read, so there they return
//! `Error::InvalidArgument` at once. A slow callback delays the client's I/O: hand heavy work
//! to another thread.
#![forbid(unsafe_code)]

use serde_json::Value;

use crate::error::Error;

/// Passed to `on_connect` each time a link is ready (session set up, subscriptions restored).
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// The session on the server, when the client authenticated.
    pub session_id: Option<String>,
    /// The connection's id on the server.
    pub connection_id: Option<u64>,
    /// The role the server gave this client.
    pub role: Option<String>,
    /// 0 for the first link, then how many links came before this one.
    pub reconnects: u64,
}

/// Passed to `on_reconnect` after a link other than the first is ready.
#[derive(Debug, Clone)]
pub struct ReconnectInfo {
    /// Attempts this reconnection took (1 when the first one worked).
    pub attempts: u32,
    /// The old session was taken up again (events missed while away were replayed).
    pub resumed: bool,
    /// Queues were given a [`Delivery::Gap`](super::Delivery::Gap) marker.
    pub gap: bool,
}

/// Passed to `on_disconnect` each time a link ends.
#[derive(Debug, Clone)]
pub struct DisconnectInfo {
    /// The close code the server sent, or 1006 when the link ended without one.
    pub code: u16,
    /// The close reason, or what the client saw (a read error, no pong).
    pub reason: String,
    /// The client will try again (its reconnect policy, and the code, allow it).
    pub will_reconnect: bool,
}

type Slot<T> = Option<Box<dyn FnMut(&T) + Send>>;
type TextSlot = Option<Box<dyn FnMut(&str) + Send>>;

/// The callbacks of one client; set the ones you want, leave the rest.
///
/// ```
/// use hydrogen_ws::client::Callbacks;
/// let mut seen = 0;
/// let callbacks = Callbacks::new()
///     .on_message(move |msg| { seen += 1; println!("#{seen}: {msg}"); })
///     .on_disconnect(|info| eprintln!("link down: {} {}", info.code, info.reason));
/// ```
#[derive(Default)]
pub struct Callbacks {
    pub(crate) connect: Slot<ConnectInfo>,
    pub(crate) message: Slot<Value>,
    pub(crate) text: TextSlot,
    pub(crate) error: Slot<Error>,
    pub(crate) disconnect: Slot<DisconnectInfo>,
    pub(crate) reconnect: Slot<ReconnectInfo>,
}

impl Callbacks {
    /// No callbacks.
    pub fn new() -> Callbacks {
        Callbacks::default()
    }

    /// Each time a link is ready (the first, and every reconnection).
    pub fn on_connect(mut self, f: impl FnMut(&ConnectInfo) + Send + 'static) -> Self {
        self.connect = Some(Box::new(f));
        self
    }

    /// Every message the server sends (responses, events, errors), after the client has routed
    /// it to a waiting request or subscription queue; the answers to the client's own
    /// bookkeeping (its first ping, resume, re-subscribe) are not passed on.
    pub fn on_message(mut self, f: impl FnMut(&Value) + Send + 'static) -> Self {
        self.message = Some(Box::new(f));
        self
    }

    /// The same messages as [`Callbacks::on_message`], as the text frame the server sent,
    /// byte for byte (key order and number spelling kept), just before `on_message`.
    pub fn on_text(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.text = Some(Box::new(f));
        self
    }

    /// Failed reconnection attempts, full queues, error objects the server sends without an id.
    pub fn on_error(mut self, f: impl FnMut(&Error) + Send + 'static) -> Self {
        self.error = Some(Box::new(f));
        self
    }

    /// Each time a link ends.
    pub fn on_disconnect(mut self, f: impl FnMut(&DisconnectInfo) + Send + 'static) -> Self {
        self.disconnect = Some(Box::new(f));
        self
    }

    /// After a reconnection is ready (after its `on_connect`).
    pub fn on_reconnect(mut self, f: impl FnMut(&ReconnectInfo) + Send + 'static) -> Self {
        self.reconnect = Some(Box::new(f));
        self
    }
}

pub(crate) fn call<T>(slot: &mut Slot<T>, arg: &T) {
    if let Some(f) = slot {
        f(arg);
    }
}
