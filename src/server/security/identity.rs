//! Who a client is and what it may do: roles, API keys, secrets (compared in constant time,
//! never printed) and the identity a connection gets once its credentials are accepted.
#![forbid(unsafe_code)]

pub use crate::secret::Secret;

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
    /// A command that came through the MQTT bridge: the broker's access control vouches for
    /// it, nothing signs it (so sensitive actions are refused).
    Bridge,
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
}
