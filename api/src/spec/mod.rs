//! The `MarketingPipeline` custom resource: its spec, as a user writes it.
//!
//! A local pipeline file is a whole manifest (`apiVersion`, `kind`, `metadata`, `spec`), so the
//! same file runs on a laptop with `tidemark run -f` and on a cluster with `kubectl apply -f`.

// The derive takes one `printcolumn(...)` per column; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod action;
mod analytic;
pub mod funnel;
pub mod model;
mod operations;
pub mod pattern;
pub mod quality;
mod sink;
mod source;

pub use action::*;
pub use analytic::*;
pub use funnel::*;
pub use model::*;
pub use operations::*;
pub use pattern::*;
pub use quality::*;
pub use sink::*;
pub use source::*;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::MarketingPipelineStatus;
use crate::Duration;

/// A real-time marketing analytics pipeline: Kafka sources of click and purchase events, keyed
/// event-time windows, joins and marketing analytics, written to Kafka sinks.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "tidemark.dev",
    version = "v1alpha1",
    kind = "MarketingPipeline",
    plural = "marketingpipelines",
    shortname = "mp",
    category = "tidemark",
    namespaced,
    status = "MarketingPipelineStatus",
    derive = "PartialEq",
    doc = "A real-time marketing analytics pipeline run by Tidemark workers.",
    scale(
        spec_replicas_path = ".spec.parallelism",
        status_replicas_path = ".status.parallelism",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Parallelism",
        type_ = "integer",
        json_path = ".status.parallelism"
    ),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag"),
    printcolumn(
        name = "Last checkpoint",
        type_ = "date",
        json_path = ".status.lastCheckpoint"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.sources.all(s, !has(s.kafka)) && self.sinks.all(s, !has(s.kafka)) || has(self.kafka)"
).message("kafka sources and sinks need spec.kafka.bootstrapServers"))]
pub struct MarketingPipelineSpec {
    /// Kafka cluster of the Kafka sources and sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConnection>,
    /// Input streams. All Kafka sources must have the same number of partitions and be keyed by
    /// the same user key.
    #[schemars(length(min = 1, max = 16))]
    pub sources: Vec<SourceSpec>,
    /// Event-time progress.
    #[serde(default)]
    pub watermark: WatermarkSpec,
    /// What the pipeline computes.
    #[schemars(length(min = 1, max = 64))]
    pub analytics: Vec<AnalyticSpec>,
    /// Where results go.
    #[schemars(length(min = 1, max = 16))]
    pub sinks: Vec<SinkSpec>,
    /// Where rejected events go, with their reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterSpec>,
    /// Delivery guarantee of results.
    #[serde(default)]
    pub delivery: Delivery,
    /// Checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// Number of workers when autoscaling is disabled (`kubectl scale` sets it).
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: i32,
    /// Autoscaling of parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Worker pods.
    #[serde(default)]
    pub worker: WorkerSpec,
    /// Pseudonymisation of user ids: every event's user id becomes
    /// `base64url(HMAC-SHA256(key, id)[0..16])` right after decoding, before state and results
    /// see it; the same on every worker and across restarts. Dead letters keep the raw record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySpec>,
    /// Data quality: deduplication by an event id, the clock-skew bound and the quality report.
    #[serde(default, skip_serializing_if = "is_default_quality")]
    pub data_quality: DataQualitySpec,
}

fn is_default_quality(q: &DataQualitySpec) -> bool {
    q == &DataQualitySpec::default()
}

/// Watermarks: how event time advances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatermarkSpec {
    /// Most an event may lag behind the newest event of its partition and still be on time.
    #[serde(default = "default_out_of_orderness")]
    pub max_out_of_orderness: Duration,
    /// A partition without events for this long no longer holds the watermark back.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
}

impl Default for WatermarkSpec {
    fn default() -> Self {
        Self {
            max_out_of_orderness: default_out_of_orderness(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_parallelism() -> i32 {
    1
}

fn default_out_of_orderness() -> Duration {
    Duration::from_millis(10_000)
}

fn default_idle_timeout() -> Duration {
    Duration::from_millis(30_000)
}
