//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Owns: reading/writing managedFields entries, the apply algorithm (conflicts with other managers
//! unless forced, merge of the applied configuration, removal of fields the same manager applied
//! before but no longer applies), and ownership transfer on ordinary updates. Pure functions over
//! JSON; the registry decides which parts of an object an endpoint may touch (e.g. `/status`).
//!
//! Simplifications versus kube-apiserver (structured-merge-diff): only object-level list types
//! come from a [`ListPolicy`]; there is no per-version conversion of field sets.

use serde_json::{json, Map, Value};

use crate::fieldpath::{self, FieldSet, ListPolicy, ListType, PathElem};

/// `Apply` (server-side apply) or `Update` (create, PUT, other patches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// How the fields were written.
    pub operation: Operation,
    /// `""` for the main resource, `"status"` or `"scale"`.
    pub subresource: String,
    /// The apiVersion the fields were written with.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: String,
    /// Owned paths.
    pub fields: FieldSet,
}

/// An apply touched fields another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApplyConflict {
    /// kube-apiserver's wording: `Apply failed with N conflict(s): conflict with "m": .path`.
    pub message: String,
}

/// Who writes and how.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager.
    pub manager: &'a str,
    /// `""`, `"status"` or `"scale"`.
    pub subresource: &'a str,
    /// apiVersion recorded in the entry.
    pub api_version: &'a str,
    /// Timestamp recorded in the entry.
    pub now: &'a str,
}

/// The entries of `object.metadata.managedFields`.
pub fn read_managed(object: &Value) -> Vec<ManagedEntry> {
    let Some(entries) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            Some(ManagedEntry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: match e.get("operation").and_then(Value::as_str) {
                    Some("Apply") => Operation::Apply,
                    _ => Operation::Update,
                },
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                time: e.get("time").and_then(Value::as_str).unwrap_or("").into(),
                fields: e
                    .get("fieldsV1")
                    .map(fieldpath::from_fields_v1)
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Writes `entries` into `object.metadata.managedFields` (removing the field when empty).
pub fn write_managed(object: &mut Value, entries: &[ManagedEntry]) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let rendered: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut entry = json!({
                "manager": e.manager,
                "operation": e.operation.as_str(),
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fieldpath::to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                entry["subresource"] = json!(e.subresource);
            }
            entry
        })
        .collect();
    if rendered.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(rendered));
    }
}

/// The part of an object that field ownership covers: no apiVersion/kind, and from metadata only
/// labels, annotations, ownerReferences and finalizers (kube-apiserver does not track the rest).
pub fn owned_view(object: &Value) -> Value {
    let mut view = object.clone();
    if let Some(map) = view.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "ownerReferences" | "finalizers"
                )
            });
            if meta.is_empty() {
                map.remove("metadata");
            }
        }
    }
    view
}

fn entry_mut<'e>(
    entries: &'e mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    operation: Operation,
) -> &'e mut ManagedEntry {
    let pos = entries.iter().position(|e| {
        e.manager == writer.manager
            && e.operation == operation
            && e.subresource == writer.subresource
    });
    let pos = pos.unwrap_or_else(|| {
        entries.push(ManagedEntry {
            manager: writer.manager.into(),
            operation,
            subresource: writer.subresource.into(),
            api_version: writer.api_version.into(),
            time: writer.now.into(),
            fields: FieldSet::new(),
        });
        entries.len() - 1
    });
    &mut entries[pos]
}

