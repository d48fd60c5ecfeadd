//! API semantics on top of the [`Store`]: what kube-apiserver's generic registry, admission and
//! controllers do to an object on each verb.
//!
//! Owns object metadata (uid, creationTimestamp, generation, resourceVersion preconditions),
//! status/scale subresource rules, CRD schema validation, managedFields bookkeeping, finalizers,
//! namespace existence, CRD registration, and garbage collection. Pure and synchronous: the HTTP
//! layer calls it under one lock and then publishes [`Store::take_pending`] events to watchers.
//!
//! Split by verb: reads and writes here, [`patch`] for PATCH and `/scale`, [`delete`] for
//! deletion, garbage collection and cascades.

mod delete;
mod meta;
mod patch;

use serde_json::{json, Value};

pub use delete::{DeleteOptions, Propagation};
pub use patch::{decode_body, PatchKind};

use crate::error::ApiError;
use crate::fieldpath::ListPolicy;
use crate::resource::{Catalog, ResourceDef};
use crate::selector::Selector;
use crate::ssa::{self, ManagedEntry, Writer};
use crate::store::{ObjectKey, Store};

/// Which endpoint of an object a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The object itself.
    Main,
    /// `/status`: only `.status` changes.
    Status,
    /// `/scale`: only the replicas field changes.
    Scale,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
            Sub::Scale => "scale",
        }
    }
}

/// Per-request write options from the query string.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`, or derived from the User-Agent.
    pub manager: String,
    /// `force=true` for server-side apply.
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error, not pruned.
    pub strict: bool,
}

/// How managedFields change on a write.
#[derive(Debug)]
enum Ownership {
    /// An ordinary write: diff old and new.
    Update,
    /// Server-side apply already computed the entries.
    Apply(Vec<ManagedEntry>),
}

/// The emulated cluster state: objects plus served types.
#[derive(Debug)]
pub struct State {
    /// Objects, revisions, event log.
    pub store: Store,
    /// Served resource types.
    pub catalog: Catalog,
    uids: meta::UidSource,
}

impl Default for State {
    fn default() -> Self {
        State::new(crate::store::EVENT_LOG_CAPACITY)
    }
}

