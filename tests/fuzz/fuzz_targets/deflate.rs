//! A hostile client's bytes through the permessage-deflate layer (inflation bounded by
//! MaxMessageSize, nothing after a refusal), and deflate-then-inflate giving the message
//! back. Any panic is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hydrogen_ws::fuzzing::deflate(data);
});
