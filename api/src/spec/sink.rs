//! Sinks and the dead-letter output: where results and rejected events go.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::source::{FileSource, KafkaSource};

/// A destination of results. Exactly one of `kafka`, `file` or `stdout` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.kafka), has(self.file), has(self.stdout)].filter(x, x).size() == 1"
).message("exactly one of kafka, file or stdout must be set"))]
pub struct SinkSpec {
    /// Name of the sink.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([a-z0-9_-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Analytics whose results this sink receives; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analytics: Vec<String>,
    /// Write to a Kafka topic; the record key is `<analytic>/<key>/<window_start>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSource>,
    /// Append JSON lines to a file (local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// Print JSON lines on standard output (local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<super::source::StdinSource>,
}

/// Where rejected events go, with the reason attached: malformed records, missing or mistyped
/// fields, unexpected event types, and events later than the allowed lateness. Exactly one of
/// `kafka`, `file` or `stderr` is set; without a dead-letter output, rejected events are written
/// to standard error in local runs and counted in every case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.kafka), has(self.file), has(self.stderr)].filter(x, x).size() == 1"
).message("exactly one of kafka, file or stderr must be set"))]
pub struct DeadLetterSpec {
    /// Write to a Kafka topic; the reason is in the `tidemark.reason` header and the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSource>,
    /// Append JSON lines to a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// Print JSON lines on standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<super::source::StdinSource>,
}
