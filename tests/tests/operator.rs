//! The real `tidemark-operator` binary against the API emulator, through a kubeconfig: the life
//! of a pipeline (create, change, scale, invalid spec, delete) and an API server outage.
//!
//! The emulator has no StatefulSet controller or kubelet; where a scenario needs ready workers,
//! the test writes the StatefulSet status as the StatefulSet controller would.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::eventually;
use tidemark_e2e::fixtures::*;
use tidemark_e2e::operator::{Operator, Options};
use tidemark_operator::names::*;

#[tokio::test]
async fn a_new_pipeline_gets_every_owned_object_and_becomes_ready() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    let created = cluster.apply_pipeline("default", PIPELINE).await?;
    let uid = created.metadata.uid.clone().expect("uid");

    let sts: StatefulSet = eventually(WAIT, "the StatefulSet", || get(&cluster, "clicks")).await?;
    assert_eq!(sts.spec.replicas, Some(2));
    assert_eq!(sts.spec.service_name.as_deref(), Some("clicks-workers"));
    let claim = &sts.spec.volume_claim_templates.as_ref().expect("claims")[0];
    let claim_spec = claim.spec.as_ref().expect("claim spec");
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("standard"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .expect("req")["storage"]
            .0,
        "2Gi"
    );
    assert!(config_hash(&sts).is_some());
    let owner = &sts.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (uid.as_str(), Some(true))
    );
    let managers: Vec<_> = sts
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, [FIELD_MANAGER], "one field manager");

    let cm: ConfigMap =
        eventually(WAIT, "the ConfigMap", || get(&cluster, "clicks-config")).await?;
    let data = cm.data.expect("data");
    assert_eq!(
        data[CONFIG_KEY_RUNTIME],
        "parallelism: 2\nassignmentEpoch: 1\n"
    );
    let manifest = tidemark_api::parse_manifest(&data[CONFIG_KEY_PIPELINE])?;
    assert_eq!(manifest.spec, created.spec);
    let headless: Service = eventually(WAIT, "the headless Service", || {
        get(&cluster, "clicks-workers")
    })
    .await?;
    assert_eq!(
        headless.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    let _metrics: Service = eventually(WAIT, "the metrics Service", || {
        get(&cluster, "clicks-metrics")
    })
    .await?;
    let _pdb: PodDisruptionBudget =
        eventually(WAIT, "the PodDisruptionBudget", || get(&cluster, "clicks")).await?;

    let pending = eventually(WAIT, "status of generation 1", || async {
        pipeline(&cluster)
            .await
            .filter(|p| p.status.as_ref().and_then(|s| s.observed_generation) == Some(1))
    })
    .await?;
    let status = pending.status.as_ref().expect("status");
    assert_eq!(status.parallelism, Some(2));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=clicks,app.kubernetes.io/name=tidemark-worker")
    );
    assert_eq!(
        condition(&pending, "Ready"),
        Some(("False".into(), "WorkersNotReady".into()))
    );

    cluster.mark_workers_ready("default", "clicks").await?;
    let ready = eventually(WAIT, "Ready=True", || async {
        pipeline(&cluster)
            .await
            .filter(|p| condition(p, "Ready").is_some_and(|c| c.0 == "True"))
    })
    .await?;
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.phase),
        Some(tidemark_api::Phase::Running)
    );
    assert!(operator
        .http_get("/metrics")
        .await?
        .contains(r#"tidemark_operator_reconciles_total{result="success"}"#));
    assert!(operator
        .http_get("/healthz")
        .await?
        .starts_with("HTTP/1.1 200"));
    // Settled: an unchanged pipeline writes nothing, so nothing triggers another reconcile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = reconciles(&operator, "success").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        reconciles(&operator, "success").await?,
        settled,
        "no reconcile loop"
    );
    let status = operator.terminate(Duration::from_secs(15)).await?;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    Ok(())
}

