//! Tests of status computation over YAML: a previous status and a StatefulSet as the API server
//! returns them.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tidemark_api::{MarketingPipelineStatus, Phase};

use super::*;
use crate::conditions::condition;
use crate::rescale::{Assignment, Scale};

fn at(text: &str) -> Time {
    Time(text.parse::<Timestamp>().expect("timestamp"))
}

fn inputs<'a>(
    generation: i64,
    previous: Option<&'a MarketingPipelineStatus>,
    now: &str,
) -> Inputs<'a> {
    Inputs {
        generation: Some(generation),
        previous,
        selector: "app.kubernetes.io/instance=demo,app.kubernetes.io/name=tidemark-worker".into(),
        evaluation: None,
        now: at(now),
    }
}

fn sts(yaml: &str) -> Workers {
    Workers::from_stateful_set(&serde_saphyr::from_str::<StatefulSet>(yaml).expect("sts yaml"))
}

const TWO_READY: &str = r#"
metadata: { name: demo, generation: 4 }
status:
  observedGeneration: 4
  replicas: 2
  readyReplicas: 2
  updatedReplicas: 2
  currentRevision: demo-7d9f
  updateRevision: demo-7d9f
"#;

const ROLLING: &str = r#"
metadata: { name: demo, generation: 5 }
status:
  observedGeneration: 5
  replicas: 2
  readyReplicas: 1
  updatedReplicas: 1
  currentRevision: demo-7d9f
  updateRevision: demo-88aa
"#;

fn applied(parallelism: i32, workers: Workers) -> Outcome {
    Outcome::Applied {
        scale: Scale {
            assignment: Assignment {
                epoch: 1,
                parallelism,
                handoff: None,
            },
            rescaled_from: None,
            advanced: None,
        },
        workers,
    }
}

fn get<'a>(status: &'a MarketingPipelineStatus, type_: &str) -> &'a Condition {
    condition(Some(status), type_).expect("condition present")
}

#[test]
fn all_workers_ready_makes_the_pipeline_ready_and_running() {
    let status = compute(
        &inputs(4, None, "2026-01-01T00:00:00Z"),
        &applied(2, sts(TWO_READY)),
    );
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(status.observed_generation, Some(4));
    assert_eq!(status.parallelism, Some(2));
    assert_eq!(get(&status, "Ready").status, "True");
    assert_eq!(get(&status, "Ready").message, "2/2 workers ready");
    assert_eq!(get(&status, "Progressing").status, "False");
    assert_eq!(get(&status, "Degraded").status, "False");
    assert_eq!(get(&status, "Autoscaling").reason, "Disabled");
    assert_eq!(get(&status, "Ready").observed_generation, Some(4));
    let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Progressing", "Degraded", "Autoscaling"]);
}

#[test]
fn transition_time_moves_only_when_a_condition_status_changes() {
    let first = compute(
        &inputs(4, None, "2026-01-01T00:00:00Z"),
        &applied(2, sts(TWO_READY)),
    );
    let same = compute(
        &inputs(4, Some(&first), "2026-01-01T00:05:00Z"),
        &applied(2, sts(TWO_READY)),
    );
    assert_eq!(
        same, first,
        "nothing changed, so the status is equal and need not be written"
    );

    let rolling = compute(
        &inputs(5, Some(&first), "2026-01-01T00:10:00Z"),
        &applied(2, sts(ROLLING)),
    );
    assert_eq!(get(&rolling, "Ready").status, "False");
    assert_eq!(
        get(&rolling, "Ready").last_transition_time,
        at("2026-01-01T00:10:00Z")
    );
    assert_eq!(get(&rolling, "Ready").reason, "WorkersNotReady");
    assert_eq!(get(&rolling, "Progressing").reason, "RollingUpdate");
    assert_eq!(
        get(&rolling, "Progressing").message,
        "1/2 workers updated; 1/2 workers ready"
    );
    assert_eq!(
        get(&rolling, "Degraded").last_transition_time,
        at("2026-01-01T00:00:00Z"),
        "Degraded stayed False"
    );
}

#[test]
fn invalid_spec_without_workers_fails_and_with_workers_degrades() {
    let invalid = |workers| Outcome::InvalidSpec {
        message: "spec.sinks[0]: unknown analytic".into(),
        workers,
    };
    let failed = compute(&inputs(1, None, "2026-01-01T00:00:00Z"), &invalid(None));
    assert_eq!(failed.phase, Some(Phase::Failed));
    assert_eq!(get(&failed, "Degraded").status, "True");
    assert_eq!(get(&failed, "Degraded").reason, "InvalidSpec");
    assert_eq!(
        get(&failed, "Degraded").message,
        "spec.sinks[0]: unknown analytic"
    );
    assert_eq!(get(&failed, "Ready").status, "False");

    let running = compute(
        &inputs(4, None, "2026-01-01T00:00:00Z"),
        &applied(2, sts(TWO_READY)),
    );
    let degraded = compute(
        &inputs(5, Some(&running), "2026-01-01T00:01:00Z"),
        &invalid(Some(sts(TWO_READY))),
    );
    assert_eq!(degraded.phase, Some(Phase::Degraded));
    assert_eq!(
        degraded.parallelism,
        Some(2),
        "the older config's workers keep running"
    );
    assert_eq!(degraded.observed_generation, Some(5));
}

