//! Object metadata rules: names and generateName, uids, timestamps, generation, which parts of an
//! object each endpoint may change, and name validation.

use std::hash::{BuildHasher, RandomState};

use serde_json::{json, Value};

use super::Sub;
use crate::error::ApiError;
use crate::resource::ResourceDef;
use crate::store::ObjectKey;

/// Generates uids and generateName suffixes: random per process, unique by a counter.
#[derive(Debug, Default)]
pub struct UidSource {
    seed: RandomState,
    counter: u64,
}

impl UidSource {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.seed.hash_one(self.counter)
    }

    /// A version-4-shaped UUID string.
    pub fn uid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Five characters from the alphabet kube-apiserver uses for generateName.
    pub fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.next();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
}

/// Now, as Kubernetes writes timestamps (second precision, UTC).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metadata.resourceVersion`, empty when unset.
pub fn resource_version(object: &Value) -> String {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn metadata(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Fills the body's namespace from the URL, or rejects a mismatch like kube-apiserver.
pub fn check_body_namespace(
    def: &ResourceDef,
    namespace: Option<&str>,
    body: &mut Value,
) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    let meta = metadata(body);
    if !def.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url_ns = namespace.unwrap_or_default();
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => {
            meta.insert("namespace".into(), json!(url_ns));
            Ok(())
        }
    }
}

/// The name a create will use: `metadata.name`, or `generateName` plus a random suffix.
pub fn name_for_create(
    body: &mut Value,
    kind: &str,
    group: &str,
    uids: &mut UidSource,
) -> Result<String, ApiError> {
    let meta = metadata(body);
    if let Some(name) = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Ok(name.to_string());
    }
    match meta
        .get("generateName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(prefix) => {
            let name = format!("{prefix}{}", uids.suffix());
            meta.insert("name".into(), json!(name));
            Ok(name)
        }
        None => Err(ApiError::invalid(
            kind,
            group,
            "",
            vec![(
                "metadata.name".into(),
                "Required value: name or generateName is required".into(),
            )],
        )),
    }
}

/// What an endpoint may change: the main endpoint never touches `.status` of a kind with a status
/// subresource; `/status` changes nothing but `.status`.
pub fn apply_endpoint_rules(
    def: &ResourceDef,
    old: Option<&Value>,
    mut new: Value,
    sub: Sub,
) -> Value {
    match (sub, old) {
        (Sub::Status, Some(old)) => {
            let mut merged = old.clone();
            match new.get_mut("status").map(Value::take) {
                Some(status) => merged["status"] = status,
                None => {
                    if let Some(map) = merged.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            let rv = resource_version(&new);
            if !rv.is_empty() {
                metadata(&mut merged).insert("resourceVersion".into(), json!(rv));
            }
            merged
        }
        (_, old) if def.status => {
            let old_status = old.and_then(|o| o.get("status")).cloned();
            if let Some(map) = new.as_object_mut() {
                map.remove("status");
                if let Some(status) = old_status {
                    map.insert("status".into(), status);
                }
            }
            if old.is_none() && def.kind == "Namespace" && def.group.is_empty() {
                new["status"] = json!({"phase": "Active"});
            }
            new
        }
        _ => new,
    }
}

/// uid, creationTimestamp, generation and deletion fields belong to the server.
pub fn set_system_metadata(
    def: &ResourceDef,
    key: &ObjectKey,
    old: Option<&Value>,
    new: &mut Value,
    uids: &mut UidSource,
) {
    new["apiVersion"] = json!(def.api_version());
    new["kind"] = json!(def.kind);
    let old_meta = old
        .and_then(|o| o.get("metadata"))
        .cloned()
        .unwrap_or(json!({}));
    let uid = old_meta
        .get("uid")
        .cloned()
        .unwrap_or_else(|| json!(uids.uid()));
    let created = old_meta
        .get("creationTimestamp")
        .cloned()
        .unwrap_or_else(|| json!(now()));
    let meta = metadata(new);
    meta.insert("name".into(), json!(key.name));
    meta.insert("uid".into(), uid);
    meta.insert("creationTimestamp".into(), created);
    meta.insert(
        "generation".into(),
        old_meta.get("generation").cloned().unwrap_or(json!(1)),
    );
    meta.remove("selfLink");
    for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
}

/// Increments `metadata.generation` when anything but metadata (and status, for kinds with a
/// status subresource) changed.
pub fn bump_generation(old: Option<&Value>, new: &mut Value, has_status: bool) {
    let Some(old) = old else { return };
    let content = |v: &Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            if has_status {
                map.remove("status");
            }
        }
        v
    };
    if content(old) != content(new) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        metadata(new).insert("generation".into(), json!(generation));
    }
}

