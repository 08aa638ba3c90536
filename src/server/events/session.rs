//! A client's session: its subscriptions, its seq counter, the replay ring and the outbox of
//! unacknowledged reliable events, and the connection it is attached to (if any).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::EventBody;
use crate::server::auth::Identity;
use crate::server::context::ConnectionShared;

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
    pub(super) attached: Option<Arc<ConnectionShared>>,
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

/// A client's session: its subscriptions and what it has not received or acknowledged yet.
pub(crate) struct Session {
    pub id: String,
    pub identity: Identity,
    pub(super) state: Mutex<SessionState>,
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
