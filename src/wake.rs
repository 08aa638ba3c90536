//! Sleeping until something happens: a wake descriptor (Linux `eventfd`) that other threads
//! write to, and `poll(2)` over sockets and wake descriptors with the next timer as timeout.
//! This is how a connection thread wakes at once for client bytes, queued messages and due
//! timers without ticking.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A wake-up descriptor. [`Waker::wake`] is cheap to call from any thread: only the first call
/// after the owner's [`Waker::reset`] makes a system call.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        let flags = EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC;
        Ok(Waker {
            fd: rustix::event::eventfd(0, flags)?,
            pending: AtomicBool::new(false),
        })
    }

    /// Makes the owner's next (or current) [`wait`] return.
    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            // A full counter (EAGAIN) still leaves the descriptor readable, which is all we
            // need.
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// Called by the owner before it looks at its queues: clears the wake-up so that any
    /// `wake` after this point wakes the next wait.
    pub(crate) fn reset(&self) {
        let mut buf = [0u8; 8];
        // EAGAIN (nothing pending) is fine.
        let _ = rustix::io::read(&self.fd, &mut buf);
        self.pending.store(false, Ordering::SeqCst);
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What to wait for on one descriptor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interest {
    pub fd: RawFd,
    pub read: bool,
    pub write: bool,
}

/// What happened on one descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Readiness {
    /// Readable, or hung up / in error (a read will say which).
    pub readable: bool,
}

/// Blocks until one of `interests` is ready or `deadline` passes (`None`: no timeout).
/// Retries on EINTR. `out` gets one entry per interest.
pub(crate) fn wait(
    interests: &[Interest],
    deadline: Option<Instant>,
    out: &mut Vec<Readiness>,
) -> io::Result<()> {
    // SAFETY: every interest names a descriptor its caller owns and keeps open across this
    // call (a socket it holds, a waker it holds), which is what `borrow_raw` requires for
    // the lifetime of the borrow: this function's body.
    let borrowed: Vec<BorrowedFd<'_>> = interests
        .iter()
        .map(|i| unsafe { BorrowedFd::borrow_raw(i.fd) })
        .collect();
    let mut fds: Vec<PollFd<'_>> = interests
        .iter()
        .zip(&borrowed)
        .map(|(i, fd)| {
            let mut flags = PollFlags::empty();
            flags.set(PollFlags::IN, i.read);
            flags.set(PollFlags::OUT, i.write);
            PollFd::from_borrowed_fd(*fd, flags)
        })
        .collect();
    loop {
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            // Round up to whole milliseconds, as poll(2) itself would: never wake a little
            // early and spin on a not-yet-due timer.
            let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
            let ms = ms.min(i32::MAX as u128) as i64;
            Timespec {
                tv_sec: ms / 1000,
                tv_nsec: (ms % 1000) * 1_000_000,
            }
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    out.clear();
    let ready = PollFlags::IN | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
    out.extend(fds.iter().map(|p| Readiness {
        readable: p.revents().intersects(ready),
    }));
    Ok(())
}

/// The earliest of some optional deadlines.
pub(crate) fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

/// `Instant::now() + d`, saturating far in the future instead of panicking.
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}
