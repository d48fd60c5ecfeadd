//! Discovery documents (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`) and
//! minimal OpenAPI documents (`/openapi/v2`, `/openapi/v3`, and per group-version v3 documents
//! built from CRD schemas, enough for `kubectl explain` of custom resources).
//!
//! Pure functions of the [`Catalog`]. Aggregated discovery is not offered: clients that ask for it
//! get the legacy documents with `Content-Type: application/json` and fall back, as with an older
//! apiserver.

use serde_json::{json, Value};

use crate::resource::{Catalog, ResourceDef};

/// The Kubernetes version the emulator claims (matches the kubectl shipped by `.ci/tools/kube.sh`).
pub const VERSION: (&str, &str) = ("1", "35");

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": VERSION.0, "minor": VERSION.1,
        "gitVersion": format!("v{}.{}.0-tidemark-emulator", VERSION.0, VERSION.1),
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(json!({}))})
}

/// `/apis`.
pub fn groups(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = catalog
        .groups()
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if served.
pub fn group(catalog: &Catalog, name: &str) -> Option<Value> {
    let (g, vs) = catalog.groups().into_iter().find(|(g, _)| g == name)?;
    let mut doc = group_doc(&g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_entries(def: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": def.plural, "singularName": def.singular, "namespaced": def.namespaced,
        "kind": def.kind, "verbs": VERBS,
    });
    if !def.short_names.is_empty() {
        main["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        main["categories"] = json!(def.categories);
    }
    let mut out = vec![main];
    if def.status {
        out.push(json!({
            "name": format!("{}/status", def.plural), "singularName": "", "namespaced": def.namespaced,
            "kind": def.kind, "verbs": ["get", "patch", "update"],
        }));
    }
    if def.scale.is_some() {
        out.push(json!({
            "name": format!("{}/scale", def.plural), "singularName": "", "namespaced": def.namespaced,
            "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn resources(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = catalog
        .all()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let resources: Vec<Value> = defs.into_iter().flat_map(resource_entries).collect();
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// `/openapi/v2`: an empty but well-formed Swagger document.
pub fn openapi_v2() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.35.0"}, "paths": {}, "definitions": {}})
}

/// `/openapi/v3`: one entry per served group-version.
pub fn openapi_v3_index(catalog: &Catalog) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=emulator"}),
    );
    for (g, vs) in catalog.groups() {
        for v in vs {
            let path = format!("apis/{g}/{v}");
            let url = format!("/openapi/v3/{path}?hash=emulator");
            paths.insert(path, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

fn schema_name(def: &ResourceDef) -> String {
    let reversed: Vec<&str> = def.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), def.version, def.kind)
}

/// The PATCH operation of one resource path. kubectl looks for it (by the operation's
/// `x-kubernetes-group-version-kind`) to learn that the server validates fields itself
/// (`fieldValidation`); without it kubectl falls back to client-side validation with the
/// protobuf `/openapi/v2` document, which the emulator does not serve.
fn path_item(def: &ResourceDef) -> (String, Value) {
    let prefix = if def.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", def.group, def.version)
    };
    let path = if def.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", def.plural)
    } else {
        format!("{prefix}/{}/{{name}}", def.plural)
    };
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let op = json!({
        "operationId": format!("patch{}", def.kind),
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": def.group, "version": def.version, "kind": def.kind},
        "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
        "responses": {"200": {"description": "OK"}},
    });
    (path, json!({"patch": op}))
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{g}/{v}`: PATCH paths for every resource (see
/// [`path_item`]) and the CRD schemas of that group-version (built-ins have none), enough for
/// `kubectl explain` of custom resources.
pub fn openapi_v3_group(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = catalog
        .all()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let paths: serde_json::Map<String, Value> = defs.iter().map(|d| path_item(d)).collect();
    let mut schemas = serde_json::Map::new();
    for def in defs {
        let Some(schema) = &def.schema else { continue };
        let mut schema = (**schema).clone();
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.entry("apiVersion").or_insert(json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.entry("kind").or_insert(json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props
                .entry("metadata")
                .or_insert(json!({"type": "object", "description": "Standard object's metadata."}));
        }
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": def.group, "version": def.version, "kind": def.kind}]);
        schemas.insert(schema_name(def), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
