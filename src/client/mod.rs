//! The client: one connection to a hydrogen-ws server (or any server speaking its protocol) for
//! commands and event streams, kept alive across network cuts and server restarts.
//!
//! [`Client::connect`] dials once (errors come back to the caller), then starts three named
//! threads: `hwc-io` owns the socket and sleeps in `poll(2)` until a frame arrives or the API
//! queues something; `hwc-heartbeat` pings after silence and declares a half-open link dead;
//! `hwc-reconnect` dials again with backoff after the link drops. After a reconnection the
//! client resumes its session (the server replays what it missed), or subscribes again and
//! puts a [`Delivery::Gap`] on each queue so the application can resynchronise. Reliable events
//! are acked after they are queued. Requests pending when a link drops fail with
//! [`Error::Disconnected`] at once.
//!
//! ```no_run
//! use hydrogen_ws::client::{Client, ClientConfig, Credentials, Delivery};
//! use std::time::Duration;
//!
//! let config = ClientConfig::new("ws://127.0.0.1:5261/").with_credentials(Credentials::key("k"));
//! Client::run(config, |client| {
//!     let status = client.request("system", "status", serde_json::json!({}), Duration::from_secs(5))?;
//!     println!("{} clients", status["active_connections"]);
//!     let jobs = client.subscribe("print")?;
//!     if let Some(Delivery::Event(e)) = jobs.recv_timeout(Duration::from_secs(10)) {
//!         println!("{} {}", e.action, e.data);
//!     }
//!     Ok(())
//! })
//! .unwrap();
//! ```
#![forbid(unsafe_code)]

mod callbacks;
mod config;
pub(crate) mod dial;
mod heartbeat;
mod io;
mod link;
pub(crate) mod reconnect;
mod shared;
mod subscription;
pub(crate) mod tls;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError, bounded, unbounded};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub use callbacks::{Callbacks, ConnectInfo, DisconnectInfo, ReconnectInfo};
pub use config::{ClientConfig, Credentials, ReconnectPolicy, TlsRoots};
pub use subscription::{ClientEvent, Delivery, GapReason, Subscription, SubscriptionId};

use crate::error::{Error, Timeout};
use crate::wake::{self, Waker};
use shared::{IoCommand, Shared};

/// Stack of each client thread: they parse JSON and run callbacks, nothing deep.
const CLIENT_THREAD_STACK_BYTES: usize = 256 * 1024;
/// How long starting a client thread waits for it to run (a loaded machine may take a while
/// to schedule it; past this `connect` goes on without waiting).
const THREAD_START_WAIT: Duration = Duration::from_secs(5);
/// Extra time `Drop` gives the threads beyond the close timeout before leaving them.
const JOIN_MARGIN: Duration = Duration::from_secs(1);

/// A connected client. Cheap to share by reference between threads (`&Client` is `Sync`);
/// dropping it closes the link and joins its threads (see [`Client::disconnect`]).
pub struct Client {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Client {
    /// Connects with no callbacks. See [`Client::connect_with`].
    pub fn connect(config: ClientConfig) -> Result<Client, Error> {
        Client::connect_with(config, Callbacks::new())
    }

    /// Dials `config.url` (TCP within `connect_timeout`, TLS and upgrade within
    /// `handshake_timeout`), starts the client threads, and returns once the server has
    /// welcomed the client (its session is known) — or the first error: `InvalidArgument` (bad
    /// URL or config), `Tls`, `Connect`, `Handshake`, `Rejected` (HTTP refusal such as 401),
    /// `Timeout` (no welcome). Nothing is left running after an error.
    pub fn connect_with(config: ClientConfig, callbacks: Callbacks) -> Result<Client, Error> {
        config.validate().map_err(Error::InvalidArgument)?;
        let dialer = link::Dialer::new(&config)?;
        let first = dialer.dial(config.credentials.as_ref())?;
        let (to_io, commands) = bounded(config.outbound_capacity);
        let (link_events_tx, link_events) = unbounded();
        let waker =
            Waker::new().map_err(|e| Error::io("creating the client's wake descriptor", e))?;
        let wait_for_welcome = config.handshake_timeout;
        let shared = Arc::new(Shared::new(config, dialer, to_io, link_events_tx, waker));
        let client = Client {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
        };
        let io = io::Io::new(shared.clone(), callbacks, commands, link_events, first);
        let s = shared.clone();
        client.spawn("hwc-io", move || {
            let _ = s.io_thread.set(thread::current().id());
            io.run();
        })?;
        let s = shared.clone();
        client.spawn("hwc-heartbeat", move || heartbeat::run(s))?;
        let s = shared.clone();
        client.spawn("hwc-reconnect", move || reconnect::run(s))?;
        // Wait for the session to be set up (the welcome), so the first request can go out.
        let until = wake::after(wait_for_welcome);
        let mut st = shared.state.lock();
        while st.ready_count == 0 && !st.stopping && !st.gave_up {
            if shared.changed.wait_until(&mut st, until).timed_out() {
                break;
            }
        }
        let ready = st.ready_count > 0;
        drop(st);
        if !ready {
            let _ = client.disconnect();
            return Err(Error::Timeout(Timeout::Welcome {
                waited: wait_for_welcome,
            }));
        }
        Ok(client)
    }

