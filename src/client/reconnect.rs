//! The `hwc-reconnect` thread: when the I/O thread reports a link gone and the close code
//! allows it, dials again with exponential backoff and jitter ([`ReconnectPolicy`]), honouring
//! a server's `Retry-After`, and hands the new socket to the I/O thread, which restores the
//! session. It sleeps on the state condvar, so `disconnect()` wakes it at once.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use super::config::ReconnectPolicy;
use super::link;
use super::shared::{LinkEvent, Shared};
use crate::error::Error;
use crate::wake;

pub(crate) fn run(shared: Arc<Shared>) {
    let policy = shared.config.reconnect.clone();
    // Failed attempts in a row, across links that did not stay up for `reset_after`.
    let mut attempt: u32 = 0;
    loop {
        let mut st = shared.state.lock();
        while !st.stopping && !st.want_link {
            shared.changed.wait(&mut st);
        }
        if st.stopping {
            break;
        }
        if st.reset_backoff {
            attempt = 0;
            st.reset_backoff = false;
        }
        drop(st);
        let mut min_delay = Duration::ZERO;
        let mut attempts_this_time = 0;
        loop {
            attempt = attempt.saturating_add(1);
            attempts_this_time += 1;
            let delay = policy.delay(attempt, random_unit()).max(min_delay);
            if !sleep_unless_stopped(&shared, delay) {
                break;
            }
            let credentials = shared.credentials.lock().clone();
            log::debug!(
                "client: reconnect attempt {attempt} to {}",
                shared.config.url
            );
            match shared.dialer.dial(credentials.as_ref()) {
                Ok(socket) => {
                    // `attempt` is kept: only a link that stays up for `reset_after` resets it
                    // (the I/O thread says so), so a link that keeps dropping backs off.
                    // The I/O thread marks the link up; until then, wait here.
                    shared.state.lock().want_link = false;
                    let _ = shared.link_events.send(LinkEvent::Up {
                        socket: Box::new(socket),
                        attempts: attempts_this_time,
                    });
                    shared.io_waker.wake();
                    break;
                }
                Err(error) => {
                    min_delay = match &error {
                        Error::Rejected {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => Duration::ZERO,
                    };
                    if link::is_fatal(&error) || out_of_attempts(&policy, attempt) {
                        give_up(&shared, error);
                        break;
                    }
                    let _ = shared.link_events.send(LinkEvent::AttemptFailed { error });
                    shared.io_waker.wake();
                }
            }
        }
    }
}

fn out_of_attempts(policy: &ReconnectPolicy, attempt: u32) -> bool {
    policy.max_attempts.is_some_and(|max| attempt >= max)
}

fn give_up(shared: &Shared, error: Error) {
    let mut st = shared.state.lock();
    st.want_link = false;
    st.gave_up = true;
    drop(st);
    shared.changed.notify_all();
    let _ = shared.link_events.send(LinkEvent::GaveUp { error });
    shared.io_waker.wake();
}

/// Waits `delay` unless the client stops first; false if it did.
fn sleep_unless_stopped(shared: &Shared, delay: Duration) -> bool {
    let until = wake::after(delay);
    let mut st = shared.state.lock();
    while !st.stopping && st.want_link {
        if shared.changed.wait_until(&mut st, until).timed_out() {
            break;
        }
    }
    !st.stopping && st.want_link
}

/// A random number in `0.0..1.0` for the jitter (from the operating system's generator).
pub(crate) fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}
