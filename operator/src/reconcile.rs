//! Reconcile: one pass of dereference → validate → build → apply → status for one pipeline.
//!
//! Contract: idempotent (a second pass over an unchanged pipeline writes nothing: apply is a
//! no-op and an equal status is not written); safe to cancel at any await (each write is whole,
//! the next pass completes a partial one). An invalid spec is reported in status and as an event
//! and the pass ends with "wait for a change"; any other failure is returned for retry with
//! backoff, after a best-effort Degraded status and a Warning event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tidemark_api::{
    MarketingPipeline, MarketingPipelineStatus, CONDITION_DEGRADED, CONDITION_READY,
};

use crate::apply::{apply, ApplyError};
use crate::autoscale;
use crate::build::{config_hash, desired, selector_string, BuildError, BuildParams};
use crate::call::{call, CallError};
use crate::conditions::condition;
use crate::context::Context;
use crate::dereference::{dereference, DereferenceError};
use crate::events::{self, publish};
use crate::message::{error_chain, workers as plural};
use crate::metrics::ReconcileResult;
use crate::names::FIELD_MANAGER;
use crate::rescale::{self, Assignment, Scale};
use crate::status::{self, Inputs, Outcome, Workers};
use crate::validate::{summary, validate};

/// Time between reconciles of a pipeline with no change: a safety net, changes come by watch.
pub const RESYNC: Duration = Duration::from_secs(300);

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the cluster failed.
    #[error("failed to read the cluster")]
    Dereference(#[from] DereferenceError),
    /// Building owned objects failed.
    #[error("failed to build owned objects")]
    Build(#[from] BuildError),
    /// Writing owned objects failed.
    #[error("failed to write owned objects")]
    Apply(#[from] ApplyError),
    /// Creating the hand-off token Secret failed.
    #[error("failed to create the hand-off token")]
    Secret(#[from] crate::secret::SecretError),
    /// Writing the status failed.
    #[error("failed to write status")]
    Status(#[source] CallError),
}

/// Reconciles `pipeline`; see the module doc for the contract.
pub async fn reconcile(
    pipeline: Arc<MarketingPipeline>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_steps(&pipeline, &ctx).await;
    let label = match &result {
        Ok((label, _)) => *label,
        Err(_) => ReconcileResult::Error,
    };
    ctx.metrics
        .reconciled(label, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.forget_failures(&pipeline);
    }
    result.map(|(_, action)| action)
}

async fn reconcile_steps(
    pipeline: &MarketingPipeline,
    ctx: &Context,
) -> Result<(ReconcileResult, Action), ReconcileError> {
    if pipeline.meta().deletion_timestamp.is_some() {
        ctx.autoscaler.forget(pipeline);
        ctx.handoff_secrets.forget(pipeline);
        // Owner references hand the owned objects to the garbage collector.
        return Ok((ReconcileResult::Success, Action::await_change()));
    }
    let name = pipeline.name_any();
    let observed = dereference(&ctx.client, pipeline).await?;
    let previous = pipeline.status.as_ref();
    let reference = pipeline.object_ref(&());
    let now = Timestamp::now();
    let mut inputs = Inputs {
        generation: pipeline.meta().generation,
        previous,
        selector: selector_string(&name),
        evaluation: None,
        now: Time(now),
    };

    let problems = validate(pipeline);
    if !problems.is_empty() {
        let message = summary(&problems);
        let workers = observed
            .stateful_set
            .as_ref()
            .map(Workers::from_stateful_set);
        let status = status::compute(
            &inputs,
            &Outcome::InvalidSpec {
                message: message.clone(),
                workers,
            },
        );
        let already_reported = condition(previous, CONDITION_DEGRADED)
            .is_some_and(|c| c.reason == status::REASON_INVALID_SPEC && c.message == message)
            && previous.and_then(|s| s.observed_generation) == inputs.generation;
        write_status(ctx, pipeline, previous, &status).await?;
        if !already_reported {
            tracing::info!(pipeline = %name, %message, "invalid spec; waiting for a change");
            publish(
                &ctx.recorder,
                &reference,
                EventType::Warning,
                events::REASON_INVALID_SPEC,
                "Validate",
                message,
            )
            .await;
        }
        return Ok((ReconcileResult::InvalidSpec, Action::await_change()));
    }

    // The assignment in effect, and whether the StatefulSet finished its current hand-off step
    // (every pod ready on exactly that step's config): only then may the next step begin.
    let current = rescale::current(previous, observed.assignment());
    let params_for = |assignment: &Assignment| BuildParams {
        default_image: ctx.worker_image.clone(),
        parallelism: assignment.parallelism,
        assignment_epoch: assignment.epoch,
        handoff: assignment.handoff.clone(),
        service_monitor: observed.service_monitor_api,
        network_policy: ctx.network_policy,
        scrape_namespaces: ctx.scrape_namespaces.clone(),
    };
    let step_done = match &current {
        Some(assignment) if assignment.in_progress() => {
            let now = desired(pipeline, &params_for(assignment))?;
            observed.runs_ready(&config_hash(&now.config_map), assignment.replicas())
        }
        _ => false,
    };
    let evaluation = ctx
        .autoscaler
        .evaluate(pipeline, current.as_ref(), now)
        .await;
    inputs.evaluation = Some(&evaluation);
    let scale = rescale::plan(evaluation.desired, current.as_ref(), step_done);
    let params = params_for(&scale.assignment);
    let desired = desired(pipeline, &params)?;
    let namespace = pipeline.namespace().unwrap_or_default();
    let uid = pipeline.uid().unwrap_or_default();
    // The token Secret first: the workers' pods cannot start without it.
    let written = async {
        ctx.handoff_secrets.ensure(&ctx.client, pipeline).await?;
        Ok::<_, ReconcileError>(apply(&ctx.client, &namespace, &name, &uid, &desired).await?)
    };
    let applied = match written.await {
        Ok(applied) => applied,
        Err(err) => {
            let message = error_chain(&err);
            let status = status::compute(
                &inputs,
                &Outcome::ReconcileError {
                    message: message.clone(),
                },
            );
            // Best effort: the API server may be what failed.
            if let Err(status_err) = write_status(ctx, pipeline, previous, &status).await {
                tracing::debug!(error = %error_chain(&status_err), "status not written");
            }
            publish(
                &ctx.recorder,
                &reference,
                EventType::Warning,
                events::REASON_RECONCILE_FAILED,
                "Apply",
                message,
            )
            .await;
            return Err(err);
        }
    };

    let new_hash = desired
        .stateful_set
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(crate::names::ANNOTATION_CONFIG_HASH))
        .cloned()
        .unwrap_or_default();
    let mut notes = Vec::new();
    match observed.config_hash() {
        None if observed.stateful_set.is_none() => notes.push((
            events::REASON_CREATED,
            format!(
                "created {} (config {new_hash})",
                plural(scale.parallelism())
            ),
        )),
        Some(old) if old != new_hash => notes.push((
            events::REASON_CONFIG_CHANGED,
            format!("worker config changed ({old} → {new_hash}); rolling the workers"),
        )),
        _ => {}
    }
    if let Some(from) = scale.rescaled_from {
        let by = if evaluation.status.is_some() {
            "autoscaler"
        } else {
            "spec.parallelism"
        };
        notes.push((
            events::REASON_RESCALED,
            format!(
                "parallelism {from} → {} ({by}); assignment epoch {}; {}",
                scale.parallelism(),
                scale.epoch(),
                step_note(&scale)
            ),
        ));
    } else if scale.advanced.is_some() {
        notes.push((events::REASON_HANDOFF, step_note(&scale)));
    }
    if !applied.deleted.is_empty() {
        notes.push((
            events::REASON_ORPHANS_DELETED,
            format!("deleted {}", applied.deleted.join(", ")),
        ));
    }

    let workers = Workers::from_stateful_set(&applied.stateful_set);
    let parallelism = scale.parallelism();
    let status = status::compute(&inputs, &Outcome::Applied { scale, workers });
    write_status(ctx, pipeline, previous, &status).await?;
    let was_ready = condition(previous, CONDITION_READY).is_some_and(|c| c.status == "True");
    let is_ready = condition(Some(&status), CONDITION_READY).is_some_and(|c| c.status == "True");
    if is_ready && !was_ready {
        notes.push((
            events::REASON_WORKERS_READY,
            format!("{} ready", plural(parallelism)),
        ));
    }
    for (reason, note) in notes {
        tracing::info!(pipeline = %name, reason, %note);
        publish(
            &ctx.recorder,
            &reference,
            EventType::Normal,
            reason,
            "Reconcile",
            note,
        )
        .await;
    }
    if let Some(decision) = &evaluation.decided {
        report_decision(ctx, pipeline, &reference, decision).await;
    }
    report_checkpoints(ctx, previous, &status, &reference, &evaluation).await;
    let requeue = evaluation.next_in.map_or(RESYNC, |next| next.min(RESYNC));
    Ok((ReconcileResult::Success, Action::requeue(requeue)))
}

/// Warning events for the workers' checkpoint trouble: one per worker whose corrupt-checkpoint
/// count rose, and one when the pipeline turns Degraded for failing checkpoint writes.
async fn report_checkpoints(
    ctx: &Context,
    previous: Option<&MarketingPipelineStatus>,
    written: &MarketingPipelineStatus,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    evaluation: &autoscale::Evaluation,
) {
    for (worker, n) in &evaluation.checkpoints.newly_corrupt {
        let note = format!(
            "worker {worker} found {n:.0} corrupt checkpoint(s) when restoring and restored an \
             older one (it replays from there; the corrupt files stay on its volume)"
        );
        tracing::warn!(%note, "corrupt checkpoints");
        publish(
            &ctx.recorder,
            reference,
            EventType::Warning,
            events::REASON_CHECKPOINT_CORRUPT,
            "Restore",
            note,
        )
        .await;
    }
    let failing = |s: Option<&MarketingPipelineStatus>| {
        condition(s, CONDITION_DEGRADED)
            .filter(|c| c.status == "True" && c.reason == status::REASON_CHECKPOINTS_FAILING)
            .map(|c| c.message.clone())
    };
    if let (None, Some(message)) = (failing(previous), failing(Some(written))) {
        publish(
            &ctx.recorder,
            reference,
            EventType::Warning,
            events::REASON_CHECKPOINTS_FAILING,
            "Checkpoint",
            message,
        )
        .await;
    }
}

/// Makes an autoscaler decision visible beyond the status: the decisions metric, a log line,
/// and an event for every scaling action and every refusal (holds are only in status).
async fn report_decision(
    ctx: &Context,
    pipeline: &MarketingPipeline,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    decision: &autoscale::decide::Decision,
) {
    let namespace = pipeline.namespace().unwrap_or_default();
    let name = pipeline.name_any();
    ctx.metrics
        .autoscaler_decided(&namespace, &name, decision.kind, decision.desired);
    let (kind, reason) = match decision.kind {
        autoscale::decide::SCALE_UP | autoscale::decide::SCALE_DOWN => {
            (EventType::Normal, events::REASON_AUTOSCALED)
        }
        _ if decision.refused() => (EventType::Warning, events::REASON_AUTOSCALER_REFUSED),
        _ => {
            tracing::debug!(pipeline = %name, decision = decision.kind, reason = %decision.reason, "autoscaler");
            return;
        }
    };
    tracing::info!(pipeline = %name, decision = decision.kind, desired = decision.desired, reason = %decision.reason, "autoscaler");
    publish(
        &ctx.recorder,
        reference,
        kind,
        reason,
        "Autoscale",
        format!("{}: {}", decision.kind, decision.reason),
    )
    .await;
}

/// What a hand-off step that just began means, for an event.
fn step_note(scale: &Scale) -> String {
    let epoch = scale.epoch();
    match scale.advanced {
        Some(tidemark_api::HandoffStep::Release) => format!(
            "release step (assignment epoch {epoch}): workers stop the tasks that move at a final \
             checkpoint and serve them"
        ),
        Some(tidemark_api::HandoffStep::Acquire) => format!(
            "acquire step (assignment epoch {epoch}): workers fetch the tasks that moved to them \
             and restore them; {} pods until every one is ready",
            scale.assignment.replicas()
        ),
        Some(tidemark_api::HandoffStep::Complete) => format!(
            "hand-off complete: every worker restored its tasks under assignment epoch {epoch}; \
             {} remain",
            plural(scale.parallelism())
        ),
        None => String::new(),
    }
}

/// Writes `status` with server-side apply, unless it equals `previous`.
async fn write_status(
    ctx: &Context,
    pipeline: &MarketingPipeline,
    previous: Option<&MarketingPipelineStatus>,
    status: &MarketingPipelineStatus,
) -> Result<(), ReconcileError> {
    let degraded = condition(Some(status), CONDITION_DEGRADED).is_some_and(|c| c.status == "True");
    ctx.metrics.set_degraded(
        &pipeline.namespace().unwrap_or_default(),
        &pipeline.name_any(),
        degraded,
    );
    if previous == Some(status) {
        return Ok(());
    }
    let api: Api<MarketingPipeline> = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": MarketingPipeline::api_version(&()),
        "kind": MarketingPipeline::kind(&()),
        "metadata": { "name": pipeline.name_any() },
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    call(api.patch_status(&pipeline.name_any(), &params, &Patch::Apply(&patch)))
        .await
        .map(drop)
        .map_err(ReconcileError::Status)
}
