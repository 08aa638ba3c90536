//! Secrets (API keys, tokens) as both the server and the client hold them: compared in
//! constant time, never printed whole.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

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

    /// The secret itself, for the one place that must send it (the client's `Authorization`).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's bytes, for keying an HMAC.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("supersecretkey123");
        assert_eq!(format!("{s:?}"), "Secret(super…)");
        assert!(!format!("{s:?}").contains("secretkey"));
    }
}