/// Server-side apply of `applied` onto `live` (`None` creates) by `writer`.
///
/// `applied` must already be limited to what the endpoint may change (the registry strips
/// `.status` on the main endpoint). Returns the merged object; `entries` are updated in place.
/// Errors with [`ApplyConflict`] when another manager owns a field the configuration sets to a
/// different value and `force` is false; with `force` the fields change owner.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    force: bool,
    policy: &ListPolicy,
) -> Result<Value, ApplyConflict> {
    let applied_set = fieldpath::field_set(&owned_view(applied), policy);
    let Some(live) = live else {
        entry_mut(entries, writer, Operation::Apply).fields = applied_set;
        return Ok(applied.clone());
    };
    let is_mine = |e: &ManagedEntry| {
        e.manager == writer.manager
            && e.operation == Operation::Apply
            && e.subresource == writer.subresource
    };
    let mut conflicts: Vec<(String, String)> = Vec::new();
    // A manager never conflicts with itself, whichever operation wrote its other entries
    // (e.g. an operator that created an object with POST and now applies it).
    for entry in entries.iter().filter(|e| e.manager != writer.manager) {
        for path in applied_set.intersection(&entry.fields) {
            if matches!(path.last(), Some(PathElem::Key(_) | PathElem::Value(_))) {
                continue; // list-item identity, not a value
            }
            if fieldpath::value_at(live, path) != fieldpath::value_at(applied, path) {
                conflicts.push((entry.manager.clone(), fieldpath::display(path)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
        if force {
            entry.fields.retain(|p| !applied_set.contains(p));
        }
    }
    let previous = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut merged = live.clone();
    merge(&mut merged, applied, &mut Vec::new(), policy);
    // Fields this manager applied before and dropped now go, unless someone else owns them.
    let dropped: Vec<_> = previous.difference(&applied_set).cloned().collect();
    for path in dropped.iter().rev() {
        let owned_elsewhere = entries
            .iter()
            .any(|e| !is_mine(e) && e.fields.contains(path));
        if !owned_elsewhere && fieldpath::remove_at(&mut merged, path) {
            prune_empty_parents(&mut merged, path);
        }
    }
    let mine = entry_mut(entries, writer, Operation::Apply);
    mine.fields = applied_set;
    mine.time = writer.now.into();
    mine.api_version = writer.api_version.into();
    entries.retain(|e| !e.fields.is_empty());
    Ok(merged)
}

fn conflict_error(conflicts: &[(String, String)]) -> ApplyConflict {
    let n = conflicts.len();
    let message = if n == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\": {}",
            conflicts[0].0, conflicts[0].1
        )
    } else {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("- conflict with \"{m}\": {p}"))
            .collect();
        format!("Apply failed with {n} conflicts:\n{}", lines.join("\n"))
    };
    ApplyConflict { message }
}

/// Removing a leaf can leave `{}` behind: drop such maps below the top level.
fn prune_empty_parents(object: &mut Value, path: &[PathElem]) {
    for len in (2..path.len()).rev() {
        let parent = &path[..len];
        let empty = fieldpath::value_at(object, parent)
            .is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
        if empty {
            fieldpath::remove_at(object, parent);
        } else {
            break;
        }
    }
}

/// Merges an applied configuration into `live`: maps recursively, associative lists by key, set
/// lists by value, everything else (scalars, atomic lists) replaced.
pub fn merge(live: &mut Value, applied: &Value, path: &mut Vec<PathElem>, policy: &ListPolicy) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                path.push(PathElem::Field(k.clone()));
                match l.get_mut(k) {
                    Some(lv) => merge(lv, av, path, policy),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
                path.pop();
            }
        }
        (live @ Value::Array(_), Value::Array(a)) => match policy.list_type(path, a) {
            ListType::Atomic => *live = applied.clone(),
            ListType::Set => {
                if let Value::Array(l) = live {
                    for item in a {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
            }
            ListType::Map(keys) => {
                if let Value::Array(l) = live {
                    for item in a {
                        let id = fieldpath::item_key(item, &keys);
                        match l.iter_mut().find(|x| fieldpath::item_key(x, &keys) == id) {
                            Some(existing) => merge(existing, item, path, policy),
                            None => l.push(item.clone()),
                        }
                    }
                }
            }
        },
        (live, applied) => *live = applied.clone(),
    }
}

/// Records an ordinary write from `old` (None on create) to `new` by `writer`: the writer's
/// `Update` entry gains the fields it changed; other managers lose them.
pub fn record_update(
    old: Option<&Value>,
    new: &Value,
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    policy: &ListPolicy,
) {
    let new_view = owned_view(new);
    let new_set = fieldpath::field_set(&new_view, policy);
    let (changed, removed): (FieldSet, FieldSet) = match old {
        None => (new_set.clone(), FieldSet::new()),
        Some(old) => {
            let old_view = owned_view(old);
            let old_set = fieldpath::field_set(&old_view, policy);
            let changed = new_set
                .iter()
                .filter(|p| fieldpath::value_at(&old_view, p) != fieldpath::value_at(&new_view, p))
                .cloned()
                .collect();
            (changed, old_set.difference(&new_set).cloned().collect())
        }
    };
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for entry in entries.iter_mut() {
        entry
            .fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        let mine = entry_mut(entries, writer, Operation::Update);
        mine.fields.extend(changed);
        mine.time = writer.now.into();
        mine.api_version = writer.api_version.into();
    }
    entries.retain(|e| !e.fields.is_empty());
}

#[cfg(test)]
#[path = "ssa_tests.rs"]
mod tests;
