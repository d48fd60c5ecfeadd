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
    /// A quality report per source and window: records in, valid, rejected by reason, shares
    /// and event-time lag.
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

/// The quality report's window and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualityReportSpec {
    /// Tumbling event-time window of the report (by the records' event time, or the arrival's
    /// watermark for records without one).
    pub window: Duration,
    /// Name of the report in results (the first part of its Kafka key); sinks select it by
    /// this name like an analytic.
    #[serde(default = "default_report_name")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([a-z0-9_-]*[a-z0-9])?$")
    )]
    pub name: String,
}

fn default_max_future_skew() -> Duration {
    Duration::parse("5m").expect("a valid duration")
}

fn default_report_name() -> String {
    "data_quality".into()
}
