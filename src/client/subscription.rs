//! Subscriptions: the queues events are delivered to, the `Gap` markers that tell an
//! application to resynchronise, and the record of which sequence numbers were handed over.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::Value;

/// An event from the server, as handed to a subscription's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEvent {
    /// The event id (`ev-<n>`), the same for every subscriber.
    pub id: String,
    /// The per-session sequence number; `None` for snapshots (`status`, `welcome`).
    pub seq: Option<u64>,
    /// The channel it was published on.
    pub channel: String,
    /// The action (what happened).
    pub action: String,
    /// The payload.
    pub data: Value,
    /// The server marked it reliable; the client acknowledged it after queueing it.
    pub reliable: bool,
    /// The server sent it before (replay after resume, or redelivery after no ack).
    pub redelivered: bool,
}

impl ClientEvent {
    pub(crate) fn from_message(msg: &Value) -> ClientEvent {
        let text = |k: &str| msg.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        ClientEvent {
            id: text("id"),
            seq: msg.get("seq").and_then(Value::as_u64),
            channel: text("channel"),
            action: text("action"),
            data: msg.get("data").cloned().unwrap_or(Value::Null),
            reliable: msg.get("ack").and_then(Value::as_bool).unwrap_or(false),
            redelivered: msg
                .get("redelivered")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }
}

/// Why events may be missing before a [`Delivery::Gap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapReason {
    /// The server no longer had the session (restarted, or the session expired); the client
    /// subscribed again on a new session.
    SessionLost,
    /// The session was resumed but the server's replay buffer no longer held everything missed.
    ReplayOverflow,
    /// This queue was full and events for it were dropped.
    QueueOverflow,
}

/// What a subscription queue yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next event on the channel.
    Event(ClientEvent),
    /// Events on `channel` may have been missed here: re-read the state you mirror (for
    /// example with a `status` request) before trusting the next event.
    Gap {
        /// The channel concerned.
        channel: String,
        /// Why.
        reason: GapReason,
    },
}

/// Names one subscription, for [`Client::unsubscribe`](super::Client::unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub(crate) u64);

/// A subscription with its own queue, from [`Client::subscribe`](super::Client::subscribe).
/// Dropping it (or its receiver) ends the subscription at the next event for it.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) channel: String,
    pub(crate) receiver: Receiver<Delivery>,
}

impl Subscription {
    /// Its id, for `unsubscribe`.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The queue itself (to `select!` over several).
    pub fn receiver(&self) -> &Receiver<Delivery> {
        &self.receiver
    }

    /// The next delivery, waiting at most `timeout`; `None` on timeout.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Delivery> {
        self.receiver.recv_timeout(timeout).ok()
    }
}

struct Entry {
    id: u64,
    channel: String,
    sender: Sender<Delivery>,
    /// A gap to report before the next event (the marker itself did not fit).
    owed_gap: Option<GapReason>,
}

/// Every local subscription. Held under the client's subscriptions mutex for a few `try_send`s
/// at a time; never across socket I/O or a callback.
#[derive(Default)]
pub(crate) struct SubscriptionTable {
    next_id: u64,
    entries: Vec<Entry>,
}

/// What routing one event did.
pub(crate) struct Routed {
    /// Handed to every queue that takes it (for a reliable event: to all of them, or to none).
    pub delivered: bool,
    /// Queues that were full.
    pub full: Vec<String>,
    /// Channels left without any local subscription because their receivers were dropped.
    pub abandoned: Vec<String>,
}

impl SubscriptionTable {
    pub(crate) fn add(&mut self, channel: &str, sender: Sender<Delivery>) -> SubscriptionId {
        self.next_id += 1;
        self.entries.push(Entry {
            id: self.next_id,
            channel: channel.to_owned(),
            sender,
            owed_gap: None,
        });
        SubscriptionId(self.next_id)
    }

    /// Removes one subscription; returns its channel if no other subscription wants it.
    pub(crate) fn remove(&mut self, id: SubscriptionId) -> Option<String> {
        let pos = self.entries.iter().position(|e| e.id == id.0)?;
        let entry = self.entries.remove(pos);
        (!self.has_channel(&entry.channel)).then_some(entry.channel)
    }

    pub(crate) fn has_channel(&self, channel: &str) -> bool {
        self.entries.iter().any(|e| e.channel == channel)
    }

