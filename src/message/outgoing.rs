//! What the server sends in reply: responses and bare errors, serialized in one pass.
#![forbid(unsafe_code)]

use serde::Serialize;
use serde_json::Value;

use crate::message::envelope::{ReplyTo, WireError, timestamp_now};

#[derive(Serialize)]
struct ResponseOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    timestamp: String,
    channel: &'a str,
    action: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a WireError>,
}

/// `{"type":"response", ..., "status":"ok", "data": data}`.
pub(crate) fn response_ok(to: &ReplyTo, data: &Value) -> String {
    response(to, Some(data), None)
}

/// `{"type":"response", ..., "status":"error", "error": {...}}`.
pub(crate) fn response_error(to: &ReplyTo, error: &WireError) -> String {
    response(to, None, Some(error))
}

fn response(to: &ReplyTo, data: Option<&Value>, error: Option<&WireError>) -> String {
    let out = ResponseOut {
        kind: "response",
        id: &to.id,
        timestamp: timestamp_now(),
        channel: &to.channel,
        action: &to.action,
        status: if error.is_some() { "error" } else { "ok" },
        data,
        error,
    };
    serde_json::to_string(&out).expect("serializing a response cannot fail")
}

/// The bare `{"error":{...}}` for input whose id could not be read.
pub(crate) fn bare_error(error: &WireError) -> String {
    serde_json::json!({ "error": error }).to_string()
}

/// An error addressed as well as the input allows: a response, or a bare error.
pub(crate) fn error_reply(reply_to: Option<&ReplyTo>, error: &WireError) -> String {
    match reply_to {
        Some(to) => response_error(to, error),
        None => bare_error(error),
    }
}