impl State {
    /// A fresh cluster with the four standard namespaces and an event log of `log_capacity`.
    pub fn new(log_capacity: usize) -> Self {
        let store = Store::with_capacity(log_capacity);
        let mut state = State {
            store,
            catalog: Catalog::default(),
            uids: meta::UidSource::default(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Some(def) = state.catalog.find("", "v1", "namespaces").cloned() {
                let opts = WriteOptions {
                    dry_run: false,
                    manager: "kube-apiserver".into(),
                    force: false,
                    strict: false,
                };
                // Creating a fixed, valid namespace in an empty store cannot fail.
                let _ = state.create(&def, None, body, &opts);
            }
        }
        state
    }
}

fn key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey {
        group: def.group.clone(),
        plural: def.plural.clone(),
        namespace: if def.namespaced {
            namespace.unwrap_or_default().to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

/// The object as served at `def`'s version (storage is shared between versions).
pub fn present(def: &ResourceDef, object: &Value) -> Value {
    let mut out = object.clone();
    out["apiVersion"] = json!(def.api_version());
    out["kind"] = json!(def.kind);
    out
}

impl State {
    /// GET one object.
    pub fn get(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.store
            .get(&key(def, namespace, name))
            .map(|o| present(def, o))
            .ok_or_else(|| ApiError::not_found(&def.plural, &def.group, name))
    }

    /// LIST: a `<Kind>List` with the current revision.
    pub fn list(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        labels: &Selector,
        fields: &Selector,
    ) -> Value {
        let items: Vec<Value> = self
            .store
            .list(
                &def.group,
                &def.plural,
                namespace.filter(|_| def.namespaced),
            )
            .into_iter()
            .filter(|o| labels.matches_labels(o) && fields.matches_fields(o))
            .map(|o| present(def, o))
            .collect();
        json!({
            "apiVersion": def.api_version(),
            "kind": def.list_kind(),
            "metadata": {"resourceVersion": self.store.revision().to_string()},
            "items": items,
        })
    }

    /// POST: create, with generateName, namespace existence and AlreadyExists checks.
    pub fn create(
        &mut self,
        def: &ResourceDef,
        namespace: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        meta::check_body_namespace(def, namespace, &mut body)?;
        let name = meta::name_for_create(&mut body, &def.kind, &def.group, &mut self.uids)?;
        self.ensure_namespace(def, namespace)?;
        let k = key(def, namespace, &name);
        if self.store.get(&k).is_some() {
            return Err(ApiError::already_exists(&def.plural, &def.group, &name));
        }
        self.commit(def, k, None, body, Sub::Main, opts, Ownership::Update)
    }

    /// PUT on the object, `/status` or (via [`patch`]) `/scale`.
    pub fn replace(
        &mut self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        sub: Sub,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if sub == Sub::Scale {
            return self.replace_scale(def, namespace, name, body, opts);
        }
        meta::check_body_namespace(def, namespace, &mut body)?;
        let body_name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(name);
        if body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let k = key(def, namespace, name);
        let old = self
            .store
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.plural, &def.group, name))?;
        if def.schema.is_some() && meta::resource_version(&body).is_empty() {
            return Err(ApiError::invalid(
                &def.kind,
                &def.group,
                name,
                vec![(
                    "metadata.resourceVersion".into(),
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        self.commit(def, k, Some(old), body, sub, opts, Ownership::Update)
    }

    fn ensure_namespace(&self, def: &ResourceDef, namespace: Option<&str>) -> Result<(), ApiError> {
        if !def.namespaced {
            return Ok(());
        }
        let ns = namespace.unwrap_or_default();
        let k = ObjectKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        match self.store.get(&k) {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("namespaces", "", ns)),
        }
    }

    /// Every write ends here: endpoint rules, system metadata, validation, generation,
    /// managedFields, then store (or not, on dry run), CRD registration and garbage collection.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        def: &ResourceDef,
        k: ObjectKey,
        old: Option<Value>,
        mut new: Value,
        sub: Sub,
        opts: &WriteOptions,
        ownership: Ownership,
    ) -> Result<Value, ApiError> {
        let requested_rv = meta::resource_version(&new);
        if let Some(old) = &old {
            if !requested_rv.is_empty() && requested_rv != meta::resource_version(old) {
                return Err(ApiError::stale(&def.plural, &def.group, &k.name));
            }
        }
        new = meta::apply_endpoint_rules(def, old.as_ref(), new, sub);
        meta::set_system_metadata(def, &k, old.as_ref(), &mut new, &mut self.uids);
        if def.schema.is_none() {
            meta::strip_nulls(&mut new);
        }
        self.validate(def, &k.name, old.as_ref(), &mut new, opts.strict)?;
        meta::bump_generation(old.as_ref(), &mut new, def.status);
        let policy = ListPolicy::new(def.schema.clone());
        let now = meta::now();
        let api_version = def.api_version();
        let writer = Writer {
            manager: &opts.manager,
            subresource: sub.name(),
            api_version: &api_version,
            now: &now,
        };
        let entries = match ownership {
            Ownership::Apply(entries) => entries,
            Ownership::Update => {
                let mut entries = old.as_ref().map(ssa::read_managed).unwrap_or_default();
                ssa::record_update(old.as_ref(), &new, &mut entries, &writer, &policy);
                entries
            }
        };
        ssa::write_managed(&mut new, &entries);
        if def.group == "apiextensions.k8s.io" {
            self.prepare_crd(def, &mut new)?;
        }
        if opts.dry_run {
            return Ok(present(def, &new));
        }
        // Like the real API server, a write that changes nothing but bookkeeping (the
        // resourceVersion it carried, managedFields timestamps) is not stored: no new
        // resourceVersion, no watch event.
        if let Some(old) = old.as_ref().filter(|old| unchanged(old, &new)) {
            return Ok(present(def, old));
        }
        let finished = meta::deletion_finished(&new);
        let stored = self.store.put(k.clone(), new);
        let result = if finished {
            self.finish_delete(&k).unwrap_or(stored)
        } else {
            if def.group == "apiextensions.k8s.io" {
                self.register_crd(&stored);
            }
            stored
        };
        self.collect_garbage();
        Ok(present(def, &result))
    }

    fn validate(
        &self,
        def: &ResourceDef,
        name: &str,
        old: Option<&Value>,
        new: &mut Value,
        strict: bool,
    ) -> Result<(), ApiError> {
        let mut causes: Vec<(String, String)> = meta::validate_name(def, new);
        causes.extend(meta::validate_builtin(def, new));
        if let Some(old) = old {
            causes.extend(meta::validate_builtin_update(def, old, new));
        }
        if let Some(schema) = &def.schema {
            let unknown = crate::schema::prune_and_default(new, schema);
            if strict && !unknown.is_empty() {
                let fields: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::BadRequest(format!(
                    "strict decoding error: {}",
                    fields.join(", ")
                )));
            }
            let violations = crate::schema::validate(new, old, schema);
            causes.extend(violations.into_iter().map(|v| (v.field, v.message)));
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&def.kind, &def.group, name, causes))
        }
    }

    /// Validates a CRD and fills its status like the apiextensions controllers do.
    fn prepare_crd(&self, def: &ResourceDef, crd: &mut Value) -> Result<(), ApiError> {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let invalid = |field: String, reason: String| {
            ApiError::invalid(&def.kind, &def.group, &name, vec![(field, reason)])
        };
        crate::resource::from_crd(crd).map_err(|e| invalid(e.field, e.reason))?;
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != format!("{plural}.{group}") {
            return Err(invalid(
                "metadata.name".into(),
                format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
            ));
        }
        let storage: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage") == Some(&json!(true)))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        let now = meta::now();
        let condition = |type_: &str, reason: &str, message: &str| json!({"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
        crd["status"] = json!({
            "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "storedVersions": storage,
        });
        Ok(())
    }

    fn register_crd(&mut self, crd: &Value) {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Ok(defs) = crate::resource::from_crd(crd) {
            self.catalog.put_crd(name, defs);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// Whether `new` equals `old` but for `metadata.resourceVersion` and managedFields times.
fn unchanged(old: &Value, new: &Value) -> bool {
    fn bookkeeping_removed(object: &Value) -> Value {
        let mut object = object.clone();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            if let Some(fields) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
                for entry in fields.iter_mut().filter_map(Value::as_object_mut) {
                    entry.remove("time");
                }
            }
        }
        object
    }
    bookkeeping_removed(old) == bookkeeping_removed(new)
}
