//! Events written by the publisher straight to an idle subscriber's socket, under the
//! connection's write lock, so that a quiet subscriber costs one `send(2)` per event and
//! no thread wake-up. The connection thread keeps everything else: reading, timers,
//! responses, reliable events (their redelivery timers are its own), and backpressure — a
//! direct write that meets a full socket leaves the frame in tungstenite's buffer and wakes
//! the thread, which flushes it when the socket drains.
//!
//! Order: an event goes direct only while the thread sleeps with nothing waiting (its flag
//! `idle_writable`) and nothing queued, checked under the write lock; publishes are
//! serialised by the event bus, so a session's events reach the socket in `seq` order
//! whichever way each one goes.
//!
//! Batching under load: a service connection that reads several `system/publish` commands
//! in one round corks its writes (frames go into each subscriber's buffer, the subscriber
//! joins the publisher's `corked` list) and flushes them all when the round ends or
//! [`CORK_EVENTS`] events are waiting, so a backlog costs one `send(2)` per subscriber per
//! batch instead of one per event, and a quiet stream still goes out at once.
#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};
use tungstenite::{Error as WsError, Message};

use crate::server::events::event::EventBody;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::registry::metrics::Metrics;

/// Events a corked publisher writes before it flushes anyway (bounds the delay of a batch).
pub(crate) const CORK_EVENTS: usize = 16;

/// How an event reached (or did not reach) a subscriber.
pub(crate) enum Direct {
    /// Written (and flushed, unless corked): nothing to queue.
    Written,
    /// Not written: queue it for the connection thread.
    Queue,
}

/// Writes event `seq` to `conn`'s socket now if the connection is idle and writable;
/// [`Direct::Queue`] when it must be queued instead (busy, backlogged, closing, or a
/// reliable event). With `cork`, the frame is only buffered and `conn` joins the list for
/// [`flush_corked`]. Never blocks: the write lock is only tried.
pub(crate) fn write_event(
    conn: &Arc<ConnectionHandle>,
    seq: u64,
    body: &EventBody,
    metrics: &Metrics,
    cork: Option<&mut Vec<Arc<ConnectionHandle>>>,
) -> Direct {
    if body.reliable || !conn.idle_writable.load(Ordering::Acquire) {
        return Direct::Queue;
    }
    let Some(mut guard) = conn.ws.try_lock() else {
        return Direct::Queue;
    };
    // The thread clears the flag when it wakes; look again now that we hold the lock.
    if !conn.idle_writable.load(Ordering::Acquire) || conn.queued() != 0 {
        return Direct::Queue;
    }
    let Some(ws) = guard.as_mut() else {
        return Direct::Queue;
    };
    let text = body.text(seq, false);
    let len = text.len() as u64;
    let mut blocked = match ws.write(Message::Text(text.into())) {
        Ok(()) => false,
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
        // Not taken (buffer full, connection closing): the queue and the thread deal.
        Err(_) => return Direct::Queue,
    };
    match cork {
        Some(list) if !blocked => {
            if !conn.awaiting_flush.swap(true, Ordering::AcqRel) {
                list.push(conn.clone());
            }
        }
        _ => blocked |= !flush_now(ws),
    }
    drop(guard);
    if blocked {
        hand_back(conn);
    }
    Metrics::add(&metrics.messages_out, 1);
    Metrics::add(&metrics.bytes_out, len);
    Direct::Written
}

/// Flushes every connection a corked publisher wrote to, and empties the list.
pub(crate) fn flush_corked(list: &mut Vec<Arc<ConnectionHandle>>) {
    for conn in list.drain(..) {
        conn.awaiting_flush.store(false, Ordering::Release);
        let flushed = match conn.ws.lock().as_mut() {
            Some(ws) => flush_now(ws),
            None => true,
        };
        if !flushed {
            hand_back(&conn);
        }
    }
}

/// The `hws-flush` thread's work: what `Publisher` calls wrote corked. A controller thread
/// publishing through the library only copies frames into the subscribers' buffers and
/// hands the list over; this thread flushes them, one `send(2)` per subscriber for all that
/// arrived meanwhile. Idle, it sleeps on its condvar; shutdown phase 1 stops it (after a
/// last flush).
#[derive(Debug, Default)]
pub(crate) struct Flusher {
    pending: Mutex<Vec<Arc<ConnectionHandle>>>,
    ready: Condvar,
    stopping: AtomicBool,
}

impl Flusher {
    /// Takes `list` (emptying it) for the flush thread.
    pub(crate) fn hand_over(&self, list: &mut Vec<Arc<ConnectionHandle>>) {
        if list.is_empty() {
            return;
        }
        self.pending.lock().append(list);
        self.ready.notify_one();
    }

    /// Makes [`Flusher::run`] return once what is pending is flushed.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _pending = self.pending.lock();
        self.ready.notify_all();
    }

    /// The thread's loop.
    pub(crate) fn run(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut pending = self.pending.lock();
                while pending.is_empty() && !self.stopping.load(Ordering::Acquire) {
                    self.ready.wait(&mut pending);
                }
                std::mem::swap(&mut *pending, &mut batch);
            }
            if batch.is_empty() {
                return; // stopping, and nothing left
            }
            flush_corked(&mut batch);
        }
    }
}

/// Flushes `ws`; false when the socket did not take everything (or the link broke).
fn flush_now(ws: &mut tungstenite::WebSocket<crate::server::net::stream::Transport>) -> bool {
    ws.flush().is_ok()
}

/// Output is stuck in `conn`'s buffer: no more direct writes, and its thread takes over.
fn hand_back(conn: &ConnectionHandle) {
    conn.idle_writable.store(false, Ordering::Release);
    conn.waker.wake();
}
