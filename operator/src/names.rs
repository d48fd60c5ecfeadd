//! Every name the operator shares with the worker, the chart or the tests, defined once.
//!
//! Changing a value here changes the contract with running clusters (label selectors of existing
//! StatefulSets are immutable), so treat these as API.

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "tidemark-operator";
/// Controller name in events and the `managed-by` label.
pub const CONTROLLER_NAME: &str = "tidemark-operator";

/// Label: what the object is (`tidemark-worker` on workers and their Services).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label: which pipeline the object belongs to.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label: who manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the pipeline, under Tidemark's own prefix (the one alerts and dashboards use).
pub const LABEL_PIPELINE: &str = "tidemark.dev/pipeline";
/// Value of [`LABEL_NAME`] on worker objects.
pub const WORKER_APP_NAME: &str = "tidemark-worker";

/// Pod template annotation: hash of the worker ConfigMap data, so a spec change rolls the pods.
pub const ANNOTATION_CONFIG_HASH: &str = "tidemark.dev/config-hash";

/// Default worker image (`--worker-image`).
pub const DEFAULT_WORKER_IMAGE: &str = "ghcr.io/tidemark/tidemark:0.1.0";
/// Name of the worker container.
pub const WORKER_CONTAINER: &str = "worker";
/// Worker HTTP port: metrics, health, snapshot hand-off.
pub const WORKER_PORT: i32 = 9102;
/// Name of the worker HTTP port.
pub const WORKER_PORT_NAME: &str = "http";

/// ConfigMap key holding the pipeline manifest.
pub const CONFIG_KEY_PIPELINE: &str = "pipeline.yaml";
/// ConfigMap key holding the runtime settings the operator decides.
pub const CONFIG_KEY_RUNTIME: &str = "runtime.yaml";
/// Where the worker ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/tidemark";
/// Volume claim template of the checkpoints.
pub const CHECKPOINT_VOLUME: &str = "checkpoints";
/// Where the checkpoint volume is mounted.
pub const CHECKPOINT_DIR: &str = "/var/lib/tidemark/checkpoints";
/// Where the Kafka TLS secret is mounted.
pub const KAFKA_TLS_DIR: &str = "/etc/tidemark/kafka-tls";
/// Where the Kafka SASL secret is mounted.
pub const KAFKA_SASL_DIR: &str = "/etc/tidemark/kafka-sasl";
/// Where the pseudonymisation key secret is mounted.
pub const PRIVACY_DIR: &str = "/etc/tidemark/privacy";

/// Name of the worker ConfigMap of pipeline `name`.
pub fn config_map_name(name: &str) -> String {
    format!("{name}-config")
}

/// Name of the headless Service (pod DNS for the snapshot hand-off) of pipeline `name`.
pub fn headless_service_name(name: &str) -> String {
    format!("{name}-workers")
}

/// Name of the metrics Service of pipeline `name`.
pub fn metrics_service_name(name: &str) -> String {
    format!("{name}-metrics")
}

/// Name of the StatefulSet and PodDisruptionBudget of pipeline `name`; pods are `NAME-i`, which
/// the worker parses for its ordinal.
pub fn workload_name(name: &str) -> String {
    name.to_owned()
}

/// Key of the hand-off token in its Secret.
pub const HANDOFF_TOKEN_KEY: &str = "token";
/// Where workers find the hand-off token Secret.
pub const HANDOFF_DIR: &str = "/etc/tidemark/handoff";
/// Environment variable naming the token file; the worker's snapshot route and hand-off client
/// read it (`tidemark_worker::handoff::auth`).
pub const HANDOFF_TOKEN_ENV: &str = "TIDEMARK_HANDOFF_TOKEN_FILE";

/// Name of the Secret with the hand-off token of pipeline `name` with uid `uid` (its first 8
/// characters: a re-created pipeline never finds its predecessor's Secret).
pub fn handoff_secret_name(name: &str, uid: &str) -> String {
    let short: String = uid.chars().take(8).collect();
    format!("{name}-handoff-{short}")
}

/// Name of the NetworkPolicy of pipeline `name`'s workers.
pub fn network_policy_name(name: &str) -> String {
    format!("{name}-workers")
}
