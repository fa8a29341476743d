//! Turning "the storage was this, it should be that" into the JSON merge patch
//! (RFC 7396) the Manager applies. Storage changes travel as patches so a change to one
//! key never rewrites the others; these functions compute the smallest patch that makes
//! a value exactly what the app asked for (a plain `{key: value}` patch would merge a
//! new object into an old one instead of replacing it).

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`, or none when they are equal.
///
/// Object members that are `null` in `new` cannot be stored (a merge patch reads `null`
/// as "remove"), so they come out removed.
pub(crate) fn diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let p = diff_maps(o, n);
            (!p.is_empty()).then_some(Value::Object(p))
        }
        _ if old == new => None,
        _ => Some(strip_nulls(new.clone())),
    }
}

/// The merge patch (as a map) that turns object `old` into object `new`.
pub(crate) fn diff_maps(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut p = Map::new();
    for k in old.keys() {
        if !new.contains_key(k) {
            p.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in new {
        let change = match old.get(k) {
            Some(ov) => diff(ov, v),
            None if v.is_null() => None,
            None => Some(strip_nulls(v.clone())),
        };
        if let Some(c) = change {
            p.insert(k.clone(), c);
        }
    }
    p
}

/// `v` with `null` object members removed, recursively (array items are kept as they
/// are: a merge patch replaces arrays whole).
pub(crate) fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Applies a merge patch to a map (the same rules as the core's storage).
pub(crate) fn apply(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let slot = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(t) = slot {
                    apply(t, p);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn replacing_an_object_removes_members_that_are_gone() {
        let old = json!({"cart": {"a": 1, "b": 2}, "n": 1});
        let new = json!({"cart": {"b": 3}, "n": 1});
        let p = diff(&old, &new).unwrap();
        assert_eq!(p, json!({"cart": {"a": null, "b": 3}}));
        let mut t = obj(old);
        apply(&mut t, &obj(p));
        assert_eq!(Value::Object(t), new);
    }

    #[test]
    fn equal_values_need_no_patch_and_scalars_replace() {
        assert_eq!(diff(&json!({"a": [1]}), &json!({"a": [1]})), None);
        assert_eq!(diff(&json!({"a": 1}), &json!(5)), Some(json!(5)));
        assert_eq!(
            diff(&json!(null), &json!({"x": null, "y": 1})),
            Some(json!({"y": 1}))
        );
    }

    #[test]
    fn every_diff_round_trips() {
        let cases = [
            (json!({}), json!({"a": {"b": {"c": 1}}})),
            (json!({"a": {"b": {"c": 1}}}), json!({"a": [null, 2]})),
            (json!({"a": "x", "b": {"c": 1}}), json!({"b": {"d": 2}})),
            (json!({"a": {"b": 1}}), json!({})),
        ];
        for (old, new) in cases {
            let mut t = obj(old.clone());
            if let Some(p) = diff(&old, &new) {
                apply(&mut t, &obj(p));
            }
            assert_eq!(Value::Object(t), new);
        }
    }
}
