//! A client's session: its subscriptions, its seq counter, the replay ring and the outbox of
//! unacknowledged reliable events, and the connection it is attached to (if any).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::server::events::event::EventBody;
use crate::server::registry::handle::ConnectionHandle;
use crate::server::security::identity::Identity;

pub(super) struct Unacked {
    pub(super) body: Arc<EventBody>,
    pub(super) retries: u32,
}

#[derive(Default)]
pub(super) struct SessionState {
    /// channel → action filter (`None`: every action).
    pub(super) subscriptions: BTreeMap<String, Option<BTreeSet<String>>>,
    pub(super) next_seq: u64,
    /// The last ReplayBufferEvents events of this session, oldest first.
    pub(super) ring: VecDeque<(u64, Arc<EventBody>)>,
    /// Reliable events not yet acknowledged, by seq.
    pub(super) outbox: BTreeMap<u64, Unacked>,
    pub(super) attached: Option<Arc<ConnectionHandle>>,
    pub(super) detached_at: Option<Instant>,
    /// Reliable events were dropped because the outbox was full: resume reports a gap.
    pub(super) outbox_overflowed: bool,
}

impl SessionState {
    pub(super) fn wants(&self, channel: &str, action: &str) -> bool {
        match self.subscriptions.get(channel) {
            Some(None) => true,
            Some(Some(actions)) => actions.contains(action),
            None => false,
        }
    }

    pub(super) fn subscription_set(&self) -> Value {
        let channels: Vec<Value> = self
            .subscriptions
            .iter()
            .map(|(c, a)| match a {
                None => json!({"channel": c}),
                Some(actions) => json!({"channel": c, "actions": actions}),
            })
            .collect();
        json!({"subscriptions": channels})
    }
}

/// Command ids remembered per session for the replay guard (docs/protocol.md §2).
const RECENT_IDS: usize = 1024;

/// The last [`RECENT_IDS`] command ids of a session, kept as keyed hashes (16 bytes each at
/// most). It belongs to the session, so a command replayed after `system/resume` is still
/// a duplicate.
#[derive(Default)]
pub(crate) struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64>,
    hasher: RandomState,
}

impl RecentIds {
    /// Records `id`; true if it was already among the recent ones.
    pub(crate) fn seen_before(&mut self, id: &str) -> bool {
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

/// A client's session: its subscriptions and what it has not received or acknowledged yet.
pub(crate) struct Session {
    pub id: String,
    pub identity: Identity,
    pub(super) state: Mutex<SessionState>,
    /// The duplicate-id guard (only the connection attached to the session uses it).
    pub(crate) recent_ids: Mutex<RecentIds>,
}

impl Session {
    /// Whether the client subscribed to anything.
    pub(crate) fn has_subscriptions(&self) -> bool {
        !self.state.lock().subscriptions.is_empty()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("identity", &self.identity.name)
            .finish()
    }
}
