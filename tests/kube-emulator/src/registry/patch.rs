//! PATCH in its four content types, and the `/scale` subresource (GET, PUT, PATCH), which maps an
//! `autoscaling/v1 Scale` onto the object's replica paths.

use serde_json::{json, Value};

use super::{key, meta, Ownership, State, Sub, WriteOptions};
use crate::error::ApiError;
use crate::fieldpath::ListPolicy;
use crate::resource::ResourceDef;
use crate::ssa::{self, Writer};
use crate::{jsonpath, merge, selector};

/// The patch content types kube-apiserver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json` (built-in kinds only)
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply
    Apply,
}

impl PatchKind {
    /// Maps a Content-Type header (parameters ignored) to a patch kind.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// Decodes a body that may be JSON or YAML (apply configurations are YAML).
pub fn decode_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::BadRequest(format!("failed to decode body: {e}")))?;
    serde_saphyr::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("failed to decode body: {e}")))
}

fn patch_document(
    target: &mut Value,
    kind: PatchKind,
    patch: &Value,
    policy: &ListPolicy,
) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge => merge::merge_patch(target, patch),
        PatchKind::Strategic => merge::strategic_merge_patch(target, patch, policy),
        PatchKind::Json => {
            merge::json_patch(target, patch).map_err(|e| ApiError::BadRequest(e.to_string()))?
        }
        PatchKind::Apply => {
            return Err(ApiError::UnsupportedMediaType(
                "apply is handled separately".into(),
            ))
        }
    }
    Ok(())
}

impl State {
    /// PATCH on the object, `/status` or `/scale`. Server-side apply creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        sub: Sub,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let patch = decode_body(body)?;
        if kind == PatchKind::Strategic && def.schema.is_some() {
            return Err(ApiError::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
            ));
        }
        let k = key(def, namespace, name);
        let existing = self.store.get(&k).cloned();
        let policy = ListPolicy::new(def.schema.clone());
        if kind == PatchKind::Apply {
            return self.apply(def, namespace, name, patch, existing, sub, opts, &policy);
        }
        let old = existing.ok_or_else(|| ApiError::not_found(&def.plural, &def.group, name))?;
        if sub == Sub::Scale {
            let mut scale = self.scale_of(def, &old)?;
            patch_document(&mut scale, kind, &patch, &policy)?;
            return self.replace_scale(def, namespace, name, scale, opts);
        }
        let mut target = old.clone();
        patch_document(&mut target, kind, &patch, &policy)?;
        self.commit(def, k, Some(old), target, sub, opts, Ownership::Update)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
        mut applied: Value,
        existing: Option<Value>,
        sub: Sub,
        opts: &WriteOptions,
        policy: &ListPolicy,
    ) -> Result<Value, ApiError> {
        if opts.manager.is_empty() {
            return Err(ApiError::BadRequest(
                "fieldManager is required for apply requests".into(),
            ));
        }
        if sub == Sub::Scale {
            return Err(ApiError::UnsupportedMediaType(
                "server-side apply to /scale is not emulated".into(),
            ));
        }
        meta::check_body_namespace(def, namespace, &mut applied)?;
        let applied_name = applied
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if applied_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({applied_name}) does not match the name on the URL ({name})"
            )));
        }
        if def.schema.is_none() {
            meta::strip_nulls(&mut applied);
        }
        let map = applied
            .as_object_mut()
            .ok_or_else(|| ApiError::BadRequest("apply body must be an object".into()))?;
        match sub {
            Sub::Status => map
                .retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
            _ if def.status => {
                map.remove("status");
            }
            _ => {}
        }
        let now = meta::now();
        let api_version = def.api_version();
        let writer = Writer {
            manager: &opts.manager,
            subresource: sub.name(),
            api_version: &api_version,
            now: &now,
        };
        let mut entries = existing.as_ref().map(ssa::read_managed).unwrap_or_default();
        let merged = ssa::apply(
            existing.as_ref(),
            &applied,
            &mut entries,
            &writer,
            opts.force,
            policy,
        )
        .map_err(|c| ApiError::Conflict(c.message))?;
        match existing {
            None if sub != Sub::Main => Err(ApiError::not_found(&def.plural, &def.group, name)),
            None => {
                self.ensure_namespace(def, namespace)?;
                self.commit(
                    def,
                    key(def, namespace, name),
                    None,
                    merged,
                    sub,
                    opts,
                    Ownership::Apply(entries),
                )
            }
            Some(old) => self.commit(
                def,
                key(def, namespace, name),
                Some(old),
                merged,
                sub,
                opts,
                Ownership::Apply(entries),
            ),
        }
    }

    /// GET `/scale`.
    pub fn get_scale(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let object = self
            .store
            .get(&key(def, namespace, name))
            .ok_or_else(|| ApiError::not_found(&def.plural, &def.group, name))?;
        self.scale_of(def, object)
    }

    fn scale_of(&self, def: &ResourceDef, object: &Value) -> Result<Value, ApiError> {
        let spec = def.scale.as_ref().ok_or_else(|| {
            ApiError::NotFound("the server could not find the requested resource".into())
        })?;
        let replicas = |path: &str| {
            jsonpath::get(object, path)
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let selector = spec
            .label_selector_path
            .as_deref()
            .and_then(|p| jsonpath::get(object, p))
            .map(selector::label_selector_string)
            .unwrap_or_default();
        let m = object.get("metadata").cloned().unwrap_or(json!({}));
        let mut metadata = json!({});
        for field in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            if let Some(v) = m.get(field) {
                metadata[field] = v.clone();
            }
        }
        let mut status = json!({"replicas": replicas(&spec.status_replicas_path)});
        if !selector.is_empty() {
            status["selector"] = json!(selector);
        }
        Ok(json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": metadata,
            "spec": {"replicas": replicas(&spec.spec_replicas_path)},
            "status": status,
        }))
    }

    /// PUT `/scale`: sets the spec replicas path and writes the object through the main rules.
    pub(super) fn replace_scale(
        &mut self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
        scale: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let spec = def.scale.clone().ok_or_else(|| {
            ApiError::NotFound("the server could not find the requested resource".into())
        })?;
        let k = key(def, namespace, name);
        let old = self
            .store
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.plural, &def.group, name))?;
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                name,
                vec![(
                    "spec.replicas".into(),
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        let mut new = old.clone();
        if !jsonpath::set(&mut new, &spec.spec_replicas_path, json!(replicas)) {
            return Err(ApiError::Internal(format!(
                "cannot set {}",
                spec.spec_replicas_path
            )));
        }
        let rv = meta::resource_version(&scale);
        if !rv.is_empty() {
            new["metadata"]["resourceVersion"] = json!(rv);
        }
        let stored = self.commit(def, k, Some(old), new, Sub::Scale, opts, Ownership::Update)?;
        self.scale_of(def, &stored)
    }
}
