//! How the pipeline runs: delivery guarantee, checkpoints, parallelism, autoscaling, Kafka
//! connection and worker pods.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// Delivery guarantee of results.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// Results are written in Kafka transactions committed with checkpoints: a `read_committed`
    /// consumer sees each result once, after any crash.
    #[default]
    ExactlyOnce,
    /// Idempotent producer without transactions: lower latency; after a crash results since the
    /// last checkpoint may be written again (same key and revision).
    AtLeastOnce,
}

/// Checkpoints of task state, offsets and watermarks on each worker's volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Time between checkpoints.
    #[serde(default = "defaults::interval")]
    pub interval: Duration,
    /// Checkpoints kept per task; older ones are deleted.
    #[serde(default = "defaults::retain")]
    #[schemars(range(min = 1, max = 100))]
    pub retain: u32,
    /// Size of each worker's checkpoint volume, a Kubernetes quantity.
    #[serde(default = "defaults::storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub storage_size: String,
    /// Storage class of the checkpoint volumes; absent means the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            interval: defaults::interval(),
            retain: defaults::retain(),
            storage_size: defaults::storage_size(),
            storage_class_name: None,
        }
    }
}

/// Autoscaling of parallelism from Prometheus metrics. The autoscaler decides
/// `status.parallelism` and never writes the spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.minParallelism <= self.maxParallelism")
    .message("minParallelism must not exceed maxParallelism"))]
pub struct AutoscalingSpec {
    /// Whether the autoscaler decides parallelism; when false, `spec.parallelism` rules.
    #[serde(default)]
    pub enabled: bool,
    /// Fewest workers.
    #[serde(default = "defaults::one")]
    #[schemars(range(min = 1))]
    pub min_parallelism: i32,
    /// Most workers; also capped by the partition count.
    #[serde(default = "defaults::max_parallelism")]
    #[schemars(range(min = 1))]
    pub max_parallelism: i32,
    /// Decision policy.
    #[serde(default)]
    pub policy: AutoscalingPolicy,
    /// Target busy share of each worker, in percent (throughput policy).
    #[serde(default = "defaults::target_utilization")]
    #[schemars(range(min = 10, max = 100))]
    pub target_utilization_percent: i32,
    /// Records of lag per worker that the lagThreshold policy aims for.
    #[serde(default = "defaults::lag_threshold")]
    #[schemars(range(min = 1))]
    pub lag_threshold: i64,
    /// Time within which the throughput policy wants the current lag consumed.
    #[serde(default = "defaults::catch_up")]
    pub catch_up_duration: Duration,
    /// Time between evaluations.
    #[serde(default = "defaults::evaluation_interval")]
    pub evaluation_interval: Duration,
    /// A scale-down happens only after the lower recommendation held this long.
    #[serde(default = "defaults::stabilization")]
    pub scale_down_stabilization: Duration,
    /// Least time between two scaling actions.
    #[serde(default = "defaults::cooldown")]
    pub cooldown: Duration,
    /// Range over which rates, lag growth and busy ratios are averaged (PromQL range); at
    /// least four scrape intervals of the workers.
    #[serde(default = "defaults::metrics_window")]
    pub metrics_window: Duration,
    /// Prometheus HTTP API base URL; absent means the operator's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            min_parallelism: defaults::one(),
            max_parallelism: defaults::max_parallelism(),
            policy: AutoscalingPolicy::default(),
            target_utilization_percent: defaults::target_utilization(),
            lag_threshold: defaults::lag_threshold(),
            catch_up_duration: defaults::catch_up(),
            evaluation_interval: defaults::evaluation_interval(),
            scale_down_stabilization: defaults::stabilization(),
            cooldown: defaults::cooldown(),
            metrics_window: defaults::metrics_window(),
            prometheus_url: None,
        }
    }
}

/// Autoscaling decision policies.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum AutoscalingPolicy {
    /// Demand (input rate, lag growth, lag to catch up) over measured capacity per worker.
    #[default]
    Throughput,
    /// Total lag over `lagThreshold` per worker (KEDA style).
    LagThreshold,
}

/// Connection to the Kafka cluster of the pipeline's Kafka sources and sinks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaConnection {
    /// Comma-separated `host:port` list.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// TLS settings; absent means plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// SASL authentication; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// Kafka TLS. In Kubernetes the Secret is mounted into the workers as files; locally the file
/// paths are used directly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// Secret with `ca.crt` and optionally `tls.crt` and `tls.key` (client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// CA certificate file (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate file (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client key file (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// Kafka SASL authentication; the password is only ever read from a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// Mechanism.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// Secret with keys `username` and `password`, mounted into the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// User name (local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

/// SASL mechanisms.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SaslMechanism {
    /// PLAIN (only over TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM-SHA-256.
    #[default]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// Worker pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Worker image; absent means the operator's default image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// CPU and memory of each worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Worker threads per pod; absent means one per CPU of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub threads: Option<i32>,
}

/// Pseudonymisation of user ids with a keyed hash before they reach state or output: every
/// event's user id becomes `base64url(HMAC-SHA256(key, id)[0..16])` (22 characters) right after
/// decoding, the same on every worker and across restarts. Dead letters keep the raw record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivacySpec {
    /// Secret whose key `key` is the hashing key (at least 16 bytes, 32 random ones
    /// recommended), mounted into the workers; a worker that cannot read it does not start.
    /// Absent means user ids are kept as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonymize_key_secret: Option<String>,
}

mod defaults {
    use crate::Duration;

    pub fn interval() -> Duration {
        Duration::from_millis(10_000)
    }
    pub fn retain() -> u32 {
        3
    }
    pub fn storage_size() -> String {
        "1Gi".into()
    }
    pub fn one() -> i32 {
        1
    }
    pub fn max_parallelism() -> i32 {
        8
    }
    pub fn target_utilization() -> i32 {
        70
    }
    pub fn lag_threshold() -> i64 {
        100_000
    }
    pub fn catch_up() -> Duration {
        Duration::from_millis(300_000)
    }
    pub fn evaluation_interval() -> Duration {
        Duration::from_millis(30_000)
    }
    pub fn stabilization() -> Duration {
        Duration::from_millis(300_000)
    }
    pub fn cooldown() -> Duration {
        Duration::from_millis(120_000)
    }
    pub fn metrics_window() -> Duration {
        Duration::from_millis(120_000)
    }
}
