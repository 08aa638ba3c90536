//! Compressors and inflaters are large (miniz_oxide's compressor is about 300 KiB, its
//! inflater about 40 KiB) and zeroed when made, so a connection without context takeover
//! borrows a compressor for a message and gives it back: a few are kept for the whole
//! process, and an idle connection holds none. Sharing is safe for compressors only: each
//! message ends with a full flush, which empties the dictionary, and a compressor only ever
//! encodes our own messages. Inflaters are never shared: an inflater's window holds the
//! plaintext of the client that used it, and a crafted message from the next client could
//! copy it out with back-references (found by the `deflate` fuzz target, which caught a
//! pooled inflater left mid-block). Each compressed message from a client without context
//! takeover gets a new one, never used before (client messages are few: commands, under
//! the rate limit); they are made a few at a time. New ones are made on a short-lived
//! thread with a large stack: miniz_oxide builds its state on the stack before boxing it (unoptimised builds
//! most of all), which a connection thread's small stack (ThreadStackSize) cannot hold.
#![forbid(unsafe_code)]

use flate2::{Compress, Compression, Decompress};
use parking_lot::Mutex;

/// How many of each are kept between uses.
const KEPT: usize = 4;

static COMPRESSORS: Mutex<Vec<(u32, Compress)>> = Mutex::new(Vec::new());

/// Stack of the thread that makes a compressor or inflater.
const MAKER_STACK: usize = 2 << 20;

/// Runs `make` on a thread of its own with a [`MAKER_STACK`] stack.
fn on_a_big_stack<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> T {
    let made = std::thread::Builder::new()
        .name("hws-deflate".into())
        .stack_size(MAKER_STACK)
        .spawn(make);
    match made {
        Ok(handle) => handle
            .join()
            .expect("making a DEFLATE state does not panic"),
        Err(e) => panic!("cannot start a thread to make a DEFLATE state: {e}"),
    }
}

/// A raw-DEFLATE compressor at `level`, at a block boundary with an empty dictionary.
pub(super) fn compressor(level: u32) -> Compress {
    let kept = {
        let mut pool = COMPRESSORS.lock();
        pool.iter()
            .position(|(l, _)| *l == level)
            .map(|i| pool.swap_remove(i).1)
    };
    kept.unwrap_or_else(|| on_a_big_stack(move || Compress::new(Compression::new(level), false)))
}

/// Gives `c` back for the next message. It must have ended its last message with a full
/// flush (an empty dictionary at a block boundary): resetting it in place would build
/// miniz_oxide's state on the caller's small stack.
pub(super) fn give_back_compressor(level: u32, c: Compress) {
    let mut pool = COMPRESSORS.lock();
    if pool.len() < KEPT {
        pool.push((level, c));
    }
}

/// Inflaters made and never used, so never shared with anybody: one thread start makes a
/// batch of them (a thread start costs about 40 µs here, far more than making one).
static FRESH_INFLATERS: Mutex<Vec<Decompress>> = Mutex::new(Vec::new());

/// How many inflaters one thread start makes.
const INFLATER_BATCH: usize = 4;

/// A new raw-DEFLATE inflater, never used before.
pub(super) fn inflater() -> Decompress {
    if let Some(fresh) = FRESH_INFLATERS.lock().pop() {
        return fresh;
    }
    let mut made = on_a_big_stack(|| {
        (0..INFLATER_BATCH)
            .map(|_| Decompress::new(false))
            .collect::<Vec<_>>()
    });
    let first = made.pop().expect("a batch is not empty");
    let mut fresh = FRESH_INFLATERS.lock();
    if fresh.len() < KEPT {
        fresh.extend(made);
    }
    first
}
