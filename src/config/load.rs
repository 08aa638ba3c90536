//! `config.json` → [`Config`]: the settings table read from the `WebSocketServer` section,
//! the two settings that come from elsewhere (`Key`, whose default is `HYDROGEN_API_KEY`, and
//! the top-level `Logging.Level`), and the redacted view for `--check-config`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::reader::{LoadReport, Section};
use crate::config::settings::Config;
use crate::config::values::{self, non_blank_key};
use crate::error::Error;
use crate::server::security::identity::{ApiKey, Role};

/// Where the binary looks when no `--config` is given.
pub fn default_path() -> PathBuf {
    PathBuf::from("config.json")
}

impl Config {
    /// Loads `path`. Errors name the key and the allowed values ([`Error::Config`]); a file
    /// that cannot be read or parsed is reported under the key `<file>`.
    pub fn load(path: &Path) -> Result<(Config, LoadReport), Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config("<file>", format!("cannot read {}: {e}", path.display())))?;
        Config::from_json_str(&text)
    }

    /// Parses a whole config document (with or without other top-level sections). Unknown
    /// keys of `WebSocketServer` and its objects come back as warnings.
    pub fn from_json_str(text: &str) -> Result<(Config, LoadReport), Error> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::config("<file>", format!("not valid JSON: {e}")))?;
        let Value::Object(root) = root else {
            return Err(Error::config(
                "<file>",
                "the top level must be a JSON object",
            ));
        };
        let section = match root.get("WebSocketServer") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(Error::config(
                    "WebSocketServer",
                    format!("must be an object, got {other}"),
                ));
            }
        };
        let mut report = LoadReport::default();
        let mut cfg = Config::default();
        let mut s = Section::new("WebSocketServer", section);
        if let Some(level) = logging_level(&root)? {
            cfg.log_level = level; // `LogLevel`, read with the table, wins
        }
        let key = default_key(&mut s)?;
        cfg.read_rows(&mut s, &mut report)?;
        if let Some(key) = key {
            cfg.keys.insert(0, key);
        }
        report.warnings.extend(s.unknown_keys());
        Ok((cfg, report))
    }

    /// The effective config as JSON, secrets redacted (for `--check-config`).
    pub fn to_redacted_json(&self) -> Value {
        let mut rows = self.show_rows();
        rows.insert(
            "MaxSessionsPerIdentity".into(),
            self.sessions_per_identity().into(),
        );
        let mut root = Map::new();
        root.insert("WebSocketServer".into(), Value::Object(rows));
        Value::Object(root)
    }
}

/// The single `Key` (role admin, name `default`): `WebSocketServer.Key`, whose default is
/// itself an environment reference (`HYDROGEN_API_KEY`, docs/protocol.md §7). A `Key` that
/// names an unset variable gives no key.
fn default_key(s: &mut Section) -> Result<Option<ApiKey>, Error> {
    let given = s.has("Key");
    let setting = if given {
        "WebSocketServer.Key"
    } else {
        "HYDROGEN_API_KEY"
    };
    let value = match s.take_path("Key")? {
        Some(v) => Some(values::text(v)?),
        None if given => None,
        None => std::env::var("HYDROGEN_API_KEY").ok(),
    };
    value
        .map(|k| {
            Ok(ApiKey::new(
                "default",
                non_blank_key(k, setting)?,
                Role::Admin,
            ))
        })
        .transpose()
}

/// The top-level `Logging.Level`, Hydrogen's place for the log level.
fn logging_level(root: &Map<String, Value>) -> Result<Option<String>, Error> {
    let Some(Value::Object(logging)) = root.get("Logging") else {
        return Ok(None);
    };
    match logging
        .get("Level")
        .and_then(crate::config::reader::substitute_env)
    {
        None => Ok(None),
        Some(Value::String(level)) => values::level(&level, "Logging.Level").map(Some),
        Some(other) => Err(Error::config(
            "Logging.Level",
            format!("{other} is the wrong type: a string is needed"),
        )),
    }
}
