//! Kubernetes events the operator publishes on a pipeline: one reason constant per decision or
//! error, so `kubectl describe mp` tells the story. Publishing is best effort: an event that
//! cannot be written is logged and never fails a reconcile.
//!
//! [`Recorder`] writes `events.k8s.io/v1` Events and, like client-go, turns a repeat of the same
//! event within [`SERIES_TTL`] into a `series` update (count, last seen) instead of a new object.
//! Unlike kube-runtime's recorder, "the same" includes the note: a hand-off's release, acquire
//! and complete steps, or a scale-up followed by a scale-down, are different events, and each
//! keeps its own words.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::message::{one_line, truncate, EVENT_NOTE_LIMIT};

pub use kube::runtime::events::EventType;

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
/// Warning: a worker found corrupt checkpoints when restoring and restored an older one.
pub const REASON_CHECKPOINT_CORRUPT: &str = "CheckpointCorrupt";
/// Warning: workers fail to write checkpoints.
pub const REASON_CHECKPOINTS_FAILING: &str = "CheckpointsFailing";
/// Warning: the autoscaler could not decide (no Prometheus, no data) and kept the parallelism.
pub const REASON_AUTOSCALER_REFUSED: &str = "AutoscalerRefused";

/// How long a published event is remembered for series updates (client-go uses 6 minutes).
pub const SERIES_TTL: Duration = Duration::from_secs(360);

/// One event's identity for series: everything but the time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>),
    warning: bool,
    reason: String,
    action: String,
    note: String,
}

/// Publishes events as the operator's `controller`/`instance`.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<HashMap<Key, (String, i32, Timestamp)>>,
}

impl Recorder {
    /// A recorder reporting as `controller` (`reportingController`) and `instance`.
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.into(),
            published: Mutex::default(),
        }
    }

    async fn write(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        // The API server rejects a longer note; one line reads best in `kubectl describe`.
        let note = truncate(&one_line(&note), EVENT_NOTE_LIMIT);
        let now = Timestamp::now();
        let ttl = k8s_openapi::jiff::SignedDuration::try_from(SERIES_TTL).unwrap_or_default();
        let key = Key {
            regarding: (
                reference.namespace.clone(),
                reference.name.clone(),
                reference.uid.clone(),
            ),
            warning: matches!(type_, EventType::Warning),
            reason: reason.into(),
            action: action.into(),
            note: note.clone(),
        };
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let mut published = self.published.lock().await;
        published.retain(|_, (_, _, at)| *at + ttl > now);
        if let Some((name, count, at)) = published.get_mut(&key) {
            *count += 1;
            *at = now;
            let patch = serde_json::json!({ "series": EventSeries {
                count: *count,
                last_observed_time: MicroTime(now),
            }});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        let name = format!(
            "{}.{:x}",
            reference.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.into()),
            ..K8sEvent::default()
        };
        api.create(&PostParams::default(), &event).await?;
        published.insert(key, (name, 1, now));
        Ok(())
    }
}

/// Publishes one event on `reference` and logs a failure to do so.
pub async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let publish = recorder.write(reference, type_, reason, action, note);
    match tokio::time::timeout(crate::call::API_TIMEOUT, publish).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(
            reason,
            error = %crate::message::error_chain(&err),
            "failed to publish event"
        ),
        Err(_) => tracing::warn!(reason, "failed to publish event: timed out"),
    }
}
