//! The autoscaler (`docs/autoscaling.md`): the real `tidemark-operator` binary against the API
//! emulator, asking a real Prometheus (Debian package) that scrapes stand-in worker pods
//! ([`Exporter`]: the emulator runs no pods, so the test plays their `/metrics`, with the
//! series names the worker exports, and plays the StatefulSet controller through the
//! hand-off). Needs the `prometheus` binary; skipped without it unless
//! `TIDEMARK_REQUIRE_PROMETHEUS=1` (CI) makes that a failure.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tidemark_api::{HandoffStep, MarketingPipeline};
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::eventually;
use tidemark_e2e::fixtures::*;
use tidemark_e2e::operator::{Operator, Options};
use tidemark_e2e::prometheus::{self, Exporter, Load, Prometheus, Target};

/// 2026-01-01T00:00:00Z, the stand-in worker's last checkpoint.
const CHECKPOINT: f64 = 1_767_225_600.0;
/// How long the scenario may take to reach a scale decision.
const DECIDE: Duration = Duration::from_secs(60);

/// [`PIPELINE`] with one worker and a quick autoscaler.
fn autoscaled(extra: &str) -> String {
    PIPELINE.replace("parallelism: 2", "parallelism: 1")
        + "  autoscaling:\n    enabled: true\n    minParallelism: 1\n    maxParallelism: 4\n    \
           evaluationInterval: 1s\n    metricsWindow: 5s\n    cooldown: 3s\n    \
           scaleDownStabilization: 8s\n    catchUpDuration: 60s\n    targetUtilizationPercent: 80\n"
        + extra
}

/// A stand-in worker pod scraped by a real Prometheus, and the operator asking that Prometheus
/// against a fresh API emulator.
struct Observed {
    worker: Exporter,
    cluster: Cluster,
    operator: Operator,
    _prometheus: Prometheus,
}

impl Observed {
    /// Scrapes `worker` as pod `clicks-0` of namespace `default`, waits until PromQL `ready` has a
    /// series, then starts the cluster and the operator; `None` (skip) without a Prometheus binary.
    async fn start(worker: Exporter, ready: &str) -> anyhow::Result<Option<Self>> {
        let Some(bin) = prometheus::binary()? else {
            return Ok(None);
        };
        let prometheus = Prometheus::start(
            &bin,
            &[Target {
                addr: worker.addr,
                namespace: "default".into(),
                pod: "clicks-0".into(),
            }],
        )
        .await?;
        prometheus.wait_for_series(ready).await?;
        let cluster = Cluster::start().await?;
        let operator = Operator::start(
            &cluster.kubeconfig(),
            &Options {
                prometheus_url: Some(prometheus.url()),
                ..Options::default()
            },
        )
        .await?;
        Ok(Some(Self {
            worker,
            cluster,
            operator,
            _prometheus: prometheus,
        }))
    }
}

fn decision(p: &MarketingPipeline) -> Option<(String, String)> {
    let a = p.status.as_ref()?.autoscaler.as_ref()?;
    Some((a.decision.clone(), a.reason.clone()))
}

/// Plays the StatefulSet controller until the pipeline settles on `workers` workers: every pod
/// of the current template reported ready, step after step of the hand-off.
async fn settle(cluster: &Cluster, workers: i32) -> anyhow::Result<MarketingPipeline> {
    eventually(
        DECIDE,
        &format!("{workers} workers, hand-off complete"),
        || async {
            if let Some(sts) = get::<StatefulSet>(cluster, "clicks").await {
                let replicas = sts.spec.replicas.unwrap_or(1);
                let _ = cluster
                    .report_workers("default", "clicks", replicas, replicas)
                    .await;
            }
            let p = pipeline(cluster).await?;
            let status = p.status.as_ref()?;
            let settled = status.parallelism == Some(workers)
                && status
                    .handoff
                    .as_ref()
                    .is_none_or(|h| h.step == HandoffStep::Complete);
            let sts = get::<StatefulSet>(cluster, "clicks").await?;
            (settled && sts.spec.replicas == Some(workers)).then_some(p)
        },
    )
    .await
}

