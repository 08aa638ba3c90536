//! Latency histograms for `/metrics`: fixed buckets of atomics (no lock), filled directly
//! ([`Histogram::observe`]) or, on the hot path, through a [`LocalHistogram`] a connection
//! thread keeps and merges before it sleeps, so a busy fan-out touches the shared cache lines
//! once per write round rather than once per event.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`); a last bucket takes the rest.
pub(crate) const BUCKET_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const BUCKETS: usize = BUCKET_BOUNDS.len() + 1;

fn bucket_of(d: Duration) -> usize {
    let secs = d.as_secs_f64();
    BUCKET_BOUNDS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(BUCKET_BOUNDS.len())
}

/// A histogram shared by every thread.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// What a histogram holds at one moment, as Prometheus encodes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramSnapshot {
    pub sum_seconds: f64,
    pub count: u64,
    /// `(le, cumulative count)` for each bound, then `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        self.buckets[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what `local` gathered and empties it.
    pub(crate) fn merge(&self, local: &mut LocalHistogram) {
        if local.count == 0 {
            return;
        }
        for (shared, n) in self.buckets.iter().zip(local.buckets.iter()) {
            if *n > 0 {
                shared.fetch_add(*n, Ordering::Relaxed);
            }
        }
        self.sum_ns.fetch_add(local.sum_ns, Ordering::Relaxed);
        self.count.fetch_add(local.count, Ordering::Relaxed);
        *local = LocalHistogram::default();
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n.load(Ordering::Relaxed);
            let le = BUCKET_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, cumulative));
        }
        HistogramSnapshot {
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets were read one by one: the count is their total, so the two agree.
            count: cumulative,
            buckets,
        }
    }
}

/// One thread's observations since its last merge.
#[derive(Debug, Default)]
pub(crate) struct LocalHistogram {
    buckets: [u64; BUCKETS],
    sum_ns: u64,
    count: u64,
}

impl LocalHistogram {
    pub(crate) fn observe(&mut self, d: Duration) {
        self.buckets[bucket_of(d)] += 1;
        self.sum_ns += d.as_nanos().min(u64::MAX as u128) as u64;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_merges_add_up() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        let mut local = LocalHistogram::default();
        local.observe(Duration::from_millis(3));
        local.observe(Duration::from_secs(60));
        h.merge(&mut local);
        h.merge(&mut local); // empty now: adds nothing
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[5], (0.005, 2));
        assert_eq!(s.buckets[13], (5.0, 2));
        assert_eq!(s.buckets[14], (f64::INFINITY, 3));
        assert!((s.sum_seconds - 60.00305).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
