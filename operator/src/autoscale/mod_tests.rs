//! Tests of what a reconcile asks of the autoscaler: when it evaluates, what it keeps between
//! evaluations, and its refusals.

use super::*;
use crate::build::fixtures::{pipeline, GENERATOR};
use tidemark_api::AutoscalingSpec;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn running(parallelism: i32) -> Assignment {
    Assignment {
        epoch: 1,
        parallelism,
        handoff: None,
    }
}

#[tokio::test]
async fn without_autoscaling_or_prometheus_the_spec_rules_and_nothing_is_asked() {
    let autoscaler = Autoscaler::new(None).expect("client");
    let mut p = pipeline(GENERATOR);
    p.spec.parallelism = 3;
    let e = autoscaler
        .evaluate(&p, Some(&running(2)), at("2026-01-01T00:00:00Z"))
        .await;
    assert_eq!(e.desired, 3);
    assert_eq!(e.condition, AutoscalingCondition::disabled());
    assert_eq!((e.status, e.decided, e.next_in), (None, None, None));
}

#[tokio::test]
async fn with_no_prometheus_url_the_autoscaler_refuses_once_per_interval_and_keeps_the_workers() {
    let autoscaler = Autoscaler::new(None).expect("client");
    let mut p = pipeline(GENERATOR);
    p.spec.parallelism = 1;
    p.spec.autoscaling = Some(AutoscalingSpec {
        enabled: true,
        ..AutoscalingSpec::default()
    });
    let first = autoscaler
        .evaluate(&p, Some(&running(2)), at("2026-01-01T00:00:00Z"))
        .await;
    assert_eq!(first.desired, 2, "the workers in effect stay");
    assert_eq!(first.condition.reason, decide::NO_PROMETHEUS);
    assert!(!first.condition.active);
    let status = first.status.clone().expect("autoscaler status");
    assert_eq!(status.decision, decide::NO_PROMETHEUS);
    assert_eq!(status.time, "2026-01-01T00:00:00Z");
    assert_eq!(first.next_in, Some(std::time::Duration::from_secs(30)));

    // 10 s later: not due; nothing decided, the next evaluation in 20 s.
    p.status = Some(tidemark_api::MarketingPipelineStatus {
        autoscaler: Some(status),
        ..Default::default()
    });
    let between = autoscaler
        .evaluate(&p, Some(&running(2)), at("2026-01-01T00:00:10Z"))
        .await;
    assert_eq!(between.decided, None);
    assert_eq!(between.desired, 2);
    assert_eq!(
        between.status, first.status,
        "the last decision stays in status"
    );
    assert_eq!(between.next_in, Some(std::time::Duration::from_secs(20)));
    let again = autoscaler
        .evaluate(&p, Some(&running(2)), at("2026-01-01T00:00:30Z"))
        .await;
    assert!(again.decided.is_some(), "due after one interval");
}

#[tokio::test]
async fn an_unreachable_prometheus_is_a_refusal_with_its_cause() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let autoscaler = Autoscaler::new(Some(format!("http://{closed}"))).expect("client");
    let mut p = pipeline(GENERATOR);
    p.spec.autoscaling = Some(AutoscalingSpec {
        enabled: true,
        ..AutoscalingSpec::default()
    });
    let e = autoscaler
        .evaluate(&p, None, at("2026-01-01T00:00:00Z"))
        .await;
    let decision = e.decided.expect("decided");
    assert_eq!(decision.kind, decide::PROMETHEUS_UNAVAILABLE);
    assert!(
        decision
            .reason
            .starts_with(&format!("failed to reach Prometheus at http://{closed}")),
        "{}",
        decision.reason
    );
    assert_eq!(
        e.desired, 1,
        "a new pipeline starts at spec.parallelism within the bounds"
    );
}
