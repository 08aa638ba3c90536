//! Parsing and validating what a client sends (docs/protocol.md §2): depth first, then JSON
//! with unique keys, then the envelope of each message type.
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use crate::message::envelope::{
    Command, ErrorCode, Incoming, Invalid, MAX_ID_LEN, MAX_JSON_DEPTH, MAX_NAME_LEN, MessageAuth,
    ReplyTo, ServiceResponse, WireError, is_valid_name,
};

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
    let Value::Object(obj) = value else {
        return Err(bare(
            "message must be a JSON object (the envelope of docs/protocol.md §2)".into(),
        ));
    };
    Envelope::new(obj).parse()
}

/// A JSON object being read as an envelope: errors go under its id when it has one.
struct Envelope {
    obj: Map<String, Value>,
    id: Option<String>,
    reply_to: Option<ReplyTo>,
}

impl Envelope {
    fn new(obj: Map<String, Value>) -> Self {
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_LEN => {
                Some(s.clone())
            }
            _ => None,
        };
        let field = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let reply_to = id.as_ref().map(|id| ReplyTo {
            id: id.clone(),
            channel: field("channel"),
            action: field("action"),
        });
        Envelope { obj, id, reply_to }
    }

    /// `invalid_message` naming `field`, under the message's id when it has one.
    fn invalid(&self, field: &str, message: String) -> Box<Invalid> {
        Box::new(Invalid {
            reply_to: self.reply_to.clone(),
            error: WireError::new(ErrorCode::InvalidMessage, message)
                .with_details(serde_json::json!({"field": field})),
        })
    }

    fn parse(self) -> Result<Incoming, Box<Invalid>> {
        let kind = match self.obj.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                let why = "type must be a string: \"command\" or \"ack\"";
                return Err(self.invalid("type", why.into()));
            }
            None => {
                let why = "missing field type: \"command\" or \"ack\"";
                return Err(self.invalid("type", why.into()));
            }
        };
        match kind.as_str() {
            "status" if !self.obj.contains_key("channel") => Ok(Incoming::LegacyStatus),
            "ack" => match self.id.clone() {
                Some(id) => Ok(Incoming::Ack { id }),
                None => Err(self.invalid(
                    "id",
                    format!("ack needs the event's id (a string of 1 to {MAX_ID_LEN} characters)"),
                )),
            },
            "response" => self.response(),
            "command" => self.command(),
            other => Err(self.invalid(
                "type",
                format!("type {other:?} is not accepted from clients: use \"command\" or \"ack\""),
            )),
        }
    }

    /// A service's answer to a command forwarded to it.
    fn response(mut self) -> Result<Incoming, Box<Invalid>> {
        let Some(id) = self.id.clone() else {
            let why = "a response needs the id of the command it answers";
            return Err(self.invalid("id", why.into()));
        };
        let result = match self.obj.get("status").and_then(Value::as_str) {
            Some("ok") => Ok(self
                .obj
                .remove("data")
                .unwrap_or_else(|| Value::Object(Map::new()))),
            Some("error") => {
                let e = self.obj.get("error").cloned().unwrap_or(Value::Null);
                Err(
                    WireError::from_object(&e).unwrap_or_else(|(code, message, details)| {
                        WireError::new(ErrorCode::ServerError, message).with_details(
                            serde_json::json!({"service_code": code, "service_details": details}),
                        )
                    }),
                )
            }
            _ => {
                let why = "a response needs status \"ok\" (with data) or \"error\" (with error)";
                return Err(self.invalid("status", why.into()));
            }
        };
        Ok(Incoming::Response(ServiceResponse { id, result }))
    }

    /// A command: id, channel, action, data (an object), timestamp, auth.
    fn command(mut self) -> Result<Incoming, Box<Invalid>> {
        let Some(id) = self.id.clone() else {
            return Err(self.invalid(
                "id",
                format!("command needs an id: a string of 1 to {MAX_ID_LEN} characters"),
            ));
        };
        let channel = self.name("channel")?;
        let action = self.name("action")?;
        let data = match self.obj.remove("data") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(self.invalid("data", "data must be a JSON object".into())),
        };
        let timestamp = match self.obj.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => {
                let why = "timestamp must be an ISO 8601 string";
                return Err(self.invalid("timestamp", why.into()));
            }
        };
        let auth = self.auth()?;
        Ok(Incoming::Command(Command {
            id,
            channel,
            action,
            data,
            timestamp,
            auth,
        }))
    }

    /// The channel or action name under `key`.
    fn name(&self, key: &str) -> Result<String, Box<Invalid>> {
        match self.obj.get(key) {
            Some(Value::String(s)) if is_valid_name(s) => Ok(s.clone()),
            Some(Value::String(s)) => Err(self.invalid(
                key,
                format!("{key} {s:?} must match [a-z0-9_.-]{{1,{MAX_NAME_LEN}}}"),
            )),
            Some(_) => Err(self.invalid(key, format!("{key} must be a string"))),
            None => Err(self.invalid(key, format!("missing field {key}"))),
        }
    }

    /// The optional `auth` object: `token` and `signature`, strings when given.
    fn auth(&self) -> Result<Option<MessageAuth>, Box<Invalid>> {
        let a = match self.obj.get("auth") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(a)) => a,
            Some(_) => {
                let why = "auth must be an object {\"token\", \"signature\"}";
                return Err(self.invalid("auth", why.into()));
            }
        };
        let field = |k: &str| match a.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(()),
        };
        match (field("token"), field("signature")) {
            (Ok(token), Ok(signature)) => Ok(Some(MessageAuth { token, signature })),
            _ => {
                let why = "auth.token and auth.signature must be strings";
                Err(self.invalid("auth", why.into()))
            }
        }
    }
}

#[cfg(test)]
#[path = "properties.rs"]
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
