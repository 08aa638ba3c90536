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

    /// Whether `key` is given (not null), even as an unset `${env.NAME}`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub(super) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub(super) fn take_bool(&mut self, key: &'static str) -> Result<Option<bool>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            // `${env.X}` is text; "true" and "false" convert where the setting is a boolean.
            Some(Value::String(s))
                if self.is_env_reference(key) && (s == "true" || s == "false") =>
            {
                Ok(Some(s == "true"))
            }
            Some(other) => Err(Error::config(
                self.key(key),
                format!("{other} is the wrong type: a boolean (true or false) is needed"),
            )),
        }
    }

    pub(super) fn take_int(
        &mut self,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, Error> {
        let from_env = self.is_env_reference(key);
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        let number = match &v {
            Value::Number(n) => n.as_u64(),
            // `${env.X}` is text; it converts where the setting is a number.
            Value::String(s) if from_env => s.parse::<u64>().ok(),
            _ => {
                return Err(Error::config(
                    self.key(key),
                    format!("{v} is the wrong type: an integer from {min} to {max} is needed"),
                ));
            }
        };
        match number {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(Error::config(
                self.key(key),
                format!("{v} is out of range: allowed an integer from {min} to {max}"),
            )),
        }
    }

    /// Whether `key`'s value is a `${env.NAME}` reference.
    fn is_env_reference(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| env_name(v).is_some())
    }

    pub(super) fn take_str(&mut self, key: &'static str) -> Result<Option<String>, Error> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => Self::string_value(v, &self.key(key)),
        }
    }

    /// A value already substituted, as a string setting.
    pub(super) fn string_value(v: Value, key: &str) -> Result<Option<String>, Error> {
        match v {
            Value::String(s) => Ok(Some(s)),
            other => Err(Error::config(
                key,
                format!("{other} is the wrong type: a string is needed"),
            )),
        }
    }

    /// A string setting: the exact text, also when it came from `${env.NAME}` (a key such as
    /// `0042` stays `0042`).
    pub(super) fn as_str_value(v: &Value, key: &str) -> Result<Option<String>, Error> {
        match substitute_env(v) {
            None => Ok(None),
            Some(v) => Self::string_value(v, key),
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

/// The variable named by a `"${env.NAME}"` value.
fn env_name(v: &Value) -> Option<&str> {
    v.as_str()?.strip_prefix("${env.")?.strip_suffix('}')
}

/// `"${env.NAME}"` → the variable's exact text as a string (the typed getters convert it
/// where a setting is a number or a boolean), `None` when unset or when `v` is null.
pub(super) fn substitute_env(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        _ => match env_name(v) {
            Some(name) => std::env::var(name).ok().map(Value::String),
            None => Some(v.clone()),
        },
    }
}
