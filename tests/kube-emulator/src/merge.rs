//! Patch formats other than server-side apply: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and Kubernetes strategic merge patch.
//!
//! Pure functions. The strategic merge patch is a merge patch that merges the lists a
//! [`ListPolicy`] calls associative by key (containers, env, ports, volumes, conditions...) and
//! understands the directives kubectl sends (`$patch: delete|replace`, `$setElementOrder/...`,
//! `$retainKeys`, `$deleteFromPrimitiveList/...`); element order directives are accepted and ignored.

use serde_json::{Map, Value};

use crate::fieldpath::{item_key, ListPolicy, ListType, PathElem};

/// A patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document has the wrong shape.
    #[error("failed to decode patch: {0}")]
    Malformed(String),
    /// A JSON patch operation failed (missing path, failed test).
    #[error("the server rejected our request due to an error in our request: {0}")]
    Operation(String),
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Kubernetes strategic merge patch with the list merge keys from `policy`.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value, policy: &ListPolicy) {
    smp(target, patch, &mut Vec::new(), policy);
}

fn smp(target: &mut Value, patch: &Value, path: &mut Vec<PathElem>, policy: &ListPolicy) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = Value::Object(patch.clone());
        strip_directives(&mut replaced);
        *target = replaced;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) = (map.get_mut(field), v.as_array()) {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        path.push(PathElem::Field(k.clone()));
        match v {
            Value::Null => {
                map.remove(k);
            }
            Value::Array(items) => {
                let existing = map.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(existing, items, path, policy);
            }
            _ => smp(map.entry(k.clone()).or_insert(Value::Null), v, path, policy),
        }
        path.pop();
    }
}

fn merge_list(target: &mut Value, items: &[Value], path: &mut Vec<PathElem>, policy: &ListPolicy) {
    let plain: Vec<Value> = items
        .iter()
        .filter(|i| i.get("$patch").is_none())
        .cloned()
        .collect();
    let keys = match policy.list_type(path, &plain) {
        ListType::Map(keys) if target.is_array() => keys,
        _ => {
            let mut replaced = Value::Array(plain);
            strip_directives(&mut replaced);
            *target = replaced;
            return;
        }
    };
    let Value::Array(live) = target else { return };
    for item in items {
        let id = item_key(item, &keys);
        let pos = live.iter().position(|x| item_key(x, &keys) == id);
        match (item.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(pos)) => {
                live.remove(pos);
            }
            (Some("delete"), None) => {}
            (_, Some(pos)) => smp(&mut live[pos], item, path, policy),
            (_, None) => {
                let mut fresh = item.clone();
                strip_directives(&mut fresh);
                live.push(fresh);
            }
        }
    }
}

fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("a JSON patch must be a list of operations".into()))?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Malformed(format!("operation {name:?} has no path")))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("{name} {path}: missing value")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Malformed(format!("{name}: missing from")))
        };
        match name {
            "add" => add(target, path, value()?)?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, value()?)?;
            }
            "move" => {
                let moved = remove(target, from()?)?;
                add(target, path, moved)?;
            }
            "copy" => {
                let copied = target
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| PatchError::Operation(format!("copy: missing {path}")))?;
                add(target, path, copied)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(PatchError::Operation(format!("test failed at {path}")));
                }
            }
            other => {
                return Err(PatchError::Malformed(format!(
                    "unknown operation {other:?}"
                )))
            }
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), PatchError> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| PatchError::Malformed(format!("invalid JSON pointer {path:?}")))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let missing = || {
        PatchError::Operation(format!(
            "add operation does not apply: doc is missing path: {path:?}"
        ))
    };
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i > items.len() {
                return Err(missing());
            }
            items.insert(i, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(target: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, last) = split_pointer(path)?;
    let missing = || {
        PatchError::Operation(format!(
            "remove operation does not apply: doc is missing path: {path:?}"
        ))
    };
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(items) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= items.len() {
                return Err(missing());
            }
            Ok(items.remove(i))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_nulls_and_replaces_lists() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_applies_operations_in_order_and_fails_a_false_test() {
        let mut doc = json!({"spec": {"items": ["a"]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/spec/items/-", "value": "b"},
                {"op": "replace", "path": "/spec/items/0", "value": "z"},
                {"op": "copy", "from": "/spec/items", "path": "/spec/copy"}
            ]),
        )
        .expect("valid patch");
        assert_eq!(
            doc,
            json!({"spec": {"items": ["z", "b"], "copy": ["z", "b"]}})
        );
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/spec/items/0", "value": "a"}]),
        );
        assert!(matches!(err, Err(PatchError::Operation(_))));
    }

    #[test]
    fn strategic_merge_patch_merges_containers_by_name_and_honours_delete() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}]
        }});
        strategic_merge_patch(&mut doc, &patch, &ListPolicy::default());
        assert_eq!(
            doc,
            json!({"spec": {"containers": [{"name": "a", "image": "2"}]}})
        );
    }
}
