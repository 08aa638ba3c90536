//! Reading one JSON object of the config: values by key or key path (`A.B`), with
//! `${env.NAME}` substitution, errors that name the key, and the keys nobody asked for
//! (reported as unknown).
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use crate::error::Error;

/// What loading produced besides the config: warnings for the caller to log.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// One line per unknown key or ignored setting, naming it.
    pub warnings: Vec<String>,
}

/// A value as the config gives it: after `${env.NAME}` substitution, with the key it is
/// reported under and whether it came from the environment (then it is text, which number
/// and boolean settings convert).
#[derive(Debug)]
pub(crate) struct Given {
    pub(crate) value: Value,
    pub(crate) key: String,
    pub(crate) from_env: bool,
}

/// One JSON object being read: tracks which keys were used so the rest can be reported.
pub(crate) struct Section {
    path: String,
    map: Map<String, Value>,
    used: Vec<String>,
    /// Objects inside this one that key paths reached, read the same way.
    children: Vec<Section>,
}

impl Section {
    pub(crate) fn new(path: &str, map: Map<String, Value>) -> Self {
        Section {
            path: path.to_string(),
            map,
            used: Vec::new(),
            children: Vec::new(),
        }
    }

    /// `v` as an object, the error naming `key` otherwise.
    pub(crate) fn object(v: Value, key: &str) -> Result<Map<String, Value>, Error> {
        match v {
            Value::Object(m) => Ok(m),
            other => Err(Error::config(key, format!("{other} is not an object"))),
        }
    }

    /// The value of `key`, substituted; `None` when absent, null, or an unset environment
    /// variable (the default applies).
    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        self.used.push(key.to_string());
        self.map.get(key).and_then(substitute_env)
    }

    /// The value at `path`: a key of this object, or `Outer.Key` for a key of the object
    /// `Outer` in it. Errors when `Outer` is there but not an object.
    pub(crate) fn take_path(&mut self, path: &str) -> Result<Option<Given>, Error> {
        if let Some((outer, rest)) = path.split_once('.') {
            return match self.child(outer)? {
                Some(child) => child.take_path(rest),
                None => Ok(None),
            };
        }
        let from_env = self.map.get(path).is_some_and(|v| env_name(v).is_some());
        Ok(self.take(path).map(|value| Given {
            value,
            key: self.key(path),
            from_env,
        }))
    }

    /// The section for the object under `name`, read once and kept for its unknown keys.
    fn child(&mut self, name: &str) -> Result<Option<&mut Section>, Error> {
        if let Some(i) = self.children.iter().position(|c| c.path == self.key(name)) {
            return Ok(Some(&mut self.children[i]));
        }
        let Some(v) = self.take(name) else {
            return Ok(None);
        };
        let map = Section::object(v, &self.key(name))?;
        self.children.push(Section::new(&self.key(name), map));
        Ok(self.children.last_mut())
    }

    /// Whether `key` is given (not null), even as an unset `${env.NAME}`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// `key` under this object's path, as errors name it.
    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// One warning per key of this object (and of the objects read inside it) that no
    /// setting took.
    pub(crate) fn unknown_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(k))
            .map(|k| match self.nearest_known(k) {
                Some(known) => format!(
                    "unknown key {}.{k} ignored; did you mean {known}?",
                    self.path
                ),
                None => format!("unknown key {}.{k} ignored", self.path),
            })
            .collect();
        for child in &self.children {
            out.extend(child.unknown_keys());
        }
        out
    }
}

impl Section {
    /// The key this object knows (one a setting asked for) that `unknown` most likely
    /// misspells: at most a third of its letters (or two) apart, case aside.
    fn nearest_known(&self, unknown: &str) -> Option<&str> {
        let limit = (unknown.chars().count() / 3).max(2);
        self.used
            .iter()
            .map(|k| (edit_distance(&k.to_lowercase(), &unknown.to_lowercase()), k))
            .filter(|(d, _)| *d <= limit)
            .min()
            .map(|(_, k)| k.as_str())
    }
}

/// Levenshtein distance (insertions, deletions, substitutions), by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The variable named by a `"${env.NAME}"` value.
fn env_name(v: &Value) -> Option<&str> {
    v.as_str()?.strip_prefix("${env.")?.strip_suffix('}')
}

/// `"${env.NAME}"` → the variable's exact text as a string (number and boolean settings
/// convert it), `None` when unset or when `v` is null.
pub(crate) fn substitute_env(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        _ => match env_name(v) {
            Some(name) => std::env::var(name).ok().map(Value::String),
            None => Some(v.clone()),
        },
    }
}
