//! `config.json` as the binary loads it: parse, validate, and print the redacted view.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((config, _report)) = hydrogen_ws::Config::from_json_str(text) {
            let _ = config.validate();
            let _ = config.to_redacted_json().to_string();
        }
    }
});
