//! Duplicate keys in a request body's objects are refused. JSON leaves them undefined
//! and serde keeps the last one silently, so `{"a": 1, "a": 2}` in a storage patch was
//! stored as `{"a": 2}` while a repeated field of the body itself was refused: one rule
//! now, everywhere a body is read ([`super::Json`], [`super::OptionalJson`]).
//!
//! The check walks the text once with serde_json's reader (and its nesting limit), keeping
//! only the keys of the objects still open.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The first key that an object of `text` repeats, if any. Text that is not JSON passes:
/// the body's own parse then says what is wrong with it.
pub fn repeated_key(text: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    match Check.deserialize(&mut de) {
        Ok(()) => None,
        Err(e) => {
            let msg = e.to_string();
            msg.strip_prefix(REPEATED).map(|rest| {
                // serde_json appends " at line L column C".
                rest.rsplit_once(" at line ")
                    .map_or(rest, |(k, _)| k)
                    .to_string()
            })
        }
    }
}

const REPEATED: &str = "repeated key: ";

/// Visits any value, refusing an object that names a key twice.
#[derive(Clone, Copy)]
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(Check)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "{REPEATED}{}",
                    sessiond_core::quoted(&key)
                )));
            }
            entries.next_value_seed(Check)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_repeated_at_any_depth_is_found_and_distinct_keys_pass() {
        assert_eq!(repeated_key(br#"{"a":1,"a":2}"#).as_deref(), Some(r#""a""#));
        assert_eq!(
            repeated_key(br#"{"x":[{"b":{"c":1,"c":1}}]}"#).as_deref(),
            Some(r#""c""#)
        );
        // Equal after unescaping is equal.
        assert_eq!(
            repeated_key(br#"{"a":1,"\u0061":2}"#).as_deref(),
            Some(r#""a""#)
        );
        assert_eq!(
            repeated_key(br#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#),
            None
        );
        assert_eq!(repeated_key(b"not json"), None);
        assert_eq!(repeated_key(b"[1, 2, {}]"), None);
    }
}
