//! The event tap: a bounded queue, filled on the publish path, of the events on the channels
//! the MQTT bridge carries. The publisher never blocks on it: when the broker is away or slow
//! and the queue is full, the oldest event goes, counted (and logged by the bridge).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::server::events::event::EventBody;
use crate::wake::Waker;

/// One tapped event: where it goes and what it is.
#[derive(Debug, Clone)]
pub(crate) struct Tapped {
    pub channel: String,
    pub action: String,
    pub body: Arc<EventBody>,
}

/// The queue between the publish path and the bridge's thread.
#[derive(Debug)]
pub(crate) struct EventTap {
    channels: Vec<String>,
    queue: Mutex<VecDeque<Tapped>>,
    capacity: usize,
    /// Events that went because the queue was full (never silently: the bridge logs them).
    pub dropped: AtomicU64,
    /// Woken for every event offered; the bridge's thread waits on it.
    pub waker: Waker,
}

impl EventTap {
    /// A tap for `channels`, holding at most `capacity` events.
    pub(crate) fn new(channels: Vec<String>, capacity: usize) -> std::io::Result<Self> {
        Ok(EventTap {
            channels,
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            waker: Waker::new()?,
        })
    }

    /// Whether events on `channel` are tapped.
    pub(crate) fn wants(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
    }

    /// Queues an event (called under the bus's publish-order lock, so the queue is in
    /// publish order); drops the oldest when full. Never blocks on I/O.
    pub(crate) fn offer(&self, channel: &str, action: &str, body: &Arc<EventBody>) {
        let item = Tapped {
            channel: channel.to_string(),
            action: action.to_string(),
            body: body.clone(),
        };
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(item);
        }
        self.waker.wake();
    }

    /// Takes up to `max` events, oldest first.
    pub(crate) fn take(&self, max: usize) -> Vec<Tapped> {
        let mut q = self.queue.lock();
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    /// Puts events back at the front, in their order (written to a broker that went away
    /// before acknowledging them); the oldest beyond capacity go, counted.
    pub(crate) fn put_back(&self, items: Vec<Tapped>) {
        let mut q = self.queue.lock();
        for item in items.into_iter().rev() {
            q.push_front(item);
        }
        while q.len() > self.capacity {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().len()
    }
}
