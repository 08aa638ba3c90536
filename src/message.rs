//! The message envelope of docs/protocol.md §2: parsing and validating what clients send, building
//! what the server sends (responses, events, errors).

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest command id accepted (docs/protocol.md §2).
pub const MAX_ID_LEN: usize = 128;
/// Longest channel or action name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Deepest nesting of arrays/objects accepted in a message. serde_json would recurse 128
/// levels, more than a 256 KiB connection stack holds in a debug build; commands to a device
/// never need more than a few.
pub const MAX_JSON_DEPTH: usize = 32;

/// The error codes of docs/protocol.md §2, as sent in `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Credentials missing, wrong or expired.
    AuthFailed,
    /// The message is not a valid envelope (bad JSON, wrong types, missing fields, binary).
    InvalidMessage,
    /// The server (or a handler) failed; the message says what happened.
    ServerError,
    /// The caller's role does not allow this action.
    Forbidden,
    /// No handler is registered for the channel.
    UnknownChannel,
    /// The channel exists but has no such action.
    UnknownAction,
    /// Too many messages; slow down.
    RateLimited,
    /// The message exceeded MaxMessageSize.
    MessageTooLarge,
    /// The handler did not answer in time.
    Timeout,
    /// The handler (service) is gone.
    Unavailable,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// This command id was already used in this session.
    DuplicateId,
}

impl ErrorCode {
    /// The snake_case code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::ServerError => "server_error",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::DuplicateId => "duplicate_id",
        }
    }
}

impl ErrorCode {
    /// Every code, in docs/protocol.md §2 order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::AuthFailed,
        ErrorCode::InvalidMessage,
        ErrorCode::ServerError,
        ErrorCode::Forbidden,
        ErrorCode::UnknownChannel,
        ErrorCode::UnknownAction,
        ErrorCode::RateLimited,
        ErrorCode::MessageTooLarge,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::DuplicateId,
    ];

    /// The code for its wire name (`"timeout"` → `Timeout`).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The error object every error carries: `{"code","message","details"}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WireError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong and what to do, for a person.
    pub message: String,
    /// Extra facts (the offending field, limits); an empty object when there are none.
    pub details: Value,
}

impl WireError {
    /// An error with empty details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            details: Value::Object(Map::new()),
        }
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// A validated command from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The client's id; the response carries it back.
    pub id: String,
    /// `system`, `print`, ... (`[a-z0-9_.-]{1,64}`).
    pub channel: String,
    /// The action within the channel (`[a-z0-9_.-]{1,64}`).
    pub action: String,
    /// The payload: always an object (`{}` when the client sent none).
    pub data: Value,
    /// The client's `timestamp`, as sent (needed to check signatures).
    pub timestamp: Option<String>,
    /// The per-message `auth` object: `token` and `signature`, when sent.
    pub auth: Option<MessageAuth>,
}

/// The per-message `auth` object of docs/protocol.md §2.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageAuth {
    /// A credential (API key or JWT) that must belong to the connection's identity.
    pub token: Option<String>,
    /// HMAC-SHA256 (hex) of `id \n timestamp \n channel \n action \n compact JSON of data`.
    pub signature: Option<String>,
}

/// What a client message turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    Command(Command),
    Ack {
        id: String,
    },
    /// A service connection's answer to a command forwarded to it.
    Response(ServiceResponse),
    /// Hydrogen's legacy `{"type":"status"}`: answered with the bare status object.
    LegacyStatus,
}

/// A service's answer: the forwarded command's id and its result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceResponse {
    pub id: String,
    pub result: Result<Value, WireError>,
}

/// Where to address the error for an invalid message: a response when the id was readable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invalid {
    pub reply_to: Option<ReplyTo>,
    pub error: WireError,
}

/// The id (and channel/action, when readable) an error response goes back under.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ReplyTo {
    pub id: String,
    pub channel: String,
    pub action: String,
}

impl From<&Command> for ReplyTo {
    fn from(c: &Command) -> Self {
        ReplyTo {
            id: c.id.clone(),
            channel: c.channel.clone(),
            action: c.action.clone(),
        }
    }
}

/// Whether `s` is a valid channel or action name: `[a-z0-9_.-]{1,64}`.
pub fn is_valid_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Channels the server itself speaks on: no handler, service or publisher may use them
/// (a forged `system/welcome` or `system/status` would mislead every subscriber).
pub const RESERVED_CHANNELS: &[&str] = &["system"];

