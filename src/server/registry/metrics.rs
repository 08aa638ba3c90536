//! The server's counters: atomics, never behind a lock (the rejection table excepted).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use std::sync::Arc;

use parking_lot::Mutex;

use crate::server::registry::histogram::Histogram;

use crate::server::registry::state::STATE_COUNT;

/// Counters (atomics: never behind a lock).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Current count per live state; cumulative for the terminal states.
    pub states: [AtomicUsize; STATE_COUNT],
    pub total_connections: AtomicU64,
    pub total_requests: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub rejected: Mutex<HashMap<&'static str, u64>>,
    /// From an event's publication to its write to a subscriber's socket (first
    /// deliveries; redeliveries and replays are not counted).
    pub publish_to_write: Histogram,
    /// Time application handlers took per command (on the worker pool).
    pub command_duration: Arc<Histogram>,
    /// The MQTT bridge's counters (zero without a bridge).
    pub bridge: BridgeFigures,
}

/// Counters of the MQTT bridge, for the status object and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct BridgeFigures {
    pub connected: AtomicBool,
    /// Events written to the broker (QoS 1: and acknowledged).
    pub events_sent: AtomicU64,
    pub connects: AtomicU64,
    pub commands: AtomicU64,
}

impl Metrics {
    pub(crate) fn count_rejection(&self, reason: &'static str) {
        *self.rejected.lock().entry(reason).or_insert(0) += 1;
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
