//! Rate limits (docs/protocol.md §7 `RateLimit`): a token bucket per connection; violations per
//! address (messages over the rate, failed authentications) that block the address for
//! BlockSeconds; and upgrade attempts per address per minute. State is per address and swept by the
//! `hws-status` thread, so a stream of one-off addresses cannot grow it without bound.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::RateLimitConfig;

/// Width of the handshake-rate window.
const HANDSHAKE_WINDOW: Duration = Duration::from_secs(60);

/// A connection's allowance: `burst` messages at once, refilled at `rate` per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        let burst = f64::from(config.burst);
        TokenBucket {
            tokens: burst,
            rate: f64::from(config.messages_per_second),
            burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; false when the connection is over its rate. Rate 0: unlimited.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct PerAddress {
    blocked_until: HashMap<IpAddr, Instant>,
    /// Violations and the time of the last one; forgotten after BlockSeconds of good behaviour.
    violations: HashMap<IpAddr, (u32, Instant)>,
    /// Upgrade attempts in the current window, and when it started.
    handshakes: HashMap<IpAddr, (Instant, u32)>,
}

/// What an address did wrong, for counters and logs.
#[derive(Debug)]
pub(crate) struct Limits {
    config: RateLimitConfig,
    state: Mutex<PerAddress>,
}

impl Limits {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        Limits {
            config,
            state: Mutex::new(PerAddress::default()),
        }
    }

    pub(crate) fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// How much longer `ip` is blocked, if it is.
    pub(crate) fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        self.state
            .lock()
            .blocked_until
            .get(&ip)
            .filter(|t| **t > now)
            .map(|t| *t - now)
    }

    /// Counts an upgrade attempt from `ip`; false when it is over HandshakesPerMinutePerIp.
    pub(crate) fn admit_handshake(&self, ip: IpAddr) -> bool {
        let limit = self.config.handshakes_per_minute_per_ip;
        if limit == 0 {
            return true;
        }
        let now = Instant::now();
        let mut st = self.state.lock();
        let entry = st.handshakes.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= HANDSHAKE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= limit
    }

    /// Records a violation by `ip`; true when the address is blocked (by this one or
    /// already). A block is one episode: violations while it lasts neither count toward
    /// another nor log again.
    pub(crate) fn violation(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut st = self.state.lock();
        if st.blocked_until.get(&ip).is_some_and(|t| *t > now) {
            return true;
        }
        let entry = st.violations.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= self.config.block {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now;
        if entry.0 >= self.config.violations_before_block {
            st.violations.remove(&ip);
            st.blocked_until.insert(ip, now + self.config.block);
            log::warn!(
                "{ip} blocked for {:?} after {} violations",
                self.config.block,
                self.config.violations_before_block
            );
            return true;
        }
        false
    }

    /// Forgets expired blocks, stale violations and old handshake windows.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let block = self.config.block;
        let mut st = self.state.lock();
        st.blocked_until.retain(|_, t| *t > now);
        st.violations
            .retain(|_, (_, last)| now.duration_since(*last) < block);
        st.handshakes
            .retain(|_, (start, _)| now.duration_since(*start) < HANDSHAKE_WINDOW);
    }

    /// Addresses blocked now.
    pub(crate) fn blocked_count(&self) -> usize {
        let now = Instant::now();
        self.state
            .lock()
            .blocked_until
            .values()
            .filter(|t| **t > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let cfg = RateLimitConfig {
            messages_per_second: 10,
            burst: 3,
            ..Default::default()
        };
        let mut b = TokenBucket::new(&cfg);
        let t0 = b.last;
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(
            b.take(t0 + Duration::from_millis(110)),
            "one token back after 100 ms at 10/s"
        );
        assert!(!b.take(t0 + Duration::from_millis(110)));
    }

    #[test]
    fn violations_block_and_expire() {
        let cfg = RateLimitConfig {
            violations_before_block: 3,
            block: Duration::from_millis(50),
            ..Default::default()
        };
        let limits = Limits::new(cfg);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(!limits.violation(ip) && !limits.violation(ip));
        assert!(limits.violation(ip));
        let until = limits.blocked_for(ip).unwrap();
        // More violations during the block: still blocked, the block not started again.
        assert!((0..10).all(|_| limits.violation(ip)));
        assert!(limits.blocked_for(ip).unwrap() <= until);
        assert!(limits.state.lock().violations.is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert!(limits.blocked_for(ip).is_none());
        limits.sweep();
        assert_eq!(limits.blocked_count(), 0);
    }
}
