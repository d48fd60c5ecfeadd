//! Resource types the emulator serves: the fixed built-in kinds and those a CustomResourceDefinition
//! adds. A [`ResourceDef`] holds what discovery, routing, validation, subresources and printing need.
//!
//! This module only describes types; objects live in [`crate::store`]. Versions of one group and
//! plural share storage (no conversion webhooks: the `None` strategy, only `apiVersion` changes).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// How a `/scale` subresource maps onto the object (CRD `subresources.scale`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSpec {
    /// JSONPath like `.spec.replicas`.
    pub spec_replicas_path: String,
    /// JSONPath like `.status.replicas`.
    pub status_replicas_path: String,
    /// JSONPath to a label selector string (CRDs) or a `LabelSelector` object (built-ins).
    pub label_selector_path: Option<String>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: String,
    /// Simple JSONPath evaluated against the object.
    pub json_path: String,
    /// Shown by `kubectl get -o wide` only when above 0.
    pub priority: i64,
    /// Optional description.
    pub description: String,
}

/// A served resource of one group/version.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// API group, empty for core.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Kind, e.g. `StatefulSet`.
    pub kind: String,
    /// Plural resource name used in paths.
    pub plural: String,
    /// Lowercase singular name.
    pub singular: String,
    /// Namespaced or cluster scoped.
    pub namespaced: bool,
    /// Short names for kubectl (`mp`).
    pub short_names: Vec<String>,
    /// Categories for kubectl (`all`).
    pub categories: Vec<String>,
    /// Whether the `status` subresource exists (then the main endpoint ignores `.status`).
    pub status: bool,
    /// The `scale` subresource, if any.
    pub scale: Option<ScaleSpec>,
    /// `openAPIV3Schema` of a CRD version; built-ins are not validated.
    pub schema: Option<Arc<Value>>,
    /// `additionalPrinterColumns` of a CRD version.
    pub printer_columns: Vec<PrinterColumn>,
}

impl ResourceDef {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `<Kind>List`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceDef {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            status: false,
            scale: None,
            schema: None,
            printer_columns: Vec::new(),
        }
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    fn with_replicas_scale(mut self) -> Self {
        self.scale = Some(ScaleSpec {
            spec_replicas_path: ".spec.replicas".into(),
            status_replicas_path: ".status.replicas".into(),
            label_selector_path: Some(".spec.selector".into()),
        });
        self.categories = vec!["all".into()];
        self
    }
}

/// The built-in kinds listed in the emulator's contract.
pub fn builtins() -> Vec<ResourceDef> {
    let b = ResourceDef::builtin;
    vec![
        b("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
        b("", "v1", "Service", "services", true)
            .short(&["svc"])
            .with_status(),
        b("", "v1", "Pod", "pods", true)
            .short(&["po"])
            .with_status(),
        b("", "v1", "Secret", "secrets", true),
        b("", "v1", "Event", "events", true).short(&["ev"]),
        b("", "v1", "Namespace", "namespaces", false)
            .short(&["ns"])
            .with_status(),
        b("", "v1", "ServiceAccount", "serviceaccounts", true).short(&["sa"]),
        b(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
        )
        .short(&["pvc"])
        .with_status(),
        b("apps", "v1", "StatefulSet", "statefulsets", true)
            .short(&["sts"])
            .with_status()
            .with_replicas_scale(),
        b("apps", "v1", "Deployment", "deployments", true)
            .short(&["deploy"])
            .with_status()
            .with_replicas_scale(),
        b(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
        )
        .short(&["pdb"])
        .with_status(),
        b("coordination.k8s.io", "v1", "Lease", "leases", true),
        b("events.k8s.io", "v1", "Event", "events", true).short(&["ev"]),
        b("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        b(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        )
        .short(&["netpol"]),
        b(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
        .short(&["crd", "crds"])
        .with_status(),
    ]
}

/// Why a CustomResourceDefinition cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CrdError {
    /// Field path inside the CRD.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn text(v: &Value, path: &str) -> Option<String> {
    v.pointer(path).and_then(Value::as_str).map(str::to_string)
}

fn strings(v: &Value, path: &str) -> Vec<String> {
    v.pointer(path)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn required(v: &Value, path: &str) -> Result<String, CrdError> {
    text(v, path)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CrdError {
            field: path.trim_start_matches('/').replace('/', "."),
            reason: "Required value".into(),
        })
}

/// Builds one [`ResourceDef`] per served version of a CRD object.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceDef>, CrdError> {
    let group = required(crd, "/spec/group")?;
    let kind = required(crd, "/spec/names/kind")?;
    let plural = required(crd, "/spec/names/plural")?;
    let singular = text(crd, "/spec/names/singular").unwrap_or_else(|| kind.to_lowercase());
    let namespaced = match text(crd, "/spec/scope").as_deref() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            return Err(CrdError {
                field: "spec.scope".into(),
                reason: "Unsupported value: must be Namespaced or Cluster".into(),
            })
        }
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .ok_or(CrdError {
            field: "spec.versions".into(),
            reason: "Required value".into(),
        })?;
    let mut defs = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let name = required(v, "/name").map_err(|e| CrdError {
            field: format!("spec.versions[{i}].name"),
            reason: e.reason,
        })?;
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let scale = v.pointer("/subresources/scale").map(|s| ScaleSpec {
            spec_replicas_path: text(s, "/specReplicasPath").unwrap_or_default(),
            status_replicas_path: text(s, "/statusReplicasPath").unwrap_or_default(),
            label_selector_path: text(s, "/labelSelectorPath"),
        });
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: text(c, "/name").unwrap_or_default(),
                        type_: text(c, "/type").unwrap_or_else(|| "string".into()),
                        json_path: text(c, "/jsonPath").unwrap_or_default(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        description: text(c, "/description").unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        defs.push(ResourceDef {
            group: group.clone(),
            version: name,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings(crd, "/spec/names/shortNames"),
            categories: strings(crd, "/spec/names/categories"),
            status: v.pointer("/subresources/status").is_some(),
            scale,
            schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
            printer_columns,
        });
    }
    Ok(defs)
}

/// All served resource types: built-ins plus the CRDs currently stored.
#[derive(Debug, Clone)]
pub struct Catalog {
    builtin: Vec<ResourceDef>,
    /// CRD name → its served versions.
    crds: BTreeMap<String, Vec<ResourceDef>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            builtin: builtins(),
            crds: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Every served resource, built-ins first.
    pub fn all(&self) -> impl Iterator<Item = &ResourceDef> {
        self.builtin.iter().chain(self.crds.values().flatten())
    }

    /// The resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.all()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// Any served version of `group/plural` (used when a stored object is read back).
    pub fn find_any_version(&self, group: &str, plural: &str) -> Option<&ResourceDef> {
        self.all().find(|d| d.group == group && d.plural == plural)
    }

    /// Registers (or replaces) the versions served for CRD `name`.
    pub fn put_crd(&mut self, name: &str, defs: Vec<ResourceDef>) {
        self.crds.insert(name.to_string(), defs);
    }

    /// Stops serving CRD `name`, returning its definitions.
    pub fn remove_crd(&mut self, name: &str) -> Option<Vec<ResourceDef>> {
        self.crds.remove(name)
    }

    /// `(group, versions)` pairs in discovery order; versions as served.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.all().filter(|d| !d.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, versions)) if !versions.contains(&d.version) => {
                    versions.push(d.version.clone())
                }
                Some(_) => {}
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        out
    }
}
