//! The Kubernetes API calls the operator makes, as RBAC rules: the single source the Helm chart's
//! ClusterRole/Role is tested against (`tests/tests/chart.rs`), so the chart grants exactly what
//! the code calls, no wildcards, and on Secrets only `create` (the hand-off token, never read;
//! docs/security.md).

/// One RBAC rule: API group, resource, verbs (sorted).
pub type Rule = (&'static str, &'static str, &'static [&'static str]);

/// Rules in the watched namespaces (a ClusterRole when watching all namespaces).
pub const WATCH_RULES: &[Rule] = &[
    // controller: watch pipelines; reconcile: write their status (server-side apply).
    ("tidemark.dev", "marketingpipelines", &["list", "watch"]),
    ("tidemark.dev", "marketingpipelines/status", &["patch"]),
    // apply: server-side apply (patch, and create when absent); orphans: list + delete;
    // controller: watch owned kinds; dereference: get the StatefulSet.
    (
        "",
        "configmaps",
        &["create", "delete", "list", "patch", "watch"],
    ),
    (
        "",
        "services",
        &["create", "delete", "list", "patch", "watch"],
    ),
    (
        "apps",
        "statefulsets",
        &["create", "delete", "get", "list", "patch", "watch"],
    ),
    (
        "policy",
        "poddisruptionbudgets",
        &["create", "delete", "list", "patch", "watch"],
    ),
    // hand-off token: created once, never read (no get, list or watch on Secrets).
    ("", "secrets", &["create"]),
    (
        "networking.k8s.io",
        "networkpolicies",
        &["create", "delete", "list", "patch", "watch"],
    ),
    (
        "monitoring.coreos.com",
        "servicemonitors",
        &["create", "patch"],
    ),
    // events: the recorder creates events and patches their series.
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// Rules in the operator's own namespace: leader election.
pub const LEASE_RULES: &[Rule] = &[(
    "coordination.k8s.io",
    "leases",
    &["create", "get", "update"],
)];