/// Go decoding turns `null` into "unset" for built-in kinds.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Whether a deletion waiting on finalizers can complete now.
pub fn deletion_finished(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
        && object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
}

const SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// DNS-1123 names: labels for namespaces and services, subdomains for everything else.
pub fn validate_name(def: &ResourceDef, object: &Value) -> Vec<(String, String)> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let label = def.group.is_empty() && matches!(def.plural.as_str(), "namespaces" | "services");
    let (pattern, max, what) = if label {
        (LABEL, 63, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")
    } else {
        (SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
    };
    let ok = name.len() <= max && regex::Regex::new(pattern).is_ok_and(|re| re.is_match(name));
    if ok || def.group == "rbac.authorization.k8s.io" {
        Vec::new()
    } else {
        vec![(
            "metadata.name".into(),
            format!("Invalid value: {name:?}: {what}"),
        )]
    }
}

/// Longest `note` of an `events.k8s.io` Event (kube-apiserver's `NoteLengthLimit`, in bytes).
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// The few built-in field rules Tidemark's clients can trip over (built-ins are otherwise not
/// validated): an Event's note (`message` in the core form the API server validates) of at most
/// [`EVENT_NOTE_LIMIT`] bytes, worded as kube-apiserver words it.
pub fn validate_builtin(def: &ResourceDef, object: &Value) -> Vec<(String, String)> {
    let text_field = match (def.group.as_str(), def.kind.as_str()) {
        ("events.k8s.io", "Event") => "/note",
        ("", "Event") => "/message",
        _ => return Vec::new(),
    };
    let text = object
        .pointer(text_field)
        .and_then(Value::as_str)
        .unwrap_or_default();
    if text.len() > EVENT_NOTE_LIMIT {
        vec![(
            "message".into(),
            format!("Invalid value: \"\": can have at most {EVENT_NOTE_LIMIT} characters"),
        )]
    } else {
        Vec::new()
    }
}

/// Fields of a StatefulSet's spec that may change after creation (kube-apiserver's
/// `ValidateStatefulSetUpdate`); any other change, e.g. of `volumeClaimTemplates`, is refused.
const STATEFUL_SET_MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

/// Update rules of built-ins that clients hit: a StatefulSet's spec is immutable but for
/// [`STATEFUL_SET_MUTABLE`], with kube-apiserver's message.
pub fn validate_builtin_update(
    def: &ResourceDef,
    old: &Value,
    new: &Value,
) -> Vec<(String, String)> {
    if (def.group.as_str(), def.kind.as_str()) != ("apps", "StatefulSet") {
        return Vec::new();
    }
    let fixed = |object: &Value| {
        let mut spec = object.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(map) = spec.as_object_mut() {
            STATEFUL_SET_MUTABLE.iter().for_each(|field| {
                map.remove(*field);
            });
        }
        spec
    };
    if fixed(old) == fixed(new) {
        return Vec::new();
    }
    vec![(
        "spec".into(),
        "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', \
         'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
         'minReadySeconds' are forbidden"
            .into(),
    )]
}