    /// Connects, runs `body` with the client, and disconnects whatever `body` returns (or if it
    /// panics): the scoped form of seed `003`'s `run()`.
    pub fn run<R>(
        config: ClientConfig,
        body: impl FnOnce(&Client) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let client = Client::connect(config)?;
        let result = body(&client);
        let _ = client.disconnect();
        result
    }

    /// Starts a named client thread and returns once it runs (so its name is what `gdb`
    /// and `/proc` show from then on), or after THREAD_START_WAIT.
    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        self.shared.state.lock().running_threads += 1;
        let guard = ExitGuard(self.shared.clone());
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let spawned = thread::Builder::new()
            .name(name.to_owned())
            .stack_size(CLIENT_THREAD_STACK_BYTES)
            .spawn(move || {
                let _counted = guard;
                let _ = started_tx.send(());
                f()
            });
        match spawned {
            Ok(handle) => {
                self.threads.lock().push(handle);
                let _ = started.recv_timeout(THREAD_START_WAIT);
                Ok(())
            }
            Err(e) => {
                let _ = self.disconnect();
                Err(Error::io("spawning a client thread", e))
            }
        }
    }

    /// The link is up and the session restored.
    pub fn is_connected(&self) -> bool {
        self.shared.state.lock().ready
    }

    /// The client has stopped trying to connect: its reconnect policy ran out of attempts, the
    /// server refused it in a way retrying cannot fix (401, close 1008, ...), or it was
    /// disconnected. [`Client::set_credentials`] starts it again after a refusal.
    pub fn gave_up(&self) -> bool {
        let st = self.shared.state.lock();
        !st.link_up && (st.gave_up || st.stopping)
    }

    /// The server-side session id, once the server has welcomed the client.
    pub fn session_id(&self) -> Option<String> {
        self.shared.state.lock().session_id.clone()
    }

    /// Queues a JSON message as it is. Errors: `Disconnected` (no link), `QueueFull`.
    pub fn send(&self, message: &Value) -> Result<(), Error> {
        self.send_text(message.to_string())
    }

