//! Field paths and field sets as server-side apply sees them, and their `fieldsV1` encoding
//! (`{"f:spec":{"f:replicas":{}}}`, list items as `k:{"name":"x"}` or `v:"a"`).
//!
//! Pure functions over `serde_json::Value`. Which lists are associative comes from a
//! [`ListPolicy`]: a CRD's `x-kubernetes-list-type`/`x-kubernetes-list-map-keys`, or for built-ins
//! the merge keys kube-apiserver's Go types declare for the common fields. Ownership rules
//! themselves live in [`crate::ssa`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElem {
    /// A map field, `f:name`.
    Field(String),
    /// An item of an associative list, by its keys as canonical JSON, `k:{"name":"x"}`.
    Key(String),
    /// An item of a set list, by its value as JSON, `v:"x"`.
    Value(String),
    /// An item of a list by position, `i:0` (only read from clients' fieldsV1).
    Index(usize),
}

/// A path from the object root.
pub type FieldPath = Vec<PathElem>;
/// A set of owned paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// How a list is merged and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole, owned as one field.
    Atomic,
    /// Items identified by these key fields.
    Map(Vec<String>),
    /// Items identified by their scalar value.
    Set,
}

/// Decides list types for one resource: from its CRD schema when it has one.
#[derive(Debug, Clone, Default)]
pub struct ListPolicy {
    schema: Option<Arc<Value>>,
}

/// Merge keys of the built-in fields tests and the operator touch, as in the Go types' tags.
const BUILTIN_MAP_KEYS: &[(&str, &[&str])] = &[
    ("containers", &["name"]),
    ("initContainers", &["name"]),
    ("ephemeralContainers", &["name"]),
    ("env", &["name"]),
    ("volumes", &["name"]),
    ("volumeMounts", &["mountPath"]),
    ("imagePullSecrets", &["name"]),
    ("conditions", &["type"]),
    ("ownerReferences", &["uid"]),
];

impl ListPolicy {
    /// A policy reading `x-kubernetes-list-*` from a CRD's `openAPIV3Schema`.
    pub fn new(schema: Option<Arc<Value>>) -> Self {
        ListPolicy { schema }
    }

    /// The list type at `path` given its (new) items.
    pub fn list_type(&self, path: &[PathElem], items: &[Value]) -> ListType {
        let name = match path.last() {
            Some(PathElem::Field(name)) => name.as_str(),
            _ => "",
        };
        let in_metadata = matches!(path.first(), Some(PathElem::Field(f)) if f == "metadata");
        if in_metadata && name == "finalizers" {
            return ListType::Set;
        }
        if let (Some(schema), false) = (&self.schema, in_metadata) {
            return match schema_at(schema, path) {
                Some(node) => match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => ListType::Map(
                        node.get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|k| {
                                k.iter()
                                    .filter_map(|s| s.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    Some("set") => ListType::Set,
                    _ => ListType::Atomic,
                },
                None => ListType::Atomic,
            };
        }
        let keys: Vec<String> = match name {
            "ports" if items.iter().all(|i| i.get("containerPort").is_some()) => {
                vec!["containerPort".into()]
            }
            "ports" => vec!["port".into()],
            _ => match BUILTIN_MAP_KEYS.iter().find(|(n, _)| *n == name) {
                Some((_, keys)) => keys.iter().map(|k| k.to_string()).collect(),
                None => return ListType::Atomic,
            },
        };
        let keyed = items
            .iter()
            .all(|i| keys.iter().all(|k| i.get(k).is_some()));
        if keyed {
            ListType::Map(keys)
        } else {
            ListType::Atomic
        }
    }
}

/// The schema node describing `path` (through properties, items, additionalProperties).
pub fn schema_at<'a>(schema: &'a Value, path: &[PathElem]) -> Option<&'a Value> {
    let mut node = schema;
    for elem in path {
        node = match elem {
            PathElem::Field(name) => node
                .get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?,
            _ => node.get("items")?,
        };
    }
    Some(node)
}

/// The identity of a list item: its key fields as canonical JSON (sorted keys).
pub fn item_key(item: &Value, keys: &[String]) -> String {
    let map: BTreeMap<&str, &Value> = keys
        .iter()
        .filter_map(|k| item.get(k).map(|v| (k.as_str(), v)))
        .collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// Every owned path of `value` (leaves, atomic lists, empty maps, list items).
pub fn field_set(value: &Value, policy: &ListPolicy) -> FieldSet {
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), policy, &mut out);
    out
}

