//! Client messages as the server reads them: parse and validate the envelope, then build the
//! reply it would send (response or error). Any panic is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        hydrogen_ws::fuzzing::envelope(text);
    }
});
