//! The envelope's parts (docs/protocol.md §2): error codes and error objects, commands,
//! what a client may send, names and their limits, timestamps.
#![forbid(unsafe_code)]

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest command id accepted (docs/protocol.md §2).
pub(crate) const MAX_ID_LEN: usize = 128;
/// Longest channel or action name accepted.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Deepest nesting of arrays/objects accepted in a message. serde_json would recurse 128
/// levels, more than a 256 KiB connection stack holds in a debug build; commands to a device
/// never need more than a few.
pub(crate) const MAX_JSON_DEPTH: usize = 32;

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
pub(crate) fn is_valid_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Channels the server itself speaks on: no handler, service or publisher may use them
/// (a forged `system/welcome` or `system/status` would mislead every subscriber).
pub(crate) const RESERVED_CHANNELS: &[&str] = &["system"];

/// Whether `channel` is reserved for the server ([`RESERVED_CHANNELS`]).
pub(crate) fn is_reserved_channel(channel: &str) -> bool {
    RESERVED_CHANNELS.contains(&channel)
}

/// The current time as `2025-02-26T18:45:00.000Z`.
pub(crate) fn timestamp_now() -> String {
    format_time(SystemTime::now())
}

/// `t` as an ISO 8601 UTC timestamp with milliseconds.
pub(crate) fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl WireError {
    /// Reads an error object `{"code","message","details"}` as a peer sent it. A code this
    /// version does not know comes back as `Err((code, message, details))` for the caller
    /// to map (to `server_error`, keeping what it needs).
    pub(crate) fn from_object(e: &Value) -> Result<WireError, (String, String, Value)> {
        let text = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (code, message) = (text("code"), text("message"));
        let details = e
            .get("details")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        match ErrorCode::from_name(&code) {
            Some(c) => Ok(WireError::new(c, message).with_details(details)),
            None => Err((code, message, details)),
        }
    }
}
