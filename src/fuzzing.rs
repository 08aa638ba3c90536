//! Entry points for the fuzz targets in `tests/fuzz` (feature `fuzzing`; not a public API).
#![forbid(unsafe_code)]

use crate::message::{self, Incoming, ReplyTo};

/// Reads one client message the way a connection does, and builds the reply the server would
/// send for it: a response to a command, an error for anything invalid. Panics (a crash for
/// the fuzzer) if the reply is not a JSON object.
pub fn envelope(text: &str) {
    let reply = match message::parse_incoming(text) {
        Ok(Incoming::Command(c)) => Some(message::response_ok(&ReplyTo::from(&c), &c.data)),
        Ok(Incoming::Response(r)) => r.result.err().map(|e| message::bare_error(&e)),
        Ok(Incoming::Ack { .. } | Incoming::LegacyStatus) => None,
        Err(invalid) => Some(message::error_reply(
            invalid.reply_to.as_ref(),
            &invalid.error,
        )),
    };
    if let Some(reply) = reply {
        let v: serde_json::Value = serde_json::from_str(&reply).expect("replies are valid JSON");
        assert!(v.is_object(), "replies are JSON objects: {reply}");
    }
}
