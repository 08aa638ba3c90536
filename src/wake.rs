//! Sleeping until something happens: a wake descriptor (Linux `eventfd`) that other threads
//! write to, and `poll(2)` over sockets and wake descriptors with the next timer as timeout.
//! This is how a connection thread wakes at once for client bytes, queued messages and due
//! timers without ticking.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
        })
    }

    /// Makes the owner's next (or current) [`wait`] return.
    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own. A full counter
            // (EAGAIN) still leaves the descriptor readable, which is all we need.
            unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Called by the owner before it looks at its queues: clears the wake-up so that any
    /// `wake` after this point wakes the next wait.
    pub(crate) fn reset(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64; EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
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
    let mut fds: Vec<libc::pollfd> = interests
        .iter()
        .map(|i| libc::pollfd {
            fd: i.fd,
            events: (if i.read { libc::POLLIN } else { 0 })
                | (if i.write { libc::POLLOUT } else { 0 }),
            revents: 0,
        })
        .collect();
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we never wake a little early and spin on a not-yet-due timer.
                let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
                ms.min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: fds is a valid, exclusively borrowed array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        break;
    }
    out.clear();
    out.extend(fds.iter().map(|p| Readiness {
        readable: p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
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