#[test]
fn a_rescale_reports_scaling_until_the_new_workers_are_ready() {
    let scale = crate::rescale::plan(
        3,
        Some(&Assignment {
            epoch: 1,
            parallelism: 2,
            handoff: None,
        }),
        false,
    );
    let outcome = Outcome::Applied {
        scale,
        workers: sts(TWO_READY),
    };
    let status = compute(&inputs(6, None, "2026-01-01T00:00:00Z"), &outcome);
    assert_eq!(status.phase, Some(Phase::Scaling));
    assert_eq!(status.assignment_epoch, Some(2));
    assert_eq!(get(&status, "Progressing").reason, "Scaling");
    assert_eq!(
        status.handoff.as_ref().map(|h| h.step),
        Some(tidemark_api::HandoffStep::Release)
    );
}

const ONE_READY_OF_TWO_NEW: &str = r#"
metadata: { name: demo, generation: 6 }
status:
  observedGeneration: 6
  replicas: 2
  readyReplicas: 2
  updatedReplicas: 2
  currentRevision: demo-b1
  updateRevision: demo-b1
"#;

#[test]
fn a_hand_off_is_not_ready_until_it_completes_even_with_every_pod_ready() {
    use tidemark_api::HandoffStep;
    let settled = Assignment {
        epoch: 1,
        parallelism: 2,
        handoff: None,
    };
    let acquire = crate::rescale::plan(1, Some(&settled), false);
    let status = compute(
        &inputs(6, None, "2026-01-01T00:00:00Z"),
        &Outcome::Applied {
            scale: acquire.clone(),
            workers: sts(ONE_READY_OF_TWO_NEW),
        },
    );
    assert_eq!(status.phase, Some(Phase::Scaling));
    assert_eq!(get(&status, "Ready").status, "False");
    assert_eq!(
        get(&status, "Ready").message,
        "2/2 workers ready; task state is moving between workers"
    );
    let progressing = get(&status, "Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", "Scaling")
    );
    assert!(
        progressing
            .message
            .starts_with("scaling 2 → 1 worker, acquire step"),
        "{}",
        progressing.message
    );
    let handoff = status.handoff.clone().expect("handoff");
    assert_eq!(
        (handoff.from, handoff.to, handoff.step),
        (vec![2], 1, HandoffStep::Acquire)
    );

    // Completed: one worker; the StatefulSet controller has not yet seen the lower replicas.
    let complete = crate::rescale::plan(1, Some(&acquire.assignment), true);
    let status = compute(
        &inputs(6, Some(&status), "2026-01-01T00:01:00Z"),
        &Outcome::Applied {
            scale: complete,
            workers: Workers {
                rolled_out: false,
                ..sts(ONE_READY_OF_TWO_NEW)
            },
        },
    );
    assert_eq!(status.phase, Some(Phase::Scaling), "two pods of one");
    assert_eq!(
        status.handoff.as_ref().map(|h| h.step),
        Some(HandoffStep::Complete)
    );
    assert_eq!(status.assignment_epoch, Some(2));
}

#[test]
fn a_reconcile_error_degrades_but_keeps_the_last_known_readiness() {
    let running = compute(
        &inputs(4, None, "2026-01-01T00:00:00Z"),
        &applied(2, sts(TWO_READY)),
    );
    let outcome = Outcome::ReconcileError {
        message: "failed to apply StatefulSet demo".into(),
    };
    let status = compute(&inputs(4, Some(&running), "2026-01-01T00:01:00Z"), &outcome);
    assert_eq!(get(&status, "Degraded").reason, "ReconcileError");
    assert_eq!(get(&status, "Ready"), get(&running, "Ready"));
    assert_eq!(status.phase, Some(Phase::Degraded));
}

#[test]
fn a_stateful_set_without_status_has_no_workers() {
    let workers =
        sts("metadata: { name: demo, generation: 1 }\nspec: { selector: {}, template: {} }");
    assert_eq!(workers, Workers::default());
    let status = compute(
        &inputs(1, None, "2026-01-01T00:00:00Z"),
        &applied(1, workers),
    );
    assert_eq!(status.phase, Some(Phase::Pending), "no pod exists yet");
}

fn evaluation(failing: Vec<(String, f64)>) -> crate::autoscale::Evaluation {
    crate::autoscale::Evaluation {
        desired: 2,
        condition: crate::autoscale::AutoscalingCondition::disabled(),
        status: None,
        lag: Some(1200),
        last_checkpoint: Some("2026-01-01T00:00:00Z".into()),
        decided: None,
        checkpoints: crate::autoscale::CheckpointHealth {
            failing,
            newly_corrupt: Vec::new(),
        },
        next_in: None,
    }
}

#[test]
fn failing_checkpoint_writes_degrade_a_running_pipeline_until_they_stop() {
    let trouble = evaluation(vec![("demo-1".into(), 3.0)]);
    let mut with = inputs(4, None, "2026-01-01T00:00:00Z");
    with.evaluation = Some(&trouble);
    let degraded = compute(&with, &applied(2, sts(TWO_READY)));
    assert_eq!(degraded.phase, Some(Phase::Degraded));
    assert_eq!(degraded.lag, Some(1200));
    assert_eq!(
        degraded.last_checkpoint.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    let c = get(&degraded, "Degraded");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "CheckpointsFailing")
    );
    assert!(
        c.message
            .starts_with("checkpoint writes failed on demo-1 (3)"),
        "{}",
        c.message
    );
    assert_eq!(
        get(&degraded, "Ready").status,
        "True",
        "the workers still run"
    );

    let fine = evaluation(Vec::new());
    let mut later = inputs(4, Some(&degraded), "2026-01-01T00:05:00Z");
    later.evaluation = Some(&fine);
    let recovered = compute(&later, &applied(2, sts(TWO_READY)));
    assert_eq!(recovered.phase, Some(Phase::Running));
    assert_eq!(get(&recovered, "Degraded").reason, "AsExpected");
    assert_eq!(
        get(&recovered, "Degraded").last_transition_time,
        at("2026-01-01T00:05:00Z")
    );
}
