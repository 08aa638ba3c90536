//! Checking credentials: API keys (constant time), JWTs and session tokens, in the order
//! docs/protocol.md §2 gives.
#![forbid(unsafe_code)]

use crate::server::security::identity::{
    ApiKey, AuthFailure, AuthMethod, Credential, Identity, Role, Secret,
};
use crate::server::security::jwt::JwtVerifier;
use crate::server::security::session_tokens::SessionTokens;
/// Checks credentials against the configured keys.
#[derive(Debug)]
pub(crate) struct Authenticator {
    keys: Vec<ApiKey>,
    auth_required: bool,
    jwt: Option<JwtVerifier>,
    session_tokens: Option<SessionTokens>,
}

impl Authenticator {
    pub(crate) fn new(
        keys: Vec<ApiKey>,
        auth_required: bool,
        jwt: Option<JwtVerifier>,
        session_tokens: Option<SessionTokens>,
    ) -> Self {
        Authenticator {
            keys,
            auth_required,
            jwt,
            session_tokens,
        }
    }

    /// The session-token issuer, when `SessionTokens` is configured.
    pub(crate) fn session_tokens(&self) -> Option<&SessionTokens> {
        self.session_tokens.as_ref()
    }

    /// The identity for a client that presented nothing: anonymous viewer when auth is off.
    pub(crate) fn anonymous(&self) -> Option<Identity> {
        (!self.auth_required).then(|| Identity {
            name: "anonymous".into(),
            role: Role::Viewer,
            method: AuthMethod::Anonymous,
        })
    }

    /// The secret of the API key named `name` (signatures are keyed with it).
    pub(crate) fn key_secret(&self, name: &str) -> Option<&Secret> {
        self.keys.iter().find(|k| k.name == name).map(|k| &k.secret)
    }

    /// Verifies a credential. Every key is compared (in constant time) so the time taken does
    /// not reveal which key, or which prefix, matched.
    pub(crate) fn verify(&self, credential: &Credential) -> Result<Identity, AuthFailure> {
        match credential {
            // Config refuses empty keys; an empty candidate is refused before any comparison.
            Credential::Key(candidate) if candidate.trim().is_empty() => {
                Err(AuthFailure("empty API key".into()))
            }
            Credential::Bearer(token) if token.trim().is_empty() => {
                Err(AuthFailure("empty token".into()))
            }
            Credential::Key(candidate) => {
                let mut found: Option<&ApiKey> = None;
                for key in &self.keys {
                    if key.secret.matches(candidate.as_bytes()) && found.is_none() {
                        found = Some(key);
                    }
                }
                found
                    .map(|k| Identity {
                        name: k.name.clone(),
                        role: k.role,
                        method: AuthMethod::Key,
                    })
                    .ok_or_else(|| AuthFailure("invalid API key".into()))
            }
            Credential::Bearer(token) => match (&self.session_tokens, &self.jwt) {
                (Some(tokens), _) if SessionTokens::is_ours(token) => tokens
                    .verify(token)
                    .map(|c| c.identity)
                    .map_err(AuthFailure),
                (_, Some(jwt)) => jwt.verify(token).map_err(AuthFailure),
                _ => Err(AuthFailure(
                    "Bearer tokens are not accepted: this server has no Jwt settings".into(),
                )),
            },
        }
    }
}
