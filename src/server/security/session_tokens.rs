//! Server-issued session tokens (docs/protocol.md §7 `SessionTokens`): RS256 JWTs signed with the
//! configured private key, valid TtlSeconds, naming the identity, its role and its session.
//! They are returned by `system/auth` (and in `system/welcome`), and accepted later as Bearer
//! credentials and by `system/resume`.
#![forbid(unsafe_code)]

#[cfg(feature = "jwt")]
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
#[cfg(feature = "jwt")]
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "jwt")]
use jsonwebtoken::errors::ErrorKind;
#[cfg(feature = "jwt")]
use jsonwebtoken::jwk::Jwk;
#[cfg(feature = "jwt")]
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
#[cfg(feature = "jwt")]
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::server::security::identity::Identity;
#[cfg(feature = "jwt")]
use crate::server::security::identity::{AuthMethod, Role};

/// The `kid` and `iss` of tokens this server issues, so they are told apart from IdP tokens.
#[cfg(feature = "jwt")]
const ISSUER: &str = "hydrogen-ws";

/// The `SessionTokens` section.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionTokenConfig {
    /// `PrivateKeyPath`: PEM RSA private key (PKCS#8 or PKCS#1) that signs the tokens.
    pub private_key_path: PathBuf,
    /// `TtlSeconds` (3600): how long a token is valid.
    pub ttl: Duration,
}

impl SessionTokenConfig {
    /// Tokens signed with the key at `private_key_path`, valid one hour.
    pub fn new(private_key_path: PathBuf) -> Self {
        SessionTokenConfig {
            private_key_path,
            ttl: Duration::from_secs(3600),
        }
    }
}

#[cfg(feature = "jwt")]
#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    role: String,
    sid: String,
    iat: u64,
    exp: u64,
}

/// What a valid session token says.
pub(crate) struct SessionClaims {
    pub identity: Identity,
    pub session_id: String,
}

/// Issues and checks session tokens.
#[cfg(feature = "jwt")]
pub(crate) struct SessionTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

#[cfg(feature = "jwt")]
impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens")
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(feature = "jwt")]
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(feature = "jwt")]
impl SessionTokens {
    /// Loads the key. Errors name `SessionTokens.PrivateKeyPath` and the file (exit 2).
    pub(crate) fn load(config: &SessionTokenConfig) -> Result<SessionTokens, Error> {
        let path = &config.private_key_path;
        let bad = |m: String| Error::config("WebSocketServer.SessionTokens.PrivateKeyPath", m);
        let pem =
            std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let encoding = EncodingKey::from_rsa_pem(&pem)
            .map_err(|e| bad(format!("{} is not an RSA private key: {e}", path.display())))?;
        // The public half, through the key's own JWK (n, e).
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        Ok(SessionTokens {
            encoding,
            decoding,
            ttl: config.ttl,
        })
    }

    /// A token for `identity` in session `session_id`.
    pub(crate) fn issue(&self, identity: &Identity, session_id: &str) -> String {
        let now = unix_now();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: identity.name.clone(),
            role: identity.role.as_str().into(),
            sid: session_id.into(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(ISSUER.into());
        encode(&header, &claims, &self.encoding).expect("signing with a loaded RSA key cannot fail")
    }

    /// Whether `token` claims to be one of ours (it may still be invalid).
    pub(crate) fn is_ours(token: &str) -> bool {
        jsonwebtoken::decode_header(token).is_ok_and(|h| h.kid.as_deref() == Some(ISSUER))
    }

    /// Verifies one of our tokens; the error says why (an expired one says so).
    pub(crate) fn verify(&self, token: &str) -> Result<SessionClaims, String> {
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = 0;
        v.set_issuer(&[ISSUER]);
        v.validate_aud = false;
        v.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
        let data = decode::<Claims>(token, &self.decoding, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => "session token expired: authenticate again".to_string(),
            ErrorKind::InvalidSignature => "session token signature does not verify".to_string(),
            _ => format!("invalid session token: {e}"),
        })?;
        let c = data.claims;
        let role = Role::from_name(&c.role).ok_or("session token with an unknown role")?;
        Ok(SessionClaims {
            identity: Identity {
                name: c.sub,
                role,
                method: AuthMethod::SessionToken,
            },
            session_id: c.sid,
        })
    }
}

/// Without the `jwt` feature the server issues no session tokens: this type has no values
/// (config validation refuses a `SessionTokens` section).
#[cfg(not(feature = "jwt"))]
#[derive(Debug)]
pub(crate) enum SessionTokens {}

#[cfg(not(feature = "jwt"))]
impl SessionTokens {
    pub(crate) fn load(_: &SessionTokenConfig) -> Result<SessionTokens, Error> {
        Err(Error::config(
            "WebSocketServer.SessionTokens",
            "this build has no JWT support (the `jwt` feature is off)",
        ))
    }

    pub(crate) fn issue(&self, _: &Identity, _: &str) -> String {
        match *self {}
    }

    /// No token is ours: this build issues none.
    pub(crate) fn is_ours(_: &str) -> bool {
        false
    }

    pub(crate) fn verify(&self, _: &str) -> Result<SessionClaims, String> {
        match *self {}
    }
}
