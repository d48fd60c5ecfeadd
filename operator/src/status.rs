//! Status: what a reconcile reports in `MarketingPipeline.status`. Pure: the previous status, what
//! the reconcile decided and what the StatefulSet reports go in, the new status comes out.
//!
//! Conditions keep their `lastTransitionTime` unless their `status` changes (the rule lives in
//! [`crate::conditions`]), and the result is equal to the previous status when nothing changed,
//! so the caller can skip the write and a status update never triggers another one.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tidemark_api::{
    HandoffStep, MarketingPipelineStatus, Phase, CONDITION_AUTOSCALING, CONDITION_DEGRADED,
    CONDITION_PROGRESSING, CONDITION_READY,
};

use crate::autoscale::{AutoscalingCondition, Evaluation};
use crate::conditions::set_condition;
use crate::message::workers as plural;
use crate::rescale::Scale;

/// Condition reason: the spec cannot run.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Condition reason: writing the owned objects failed; retried with backoff.
pub const REASON_RECONCILE_ERROR: &str = "ReconcileError";
/// Condition reason: nothing wrong.
pub const REASON_AS_EXPECTED: &str = "AsExpected";
/// Condition reason: every worker runs the current config and is ready.
pub const REASON_WORKERS_READY: &str = "WorkersReady";
/// Condition reason: some workers are not ready (starting, restoring or failing).
pub const REASON_WORKERS_NOT_READY: &str = "WorkersNotReady";
/// Condition reason: the StatefulSet rolls pods to a new config.
pub const REASON_ROLLING_UPDATE: &str = "RollingUpdate";
/// Condition reason: workers are being added or removed.
pub const REASON_SCALING: &str = "Scaling";
/// Condition reason: workers fail to write checkpoints (full or unwritable volume).
pub const REASON_CHECKPOINTS_FAILING: &str = "CheckpointsFailing";
/// Condition reason: the desired state is reached.
pub const REASON_RECONCILED: &str = "Reconciled";

/// How far the workers are, read from the StatefulSet status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Workers {
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods on the newest template.
    pub updated: i32,
    /// The StatefulSet controller has seen the newest StatefulSet spec and finished its rollout.
    pub rolled_out: bool,
}

impl Workers {
    /// Reads the StatefulSet status; a StatefulSet without status has nothing running yet.
    pub fn from_stateful_set(sts: &StatefulSet) -> Self {
        let Some(status) = &sts.status else {
            return Self::default();
        };
        let generation_seen = match (sts.metadata.generation, status.observed_generation) {
            (Some(generation), Some(observed)) => observed >= generation,
            _ => false,
        };
        let same_revision =
            status.update_revision.is_none() || status.current_revision == status.update_revision;
        Self {
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            rolled_out: generation_seen && same_revision,
        }
    }
}

/// What the reconcile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Owned objects applied with this scale decision; `workers` as the StatefulSet reports.
    Applied {
        /// Parallelism and epoch in effect.
        scale: Scale,
        /// The StatefulSet's progress.
        workers: Workers,
    },
    /// The spec cannot run; nothing was written. `workers` tells whether an older config runs.
    InvalidSpec {
        /// What is wrong.
        message: String,
        /// Workers of an earlier valid spec, if any.
        workers: Option<Workers>,
    },
    /// Writing the owned objects failed.
    ReconcileError {
        /// What failed.
        message: String,
    },
}

/// Everything [`compute`] needs besides the outcome.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// `metadata.generation` of the pipeline.
    pub generation: Option<i64>,
    /// The current status.
    pub previous: Option<&'a MarketingPipelineStatus>,
    /// Selector of the worker pods.
    pub selector: String,
    /// The autoscaler's word for this reconcile: the Autoscaling condition, `status.autoscaler`,
    /// `status.lag` and `status.lastCheckpoint`. `None` (a spec that cannot run) keeps what the
    /// previous status says.
    pub evaluation: Option<&'a Evaluation>,
    /// Time of transitions made now.
    pub now: Time,
}