/// Whether `channel` is reserved for the server ([`RESERVED_CHANNELS`]).
pub fn is_reserved_channel(channel: &str) -> bool {
    RESERVED_CHANNELS.contains(&channel)
}

/// Bounds the recursion the JSON parser will do: scans bracket depth outside strings and
/// returns the depth reached when it exceeds `max`. Not a parser: malformed input that stays
/// shallow passes and is refused by serde_json.
fn nesting_beyond(text: &str, max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Parses and validates one text message (docs/protocol.md §2).
pub(crate) fn parse_incoming(text: &str) -> Result<Incoming, Box<Invalid>> {
    let bare = |message: String| {
        Box::new(Invalid {
            reply_to: None,
            error: WireError::new(ErrorCode::InvalidMessage, message),
        })
    };
    if let Some(depth) = nesting_beyond(text, MAX_JSON_DEPTH) {
        return Err(bare(format!(
            "message nests deeper than {MAX_JSON_DEPTH} levels (at least {depth})"
        )));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| bare(format!("message is not valid JSON: {e}")))?;
    // serde_json keeps the last of two equal keys; a filter, a log line and a handler could
    // then each see another message, so such a message is refused (after the parse above,
    // which has already refused anything that is not JSON).
    if let Err(e) = serde_json::from_str::<crate::json_keys::UniqueKeys>(text) {
        return Err(bare(format!("message is not accepted: {e}")));
    }
    let Value::Object(mut obj) = value else {
        return Err(bare(
            "message must be a JSON object (the envelope of docs/protocol.md §2)".into(),
        ));
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_LEN => {
            Some(s.clone())
        }
        _ => None,
    };
    let field = |obj: &Map<String, Value>, k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let reply_to = id.as_ref().map(|id| ReplyTo {
        id: id.clone(),
        channel: field(&obj, "channel"),
        action: field(&obj, "action"),
    });
    let invalid = |field_name: &str, message: String| {
        Box::new(Invalid {
            reply_to: reply_to.clone(),
            error: WireError::new(ErrorCode::InvalidMessage, message)
                .with_details(serde_json::json!({"field": field_name})),
        })
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => {
            return Err(invalid(
                "type",
                "type must be a string: \"command\" or \"ack\"".into(),
            ));
        }
        None => {
            return Err(invalid(
                "type",
                "missing field type: \"command\" or \"ack\"".into(),
            ));
        }
    };
    match kind {
        "status" if !obj.contains_key("channel") => Ok(Incoming::LegacyStatus),
        "ack" => match id {
            Some(id) => Ok(Incoming::Ack { id }),
            None => Err(invalid(
                "id",
                format!("ack needs the event's id (a string of 1 to {MAX_ID_LEN} characters)"),
            )),
        },
        "response" => {
            let Some(id) = id else {
                return Err(invalid(
                    "id",
                    "a response needs the id of the command it answers".into(),
                ));
            };
            let result = match obj.get("status").and_then(Value::as_str) {
                Some("ok") => Ok(obj
                    .remove("data")
                    .unwrap_or_else(|| Value::Object(Map::new()))),
                Some("error") => {
                    let e = obj.get("error").cloned().unwrap_or(Value::Null);
                    let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
                    let (code, message) = (
                        text("code").unwrap_or_default(),
                        text("message").unwrap_or_default(),
                    );
                    let details = e
                        .get("details")
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Map::new()));
                    Err(match ErrorCode::from_name(&code) {
                        Some(c) => WireError::new(c, message).with_details(details),
                        None => WireError::new(ErrorCode::ServerError, message).with_details(
                            serde_json::json!({"service_code": code, "service_details": details}),
                        ),
                    })
                }
                _ => {
                    return Err(invalid(
                        "status",
                        "a response needs status \"ok\" (with data) or \"error\" (with error)"
                            .into(),
                    ));
                }
            };
            Ok(Incoming::Response(ServiceResponse { id, result }))
        }
        "command" => {
            let Some(id) = id else {
                return Err(invalid(
                    "id",
                    format!("command needs an id: a string of 1 to {MAX_ID_LEN} characters"),
                ));
            };
            let name = |key: &str| match obj.get(key) {
                Some(Value::String(s)) if is_valid_name(s) => Ok(s.clone()),
                Some(Value::String(s)) => Err(invalid(
                    key,
                    format!("{key} {s:?} must match [a-z0-9_.-]{{1,{MAX_NAME_LEN}}}"),
                )),
                Some(_) => Err(invalid(key, format!("{key} must be a string"))),
                None => Err(invalid(key, format!("missing field {key}"))),
            };
            let channel = name("channel")?;
            let action = name("action")?;
            let data = match obj.remove("data") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(v @ Value::Object(_)) => v,
                Some(_) => return Err(invalid("data", "data must be a JSON object".into())),
            };
            match obj.get("timestamp") {
                None | Some(Value::String(_)) | Some(Value::Null) => {}
                Some(_) => {
                    return Err(invalid(
                        "timestamp",
                        "timestamp must be an ISO 8601 string".into(),
                    ));
                }
            }
            let timestamp = obj
                .get("timestamp")
                .and_then(Value::as_str)
                .map(str::to_string);
            let auth = match obj.get("auth") {
                None | Some(Value::Null) => None,
                Some(Value::Object(a)) => {
                    let field = |k: &str| match a.get(k) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(v)) => Ok(Some(v.clone())),
                        Some(_) => Err(k.to_string()),
                    };
                    match (field("token"), field("signature")) {
                        (Ok(token), Ok(signature)) => Some(MessageAuth { token, signature }),
                        _ => {
                            return Err(invalid(
                                "auth",
                                "auth.token and auth.signature must be strings".into(),
                            ));
                        }
                    }
                }
                Some(_) => {
                    return Err(invalid(
                        "auth",
                        "auth must be an object {\"token\", \"signature\"}".into(),
                    ));
                }
            };
            Ok(Incoming::Command(Command {
                id,
                channel,
                action,
                data,
                timestamp,
                auth,
            }))
        }
        other => Err(invalid(
            "type",
            format!("type {other:?} is not accepted from clients: use \"command\" or \"ack\""),
        )),
    }
}

