//! Faults first seen on a real API server, reproduced with the API emulator (which now behaves
//! as the real server does in each of them) and the real operator binary:
//!
//! - after an API server restart every resumed watch answers 410 "too old resource version";
//! - an event note over 1024 bytes is rejected, and API errors used to be dumped whole;
//! - a client-side `kubectl apply` followed by server-side apply conflicted on atomic lists;
//! - a CRD schema with formats Kubernetes does not know draws a warning on every apply.
//!
//! The kubectl scenarios run with `TIDEMARK_KUBECTL_TESTS=1` (after `.ci/tools/kube.sh`).

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::CustomResourceExt;
use tidemark_api::MarketingPipeline;
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::fixtures::*;
use tidemark_e2e::operator::{Operator, Options};
use tidemark_e2e::{eventually, tools};

/// How long the API server is down in the restart scenario (the outage seen on a real server).
const OUTAGE: Duration = Duration::from_secs(7);
/// The target: a change after a restart is reconciled within this time.
const AFTER_RESTART: Duration = Duration::from_secs(5);

async fn hash(cluster: &Cluster) -> Option<String> {
    get::<StatefulSet>(cluster, "clicks")
        .await
        .and_then(|s| config_hash(&s))
}

#[tokio::test]
async fn a_change_made_after_an_api_server_restart_is_reconciled_within_five_seconds(
) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let _operator = Operator::start(
        &cluster.kubeconfig(),
        &Options {
            leader_election: false,
            ..Options::default()
        },
    )
    .await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    let before = eventually(WAIT, "the StatefulSet", || hash(&cluster)).await?;

    // Down for 7 s, then back with an empty watch cache: every resumed watch gets a 410.
    cluster.emulator.restart(OUTAGE).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster
        .apply_pipeline("default", &PIPELINE.replace("rate: 100", "rate: 300"))
        .await?;
    eventually(
        AFTER_RESTART,
        "the change reconciled after the restart",
        || async { hash(&cluster).await.filter(|h| *h != before) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_refused_write_shows_the_api_servers_message_in_one_line_and_an_event(
) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let _operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    eventually(WAIT, "the StatefulSet", || hash(&cluster)).await?;

    // Volume claim templates are immutable: the API server refuses the StatefulSet update.
    cluster
        .apply_pipeline(
            "default",
            &PIPELINE.replace("storageSize: 2Gi", "storageSize: 4Gi"),
        )
        .await?;
    let message = eventually(WAIT, "Degraded/ReconcileError", || async {
        let p = pipeline(&cluster).await?;
        let c = p
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.reason == "ReconcileError")?;
        Some(c.message)
    })
    .await?;
    assert!(
        message.contains(
            "StatefulSet.apps \"clicks\" is invalid: spec: Forbidden: updates to statefulset spec"
        ),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(!message.contains("Status {"), "no debug dump: {message}");
    assert!(message.len() < 600, "{} bytes: {message}", message.len());

    let notes = eventually(WAIT, "a ReconcileFailed event", || async {
        let notes = events(&cluster, "ReconcileFailed").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await?;
    assert!(
        notes.iter().all(|n| n.len() <= 1024 && *n == message),
        "{notes:?}"
    );
    Ok(())
}

// kubectl runs as a blocking child process while the in-process emulator must keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_kubectl_apply_then_server_side_apply_has_no_conflicts() -> anyhow::Result<()> {
    if !tools::enabled() {
        eprintln!("skipped: set TIDEMARK_KUBECTL_TESTS=1 (after .ci/tools/kube.sh) to run");
        return Ok(());
    }
    let cluster = Cluster::start().await?;
    let kubeconfig = cluster.kubeconfig();
    let kubectl = |args: &[&str]| {
        tokio::task::block_in_place(|| tools::run_raw("kubectl", Some(&kubeconfig), args))
    };
    // What the examples' headers say, then what Argo CD and Flux do.
    let first = kubectl(&["apply", "-f", "examples/quickstart.yaml"])?;
    assert!(first.status.success(), "{first:?}");
    let second = kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        "argocd-controller",
        "-f",
        "examples/quickstart.yaml",
    ])?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        second.status.success() && !stderr.contains("conflict"),
        "server-side apply after a client-side apply: {stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_crd_prints_no_warning_where_the_raw_schemars_schema_would(
) -> anyhow::Result<()> {
    if !tools::enabled() {
        eprintln!("skipped: set TIDEMARK_KUBECTL_TESTS=1 (after .ci/tools/kube.sh) to run");
        return Ok(());
    }
    let cluster = Cluster::start_without_crd().await?;
    let kubeconfig = cluster.kubeconfig();
    let kubectl = |args: &[&str]| {
        tokio::task::block_in_place(|| tools::run_raw("kubectl", Some(&kubeconfig), args))
    };
    // The emulator warns as the real server does: schemars' own schema has `uint64`.
    let raw = cluster.dir().join("raw-crd.yaml");
    std::fs::write(&raw, serde_saphyr::to_string(&MarketingPipeline::crd())?)?;
    let raw_apply = kubectl(&[
        "apply",
        "--server-side",
        "-f",
        raw.to_str().unwrap_or_default(),
    ])?;
    let raw_stderr = String::from_utf8_lossy(&raw_apply.stderr);
    assert!(
        raw_stderr.contains("Warning: unrecognized format \"uint64\""),
        "{raw_stderr}"
    );
    let committed = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        tidemark_operator::crd::CRD_FILE,
    ])?;
    let stderr = String::from_utf8_lossy(&committed.stderr);
    assert!(committed.status.success(), "{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    Ok(())
}
