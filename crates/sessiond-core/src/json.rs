//! [`JsonObject`]: a JSON object kept as its compact text.
//!
//! Session storage (`data`) and `info` are read far more often than they are changed, and
//! mostly passed through whole (to a client, a store, a log). Keeping them as validated
//! text makes a session cheap to clone, store and serve; a change parses, merges
//! (RFC 7396) and re-serialises once.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON object held as compact text. The empty object costs no allocation.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct JsonObject(Box<str>);

/// Text that is not a JSON object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("expected a JSON object ({0})")]
pub struct NotAnObject(pub String);

impl JsonObject {
    /// The empty object `{}`.
    pub fn empty() -> Self {
        JsonObject(Box::from(""))
    }

    /// An object from a map.
    pub fn from_map(map: &Map<String, Value>) -> Self {
        if map.is_empty() {
            return Self::empty();
        }
        // Serialising a `Map` of `Value`s cannot fail.
        JsonObject(
            serde_json::to_string(map)
                .unwrap_or_default()
                .into_boxed_str(),
        )
    }

    /// An object from a JSON value; anything but an object is refused.
    pub fn from_value(v: &Value) -> Result<Self, NotAnObject> {
        match v {
            Value::Object(m) => Ok(Self::from_map(m)),
            other => Err(NotAnObject(format!("got {}", kind(other)))),
        }
    }

    /// Parses and validates text as a JSON object, storing it compactly.
    pub fn parse(text: &str) -> Result<Self, NotAnObject> {
        let v: Value = serde_json::from_str(text).map_err(|e| NotAnObject(e.to_string()))?;
        Self::from_value(&v)
    }

    /// The compact JSON text (`{}` for the empty object).
    pub fn as_str(&self) -> &str {
        if self.0.is_empty() {
            "{}"
        } else {
            &self.0
        }
    }

    /// Whether this is `{}`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Size of the JSON text in bytes.
    pub fn byte_len(&self) -> usize {
        self.as_str().len()
    }

    /// The object as a map.
    pub fn to_map(&self) -> Map<String, Value> {
        if self.0.is_empty() {
            return Map::new();
        }
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The value stored under `key`, if any. Only that value is built: the other
    /// entries are skipped over, not parsed into a map.
    pub fn get(&self, key: &str) -> Option<Value> {
        if self.0.is_empty() {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(&self.0);
        de.deserialize_map(Find(key)).ok().flatten()
    }

    /// Applies a JSON merge patch (RFC 7396): keys set to `null` are removed, objects
    /// merge recursively, anything else replaces. The patch must itself be an object,
    /// since the result must stay one.
    pub fn merge_patch(&self, patch: &Value) -> Result<JsonObject, NotAnObject> {
        let Value::Object(p) = patch else {
            return Err(NotAnObject(format!("the patch is {}", kind(patch))));
        };
        let mut target = self.to_map();
        merge_into(&mut target, p);
        Ok(Self::from_map(&target))
    }
}

/// RFC 7396 for an object target and patch.
fn merge_into(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        if let Value::Object(t) = target {
            merge_into(t, p);
        }
    } else {
        *target = patch.clone();
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JsonObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(self.as_str()) {
            Ok(raw) => raw.serialize(s),
            Err(_) => Map::new().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        JsonObject::from_value(&v).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Value> for JsonObject {
    type Error = NotAnObject;
    fn try_from(v: Value) -> Result<Self, Self::Error> {
        JsonObject::from_value(&v)
    }
}

/// Visits an object for the value under one key (the last one, should keys repeat,
/// as a map would keep).
struct Find<'k>(&'k str);

impl<'de> Visitor<'de> for Find<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Option<Value>, A::Error> {
        let mut found = None;
        while let Some(is_key) = entries.next_key_seed(KeyIs(self.0))? {
            if is_key {
                found = Some(entries.next_value()?);
            } else {
                entries.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether an object key is the one looked for, compared where it lies in the text.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let doc = JsonObject::from_value(&json!({"a": "b", "c": {"d": "e", "f": "g"}})).unwrap();
        let out = doc
            .merge_patch(&json!({"a": "z", "c": {"f": null}}))
            .unwrap();
        assert_eq!(
            out.to_map(),
            json!({"a": "z", "c": {"d": "e"}})
                .as_object()
                .unwrap()
                .clone()
        );
        let out = out.merge_patch(&json!({"c": [1, 2], "n": 1})).unwrap();
        assert_eq!(out.get("c"), Some(json!([1, 2])));
        assert_eq!(out.get("n"), Some(json!(1)));
    }

    #[test]
    fn get_finds_one_value_among_others_and_escaped_keys() {
        let doc = JsonObject::from_value(&json!({
            "a": {"deep": [1, {"x": null}]},
            "n": 7,
            "quo\"te": "q",
            "é\n": true,
            "s": "text with \"escapes\" and } braces"
        }))
        .unwrap();
        assert_eq!(doc.get("n"), Some(json!(7)));
        assert_eq!(doc.get("a"), Some(json!({"deep": [1, {"x": null}]})));
        assert_eq!(doc.get("quo\"te"), Some(json!("q")));
        assert_eq!(doc.get("é\n"), Some(json!(true)));
        assert_eq!(
            doc.get("s"),
            Some(json!("text with \"escapes\" and } braces"))
        );
        assert_eq!(doc.get("deep"), None, "only top-level keys");
        assert_eq!(doc.get("missing"), None);
        assert_eq!(JsonObject::empty().get("n"), None);
        for (k, v) in doc.to_map() {
            assert_eq!(doc.get(&k), Some(v), "get agrees with the map for {k:?}");
        }
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(JsonObject::parse("[1]").is_err());
        assert!(JsonObject::parse("nope").is_err());
        assert!(JsonObject::empty().merge_patch(&json!(3)).is_err());
    }

    #[test]
    fn empty_object_serialises_as_braces_and_round_trips() {
        let e = JsonObject::empty();
        assert_eq!(serde_json::to_string(&e).unwrap(), "{}");
        let o = JsonObject::parse(r#"{ "n" : 1 }"#).unwrap();
        assert_eq!(o.as_str(), r#"{"n":1}"#);
        let back: JsonObject = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