    /// Every subscribed channel, once.
    pub(crate) fn channels(&self) -> Vec<String> {
        let mut out: Vec<String> = self.entries.iter().map(|e| e.channel.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Tells every queue that events may be missing.
    pub(crate) fn mark_gap(&mut self, reason: GapReason) {
        for e in &mut self.entries {
            e.owed_gap = Some(reason);
            settle_gap(e);
        }
    }

    /// Hands `event` to every queue of its channel. A reliable event goes to all of them or, if
    /// one is full, to none (it is not acked, so the server sends it again). Any other event
    /// skips full queues, which then owe a `QueueOverflow` gap.
    pub(crate) fn route(&mut self, event: &ClientEvent) -> Routed {
        let mut routed = Routed {
            delivered: true,
            full: Vec::new(),
            abandoned: Vec::new(),
        };
        let targets = |e: &&mut Entry| e.channel == event.channel;
        if event.reliable
            && self.entries.iter_mut().filter(targets).any(|e| {
                e.sender.is_full() || (e.owed_gap.is_some() && e.sender.len() + 2 > cap(e))
            })
        {
            routed.delivered = false;
            routed.full.push(event.channel.clone());
            return routed;
        }
        let mut gone = Vec::new();
        for e in self.entries.iter_mut().filter(targets) {
            if !settle_gap(e) {
                e.owed_gap = Some(GapReason::QueueOverflow);
                routed.full.push(e.channel.clone());
                continue;
            }
            match e.sender.try_send(Delivery::Event(event.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    e.owed_gap = Some(GapReason::QueueOverflow);
                    routed.full.push(e.channel.clone());
                }
                Err(TrySendError::Disconnected(_)) => gone.push(e.id),
            }
        }
        for id in gone {
            if let Some(channel) = self.remove(SubscriptionId(id)) {
                routed.abandoned.push(channel);
            }
        }
        routed
    }
}

fn cap(e: &Entry) -> usize {
    e.sender.capacity().unwrap_or(usize::MAX)
}

/// Puts an owed gap marker into the queue; false if it still does not fit.
fn settle_gap(e: &mut Entry) -> bool {
    let Some(reason) = e.owed_gap else {
        return true;
    };
    let marker = Delivery::Gap {
        channel: e.channel.clone(),
        reason,
    };
    match e.sender.try_send(marker) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {
            e.owed_gap = None;
            true
        }
        Err(TrySendError::Full(_)) => false,
    }
}

/// Which sequence numbers of the current session were handed over: everything up to
/// `through`, plus the few above it that arrived while an earlier one was held back (a reliable
/// event that found its queue full). `through` is what `system/resume` sends as `last_seq`.
#[derive(Debug, Default)]
pub(crate) struct SeenSeqs {
    through: u64,
    above: BTreeSet<u64>,
}

/// Past this many out-of-order seqs, the oldest hole is given up on.
const MAX_SEEN_ABOVE: usize = 4096;

impl SeenSeqs {
    pub(crate) fn contains(&self, seq: u64) -> bool {
        seq <= self.through || self.above.contains(&seq)
    }

    pub(crate) fn mark(&mut self, seq: u64) {
        if seq <= self.through {
            return;
        }
        self.above.insert(seq);
        while self.above.remove(&(self.through + 1)) {
            self.through += 1;
        }
        if self.above.len() > MAX_SEEN_ABOVE
            && let Some(&first) = self.above.iter().next()
        {
            self.through = first - 1;
            while self.above.remove(&(self.through + 1)) {
                self.through += 1;
            }
        }
    }

    /// Everything handed over without a hole.
    pub(crate) fn through(&self) -> u64 {
        self.through
    }

    /// A new sequence: the next event is `next_seq` (1 for a new session).
    pub(crate) fn restart_at(&mut self, next_seq: u64) {
        self.through = next_seq.saturating_sub(1);
        self.above.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    fn event(channel: &str, seq: u64, reliable: bool) -> ClientEvent {
        ClientEvent {
            id: format!("ev-{seq}"),
            seq: Some(seq),
            channel: channel.into(),
            action: "a".into(),
            data: Value::Null,
            reliable,
            redelivered: false,
        }
    }

    #[test]
    fn seen_seqs_track_holes() {
        let mut s = SeenSeqs::default();
        s.mark(1);
        s.mark(3);
        assert_eq!(s.through(), 1);
        assert!(s.contains(3) && !s.contains(2));
        s.mark(2);
        assert_eq!(s.through(), 3);
        s.restart_at(10);
        assert!(s.contains(9) && !s.contains(10));
    }

    #[test]
    fn full_queue_owes_a_gap_and_reliable_waits() {
        let mut t = SubscriptionTable::default();
        let (tx, rx) = bounded(1);
        t.add("print", tx);
        assert!(t.route(&event("print", 1, false)).delivered);
        let r = t.route(&event("print", 2, false));
        assert_eq!(r.full, ["print"]);
        // Reliable: not delivered while the queue is full or owes a gap it cannot hold.
        assert!(!t.route(&event("print", 3, true)).delivered);
        assert!(matches!(rx.recv().unwrap(), Delivery::Event(e) if e.seq == Some(1)));
        // Room again: the gap marker comes first, then the next event.
        let (tx2, rx2) = bounded(4);
        t.add("print", tx2);
        drop(rx2);
        let r = t.route(&event("print", 4, false));
        assert_eq!(r.abandoned, Vec::<String>::new());
        assert!(matches!(
            rx.recv().unwrap(),
            Delivery::Gap {
                reason: GapReason::QueueOverflow,
                ..
            }
        ));
    }
}
