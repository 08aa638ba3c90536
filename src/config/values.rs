//! How each type of setting is read from JSON and shown again: [`Kind`] says which range,
//! unit or form a row of the settings table has (and whether it is a secret), and
//! [`SettingValue`] reads and shows a field of that type.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::reader::{Given, LoadReport, Section};
use crate::error::Error;
use crate::server::security::identity::{ApiKey, Role, Secret};
use crate::server::security::jwt::JwtConfig;
use crate::server::security::session_tokens::SessionTokenConfig;

/// What a row of the settings table holds.
pub(crate) enum Kind {
    /// `true` / `false` (also `"true"` / `"false"` from `${env.NAME}`).
    Flag,
    /// A string that is either `off` or `on` (a boolean field: `SecureMode`).
    Switch(&'static str, &'static str),
    /// An integer in `min..=max`.
    Int(u64, u64),
    /// Milliseconds in `min..=max` (0 means "never" for an optional duration).
    Millis(u64, u64),
    /// Seconds in `min..=max` (0 means "never" for an optional duration).
    Secs(u64, u64),
    /// A string that `check` accepts (it says what is wrong otherwise).
    Text(fn(&str) -> Result<(), String>),
    /// A log level name, stored lowercase.
    Level,
    /// An array of strings that `check` accepts; `what` names one, for errors.
    Names(fn(&str) -> bool, &'static str),
    /// An IPv4 or IPv6 address literal.
    Address,
    /// A file path.
    Path,
    /// A nested object read with its own table.
    Section,
    /// API keys: `[{"Name","Key","Role"}]`. Secret: shown redacted.
    Keys,
    /// The `Jwt` object.
    Jwt,
    /// The `SessionTokens` object.
    SessionTokens,
    /// A secret string (a password): shown redacted.
    Secret,
    /// A role name: viewer, operator, service, admin.
    Role,
}

/// A field type of the settings table.
pub(crate) trait SettingValue: Sized {
    /// Reads `given` as a setting of `kind`; warnings (unknown keys inside) go to `report`.
    fn parse(given: Given, kind: &Kind, report: &mut LoadReport) -> Result<Self, Error>;
    /// The value as the redacted view shows it.
    fn show(&self, kind: &Kind) -> Value;
}

/// Puts `value` at `path` (`A.B` makes or extends the object `A`) in `out`.
pub(crate) fn put_path(out: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            out.insert(path.to_string(), value);
        }
        Some((outer, rest)) => {
            let inner = out
                .entry(outer.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = inner {
                put_path(m, rest, value);
            }
        }
    }
}

fn wrong_kind(key: &str) -> Error {
    Error::config(
        key,
        "this setting's table row has a kind its type does not read",
    )
}

/// An integer in `min..=max`; `${env.NAME}` text converts.
fn integer(given: &Given, min: u64, max: u64) -> Result<u64, Error> {
    let number = match &given.value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if given.from_env => s.parse::<u64>().ok(),
        v => {
            return Err(Error::config(
                &given.key,
                format!("{v} is the wrong type: an integer from {min} to {max} is needed"),
            ));
        }
    };
    match number {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(Error::config(
            &given.key,
            format!(
                "{} is out of range: allowed an integer from {min} to {max}",
                given.value
            ),
        )),
    }
}

/// A string setting: the exact text, also when it came from `${env.NAME}`.
pub(crate) fn text(given: Given) -> Result<String, Error> {
    match given.value {
        Value::String(s) => Ok(s),
        other => Err(Error::config(
            given.key,
            format!("{other} is the wrong type: a string is needed"),
        )),
    }
}

impl SettingValue for bool {
    fn parse(given: Given, kind: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        match (kind, &given.value) {
            (Kind::Flag, Value::Bool(b)) => Ok(*b),
            (Kind::Flag, Value::String(s)) if given.from_env && (s == "true" || s == "false") => {
                Ok(s == "true")
            }
            (Kind::Flag, other) => Err(Error::config(
                &given.key,
                format!("{other} is the wrong type: a boolean (true or false) is needed"),
            )),
            (Kind::Switch(off, on), _) => {
                let key = given.key.clone();
                match text(given)? {
                    s if s == *off => Ok(false),
                    s if s == *on => Ok(true),
                    s => Err(Error::config(
                        key,
                        format!("{s:?}: allowed \"{off}\" or \"{on}\""),
                    )),
                }
            }
            _ => Err(wrong_kind(&given.key)),
        }
    }

