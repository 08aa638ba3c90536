//! Who a client is: API keys, roles, constant-time comparison, and redaction of secrets.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::server::security::jwt::JwtVerifier;
use crate::server::security::session_tokens::SessionTokens;

/// What a client may do, from least to most (docs/protocol.md §3). `Service` is a device controller
/// process; it may do what an operator may plus register channels and publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Subscribe; `system` status, info and ping.
    Viewer,
    /// Also commands on application channels.
    Operator,
    /// A controller process: operator rights plus `register` and `publish`.
    Service,
    /// Everything, including `system/threads` and `system/disconnect`.
    Admin,
}

impl Role {
    /// Parses `viewer`, `operator`, `admin`, `service` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Role> {
        match name.to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }

    /// The lowercase name used in config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }

    /// Whether this role grants what `required` grants. `Admin` grants everything;
    /// `Service` grants what `Operator` does.
    pub fn allows(self, required: Role) -> bool {
        self == Role::Admin
            || self >= required && !(required == Role::Service && self != Role::Service)
    }
}

/// A secret string (API key, token). `Debug` and [`Secret::redacted`] show at most its first
/// 5 characters; the value itself is only reachable inside the crate.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    /// The first 5 characters followed by `…` (just `…` for short secrets).
    pub fn redacted(&self) -> String {
        if self.0.chars().count() >= 12 {
            let head: String = self.0.chars().take(5).collect();
            format!("{head}…")
        } else {
            "…".into()
        }
    }

    /// The secret's bytes, for keying an HMAC.
    /// The secret itself, for the one place that must send it (the client's `Authorization`).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Constant-time equality with `candidate` (time does not depend on where they differ).
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

/// One accepted API key: a name for logs, the secret, and the role it grants.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Shown in logs and the thread dump instead of the key.
    pub name: String,
    /// The key itself.
    pub secret: Secret,
    /// The role a client presenting this key gets.
    pub role: Role,
}

impl ApiKey {
    /// A named key granting `role`.
    pub fn new(name: &str, secret: Secret, role: Role) -> Self {
        ApiKey {
            name: name.to_string(),
            secret,
            role,
        }
    }
}

/// How a client proved who it is. It decides what else it may do: only an API key can sign
/// sensitive commands (the key is the HMAC key), so a session token, which anyone who
/// captured it can present, never reaches a sensitive action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No credential: `AuthRequired` is false.
    Anonymous,
    /// An API key (`Authorization: Key`, `?key=`, `system/auth {"key"}`).
    Key,
    /// A JWT from the configured identity provider.
    Jwt,
    /// A session token this server issued.
    SessionToken,
}

/// An authenticated (or anonymous, when auth is off) client. Two identities are the same
/// when name and role are: how they authenticated does not matter for resuming a session.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The key's name (`anonymous` when AuthRequired is false); `jwt:<sub>` for JWTs.
    pub name: String,
    /// What the client may do.
    pub role: Role,
    /// How it authenticated.
    pub method: AuthMethod,
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.role == other.role
    }
}

impl Eq for Identity {}

/// Credentials a client presented, in the handshake or in `system/auth`. Equality is for
/// telling whether two given in one request agree (not for checking them: see
/// [`Authenticator::verify`], which compares in constant time).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    Key(String),
    Bearer(String),
}

/// Why credentials were refused; the text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthFailure(pub String);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_order() {
        assert!(Role::Admin.allows(Role::Service));
        assert!(Role::Service.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Service));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Service.allows(Role::Admin));
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("supersecretkey123");
        assert_eq!(format!("{s:?}"), "Secret(super…)");
        assert!(!format!("{s:?}").contains("secretkey"));
    }
}