    /// Queues a text message as it is. Errors: `Disconnected` (no link), `QueueFull`. A message
    /// queued just before the link drops may be lost; `on_error` then reports `Disconnected`.
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.push(IoCommand::Send {
            text: text.into(),
            request: None,
        })
    }

    fn push(&self, cmd: IoCommand) -> Result<(), Error> {
        if !self.shared.state.lock().link_up {
            return Err(Error::Disconnected);
        }
        match self.shared.to_io.try_send(cmd) {
            Ok(()) => {
                self.shared.io_waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Error::QueueFull(format!(
                "outbound queue ({} messages)",
                self.shared.config.outbound_capacity
            ))),
            Err(TrySendError::Disconnected(_)) => Err(Error::Disconnected),
        }
    }

    /// Sends a command and waits up to `timeout` for its response; returns its `data`.
    /// Errors: `Server` (the server's error object), `Timeout`, `Disconnected` (no link, or it
    /// dropped while waiting), `QueueFull`, `InvalidArgument` when called from a callback.
    pub fn request(
        &self,
        channel: &str,
        action: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, Error> {
        if self.shared.io_thread.get() == Some(&thread::current().id()) {
            return Err(Error::InvalidArgument(
                "request/subscribe/unsubscribe cannot wait inside a client callback (it runs on \
                 the thread that reads the answer); use send, or another thread"
                    .into(),
            ));
        }
        let id = self.shared.next_request_id();
        let text = json!({"type": "command", "id": id, "channel": channel, "action": action, "data": data})
            .to_string();
        let (tx, rx) = bounded(1);
        self.shared.pending.lock().insert(id.clone(), tx);
        if let Err(e) = self.push(IoCommand::Send {
            text,
            request: Some(id.clone()),
        }) {
            self.shared.pending.lock().remove(&id);
            return Err(e);
        }
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => {
                self.shared.pending.lock().remove(&id);
                // The answer may have been routed between the timeout and the removal.
                match rx.try_recv() {
                    Ok(result) => result,
                    Err(_) => Err(Error::Timeout(Timeout::Response {
                        channel: channel.to_owned(),
                        action: action.to_owned(),
                        waited: timeout,
                    })),
                }
            }
        }
    }

    /// Subscribes to `channel` with a queue of its own (`queue_capacity`). Events published
    /// after the server confirmed arrive on it, across reconnections.
    pub fn subscribe(&self, channel: &str) -> Result<Subscription, Error> {
        let (tx, rx) = bounded(self.shared.config.queue_capacity);
        let id = self.subscribe_with(channel, tx)?;
        Ok(Subscription {
            id,
            channel: channel.to_owned(),
            receiver: rx,
        })
    }

    /// Subscribes to `channel`, delivering into `sender`: several subscriptions may share one
    /// queue (each [`ClientEvent`] names its channel). A bounded sender that is full drops
    /// ordinary events (a `Gap` marker with `QueueOverflow` follows when it has room again, and
    /// `on_error` says `QueueFull`) and holds reliable ones back unacknowledged, so the server
    /// sends them again.
    pub fn subscribe_with(
        &self,
        channel: &str,
        sender: Sender<Delivery>,
    ) -> Result<SubscriptionId, Error> {
        let id = self.shared.subscriptions.lock().add(channel, sender);
        let timeout = self.shared.config.request_timeout;
        match self.request(
            "system",
            "subscribe",
            json!({"channels": [channel]}),
            timeout,
        ) {
            Ok(_) => Ok(id),
            Err(e) => {
                self.shared.subscriptions.lock().remove(id);
                Err(e)
            }
        }
    }

    /// Ends a subscription; the server is told when no other subscription here wants the
    /// channel. Errors from the server come back, but the local subscription is gone anyway.
    pub fn unsubscribe(&self, id: SubscriptionId) -> Result<(), Error> {
        let Some(channel) = self.shared.subscriptions.lock().remove(id) else {
            return Ok(());
        };
        let timeout = self.shared.config.request_timeout;
        match self.request(
            "system",
            "unsubscribe",
            json!({"channels": [channel]}),
            timeout,
        ) {
            Ok(_) | Err(Error::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the credentials used for the next connection; if the client had stopped after
    /// a refusal (401, close 1008), it starts reconnecting.
    pub fn set_credentials(&self, credentials: Option<config::Credentials>) {
        *self.shared.credentials.lock() = credentials;
        let mut st = self.shared.state.lock();
        if st.gave_up && !st.link_up && !st.stopping {
            st.gave_up = false;
            st.want_link = true;
            st.reset_backoff = true;
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Closes the link (close frame, then waits up to `close_timeout` for the server's), stops
    /// reconnecting, and joins the client threads. Idempotent. Errors: `Timeout` if a thread
    /// did not end in time (it is named in the log and left behind).
    pub fn disconnect(&self) -> Result<(), Error> {
        self.shared.close_requested.store(true, Ordering::SeqCst);
        self.shared.io_waker.wake();
        let until = wake::after(self.shared.config.close_timeout + JOIN_MARGIN);
        let mut st = self.shared.state.lock();
        // The I/O thread sets `stopping` when it is done; everything else follows it.
        while st.running_threads > 0 {
            if self.shared.changed.wait_until(&mut st, until).timed_out() {
                break;
            }
        }
        let left = st.running_threads;
        st.stopping = true;
        drop(st);
        self.shared.changed.notify_all();
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.threads.lock());
        if left > 0 {
            let names: Vec<String> = handles
                .iter()
                .filter(|h| !h.is_finished())
                .map(|h| h.thread().name().unwrap_or("?").to_owned())
                .collect();
            log::error!("client: threads still running after disconnect: {names:?}; left behind");
            return Err(Error::Timeout(Timeout::Disconnect { threads: names }));
        }
        for h in handles {
            let _ = h.join();
        }
        Ok(())
    }
}

/// Counts a client thread out when it ends, even by a panic (in a callback, say).
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            log::error!("client: thread {:?} panicked", thread::current().name());
            self.0.stop_everything();
        }
        self.0.thread_exited();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.disconnect();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("Client")
            .field("url", &self.shared.config.url)
            .field("connected", &st.ready)
            .field("session_id", &st.session_id)
            .finish()
    }
}
