//! The `MarketingPipeline` status, as the operator reports it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the pipeline's workers are running and restored.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the operator is moving the pipeline to its desired state.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: something is wrong (invalid spec, failing checkpoints, ...).
pub const CONDITION_DEGRADED: &str = "Degraded";
/// Condition type: the autoscaler's state.
pub const CONDITION_AUTOSCALING: &str = "Autoscaling";

/// Observed state of a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarketingPipelineStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions `Ready`, `Progressing`, `Degraded`, `Autoscaling`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Number of workers in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// Label selector of the worker pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Assignment epoch of task ownership; raised on every rescale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_epoch: Option<i64>,
    /// Time of the newest checkpoint completed by every worker (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<String>,
    /// Total records behind the end of the input topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// The autoscaler's last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
    /// The last rescale's hand-off of task state between workers: in progress until its step is
    /// `Complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffStatus>,
}

/// How a rescale moves task state between workers (snapshot hand-off, see `docs/rescale.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoffStatus {
    /// Parallelism of the last settled assignment, then of every assignment started since (a
    /// rescale changed again before it completed), oldest first: the workers that may hold the
    /// state of a task that moves.
    pub from: Vec<i32>,
    /// The parallelism the rescale goes to.
    pub to: i32,
    /// Where the hand-off is.
    pub step: HandoffStep,
}

/// Steps of a hand-off, each one assignment epoch (the last keeps the epoch of the one before).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HandoffStep {
    /// Workers restart running only the tasks they keep; the tasks that move are stopped at a
    /// final checkpoint and served to their new owners. Only needed when some task moves to a
    /// worker that restarts before its earlier owner (e.g. any scale-up).
    Release,
    /// Workers restart under the new assignment; each fetches the tasks that moved to it from
    /// their earlier owners and restores them before it reports ready.
    Acquire,
    /// Every worker restored under the new assignment; surplus workers are removed.
    Complete,
}

/// Summary phases of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, workers not yet ready.
    Pending,
    /// Every worker ready.
    Running,
    /// Parallelism changing; task state moving between workers.
    Scaling,
    /// Running with a problem (see the Degraded condition).
    Degraded,
    /// Cannot run (see the Degraded condition).
    Failed,
}

/// The autoscaler's last decision or refusal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// Parallelism the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_parallelism: Option<i32>,
    /// What it did: `ScaleUp`, `ScaleDown`, `Hold`, or why it refused (`PrometheusUnavailable`,
    /// `NoData`, ...).
    pub decision: String,
    /// Human-readable reason with the figures behind it.
    pub reason: String,
    /// When it decided (RFC 3339).
    pub time: String,
    /// When it last changed the parallelism (RFC 3339); the cool-down counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Records per second the workers must take to keep up and catch up: input rate plus lag
    /// growth plus lag over the catch-up duration (throughput policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<f64>,
    /// Records per second one fully busy worker takes, as measured (processed rate over busy
    /// ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_per_worker: Option<f64>,
}
