//! Bearer JWT verification (docs/protocol.md §7 `Jwt`) with jsonwebtoken (pure-Rust `rust_crypto`
//! backend): a PEM public key or a JWKS file (`kid` selects the key), RS256/ES256/EdDSA and
//! the other asymmetric algorithms, `exp`/`nbf`/`iss`/`aud` checked, and the role taken from a
//! `role` claim (or `scope`).
#![forbid(unsafe_code)]

#[cfg(feature = "jwt")]
use std::collections::HashSet;
use std::path::PathBuf;
#[cfg(feature = "jwt")]
use std::str::FromStr;

#[cfg(feature = "jwt")]
use jsonwebtoken::errors::ErrorKind;
#[cfg(feature = "jwt")]
use jsonwebtoken::jwk::JwkSet;
#[cfg(feature = "jwt")]
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
#[cfg(feature = "jwt")]
use serde_json::Value;

use crate::error::Error;
use crate::server::security::identity::Identity;
#[cfg(feature = "jwt")]
use crate::server::security::identity::{AuthMethod, Role};

/// The `Jwt` section of the config.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwtConfig {
    /// `PublicKeyPath`: a PEM public key (RSA, EC or Ed25519).
    pub public_key_path: Option<PathBuf>,
    /// `JwksPath`: a JSON Web Key Set file; the token's `kid` picks the key.
    pub jwks_path: Option<PathBuf>,
    /// `Issuer`: required `iss` (unchecked when absent).
    pub issuer: Option<String>,
    /// `Audience`: required `aud` (unchecked when absent).
    pub audience: Option<String>,
    /// `Algorithms` (["RS256","ES256","EdDSA"]): accepted `alg` values; asymmetric only.
    pub algorithms: Vec<String>,
    /// `RoleClaim` ("role"): the claim naming the role; else `scope` is searched for a role
    /// name; else the token grants `viewer`.
    pub role_claim: String,
    /// `LeewaySeconds` (30): clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            public_key_path: None,
            jwks_path: None,
            issuer: None,
            audience: None,
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            role_claim: "role".into(),
            leeway_seconds: 30,
        }
    }
}

#[cfg(feature = "jwt")]
enum Keys {
    /// One PEM key, usable with the algorithms of its family.
    Pem(Vec<(Algorithm, DecodingKey)>),
    Jwks(JwkSet),
}

/// Checks Bearer tokens.
#[cfg(feature = "jwt")]
pub(crate) struct JwtVerifier {
    keys: Keys,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
    role_claim: String,
    leeway: u64,
}

#[cfg(feature = "jwt")]
impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

#[cfg(feature = "jwt")]
fn config_error(key: &str, message: impl Into<String>) -> Error {
    Error::config(format!("WebSocketServer.Jwt.{key}"), message)
}

