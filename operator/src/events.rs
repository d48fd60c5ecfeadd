//! Kubernetes events the operator publishes on a pipeline: one reason constant per decision or
//! error, so `kubectl describe mp` tells the story. Publishing is best effort: an event that
//! cannot be written is logged and never fails a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Warning: the spec cannot run.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Warning: writing owned objects failed.
pub const REASON_RECONCILE_FAILED: &str = "ReconcileFailed";
/// Normal: workers created for a new pipeline.
pub const REASON_CREATED: &str = "Created";
/// Normal: the worker config changed; pods roll.
pub const REASON_CONFIG_CHANGED: &str = "ConfigChanged";
/// Normal: parallelism changed.
pub const REASON_RESCALED: &str = "Rescaled";
/// Normal: a rescale's hand-off of task state moved to its next step (or completed).
pub const REASON_HANDOFF: &str = "HandOff";
/// Normal: objects the pipeline no longer needs were deleted.
pub const REASON_ORPHANS_DELETED: &str = "OrphansDeleted";
/// Normal: every worker became ready.
pub const REASON_WORKERS_READY: &str = "WorkersReady";
/// Normal: the autoscaler changed the parallelism.
pub const REASON_AUTOSCALED: &str = "Autoscaled";
/// Warning: the autoscaler could not decide (no Prometheus, no data) and kept the parallelism.
pub const REASON_AUTOSCALER_REFUSED: &str = "AutoscalerRefused";

/// Publishes one event on `reference` and logs a failure to do so.
pub async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    let publish = recorder.publish(&event, reference);
    match tokio::time::timeout(crate::call::API_TIMEOUT, publish).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(reason, error = %err, "failed to publish event"),
        Err(_) => tracing::warn!(reason, "failed to publish event: timed out"),
    }
}