    fn show(&self, kind: &Kind) -> Value {
        match kind {
            Kind::Switch(off, on) => json!(if *self { on } else { off }),
            _ => json!(self),
        }
    }
}

/// Integer field types, all read with [`Kind::Int`].
macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            fn parse(given: Given, kind: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
                let Kind::Int(min, max) = kind else {
                    return Err(wrong_kind(&given.key));
                };
                // The table's ranges fit the field types.
                Ok(integer(&given, *min, *max)? as $t)
            }

            fn show(&self, _: &Kind) -> Value {
                json!(self)
            }
        }
    )*};
}

integer_setting!(u16, u32, u64, usize);

impl SettingValue for Duration {
    fn parse(given: Given, kind: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        match kind {
            Kind::Millis(min, max) => Ok(Duration::from_millis(integer(&given, *min, *max)?)),
            Kind::Secs(min, max) => Ok(Duration::from_secs(integer(&given, *min, *max)?)),
            _ => Err(wrong_kind(&given.key)),
        }
    }

    fn show(&self, kind: &Kind) -> Value {
        match kind {
            Kind::Secs(..) => json!(self.as_secs()),
            _ => json!(self.as_millis() as u64),
        }
    }
}

/// An optional duration: 0 is "never".
impl SettingValue for Option<Duration> {
    fn parse(given: Given, kind: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        Ok(Some(Duration::parse(given, kind, report)?).filter(|d| !d.is_zero()))
    }

    fn show(&self, kind: &Kind) -> Value {
        self.unwrap_or_default().show(kind)
    }
}

impl SettingValue for String {
    fn parse(given: Given, kind: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        let key = given.key.clone();
        match kind {
            Kind::Text(check) => {
                let s = text(given)?;
                check(&s).map_err(|why| Error::config(key, format!("{s:?} {why}")))?;
                Ok(s)
            }
            Kind::Level => level(&text(given)?, &key),
            _ => Err(wrong_kind(&key)),
        }
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self)
    }
}

/// A log level name (`error` … `trace`, `off`), lowercased; the error names `key`.
pub(crate) fn level(v: &str, key: &str) -> Result<String, Error> {
    let lower = v.to_ascii_lowercase();
    match lower.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(lower),
        _ => Err(Error::config(
            key,
            format!("{v:?}: allowed error, warn, info, debug, trace, off"),
        )),
    }
}

impl SettingValue for Vec<String> {
    fn parse(given: Given, kind: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        let Kind::Names(check, what) = kind else {
            return Err(wrong_kind(&given.key));
        };
        let Value::Array(items) = given.value else {
            return Err(Error::config(
                given.key,
                format!("must be an array of {what}s"),
            ));
        };
        items
            .into_iter()
            .map(|item| match item {
                Value::String(s) if check(&s) => Ok(s),
                other => Err(Error::config(
                    &given.key,
                    format!("{other} is not a {what}"),
                )),
            })
            .collect()
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self)
    }
}

impl SettingValue for IpAddr {
    fn parse(given: Given, _: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        let key = given.key.clone();
        let s = text(given)?;
        s.parse().map_err(|_| {
            Error::config(key, format!("{s:?} is not an IPv4 or IPv6 address literal"))
        })
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self.to_string())
    }
}

impl SettingValue for Option<PathBuf> {
    fn parse(given: Given, _: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        Ok(Some(PathBuf::from(text(given)?)))
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self.as_ref().map(|p| p.display().to_string()))
    }
}

impl SettingValue for Vec<ApiKey> {
    fn parse(given: Given, _: &Kind, _: &mut LoadReport) -> Result<Self, Error> {
        parse_keys(given)
    }

    /// Redacted: a key shows at most its first characters.
    fn show(&self, _: &Kind) -> Value {
        self.iter()
            .map(|k| json!({"Name": k.name, "Key": k.secret.redacted(), "Role": k.role.as_str()}))
            .collect()
    }
}

/// A key that can authenticate: an empty or blank key would admit anyone who sends an empty
/// one (`?key=`), so it is a config error naming `setting`.
pub(crate) fn non_blank_key(key: String, setting: &str) -> Result<Secret, Error> {
    if key.trim().is_empty() {
        return Err(Error::config(
            setting,
            "is empty: an empty key would admit anyone. Set a real key, for example \
             `export HYDROGEN_API_KEY=$(head -c 24 /dev/urandom | base64)`, or remove the setting",
        ));
    }
    Ok(Secret::new(key))
}

