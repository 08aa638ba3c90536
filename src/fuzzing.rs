//! Entry points for the fuzz targets in `tests/fuzz` (feature `fuzzing`; not a public API).

use crate::message::{self, Incoming, ReplyTo};

/// Reads one client message the way a connection does, and builds the reply it would send.
pub fn envelope(text: &str) {
    let reply = match message::parse_incoming(text) {
        Ok(Incoming::Command(c)) => message::response_ok(&ReplyTo::from(&c), &c.data),
        Ok(Incoming::Response(r)) => match r.result {
            Ok(data) => data.to_string(),
            Err(e) => message::bare_error(&e),
        },
        Ok(Incoming::Ack { id }) => id,
        Ok(Incoming::LegacyStatus) => String::new(),
        Err(invalid) => message::error_reply(invalid.reply_to.as_ref(), &invalid.error),
    };
    // The reply must itself be valid JSON whenever it is an object.
    if reply.starts_with('{') {
        let _: serde_json::Value = serde_json::from_str(&reply).expect("replies are valid JSON");
    }
}
