//! Data quality: duplicate events, clock skew and the per-source quality report.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// What the worker checks of every event before any analytic sees it, besides its schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataQualitySpec {
    /// Drop repeated events: a record whose id was seen within the horizon (event time) goes to
    /// the dead-letter output with reason `duplicate` instead of into the analytics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplicate: Option<DeduplicateSpec>,
    /// Events whose event time is ahead of the worker's wall clock by more than this go to the
    /// dead-letter output with reason `clock_skew` instead of moving the watermark into the
    /// future.
    #[serde(default = "default_max_future_skew")]
    pub max_future_skew: Duration,
    /// A quality report per source and window of event time: records in, valid, counts and
    /// shares by dead-letter reason, and event-time lag p50/p99, written to a sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<QualityReportSpec>,
}

impl Default for DataQualitySpec {
    fn default() -> Self {
        Self {
            deduplicate: None,
            max_future_skew: default_max_future_skew(),
            report: None,
        }
    }
}

/// Deduplication by an event id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeduplicateSpec {
    /// Event field holding the event's id (e.g. `event_id`); events without it pass.
    #[schemars(length(min = 1))]
    pub field: String,
    /// How far apart in event time two records with the same id are still duplicates.
    pub horizon: Duration,
}

/// The data-quality report (docs/data-quality.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualityReportSpec {
    /// Size of the report's tumbling windows of event time (e.g. `1m`); a window's report is
    /// written when the watermark passes its end.
    pub window: Duration,
    /// Name of the sink (in `spec.sinks`) that receives the report records.
    #[schemars(length(min = 1))]
    pub sink: String,
}

fn default_max_future_skew() -> Duration {
    Duration::parse("5m").expect("a valid duration")
}