async fn decisions(operator: &Operator, decision: &str) -> anyhow::Result<f64> {
    let text = operator.http_get("/metrics").await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("tidemark_operator_autoscaler_decisions_total{"))
        .filter(|l| l.contains(&format!("decision=\"{decision}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test]
async fn lag_growing_faster_than_one_worker_takes_scales_up_and_an_idle_pipeline_scales_back_down_after_the_stabilization_window(
) -> anyhow::Result<()> {
    // Idle at first: 100 records/s at 5 % busy, nothing behind — one worker is plenty.
    let idle = Load {
        rate: 100.0,
        busy: 0.05,
        lag_growth: -1_000_000.0,
    };
    // Then one worker taking 1 000 records/s while fully busy, with the lag growing by 3 000/s:
    // a demand of about 4 000/s over a capacity of 1 000/s per worker at 80 % — more than the
    // 4 workers allowed.
    let busy = Load {
        rate: 1_000.0,
        busy: 1.0,
        lag_growth: 3_000.0,
    };
    let worker = Exporter::start("clicks", 8, 0, CHECKPOINT, idle).await?;
    let Some(observed) = Observed::start(
        worker,
        "rate(tidemark_records_in_total{namespace=\"default\",pipeline=\"clicks\"}[5s]) > 0",
    )
    .await?
    else {
        return Ok(());
    };
    let (worker, cluster, operator) = (&observed.worker, &observed.cluster, &observed.operator);
    cluster.apply_pipeline("default", &autoscaled("")).await?;
    settle(cluster, 1).await?;
    let (held, reason) = eventually(DECIDE, "a first decision", || async {
        pipeline(cluster).await.as_ref().and_then(decision)
    })
    .await?;
    assert_eq!(held, "Hold", "{reason}");
    assert!(
        reason.contains(": 1 worker (8 tasks, bounds 1..4, now 1)"),
        "{reason}"
    );

    worker.set_load(busy);
    let p = settle(cluster, 4).await?;
    let status = p.status.as_ref().expect("status");
    assert_eq!(
        p.spec.parallelism, 1,
        "the autoscaler never writes the spec"
    );
    assert_eq!(
        status.last_checkpoint.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert!(status.lag.is_some_and(|l| l > 0), "{:?}", status.lag);
    let autoscaler = status.autoscaler.as_ref().expect("autoscaler status");
    assert!(autoscaler.last_scale_time.is_some());
    // Decided on 5 s averages that may still mix the idle and the busy load: demand above
    // what one worker takes, whatever the exact figures.
    let (demand, capacity) = (
        autoscaler.demand.unwrap_or_default(),
        autoscaler.capacity_per_worker.unwrap_or_default(),
    );
    assert!(capacity > 0.0 && demand > capacity, "{autoscaler:?}");
    let scaled = events(cluster, "Autoscaled").await;
    assert!(
        scaled.iter().any(|n| n.starts_with("ScaleUp: ")
            && n.contains(": 4 workers (8 tasks, bounds 1..4, now 1)")),
        "{scaled:?}"
    );
    assert!(events(cluster, "Rescaled")
        .await
        .iter()
        .any(|n| n.starts_with("parallelism 1 → 4 (autoscaler)")),);
    assert!(decisions(operator, "ScaleUp").await? >= 1.0);
    assert_eq!(
        condition(&p, "Autoscaling").map(|c| c.0),
        Some("True".into())
    );

    // Idle: 100 records/s at 5 % busy (a capacity of 2 000/s), the lag drained. One worker
    // would do, but only once every recommendation of the 8 s window says so.
    let idle_since = Instant::now();
    worker.set_load(idle);
    eventually(DECIDE, "a held scale-down", || async {
        pipeline(cluster)
            .await
            .as_ref()
            .and_then(decision)
            .filter(|(d, r)| d == "Hold" && r.contains("stabilization window"))
    })
    .await?;
    assert_eq!(
        pipeline(cluster).await.and_then(|p| p.status?.parallelism),
        Some(4),
        "still four workers while the window fills"
    );
    let p = settle(cluster, 1).await?;
    // The 8 s window counts from the last recommendation of 4 workers, which came at most one
    // evaluation interval (1 s) before the load dropped.
    assert!(
        idle_since.elapsed() >= Duration::from_secs(7),
        "scaled down after {:?}, within the stabilization window",
        idle_since.elapsed()
    );
    assert_eq!(p.status.as_ref().and_then(|s| s.lag), Some(0));
    // The event follows the status write of the same reconcile.
    eventually(DECIDE, "a ScaleDown event", || async {
        events(cluster, "Autoscaled")
            .await
            .into_iter()
            .find(|n| n.starts_with("ScaleDown: "))
    })
    .await?;
    assert!(decisions(operator, "ScaleDown").await? >= 1.0);
    assert_eq!(p.spec.parallelism, 1);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_prometheus_is_a_refusal_in_status_events_and_metrics_and_the_workers_stay(
) -> anyhow::Result<()> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let cluster = Cluster::start().await?;
    let operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    let manifest = autoscaled(&format!("    prometheusUrl: http://{closed}\n"))
        .replace("parallelism: 1", "parallelism: 2");
    cluster.apply_pipeline("default", &manifest).await?;
    let p = eventually(
        DECIDE,
        "Autoscaling=False PrometheusUnavailable",
        || async {
            pipeline(&cluster).await.filter(|p| {
                condition(p, "Autoscaling")
                    == Some(("False".into(), "PrometheusUnavailable".into()))
            })
        },
    )
    .await?;
    let status = p.status.as_ref().expect("status");
    assert_eq!(status.parallelism, Some(2), "a refusal keeps the workers");
    let (_, reason) = decision(&p).expect("autoscaler status");
    assert!(reason.contains("failed to reach Prometheus"), "{reason}");
    let refused = eventually(DECIDE, "an AutoscalerRefused event", || async {
        let notes = events(&cluster, "AutoscalerRefused").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await?;
    assert!(
        refused[0].starts_with("PrometheusUnavailable: "),
        "{refused:?}"
    );
    assert!(decisions(&operator, "PrometheusUnavailable").await? >= 1.0);

    // Without a URL in the spec and none given to the operator, it says so.
    cluster
        .pipelines("default")
        .patch(
            "clicks",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "remove", "path": "/spec/autoscaling/prometheusUrl"}
            ]))?),
        )
        .await?;
    eventually(DECIDE, "Autoscaling=False NoPrometheusUrl", || async {
        pipeline(&cluster).await.filter(|p| {
            condition(p, "Autoscaling") == Some(("False".into(), "NoPrometheusUrl".into()))
        })
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn without_autoscaling_the_status_still_shows_lag_and_last_checkpoint_and_a_pipeline_prometheus_does_not_know_is_no_data(
) -> anyhow::Result<()> {
    let worker = Exporter::start(
        "clicks",
        4,
        2,
        CHECKPOINT,
        Load {
            rate: 10.0,
            busy: 0.1,
            lag_growth: 50.0,
        },
    )
    .await?;
    let Some(observed) = Observed::start(
        worker,
        "tidemark_source_lag{namespace=\"default\",pipeline=\"clicks\"} > 0",
    )
    .await?
    else {
        return Ok(());
    };
    let (worker, cluster, _operator) = (&observed.worker, &observed.cluster, &observed.operator);
    cluster.apply_pipeline("default", PIPELINE).await?;
    let p = eventually(DECIDE, "lag and last checkpoint in status", || async {
        pipeline(cluster).await.filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.lag.is_some() && s.last_checkpoint.is_some())
        })
    })
    .await?;
    let status = p.status.as_ref().expect("status");
    assert!(status
        .lag
        .is_some_and(|l| l > 0 && l as f64 <= worker.lag() + 1.0));
    assert_eq!(
        status.last_checkpoint.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert_eq!(status.autoscaler, None);
    assert_eq!(
        condition(&p, "Autoscaling"),
        Some(("False".into(), "Disabled".into()))
    );
    assert_eq!(status.parallelism, Some(2));

    // An autoscaled pipeline whose workers Prometheus has never scraped.
    let other = autoscaled("").replace("name: clicks", "name: views");
    cluster.apply_pipeline("default", &other).await?;
    let views = eventually(DECIDE, "Autoscaling=False NoData", || async {
        let p = cluster.pipelines("default").get_opt("views").await.ok()??;
        (condition(&p, "Autoscaling") == Some(("False".into(), "NoData".into()))).then_some(p)
    })
    .await?;
    assert_eq!(views.status.as_ref().and_then(|s| s.parallelism), Some(1));
    Ok(())
}

#[tokio::test]
async fn failing_checkpoint_writes_degrade_the_pipeline_until_they_stop_and_a_corrupt_checkpoint_found_at_restore_is_a_warning_event(
) -> anyhow::Result<()> {
    let worker = Exporter::start(
        "clicks",
        4,
        0,
        CHECKPOINT,
        Load {
            rate: 10.0,
            busy: 0.1,
            lag_growth: 0.0,
        },
    )
    .await?;
    let Some(observed) = Observed::start(
        worker,
        "tidemark_checkpoint_failures_total{namespace=\"default\",pipeline=\"clicks\"}",
    )
    .await?
    else {
        return Ok(());
    };
    let (worker, cluster, _operator) = (&observed.worker, &observed.cluster, &observed.operator);
    // Autoscaling off; its block only sets how often and over what range the metrics are read.
    let manifest = PIPELINE.to_owned()
        + "  autoscaling:\n    enabled: false\n    evaluationInterval: 1s\n    metricsWindow: 3s\n";
    cluster.apply_pipeline("default", &manifest).await?;
    eventually(DECIDE, "the StatefulSet", || {
        get::<StatefulSet>(cluster, "clicks")
    })
    .await?;
    cluster.mark_workers_ready("default", "clicks").await?;
    eventually(DECIDE, "Running with lag observed", || async {
        pipeline(cluster).await.filter(|p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(tidemark_api::Phase::Running) && s.lag.is_some())
        })
    })
    .await?;

    worker.checkpoint_trouble(0, 1);
    let corrupt = eventually(DECIDE, "a CheckpointCorrupt event", || async {
        events(cluster, "CheckpointCorrupt").await.pop()
    })
    .await?;
    assert!(
        corrupt.starts_with("worker clicks-0 found 1 corrupt checkpoint(s) when restoring"),
        "{corrupt}"
    );

    worker.checkpoint_trouble(3, 0);
    let p = eventually(DECIDE, "Degraded=True CheckpointsFailing", || async {
        pipeline(cluster).await.filter(|p| {
            condition(p, "Degraded") == Some(("True".into(), "CheckpointsFailing".into()))
        })
    })
    .await?;
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase),
        Some(tidemark_api::Phase::Degraded)
    );
    let failing = eventually(DECIDE, "a CheckpointsFailing event", || async {
        events(cluster, "CheckpointsFailing").await.pop()
    })
    .await?;
    assert!(
        failing.contains("checkpoint writes failed on clicks-0"),
        "{failing}"
    );
    // No new failures: once the 3 s window has none, the pipeline is back to Running.
    eventually(DECIDE, "Degraded=False again", || async {
        pipeline(cluster).await.filter(|p| {
            condition(p, "Degraded") == Some(("False".into(), "AsExpected".into()))
                && p.status.as_ref().and_then(|s| s.phase) == Some(tidemark_api::Phase::Running)
        })
    })
    .await?;
    assert_eq!(
        events(cluster, "CheckpointCorrupt").await.len(),
        1,
        "one corruption, one event"
    );
    Ok(())
}
