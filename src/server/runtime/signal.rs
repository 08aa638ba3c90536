//! The shutdown flag, and the condvar every background thread waits on: shutdown phases wait
//! on it for threads to exit, `Server::join` for a request.
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::wake::Waker;

/// The shutdown flag, the condvar every background thread waits on, and a wake descriptor
/// for the accept loop's `poll`.
#[derive(Debug)]
pub(crate) struct ShutdownSignal {
    requested: AtomicBool,
    /// When the first request came and how many connections were open then (the report's
    /// phase 1 starts there, even when the shutdown itself runs later on another thread).
    first_request: OnceLock<(Instant, usize)>,
    skip_waits: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
    pub waker: Waker,
}

impl ShutdownSignal {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(ShutdownSignal {
            requested: AtomicBool::new(false),
            first_request: OnceLock::new(),
            skip_waits: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            waker: Waker::new()?,
        })
    }

    /// Sets the flag and wakes every waiter; the first call also notes the time and
    /// `open_connections` for the shutdown report. Returns false if it was already set.
    pub(crate) fn request(&self, open_connections: usize) -> bool {
        let _ = self.first_request.set((Instant::now(), open_connections));
        let first = !self.requested.swap(true, Ordering::SeqCst);
        self.notify();
        self.waker.wake();
        first
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// When shutdown was first requested, and how many connections were open then.
    pub(crate) fn first_request(&self) -> Option<(Instant, usize)> {
        self.first_request.get().copied()
    }

    /// A second signal: the remaining shutdown waits end at once.
    pub(crate) fn skip_waits(&self) {
        self.skip_waits.store(true, Ordering::SeqCst);
        self.notify();
        self.waker.wake();
    }

    pub(crate) fn waits_skipped(&self) -> bool {
        self.skip_waits.load(Ordering::SeqCst)
    }

    /// Wakes everything waiting on the condvar (a thread exited, a phase may proceed).
    pub(crate) fn notify(&self) {
        let _g = self.lock.lock();
        self.cond.notify_all();
    }

    /// Waits until `done()` holds, the deadline passes, or (when `skippable`) waits are
    /// skipped. Re-checks whenever the condvar is notified. Returns `done()`.
    pub(crate) fn wait_until(
        &self,
        deadline: Instant,
        skippable: bool,
        mut done: impl FnMut() -> bool,
    ) -> bool {
        let mut g = self.lock.lock();
        loop {
            if done() {
                return true;
            }
            if (skippable && self.waits_skipped()) || Instant::now() >= deadline {
                return done();
            }
            self.cond.wait_until(&mut g, deadline);
        }
    }

    /// Blocks until shutdown is requested or `timeout` passes; true when requested.
    pub(crate) fn wait_requested(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(crate::wake::after);
        let mut g = self.lock.lock();
        while !self.is_requested() {
            match deadline {
                Some(d) => {
                    if self.cond.wait_until(&mut g, d).timed_out() {
                        break;
                    }
                }
                None => self.cond.wait(&mut g),
            }
        }
        self.is_requested()
    }
}