#[tokio::test]
async fn a_spec_change_changes_the_pod_template_hash_and_scaling_removes_the_budget(
) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let _operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    let before = eventually(WAIT, "the StatefulSet", || async {
        get::<StatefulSet>(&cluster, "clicks")
            .await
            .and_then(|s| config_hash(&s))
    })
    .await?;

    cluster
        .apply_pipeline("default", &PIPELINE.replace("rate: 100", "rate: 500"))
        .await?;
    let after = eventually(WAIT, "a new config hash", || async {
        get::<StatefulSet>(&cluster, "clicks")
            .await
            .and_then(|s| config_hash(&s))
            .filter(|h| *h != before)
    })
    .await?;
    assert_ne!(before, after);

    // kubectl scale goes through the scale subresource, i.e. spec.parallelism.
    let scale = json!({"spec": {"replicas": 1}});
    cluster
        .pipelines("default")
        .patch_scale("clicks", &PatchParams::default(), &Patch::Merge(&scale))
        .await?;
    // The workers first roll to the new assignment (tests/rescale.rs covers the hand-off);
    // the second pod goes once every pod is ready on it.
    eventually(WAIT, "the new assignment on the pod template", || async {
        get::<StatefulSet>(&cluster, "clicks")
            .await
            .and_then(|s| config_hash(&s))
            .filter(|h| *h != after)
    })
    .await?;
    cluster.mark_workers_ready("default", "clicks").await?;
    eventually(WAIT, "one replica", || async {
        get::<StatefulSet>(&cluster, "clicks")
            .await
            .filter(|s| s.spec.replicas == Some(1))
    })
    .await?;
    eventually(WAIT, "the budget removed as an orphan", || async {
        get::<PodDisruptionBudget>(&cluster, "clicks")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    let p = eventually(WAIT, "epoch 2", || async {
        pipeline(&cluster)
            .await
            .filter(|p| p.status.as_ref().and_then(|s| s.assignment_epoch) == Some(2))
    })
    .await?;
    assert_eq!(p.status.as_ref().and_then(|s| s.parallelism), Some(1));
    let cm: ConfigMap = get(&cluster, "clicks-config").await.expect("config map");
    assert_eq!(
        cm.data.expect("data")[CONFIG_KEY_RUNTIME],
        "parallelism: 1\nassignmentEpoch: 2\npreviousParallelism: [2]\n\
         peerUrl: \"http://clicks-{ordinal}.clicks-workers.default.svc:9102\"\n"
    );
    Ok(())
}

#[tokio::test]
async fn an_invalid_spec_sets_degraded_and_an_event_without_a_crash_loop() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let mut operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    // Passes the schema and CEL rules, fails the operator's validation (unknown source).
    cluster
        .apply_pipeline(
            "default",
            &PIPELINE.replace("sources: [events]", "sources: [nowhere]"),
        )
        .await?;
    let p = eventually(WAIT, "Degraded=True", || async {
        pipeline(&cluster)
            .await
            .filter(|p| condition(p, "Degraded").is_some_and(|c| c.0 == "True"))
    })
    .await?;
    assert_eq!(
        condition(&p, "Degraded").map(|c| c.1).as_deref(),
        Some("InvalidSpec")
    );
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase),
        Some(tidemark_api::Phase::Failed)
    );
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let warning = eventually(WAIT, "an InvalidSpec event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidSpec"))
    })
    .await?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.unwrap_or_default().contains("unknown source"));
    assert!(
        get::<StatefulSet>(&cluster, "clicks").await.is_none(),
        "nothing is built from an invalid spec"
    );

    // It waits for a change instead of retrying: the reconcile count stays put.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = reconciles(&operator, "invalid_spec").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reconciles(&operator, "invalid_spec").await?, first);
    assert!(operator.is_running());

    cluster.apply_pipeline("default", PIPELINE).await?;
    let fixed = eventually(WAIT, "Degraded=False after the fix", || async {
        pipeline(&cluster)
            .await
            .filter(|p| condition(p, "Degraded").is_some_and(|c| c.0 == "False"))
    })
    .await?;
    assert_eq!(
        fixed.status.as_ref().and_then(|s| s.observed_generation),
        fixed.metadata.generation
    );
    eventually(WAIT, "the StatefulSet", || {
        get::<StatefulSet>(&cluster, "clicks")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_pipeline_removes_its_owned_objects() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let _operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    eventually(WAIT, "the PodDisruptionBudget", || {
        get::<PodDisruptionBudget>(&cluster, "clicks")
    })
    .await?;
    cluster
        .pipelines("default")
        .delete("clicks", &DeleteParams::background())
        .await?;
    eventually(WAIT, "owned objects gone", || async {
        let gone = get::<StatefulSet>(&cluster, "clicks").await.is_none()
            && get::<ConfigMap>(&cluster, "clicks-config").await.is_none()
            && get::<Service>(&cluster, "clicks-workers").await.is_none()
            && get::<Service>(&cluster, "clicks-metrics").await.is_none()
            && get::<PodDisruptionBudget>(&cluster, "clicks")
                .await
                .is_none();
        gone.then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_operator_recovers_after_the_api_server_was_unavailable() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let mut operator = Operator::start(
        &cluster.kubeconfig(),
        &Options {
            leader_election: false,
            ..Options::default()
        },
    )
    .await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    eventually(WAIT, "the StatefulSet", || {
        get::<StatefulSet>(&cluster, "clicks")
    })
    .await?;

    cluster.emulator.set_unavailable(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        operator.is_running(),
        "an unavailable API server is not fatal"
    );
    cluster.emulator.set_unavailable(false);

    cluster
        .apply_pipeline(
            "default",
            &PIPELINE.replace("name: clicks", "name: after-outage"),
        )
        .await?;
    eventually(
        Duration::from_secs(60),
        "a pipeline created after the outage reconciled",
        || get::<StatefulSet>(&cluster, "after-outage"),
    )
    .await?;
    Ok(())
}
