//! systemd's notify protocol (sd_notify(3), through the `sd-notify` crate): `READY=1` with a
//! `STATUS=` naming the addresses once the server listens, `WATCHDOG=1` every half
//! `WATCHDOG_USEC` while the accept and status threads are responsive, `STOPPING=1` when
//! shutdown starts. Off unless [`crate::ServerBuilder::notify_service_manager`] asked for it
//! and `NOTIFY_SOCKET` is set (docs/behaviour.md, "Under systemd").
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Talks to the service manager, when there is one to talk to.
#[derive(Debug, Default)]
pub(crate) struct ServiceManager {
    enabled: bool,
    /// `WATCHDOG_USEC`: the service manager restarts us after this much silence.
    watchdog: Option<Duration>,
    /// The last watchdog check found a thread stuck (logged once per episode).
    withheld: AtomicBool,
}

impl ServiceManager {
    /// A manager that sends nothing.
    pub(crate) fn disabled() -> ServiceManager {
        ServiceManager::default()
    }

    /// From the environment: on when `wanted` and `NOTIFY_SOCKET` is set; the watchdog when
    /// `WATCHDOG_USEC` is set (and `WATCHDOG_PID`, if given, is this process).
    pub(crate) fn from_env(wanted: bool) -> ServiceManager {
        let enabled = wanted && std::env::var_os("NOTIFY_SOCKET").is_some();
        ServiceManager {
            enabled,
            watchdog: sd_notify::watchdog_enabled().filter(|_| enabled),
            withheld: AtomicBool::new(false),
        }
    }

    /// How often to ping the watchdog (half its timeout, as sd_watchdog_enabled(3) advises);
    /// `None` without a watchdog.
    pub(crate) fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// The watchdog's whole timeout: a thread busy longer than this counts as stuck.
    pub(crate) fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1`, with the addresses in `STATUS=` (what `systemctl status` shows).
    pub(crate) fn ready(&self, bound: &[SocketAddr]) {
        let list: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
        let status = format!("listening on {}", list.join(", "));
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// `STOPPING=1`: shutdown has started.
    pub(crate) fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
    }

    /// `WATCHDOG=1` when `responsive`; otherwise nothing (so the service manager restarts
    /// a stuck server), logged once until the threads answer again.
    pub(crate) fn watchdog(&self, responsive: Result<(), String>) {
        match responsive {
            Ok(()) => {
                if self.withheld.swap(false, Ordering::Relaxed) {
                    log::warn!("watchdog: the server threads answer again");
                }
                self.send(&[NotifyState::Watchdog]);
            }
            Err(why) => {
                if !self.withheld.swap(true, Ordering::Relaxed) {
                    log::error!("watchdog: {why}; not telling systemd we are alive");
                }
            }
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            log::warn!("sd_notify: {e}");
        }
    }
}
