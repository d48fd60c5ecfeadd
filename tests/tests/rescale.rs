//! Rescaling through the snapshot hand-off (`docs/rescale.md`): the real `tidemark-operator`
//! binary against the API emulator. The emulator has no StatefulSet controller or kubelet, so the
//! test plays them ([`Cluster::report_workers`]: which pods run the newest template and which are
//! ready, with revisions named after the template's config hash); the workers' side of the
//! hand-off is tested with real worker processes in `worker/tests/kafka_rescale.rs`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tidemark_api::{HandoffStep, MarketingPipeline, Phase};
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::eventually;
use tidemark_e2e::fixtures::*;
use tidemark_e2e::operator::{Operator, Options};
use tidemark_operator::names::CONFIG_KEY_RUNTIME;
use tidemark_operator::rescale::{Assignment, ANNOTATION_ASSIGNMENT};

/// How long the test watches for something that must not happen.
const HOLD: Duration = Duration::from_secs(2);

async fn sts(cluster: &Cluster) -> StatefulSet {
    get::<StatefulSet>(cluster, "clicks")
        .await
        .expect("the StatefulSet")
}

fn recorded(sts: &StatefulSet) -> Option<Assignment> {
    Assignment::from_annotation(
        sts.metadata
            .annotations
            .as_ref()?
            .get(ANNOTATION_ASSIGNMENT)?,
    )
}

async fn runtime(cluster: &Cluster) -> String {
    let cm: ConfigMap = get(cluster, "clicks-config").await.expect("config map");
    cm.data.expect("data")[CONFIG_KEY_RUNTIME].clone()
}

fn step(p: &MarketingPipeline) -> Option<HandoffStep> {
    p.status.as_ref()?.handoff.as_ref().map(|h| h.step)
}

fn epoch(p: &MarketingPipeline) -> Option<i64> {
    p.status.as_ref()?.assignment_epoch
}

async fn wait_step(cluster: &Cluster, want: HandoffStep) -> anyhow::Result<MarketingPipeline> {
    eventually(WAIT, &format!("hand-off step {want:?}"), || async {
        pipeline(cluster).await.filter(|p| step(p) == Some(want))
    })
    .await
}