/// `Keys`: `[{"Name","Key","Role"}]`; a key whose `${env.NAME}` is unset is skipped.
fn parse_keys(given: Given) -> Result<Vec<ApiKey>, Error> {
    let Value::Array(items) = given.value else {
        return Err(Error::config(
            given.key,
            "must be an array of {\"Name\",\"Key\",\"Role\"}",
        ));
    };
    let mut keys = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("{}[{i}]", given.key);
        let mut s = Section::new(&path, Section::object(item, &path)?);
        let mut string = |k: &str| s.take_path(k)?.map(text).transpose();
        let name = string("Name")?.unwrap_or_else(|| format!("key{i}"));
        let role_name = string("Role")?.unwrap_or_else(|| "viewer".into());
        let secret = string("Key")?;
        let role = Role::from_name(&role_name).ok_or_else(|| {
            Error::config(
                format!("{path}.Role"),
                format!("{role_name:?}: allowed viewer, operator, admin, service"),
            )
        })?;
        if let Some(secret) = secret {
            let secret = non_blank_key(secret, &format!("{path}.Key"))?;
            keys.push(ApiKey::new(&name, secret, role));
        }
    }
    Ok(keys)
}

impl SettingValue for Option<JwtConfig> {
    fn parse(given: Given, _: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        let mut s = Section::new(&given.key, Section::object(given.value, &given.key)?);
        let mut string = |k: &str| s.take_path(k)?.map(text).transpose();
        let mut j = JwtConfig {
            public_key_path: string("PublicKeyPath")?.map(PathBuf::from),
            jwks_path: string("JwksPath")?.map(PathBuf::from),
            issuer: string("Issuer")?,
            audience: string("Audience")?,
            ..JwtConfig::default()
        };
        if let Some(claim) = string("RoleClaim")? {
            j.role_claim = claim;
        }
        if j.public_key_path.is_some() == j.jwks_path.is_some() {
            return Err(Error::config(
                s.key("PublicKeyPath"),
                "give exactly one of PublicKeyPath and JwksPath",
            ));
        }
        if let Some(names) = s.take_path("Algorithms")? {
            let algorithms = Vec::<String>::parse(names, &Kind::Names(|_| true, "name"), report);
            j.algorithms = algorithms.ok().filter(|a| !a.is_empty()).ok_or_else(|| {
                Error::config(
                    s.key("Algorithms"),
                    "must be a non-empty array of names like \"RS256\"",
                )
            })?;
        }
        if let Some(leeway) = s.take_path("LeewaySeconds")? {
            j.leeway_seconds = integer(&leeway, 0, 3600)?;
        }
        report.warnings.extend(s.unknown_keys());
        Ok(Some(j))
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self.as_ref().map(|j| json!({
            "PublicKeyPath": j.public_key_path.as_ref().map(|p| p.display().to_string()),
            "JwksPath": j.jwks_path.as_ref().map(|p| p.display().to_string()),
            "Issuer": j.issuer, "Audience": j.audience, "Algorithms": j.algorithms,
            "RoleClaim": j.role_claim, "LeewaySeconds": j.leeway_seconds,
        })))
    }
}

impl SettingValue for Option<SessionTokenConfig> {
    fn parse(given: Given, _: &Kind, report: &mut LoadReport) -> Result<Self, Error> {
        let mut s = Section::new(&given.key, Section::object(given.value, &given.key)?);
        let path = s.take_path("PrivateKeyPath")?.map(text).transpose()?;
        let path = path.ok_or_else(|| {
            Error::config(s.key("PrivateKeyPath"), "required: a PEM RSA private key")
        })?;
        let ttl = match s.take_path("TtlSeconds")? {
            Some(ttl) => integer(&ttl, 1, 31_536_000)?,
            None => 3600,
        };
        report.warnings.extend(s.unknown_keys());
        Ok(Some(SessionTokenConfig {
            private_key_path: PathBuf::from(path),
            ttl: Duration::from_secs(ttl),
        }))
    }

    fn show(&self, _: &Kind) -> Value {
        json!(self.as_ref().map(|t| json!({
            "PrivateKeyPath": t.private_key_path.display().to_string(), "TtlSeconds": t.ttl.as_secs(),
        })))
    }
}