#[cfg(feature = "jwt")]
impl JwtVerifier {
    /// Loads the key material. Errors name the setting and the file.
    pub(crate) fn load(config: &JwtConfig) -> Result<JwtVerifier, Error> {
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let alg = Algorithm::from_str(name).map_err(|_| {
                config_error("Algorithms", format!("{name:?} is not a JWT algorithm"))
            })?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(config_error(
                    "Algorithms",
                    format!(
                        "{name} is symmetric: use a public-key algorithm (RS256, ES256, EdDSA, ...)"
                    ),
                ));
            }
            algorithms.push(alg);
        }
        let keys = match (&config.public_key_path, &config.jwks_path) {
            (Some(path), None) => {
                let pem = std::fs::read(path).map_err(|e| {
                    config_error(
                        "PublicKeyPath",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let usable: Vec<(Algorithm, DecodingKey)> = algorithms
                    .iter()
                    .filter_map(|alg| {
                        let key = match alg {
                            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                            _ => DecodingKey::from_rsa_pem(&pem),
                        };
                        key.ok().map(|k| (*alg, k))
                    })
                    .collect();
                if usable.is_empty() {
                    return Err(config_error(
                        "PublicKeyPath",
                        format!(
                            "{} holds no public key usable with {:?}",
                            path.display(),
                            config.algorithms
                        ),
                    ));
                }
                Keys::Pem(usable)
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    config_error("JwksPath", format!("cannot read {}: {e}", path.display()))
                })?;
                let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                    config_error("JwksPath", format!("{} is not a JWKS: {e}", path.display()))
                })?;
                Keys::Jwks(set)
            }
            _ => {
                return Err(config_error(
                    "PublicKeyPath",
                    "give exactly one of PublicKeyPath and JwksPath",
                ));
            }
        };
        Ok(JwtVerifier {
            keys,
            algorithms,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            role_claim: config.role_claim.clone(),
            leeway: config.leeway_seconds,
        })
    }

    /// Verifies `token`; the error says why it was refused (safe to send to the client).
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!("token algorithm {:?} is not accepted", header.alg));
        }
        let jwk_key;
        let key = match &self.keys {
            Keys::Pem(keys) => keys.iter().find(|(a, _)| *a == header.alg).map(|(_, k)| k),
            Keys::Jwks(set) => {
                let jwk = match &header.kid {
                    Some(kid) => set
                        .find(kid)
                        .ok_or_else(|| format!("unknown key id (kid) {kid:?}"))?,
                    None if set.keys.len() == 1 => &set.keys[0],
                    None => return Err("token has no kid and the key set has several keys".into()),
                };
                jwk_key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("unusable key {:?}: {e}", header.kid))?;
                Some(&jwk_key)
            }
        }
        .ok_or_else(|| format!("no key for algorithm {:?}", header.alg))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        // `sub` names the identity (sessions belong to it); `iss` and `aud` must be present,
        // not only right when present, wherever they are configured.
        let mut required = HashSet::from(["exp".to_string(), "sub".to_string()]);
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.insert("iss".to_string());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.insert("aud".to_string());
            }
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required;
        let data = decode::<Value>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => "token expired: get a new one".to_string(),
            ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_string(),
            ErrorKind::InvalidIssuer => "token from the wrong issuer (iss)".to_string(),
            ErrorKind::InvalidAudience => "token for another audience (aud)".to_string(),
            ErrorKind::InvalidSignature => "token signature does not verify".to_string(),
            ErrorKind::MissingRequiredClaim(c) => format!("token lacks the {c} claim"),
            _ => format!("invalid token: {e}"),
        })?;
        let claims = data.claims;
        let role = claims
            .get(&self.role_claim)
            .and_then(Value::as_str)
            .and_then(Role::from_name)
            .or_else(|| {
                claims
                    .get("scope")
                    .and_then(Value::as_str)
                    .and_then(|s| s.split_whitespace().filter_map(Role::from_name).max())
            })
            .unwrap_or(Role::Viewer);
        let sub = match claims.get("sub").and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => s,
            _ => return Err("token's sub claim must be a non-empty string".into()),
        };
        Ok(Identity {
            name: format!("jwt:{sub}"),
            role,
            method: AuthMethod::Jwt,
        })
    }
}

/// Without the `jwt` feature there is no verifier: this type has no values (config
/// validation refuses a `Jwt` section, and a Bearer token is refused as unverifiable).
#[cfg(not(feature = "jwt"))]
#[derive(Debug)]
pub(crate) enum JwtVerifier {}

#[cfg(not(feature = "jwt"))]
impl JwtVerifier {
    pub(crate) fn load(_: &JwtConfig) -> Result<JwtVerifier, Error> {
        Err(Error::config(
            "WebSocketServer.Jwt",
            "this build has no JWT support (the `jwt` feature is off)",
        ))
    }

    pub(crate) fn verify(&self, _: &str) -> Result<Identity, String> {
        match *self {}
    }
}