async fn scale(cluster: &Cluster, replicas: i32) -> anyhow::Result<()> {
    cluster
        .pipelines("default")
        .patch_scale(
            "clicks",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    Ok(())
}

/// Creates the pipeline with `parallelism` workers and waits until it is Ready.
async fn ready_pipeline(cluster: &Cluster, parallelism: i32) -> anyhow::Result<()> {
    cluster
        .apply_pipeline(
            "default",
            &PIPELINE.replace("parallelism: 2", &format!("parallelism: {parallelism}")),
        )
        .await?;
    eventually(WAIT, "the StatefulSet", || {
        get::<StatefulSet>(cluster, "clicks")
    })
    .await?;
    cluster.mark_workers_ready("default", "clicks").await?;
    eventually(WAIT, "Ready=True", || async {
        pipeline(cluster)
            .await
            .filter(|p| condition(p, "Ready").is_some_and(|c| c.0 == "True"))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn scaling_down_keeps_every_worker_until_all_are_ready_on_the_new_revision_then_removes_the_surplus(
) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let _operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    ready_pipeline(&cluster, 2).await?;
    let settled_hash = config_hash(&sts(&cluster).await);

    scale(&cluster, 1).await?;
    let p = wait_step(&cluster, HandoffStep::Acquire).await?;
    let status = p.status.as_ref().expect("status");
    assert_eq!(status.phase, Some(Phase::Scaling));
    assert_eq!(
        (status.parallelism, status.assignment_epoch),
        (Some(1), Some(2))
    );
    let handoff = status.handoff.as_ref().expect("handoff");
    assert_eq!((handoff.from.clone(), handoff.to), (vec![2], 1));
    assert_eq!(
        condition(&p, "Progressing"),
        Some(("True".into(), "Scaling".into()))
    );
    assert_eq!(condition(&p, "Ready").map(|c| c.0), Some("False".into()));
    let acquiring = sts(&cluster).await;
    assert_eq!(
        acquiring.spec.replicas,
        Some(2),
        "the earlier owner of tasks 1, 3, … stays to serve them"
    );
    assert_ne!(config_hash(&acquiring), settled_hash, "the pods roll");
    assert_eq!(recorded(&acquiring).map(|a| a.epoch), Some(2));
    assert_eq!(
        runtime(&cluster).await,
        "parallelism: 1\nassignmentEpoch: 2\npreviousParallelism: [2]\n\
         peerUrl: \"http://clicks-{ordinal}.clicks-workers.default.svc:9102\"\n"
    );

    // The rollout goes on: worker 1 restarted (owns nothing, serves), worker 0 restores.
    cluster.report_workers("default", "clicks", 1, 1).await?;
    tokio::time::sleep(HOLD).await;
    assert_eq!(sts(&cluster).await.spec.replicas, Some(2));
    // Both on the new revision, worker 0 not ready yet (fetching tasks 1 and 3).
    cluster.report_workers("default", "clicks", 2, 1).await?;
    tokio::time::sleep(HOLD).await;
    assert_eq!(sts(&cluster).await.spec.replicas, Some(2));
    assert_eq!(
        step(&pipeline(&cluster).await.expect("p")),
        Some(HandoffStep::Acquire)
    );

    // Every worker restored: only now does the surplus pod go.
    cluster.report_workers("default", "clicks", 2, 2).await?;
    let one = eventually(WAIT, "one replica", || async {
        get::<StatefulSet>(&cluster, "clicks")
            .await
            .filter(|s| s.spec.replicas == Some(1))
    })
    .await?;
    assert_eq!(
        config_hash(&one),
        config_hash(&acquiring),
        "removing the surplus pod rolls no other"
    );
    let p = wait_step(&cluster, HandoffStep::Complete).await?;
    assert_eq!(epoch(&p), Some(2), "the epoch was raised once");
    eventually(WAIT, "the budget removed with the second pod", || async {
        get::<PodDisruptionBudget>(&cluster, "clicks")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    cluster.mark_workers_ready("default", "clicks").await?;
    let p = eventually(WAIT, "Ready=True on one worker", || async {
        pipeline(&cluster)
            .await
            .filter(|p| condition(p, "Ready").is_some_and(|c| c.0 == "True"))
    })
    .await?;
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Running)
    );
    assert_eq!(epoch(&p), Some(2));
    let rescaled = events(&cluster, "Rescaled").await;
    assert!(
        rescaled
            .iter()
            .any(|n| n.contains("parallelism 2 → 1") && n.contains("acquire step")),
        "{rescaled:?}"
    );
    let handoffs = events(&cluster, "HandOff").await;
    assert!(
        handoffs.iter().any(|n| n.contains("hand-off complete")),
        "{handoffs:?}"
    );
    Ok(())
}

#[tokio::test]
async fn scaling_up_releases_the_moving_tasks_first_then_the_new_workers_acquire_them(
) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let _operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    ready_pipeline(&cluster, 1).await?;

    scale(&cluster, 2).await?;
    let p = wait_step(&cluster, HandoffStep::Release).await?;
    assert_eq!(epoch(&p), Some(2));
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Scaling)
    );
    let releasing = sts(&cluster).await;
    assert_eq!(releasing.spec.replicas, Some(2));
    assert!(runtime(&cluster).await.contains("release: true\n"));
    tokio::time::sleep(HOLD).await;
    assert_eq!(
        step(&pipeline(&cluster).await.expect("p")),
        Some(HandoffStep::Release)
    );

    cluster.report_workers("default", "clicks", 2, 2).await?;
    let p = wait_step(&cluster, HandoffStep::Acquire).await?;
    assert_eq!(epoch(&p), Some(3));
    let acquiring = sts(&cluster).await;
    assert_ne!(config_hash(&acquiring), config_hash(&releasing));
    assert_eq!(
        runtime(&cluster).await,
        "parallelism: 2\nassignmentEpoch: 3\npreviousParallelism: [1]\n\
         peerUrl: \"http://clicks-{ordinal}.clicks-workers.default.svc:9102\"\n"
    );

    cluster.report_workers("default", "clicks", 2, 2).await?;
    let p = wait_step(&cluster, HandoffStep::Complete).await?;
    assert_eq!(epoch(&p), Some(3));
    assert_eq!(sts(&cluster).await.spec.replicas, Some(2));
    eventually(WAIT, "Ready=True", || async {
        pipeline(&cluster)
            .await
            .filter(|p| condition(p, "Ready").is_some_and(|c| c.0 == "True"))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_operator_restart_or_a_stale_status_mid_hand_off_never_takes_a_step_back(
) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let options = Options {
        leader_election: false,
        ..Options::default()
    };
    let operator = Operator::start(&cluster.kubeconfig(), &options).await?;
    ready_pipeline(&cluster, 2).await?;
    scale(&cluster, 1).await?;
    wait_step(&cluster, HandoffStep::Acquire).await?;
    let acquiring = sts(&cluster).await;
    operator.kill().await?;

    // The status loses the hand-off (as if its write had failed before the operator died).
    cluster
        .pipelines("default")
        .patch_status(
            "clicks",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {
                "assignmentEpoch": 1, "parallelism": 2, "handoff": null
            }})),
        )
        .await?;
    let stale = pipeline(&cluster).await.expect("pipeline");
    assert_eq!((epoch(&stale), step(&stale)), (Some(1), None));
    let _operator = Operator::start(&cluster.kubeconfig(), &options).await?;
    let p = wait_step(&cluster, HandoffStep::Acquire).await?;
    assert_eq!(epoch(&p), Some(2), "the StatefulSet's record wins");
    let now = sts(&cluster).await;
    assert_eq!(config_hash(&now), config_hash(&acquiring), "no roll back");
    assert_eq!(now.spec.replicas, Some(2));
    assert_eq!(recorded(&now), recorded(&acquiring));

    cluster.report_workers("default", "clicks", 2, 2).await?;
    let p = wait_step(&cluster, HandoffStep::Complete).await?;
    assert_eq!(epoch(&p), Some(2));
    eventually(WAIT, "one replica", || async {
        get::<StatefulSet>(&cluster, "clicks")
            .await
            .filter(|s| s.spec.replicas == Some(1))
    })
    .await?;
    Ok(())
}
