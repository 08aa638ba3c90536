//! Reading one JSON object of the config: typed values with `${env.NAME}` substitution,
//! errors that name the key, and the keys nobody asked for (reported as unknown).

use serde_json::{Map, Value};

use crate::error::Error;

/// One JSON object being read: tracks which keys were used so the rest can be reported.
pub(super) struct Section<'a> {
    path: String,
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Section<'a> {
    pub(super) fn new(path: &str, map: &'a Map<String, Value>) -> Self {
        Section {
            path: path.to_string(),
            map,
            used: Vec::new(),
        }
    }

    /// The value of `key` after `${env.NAME}` substitution; `None` when absent, null, or an
    /// unset environment variable (the default applies).
    pub(super) fn take(&mut self, key: &'static str) -> Option<Value> {
        self.used.push(key);
        self.map.get(key).and_then(substitute_env)
    }

    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub(super) fn take_bool(&mut self, key: &'static str) -> Result<Option<bool>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(Error::config(
                self.key(key),
                format!("{other} is not a boolean (true or false)"),
            )),
        }
    }

    pub(super) fn take_int(
        &mut self,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(Error::config(
                    self.key(key),
                    format!("{v} is out of range: allowed an integer from {min} to {max}"),
                )),
            },
        }
    }

    pub(super) fn take_str(&mut self, key: &'static str) -> Result<Option<String>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => Self::as_str_value(&v, &self.key(key)),
        }
    }

    pub(super) fn as_str_value(v: &Value, key: &str) -> Result<Option<String>, Error> {
        match substitute_env(v) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            // `${env.X}` holding a number or boolean converts; for a string key, keep its text.
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(Error::config(key, format!("{other} is not a string"))),
        }
    }

    pub(super) fn as_object(v: &Value, key: &str) -> Result<Map<String, Value>, Error> {
        match v {
            Value::Object(m) => Ok(m.clone()),
            other => Err(Error::config(key, format!("{other} is not an object"))),
        }
    }

    pub(super) fn unknown_keys(&self) -> Vec<String> {
        self.map
            .keys()
            .filter(|k| !self.used.contains(&k.as_str()))
            .map(|k| format!("unknown key {}.{k} ignored", self.path))
            .collect()
    }
}

/// `"${env.NAME}"` → the variable's value (typed when it reads as a bool or number), `None`
/// when unset or when `v` is null.
pub(super) fn substitute_env(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) => match s.strip_prefix("${env.").and_then(|r| r.strip_suffix('}')) {
            Some(name) => {
                let raw = std::env::var(name).ok()?;
                Some(match raw.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => raw
                        .parse::<u64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(raw)),
                })
            }
            None => Some(v.clone()),
        },
        other => Some(other.clone()),
    }
}
