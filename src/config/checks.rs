//! What only the whole config can say: keys that are missing, empty or short, TLS without its
//! files, nothing to listen on; and the settings read through a rule (`sessions_per_identity`).
#![forbid(unsafe_code)]

use crate::config::settings::Config;
use crate::error::Error;

/// Actions one channel's filter may name (`system/subscribe` with `actions`).
pub const MAX_ACTIONS_PER_CHANNEL: usize = 256;

/// Keys shorter than this are accepted with a warning at start-up.
pub const SHORT_KEY_CHARS: usize = 16;

impl Config {
    /// Checks what only makes sense for the whole config: with `AuthRequired`, at least one
    /// key must exist. The error says how to set `HYDROGEN_API_KEY`.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(k) = self
            .keys
            .iter()
            .find(|k| k.secret.expose().trim().is_empty())
        {
            return Err(Error::config(
                format!("WebSocketServer.Keys[{}].Key", k.name),
                "is empty: an empty key would admit anyone; give every key a real value",
            ));
        }
        if self.auth_required && self.keys.is_empty() && self.jwt.is_none() {
            return Err(Error::config(
                "WebSocketServer.Key",
                "no API key: AuthRequired is true but HYDROGEN_API_KEY is unset. Set one with \
                 `export HYDROGEN_API_KEY=$(head -c 24 /dev/urandom | base64)` (clients send \
                 `Authorization: Key <key>`), or list keys under WebSocketServer.Keys",
            ));
        }
        self.check_features()?;
        if self.tls {
            for (key, path) in [
                ("CertificatePath", &self.certificate_path),
                ("KeyPath", &self.key_path),
            ] {
                if path.is_none() {
                    return Err(Error::config(
                        format!("WebSocketServer.{key}"),
                        "SecureMode is \"tls\": give the PEM file's path",
                    ));
                }
            }
        }
        if !self.enable_ipv4 && !self.enable_ipv6 {
            return Err(Error::config(
                "WebSocketServer.EnableIPv4",
                "EnableIPv4 and EnableIPv6 are both false: nothing to listen on",
            ));
        }
        if self.interface.is_ipv4()
            && !self.enable_ipv4
            && !self.interface.is_unspecified()
            && !self.interface.is_loopback()
        {
            return Err(Error::config(
                "WebSocketServer.Interface",
                "an IPv4 interface with EnableIPv4=false",
            ));
        }
        Ok(())
    }

    /// Settings this build cannot honour: TLS without the `tls` feature, Bearer tokens without
    /// `jwt` (a board's minimal build, README "On a board").
    fn check_features(&self) -> Result<(), Error> {
        let missing = |key: &str, feature: &str| {
            Error::config(
                format!("WebSocketServer.{key}"),
                format!(
                    "this hydrogen-ws was built without the `{feature}` feature; build it with \
                     `--features {feature}` (a default build has it) or remove the setting"
                ),
            )
        };
        if self.tls && !cfg!(feature = "tls") {
            return Err(missing("SecureMode", "tls"));
        }
        if self.jwt.is_some() && !cfg!(feature = "jwt") {
            return Err(missing("Jwt", "jwt"));
        }
        if self.session_tokens.is_some() && !cfg!(feature = "jwt") {
            return Err(missing("SessionTokens", "jwt"));
        }
        let mqtts = self
            .mqtt
            .as_ref()
            .and_then(|m| m.broker().ok())
            .is_some_and(|b| b.tls);
        if mqtts && !cfg!(feature = "tls") {
            return Err(missing("Mqtt.Url", "tls"));
        }
        Ok(())
    }

    /// The session cap per identity in force: `MaxSessionsPerIdentity`, or MaxConnections
    /// when that is 0 (so clients sharing one key, up to the server's capacity, all keep
    /// resumable sessions).
    pub fn sessions_per_identity(&self) -> usize {
        match self.max_sessions_per_identity {
            0 => self.max_connections,
            n => n,
        }
    }

    /// Names of the keys shorter than [`SHORT_KEY_CHARS`] characters (guessable; the server
    /// warns about each at start-up, naming the key, never showing it).
    pub fn short_keys(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|k| k.secret.expose().chars().count() < SHORT_KEY_CHARS)
            .map(|k| k.name.as_str())
            .collect()
    }
}
