//! A JSON document whose objects have no key twice. serde_json (like most parsers) keeps
//! the last of two equal keys without a word; RFC 8259 §4 leaves it to the implementation.
//! We refuse such messages, so the envelope checks, the log and the dispatcher can never
//! read different values from one message.
//!
//! [`UniqueKeys`] is deserialized from the text with serde_json's own parser and checks
//! nothing but the keys: it holds no data. The caller has already bounded the nesting depth.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Proof that a JSON document has no object with a repeated key.
pub(crate) struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == NUMBER_TOKEN {
                // serde_json's arbitrary-precision number, handed over as a one-key map.
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "key {key:?} appears twice in one object"
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}

/// The key serde_json's `arbitrary_precision` feature uses to pass a number as a map.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

#[cfg(test)]
mod tests {
    use super::UniqueKeys;

    fn unique(text: &str) -> bool {
        serde_json::from_str::<UniqueKeys>(text).is_ok()
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth() {
        assert!(unique(
            r#"{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}],"d":1e400}"#
        ));
        assert!(!unique(r#"{"a":1,"a":2}"#));
        assert!(!unique(r#"{"data":{"x":1,"x":1}}"#));
        assert!(!unique(r#"[{"k":null,"k":true}]"#));
    }
}