fn walk(value: &Value, path: &mut FieldPath, policy: &ListPolicy, out: &mut FieldSet) {
    match value {
        Value::Object(map) if map.is_empty() => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                path.push(PathElem::Field(k.clone()));
                walk(v, path, policy, out);
                path.pop();
            }
        }
        Value::Array(items) => match policy.list_type(path, items) {
            ListType::Atomic => {
                out.insert(path.clone());
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(PathElem::Value(item.to_string()));
                    out.insert(p);
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    path.push(PathElem::Key(item_key(item, &keys)));
                    out.insert(path.clone());
                    walk(item, path, policy, out);
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path`, if present.
pub fn value_at<'a>(value: &'a Value, path: &[PathElem]) -> Option<&'a Value> {
    let mut node = value;
    for elem in path {
        node = match elem {
            PathElem::Field(f) => node.get(f)?,
            PathElem::Index(i) => node.get(*i)?,
            PathElem::Key(k) => {
                let wanted: Map<String, Value> = serde_json::from_str(k).ok()?;
                node.as_array()?
                    .iter()
                    .find(|item| wanted.iter().all(|(f, v)| item.get(f) == Some(v)))?
            }
            PathElem::Value(v) => {
                let wanted: Value = serde_json::from_str(v).ok()?;
                node.as_array()?.iter().find(|item| **item == wanted)?
            }
        };
    }
    Some(node)
}

/// Removes the field or list item at `path`; returns whether something was removed.
pub fn remove_at(value: &mut Value, path: &[PathElem]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let Some(parent) = value_at_mut(value, parent_path) else {
        return false;
    };
    match (last, parent) {
        (PathElem::Field(f), Value::Object(map)) => map.remove(f).is_some(),
        (PathElem::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        (elem @ (PathElem::Key(_) | PathElem::Value(_)), Value::Array(items)) => {
            let before = items.len();
            let probe = Value::Array(items.clone());
            let Some(found) = value_at(&probe, std::slice::from_ref(elem)) else {
                return false;
            };
            let found = found.clone();
            items.retain(|item| *item != found);
            items.len() != before
        }
        _ => false,
    }
}

fn value_at_mut<'a>(value: &'a mut Value, path: &[PathElem]) -> Option<&'a mut Value> {
    let mut node = value;
    for elem in path {
        node = match elem {
            PathElem::Field(f) => node.get_mut(f)?,
            PathElem::Index(i) => node.get_mut(*i)?,
            PathElem::Key(_) | PathElem::Value(_) => {
                let probe = Value::Array(node.as_array()?.clone());
                let found = value_at(&probe, std::slice::from_ref(elem))?.clone();
                node.as_array_mut()?
                    .iter_mut()
                    .find(|item| **item == found)?
            }
        };
    }
    Some(node)
}

/// Human form for conflict messages: `.spec.containers[name="app"].image`.
pub fn display(path: &[PathElem]) -> String {
    let mut out = String::new();
    for elem in path {
        match elem {
            PathElem::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            PathElem::Key(k) => {
                let map: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = map.iter().map(|(f, v)| format!("{f}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElem::Value(v) => out.push_str(&format!("[={v}]")),
            PathElem::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Encodes a field set in the `fieldsV1` format of `metadata.managedFields`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for elem in path {
            let entry = node
                .entry(encode(elem))
                .or_insert_with(|| Value::Object(Map::new()));
            node = match entry {
                Value::Object(map) => map,
                _ => unreachable!("fieldsV1 nodes are always objects"),
            };
        }
        // A member that also has children is marked with ".", like kube-apiserver does.
        if !node.is_empty()
            || set
                .iter()
                .any(|p| p.len() > path.len() && p.starts_with(path))
        {
            node.insert(".".into(), Value::Object(Map::new()));
        }
    }
    Value::Object(root)
}

/// Decodes `fieldsV1`; unknown keys are ignored.
pub fn from_fields_v1(fields: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    decode(fields, &mut Vec::new(), &mut out);
    out
}

fn decode(node: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(map) = node.as_object() else { return };
    for (k, child) in map {
        let Some(elem) = parse(k) else { continue };
        path.push(elem);
        let is_leaf = child.as_object().is_none_or(|m| m.is_empty());
        if is_leaf || child.get(".").is_some() {
            out.insert(path.clone());
        }
        decode(child, path, out);
        path.pop();
    }
}

fn encode(elem: &PathElem) -> String {
    match elem {
        PathElem::Field(f) => format!("f:{f}"),
        PathElem::Key(k) => format!("k:{k}"),
        PathElem::Value(v) => format!("v:{v}"),
        PathElem::Index(i) => format!("i:{i}"),
    }
}

fn parse(s: &str) -> Option<PathElem> {
    let (prefix, rest) = s.split_once(':')?;
    Some(match prefix {
        "f" => PathElem::Field(rest.into()),
        "k" => PathElem::Key(rest.into()),
        "v" => PathElem::Value(rest.into()),
        "i" => PathElem::Index(rest.parse().ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_owned_per_item_and_round_trip_through_fields_v1() {
        let obj = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "app", "image": "a:1"}
        ]}}}});
        let set = field_set(&obj, &ListPolicy::default());
        let encoded = to_fields_v1(&set);
        assert_eq!(
            encoded,
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}
            }}}}})
        );
        assert_eq!(from_fields_v1(&encoded), set);
    }

    #[test]
    fn removing_a_keyed_item_drops_it_from_the_list() {
        let mut obj = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        let path = vec![
            PathElem::Field("env".into()),
            PathElem::Key("{\"name\":\"A\"}".into()),
        ];
        assert!(remove_at(&mut obj, &path));
        assert_eq!(obj, json!({"env": [{"name": "B", "value": "2"}]}));
    }
}
