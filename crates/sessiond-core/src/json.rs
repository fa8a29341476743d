//! [`JsonObject`]: a JSON object kept as its compact text.
//!
//! Session storage (`data`) and `info` are read far more often than they are changed, and
//! mostly passed through whole (to a client, a store, a log). Keeping them as validated
//! text makes a session cheap to clone, store and serve; a change parses, merges
//! (RFC 7396) and re-serialises once.

use std::fmt;

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

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Value> {
        if self.0.is_empty() {
            return None;
        }
        self.to_map().remove(key)
    }

    /// Applies a JSON merge patch (RFC 7396): keys set to `null` are removed, objects
    /// merge recursively, anything else replaces. The patch must itself be an object,
    /// since the result must stay one.
    pub fn merge_patch(&self, patch: &Value) -> Result<JsonObject, NotAnObject> {
        let Value::Object(p) = patch else {
            return Err(NotAnObject(format!("the patch is {}", kind(patch))));
        };
        let mut target = Value::Object(self.to_map());
        merge(&mut target, &Value::Object(p.clone()));
        Self::from_value(&target)
    }
}

fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
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