/// The current time as `2025-02-26T18:45:00.000Z`.
pub fn timestamp_now() -> String {
    format_time(SystemTime::now())
}

/// `t` as an ISO 8601 UTC timestamp with milliseconds.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

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

#[cfg(test)]
#[path = "message_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> Invalid {
        *parse_incoming(text).unwrap_err()
    }

    #[test]
    fn valid_command() {
        let m = parse_incoming(r#"{"type":"command","id":"1","channel":"system","action":"ping"}"#)
            .unwrap();
        let Incoming::Command(c) = m else {
            panic!("not a command")
        };
        assert_eq!(
            (c.id.as_str(), c.channel.as_str(), c.action.as_str()),
            ("1", "system", "ping")
        );
        assert_eq!(c.data, serde_json::json!({}));
    }

    #[test]
    fn bad_json_is_bare() {
        let e = err("{nope");
        assert!(e.reply_to.is_none());
        assert_eq!(e.error.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn bad_fields_reply_under_id() {
        let e = err(r#"{"type":"command","id":"7","channel":"System","action":"ping"}"#);
        assert_eq!(e.reply_to.unwrap().id, "7");
        assert_eq!(e.error.details["field"], "channel");
        let e = err(r#"{"type":"command","id":"8","channel":"system","action":"ping","data":[1]}"#);
        assert_eq!(e.error.details["field"], "data");
        let e = err(r#"{"type":"command","id":5,"channel":"system","action":"ping"}"#);
        assert!(e.reply_to.is_none());
        let long = "x".repeat(MAX_ID_LEN + 1);
        let e = err(&format!(
            r#"{{"type":"command","id":"{long}","channel":"system","action":"ping"}}"#
        ));
        assert_eq!(e.error.details["field"], "id");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(err(&deep).error.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn nesting_scan_ignores_brackets_in_strings() {
        let inside = format!(
            r#"{{"type":"command","id":"1","channel":"a","action":"b","data":{{"s":"{}"}}}}"#,
            "[".repeat(100)
        );
        assert!(parse_incoming(&inside).is_ok());
        let escaped = r#"{"type":"command","id":"1","channel":"a","action":"b","data":{"s":"\\"}}"#;
        assert!(parse_incoming(escaped).is_ok());
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(nesting_beyond(&ok, MAX_JSON_DEPTH).is_none());
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert_eq!(
            nesting_beyond(&deep, MAX_JSON_DEPTH),
            Some(MAX_JSON_DEPTH + 1)
        );
    }

    #[test]
    fn error_codes_round_trip_by_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_name("jammed"), None);
    }

    #[test]
    fn legacy_status() {
        assert_eq!(
            parse_incoming(r#"{"type":"status"}"#).unwrap(),
            Incoming::LegacyStatus
        );
    }
}
