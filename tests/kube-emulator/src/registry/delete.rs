//! Deletion: preconditions, finalizers (deletionTimestamp first, removal when the last finalizer
//! goes), propagation policies, and what controllers do after a delete on a real cluster — the
//! garbage collector (dependents whose owners are all gone are deleted; dangling owner references
//! to a gone owner are dropped when other owners remain), the namespace controller (contents of a
//! deleted namespace go) and the CRD finalizer (custom resources of a deleted CRD go).
//!
//! All of it runs synchronously after the write, so a test sees the cascade as soon as the
//! DELETE returns; a real cluster converges within a few hundred milliseconds instead.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{key, meta, present, State};
use crate::error::ApiError;
use crate::resource::ResourceDef;
use crate::store::ObjectKey;

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the owner now, dependents afterwards (the default).
    #[default]
    Background,
    /// Delete dependents first, then the owner.
    Foreground,
    /// Keep dependents and remove their owner references.
    Orphan,
}

/// Options of a DELETE request (query parameters and `DeleteOptions` body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// How dependents are treated.
    pub propagation: Propagation,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body (may be empty) and the query's `propagationPolicy`/`dryRun`.
    pub fn parse(body: &Value, propagation: Option<&str>, dry_run: bool) -> Self {
        let policy = propagation.or_else(|| body.get("propagationPolicy").and_then(Value::as_str));
        let orphan = body.get("orphanDependents").and_then(Value::as_bool) == Some(true);
        DeleteOptions {
            propagation: match policy {
                Some("Foreground") => Propagation::Foreground,
                Some("Orphan") => Propagation::Orphan,
                _ if orphan => Propagation::Orphan,
                _ => Propagation::Background,
            },
            uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            resource_version: body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
            dry_run: dry_run
                || body
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()),
        }
    }
}

fn uid_of(object: &Value) -> &str {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl State {
    /// DELETE one object. Answers the object when it stays (finalizers) or is a custom resource,
    /// and a `Status` of `Success` for built-ins, like kube-apiserver.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let k = key(def, namespace, name);
        let object = self
            .store
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.plural, &def.group, name))?;
        if let Some(uid) = &opts.uid {
            if uid != uid_of(&object) {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    uid_of(&object)
                )));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if *rv != meta::resource_version(&object) {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta::resource_version(&object)
                )));
            }
        }
        if opts.dry_run {
            return Ok(present(def, &object));
        }
        let uid = uid_of(&object).to_string();
        match opts.propagation {
            Propagation::Orphan => self.orphan_dependents(&uid),
            Propagation::Foreground => self.delete_dependents(&uid),
            Propagation::Background => {}
        }
        let result = self.mark_or_remove(&k);
        self.collect_garbage();
        let result = result.ok_or_else(|| ApiError::not_found(&def.plural, &def.group, name))?;
        if result.pointer("/metadata/deletionTimestamp").is_some() && self.store.get(&k).is_some()
            || def.schema.is_some()
        {
            return Ok(present(def, &result));
        }
        Ok(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": def.group, "kind": def.plural, "uid": uid},
        }))
    }

    /// Sets deletionTimestamp when finalizers remain, otherwise removes the object.
    fn mark_or_remove(&mut self, k: &ObjectKey) -> Option<Value> {
        let mut object = self.store.get(k).cloned()?;
        let has_finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            return self.finish_delete(k);
        }
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            return Some(object);
        }
        object["metadata"]["deletionTimestamp"] = json!(meta::now());
        object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let generation = object
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        object["metadata"]["generation"] = json!(generation + 1);
        Some(self.store.put(k.clone(), object))
    }

    /// Removes the object and runs the cleanups other controllers would.
    pub(super) fn finish_delete(&mut self, k: &ObjectKey) -> Option<Value> {
        let removed = self.store.remove(k)?;
        if k.group == "apiextensions.k8s.io" && k.plural == "customresourcedefinitions" {
            if let Some(defs) = self.catalog.remove_crd(&k.name) {
                if let Some(def) = defs.first() {
                    self.remove_all(|key| key.group == def.group && key.plural == def.plural);
                }
            }
        }
        if k.group.is_empty() && k.plural == "namespaces" {
            let ns = k.name.clone();
            self.remove_all(|key| key.namespace == ns);
        }
        Some(removed)
    }

    fn remove_all(&mut self, mut which: impl FnMut(&ObjectKey) -> bool) {
        let keys: Vec<ObjectKey> = self
            .store
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| which(k))
            .collect();
        for k in keys {
            self.finish_delete(&k);
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<ObjectKey> {
        self.store
            .iter()
            .filter(|(_, o)| owner_uids(o).iter().any(|u| u == uid))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn orphan_dependents(&mut self, uid: &str) {
        for k in self.dependents_of(uid) {
            self.drop_owner_refs(&k, &|u| u == uid);
        }
    }

    fn delete_dependents(&mut self, uid: &str) {
        for k in self.dependents_of(uid) {
            if let Some(dep_uid) = self.store.get(&k).map(|o| uid_of(o).to_string()) {
                self.delete_dependents(&dep_uid);
            }
            self.mark_or_remove(&k);
        }
    }

    fn drop_owner_refs(&mut self, k: &ObjectKey, gone: &dyn Fn(&str) -> bool) {
        let Some(mut object) = self.store.get(k).cloned() else {
            return;
        };
        if let Some(Value::Array(refs)) = object.pointer_mut("/metadata/ownerReferences") {
            refs.retain(|r| !r.get("uid").and_then(Value::as_str).is_some_and(gone));
            if refs.is_empty() {
                if let Some(m) = object["metadata"].as_object_mut() {
                    m.remove("ownerReferences");
                }
            }
        }
        self.store.put(k.clone(), object);
    }

    /// The garbage collector, run to a fixed point: deletes objects whose owners are all gone,
    /// and drops references to gone owners from objects that still have a live owner.
    pub fn collect_garbage(&mut self) {
        loop {
            let live: HashSet<String> = self
                .store
                .iter()
                .map(|(_, o)| uid_of(o).to_string())
                .collect();
            let mut orphaned = None;
            let mut dangling = None;
            for (k, o) in self.store.iter() {
                let owners = owner_uids(o);
                if owners.is_empty() {
                    continue;
                }
                let alive = owners.iter().filter(|u| live.contains(*u)).count();
                if alive == 0 && o.pointer("/metadata/deletionTimestamp").is_none() {
                    orphaned = Some(k.clone());
                    break;
                }
                if alive > 0 && alive < owners.len() && dangling.is_none() {
                    dangling = Some(k.clone());
                }
            }
            match (orphaned, dangling) {
                (Some(k), _) => {
                    self.mark_or_remove(&k);
                }
                (None, Some(k)) => self.drop_owner_refs(&k, &|u| !live.contains(u)),
                (None, None) => break,
            }
        }
    }
}