/// The new status.
pub fn compute(inputs: &Inputs<'_>, outcome: &Outcome) -> MarketingPipelineStatus {
    let previous = inputs.previous.cloned().unwrap_or_default();
    let mut status = MarketingPipelineStatus {
        observed_generation: inputs.generation,
        selector: Some(inputs.selector.clone()),
        ..previous.clone()
    };
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        let condition = Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: crate::message::truncate(&message, crate::message::CONDITION_MESSAGE_LIMIT),
            observed_generation: inputs.generation,
            last_transition_time: inputs.now.clone(),
        };
        set_condition(&mut status.conditions, condition);
    };
    match outcome {
        Outcome::Applied { scale, workers } => {
            let assignment = &scale.assignment;
            let desired = assignment.parallelism;
            // During a hand-off the earlier owners run too.
            let pods = assignment.replicas();
            let handing_off = assignment.in_progress();
            let ready = workers.ready >= pods
                && workers.updated >= pods
                && workers.rolled_out
                && !handing_off;
            // A StatefulSet with no pods yet is being created, not scaled.
            let scaling = handing_off
                || scale.rescaled_from.is_some()
                || (workers.replicas != pods && workers.replicas > 0);
            let counts = format!("{}/{} ready", workers.ready.min(pods), plural(pods));
            // Ready pods on an older template are not ready for this generation.
            let ready_message = if handing_off {
                format!("{counts}; task state is moving between workers")
            } else if !ready && workers.ready >= pods {
                format!("{counts}, not all on the current config yet")
            } else {
                counts.clone()
            };
            let ready_reason = if ready {
                REASON_WORKERS_READY
            } else {
                REASON_WORKERS_NOT_READY
            };
            set(CONDITION_READY, ready, ready_reason, ready_message);
            let (progress_reason, progress_message) = if ready {
                (
                    REASON_RECONCILED,
                    format!(
                        "{} run generation {}",
                        plural(desired),
                        inputs.generation.unwrap_or(0)
                    ),
                )
            } else if let Some(h) = assignment.handoff.as_ref().filter(|_| handing_off) {
                let what = match h.step {
                    HandoffStep::Release => {
                        "release step: workers stop the tasks that move at a final checkpoint \
                         and serve them"
                    }
                    _ => {
                        "acquire step: workers fetch the tasks that moved to them from their \
                         earlier owners and restore them"
                    }
                };
                let from: Vec<String> = h.from.iter().map(i32::to_string).collect();
                (
                    REASON_SCALING,
                    format!(
                        "scaling {} → {}, {what} (assignment epoch {}); {counts}",
                        from.join(" → "),
                        plural(desired),
                        assignment.epoch
                    ),
                )
            } else if scaling {
                (
                    REASON_SCALING,
                    format!("scaling to {}; {counts}", plural(desired)),
                )
            } else {
                (
                    REASON_ROLLING_UPDATE,
                    format!(
                        "{}/{} updated; {counts}",
                        workers.updated.min(pods),
                        plural(pods)
                    ),
                )
            };
            set(
                CONDITION_PROGRESSING,
                !ready,
                progress_reason,
                progress_message,
            );
            let failing = inputs
                .evaluation
                .map_or(&[][..], |e| e.checkpoints.failing.as_slice());
            if failing.is_empty() {
                set(CONDITION_DEGRADED, false, REASON_AS_EXPECTED, String::new());
            } else {
                set(
                    CONDITION_DEGRADED,
                    true,
                    REASON_CHECKPOINTS_FAILING,
                    failing_message(failing),
                );
            }
            status.parallelism = Some(desired);
            status.assignment_epoch = Some(assignment.epoch);
            status.handoff = assignment.handoff.clone();
            status.phase = Some(if scaling && !ready {
                Phase::Scaling
            } else if !failing.is_empty() {
                Phase::Degraded
            } else if workers.ready >= pods {
                Phase::Running
            } else {
                Phase::Pending
            });
        }
        Outcome::InvalidSpec { message, workers } => {
            let running = workers.is_some_and(|w| w.replicas > 0);
            set(
                CONDITION_READY,
                false,
                REASON_INVALID_SPEC,
                "the spec cannot run; see Degraded".into(),
            );
            set(
                CONDITION_PROGRESSING,
                false,
                REASON_INVALID_SPEC,
                "waiting for a spec change".into(),
            );
            set(
                CONDITION_DEGRADED,
                true,
                REASON_INVALID_SPEC,
                message.clone(),
            );
            status.phase = Some(if running {
                Phase::Degraded
            } else {
                Phase::Failed
            });
        }
        Outcome::ReconcileError { message } => {
            set(
                CONDITION_DEGRADED,
                true,
                REASON_RECONCILE_ERROR,
                message.clone(),
            );
            status.phase = Some(Phase::Degraded);
        }
    }
    let autoscaling = match inputs.evaluation {
        Some(evaluation) => Some(evaluation.condition.clone()),
        None => (!previous
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION_AUTOSCALING))
        .then(AutoscalingCondition::disabled),
    };
    if let Some(c) = autoscaling {
        set(CONDITION_AUTOSCALING, c.active, &c.reason, c.message);
    }
    if let Some(evaluation) = inputs.evaluation {
        status.autoscaler = evaluation.status.clone();
        status.lag = evaluation.lag;
        status.last_checkpoint = evaluation.last_checkpoint.clone();
    }
    status
}

/// The Degraded message for workers failing checkpoint writes.
fn failing_message(failing: &[(String, f64)]) -> String {
    let who: Vec<String> = failing
        .iter()
        .map(|(worker, n)| format!("{worker} ({n:.0})"))
        .collect();
    format!(
        "checkpoint writes failed on {} within the metrics window (tidemark_checkpoint_failures_total): \
         the workers keep processing and retry, but a restart would replay from an older \
         checkpoint; check their volumes and logs",
        who.join(", ")
    )
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
