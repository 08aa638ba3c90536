//! Per-message authentication (docs/protocol.md §4): `auth.token` must be a credential of the
//! connection's own identity, and `auth.signature` (HMAC-SHA256 with the caller's API key, hex)
//! over `id \n timestamp \n channel \n action \n compact JSON of data` is required for
//! SensitiveActions, with a timestamp within 30 s of the server clock.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use ring::hmac;

use crate::message::{Command, ErrorCode, WireError};
use crate::server::security::auth::Authenticator;
use crate::server::security::identity::{AuthMethod, Credential, Identity};

/// How far a signed message's timestamp may be from the server clock.
pub(crate) const SIGNATURE_WINDOW: Duration = Duration::from_secs(30);
/// How long a verified signature is remembered: a timestamp up to the window ahead of the
/// clock stays acceptable for twice the window.
const REMEMBER_SIGNATURES: Duration = Duration::from_secs(61);
/// Signatures remembered at most (a map entry is about 64 bytes): past it, signed commands
/// get `rate_limited` until older ones are forgotten.
const MAX_REMEMBERED: usize = 65_536;

/// Every signed command verified in the last minute, server-wide: a captured signed
/// command is refused when it comes again, on the same connection, after a resume, or on a
/// fresh connection of the same identity. Only commands signed with a configured key get
/// in, so only key holders can fill it, and it is bounded anyway.
///
/// It also knows which actions are SensitiveActions (`channel/action`): those must be signed.
#[derive(Debug, Default)]
pub(crate) struct SignedCommands {
    sensitive: Vec<String>,
    seen: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl SignedCommands {
    /// A guard that requires signatures for `sensitive_actions` (`channel/action` names).
    pub(crate) fn new(sensitive_actions: Vec<String>) -> Self {
        SignedCommands {
            sensitive: sensitive_actions,
            seen: Mutex::default(),
        }
    }

    /// Records `tag`; an error when it was seen within the last minute or the memory is full.
    fn first_use(&self, tag: &[u8]) -> Result<(), WireError> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_REMEMBERED / 2 {
            seen.retain(|_, forget_at| *forget_at > now);
        }
        if seen.get(tag).is_some_and(|forget_at| *forget_at > now) {
            return Err(refused(
                "this signed command was already executed: sign each command once, with a fresh id",
            ));
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(WireError::new(
                ErrorCode::RateLimited,
                "too many signed commands in the last minute; try again shortly",
            ));
        }
        seen.insert(tag.to_vec(), now + REMEMBER_SIGNATURES);
        Ok(())
    }
}

fn refused(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::AuthFailed, message)
}

/// The text a signature covers. `data` is serialized compactly with its keys sorted (what
/// serde_json produces, and `json.dumps(data, separators=(",", ":"), sort_keys=True)`).
pub fn signing_payload(
    id: &str,
    timestamp: &str,
    channel: &str,
    action: &str,
    data: &serde_json::Value,
) -> String {
    format!("{id}\n{timestamp}\n{channel}\n{action}\n{data}")
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `cmd`'s `auth` object for a client authenticated as `identity`: a token must be
/// one of `identity`'s own credentials (verified by `keys`), a signature must verify with its
/// API key and be fresh, and a sensitive action must be signed.
pub(crate) fn check(
    signed: &SignedCommands,
    keys: &Authenticator,
    identity: &Identity,
    cmd: &Command,
) -> Result<(), WireError> {
    let auth = cmd.auth.clone().unwrap_or_default();
    if let Some(token) = &auth.token {
        let credential = if token.matches('.').count() == 2 {
            Credential::Bearer(token.clone())
        } else {
            Credential::Key(token.clone())
        };
        let other = keys
            .verify(&credential)
            .map_err(|why| refused(format!("auth.token refused: {}", why.0)))?;
        if other.name != identity.name {
            return Err(refused(
                "auth.token belongs to another identity than this connection",
            ));
        }
    }
    let qualified = format!("{}/{}", cmd.channel, cmd.action);
    let sensitive = signed.sensitive.contains(&qualified);
    if sensitive && identity.method != AuthMethod::Key {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "{qualified} is a sensitive action: it needs a connection authenticated with an API key, which signs it"
            ),
        ));
    }
    let Some(signature) = auth.signature else {
        return if sensitive {
            Err(refused(format!(
                "{qualified} is a sensitive action: sign it (auth.signature: hex HMAC-SHA256 with your key over id, timestamp, channel, action, data)"
            )))
        } else {
            Ok(())
        };
    };
    let timestamp = cmd
        .timestamp
        .as_deref()
        .ok_or_else(|| refused("a signed message needs a timestamp"))?;
    let sent = humantime::parse_rfc3339_weak(timestamp)
        .map_err(|_| refused("timestamp is not ISO 8601 (2025-02-26T18:45:00.000Z)"))?;
    let now = SystemTime::now();
    let skew = now.duration_since(sent).unwrap_or_else(|e| e.duration());
    if skew > SIGNATURE_WINDOW {
        return Err(refused(format!(
            "timestamp is {}s from the server clock (at most 30 s): check your clock",
            skew.as_secs()
        )));
    }
    let secret = match identity.method {
        AuthMethod::Key => keys.key_secret(&identity.name),
        _ => None,
    };
    let Some(secret) = secret else {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            "only connections authenticated with an API key can sign messages",
        ));
    };
    let expected =
        hex_decode(signature.trim()).ok_or_else(|| refused("auth.signature must be hex"))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let payload = signing_payload(&cmd.id, timestamp, &cmd.channel, &cmd.action, &cmd.data);
    hmac::verify(&key, payload.as_bytes(), &expected)
        .map_err(|_| refused("auth.signature does not verify"))?;
    signed.first_use(&expected)
}
