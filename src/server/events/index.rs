//! The channel → sessions index the fan-out reads (behind the bus's read-write lock).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use crate::server::events::session::Session;

/// Which sessions subscribe to each channel (whatever their action filters).
#[derive(Default)]
pub(crate) struct ChannelIndex {
    by_channel: HashMap<String, Vec<Arc<Session>>>,
}

impl ChannelIndex {
    /// The sessions subscribed to `channel` (a copy: the caller does not hold the lock).
    pub(crate) fn subscribers(&self, channel: &str) -> Vec<Arc<Session>> {
        self.by_channel.get(channel).cloned().unwrap_or_default()
    }

    /// Adds `session` to `channel` (once).
    pub(crate) fn add(&mut self, channel: String, session: &Arc<Session>) {
        let subscribers = self.by_channel.entry(channel).or_default();
        if !subscribers.iter().any(|s| Arc::ptr_eq(s, session)) {
            subscribers.push(session.clone());
        }
    }

    /// Removes `session` from `channel`.
    pub(crate) fn remove(&mut self, channel: &str, session: &Arc<Session>) {
        if let Some(list) = self.by_channel.get_mut(channel) {
            list.retain(|s| !Arc::ptr_eq(s, session));
            if list.is_empty() {
                self.by_channel.remove(channel);
            }
        }
    }

    /// Forgets every subscription (shutdown).
    pub(crate) fn clear(&mut self) {
        self.by_channel.clear();
    }
}
