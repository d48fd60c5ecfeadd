//! The real `kubectl` (`TIDEMARK_KUBECTL_TESTS=1`) against the API emulator with the real
//! operator running: apply the GitOps example with `-k`, wait for Ready, list `mp` with its
//! printer columns, diff for drift, scale through the scale subresource, explain the schema.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::operator::{Operator, Options};
use tidemark_e2e::{eventually, tools};

const WAIT: Duration = Duration::from_secs(30);
const OVERLAY: &str = "examples/gitops/overlays/production";

async fn replicas(cluster: &Cluster) -> Option<i32> {
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "marketing");
    api.get_opt("clickstream").await.ok()??.spec.replicas
}

// kubectl runs as a blocking child process while the in-process emulator must keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_example_lists_printer_columns_and_scales_the_pipeline(
) -> anyhow::Result<()> {
    if !tools::enabled() {
        eprintln!("skipped: set TIDEMARK_KUBECTL_TESTS=1 (after .ci/tools/kube.sh) to run");
        return Ok(());
    }
    let cluster = Cluster::start().await?;
    let kubeconfig = cluster.kubeconfig();
    let kubectl = |args: &[&str]| {
        tokio::task::block_in_place(|| tools::run("kubectl", Some(&kubeconfig), args))
    };
    let _operator = Operator::start(&kubeconfig, &Options::default()).await?;

    let applied = kubectl(&["apply", "--server-side", "-k", OVERLAY])?;
    assert!(
        applied.contains("marketingpipeline.tidemark.dev/clickstream serverside-applied"),
        "{applied}"
    );
    assert_eq!(
        eventually(WAIT, "four workers", || async {
            replicas(&cluster).await.filter(|r| *r == 4)
        })
        .await?,
        4
    );

    cluster
        .mark_workers_ready("marketing", "clickstream")
        .await?;
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        "mp/clickstream",
        "-n",
        "marketing",
        "--timeout=30s",
    ])?;

    let listed = kubectl(&["get", "mp", "-n", "marketing"])?;
    let header: Vec<&str> = listed
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PHASE",
            "PARALLELISM",
            "LAG",
            "LAST",
            "CHECKPOINT",
            "AGE"
        ],
        "{listed}"
    );
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], ["clickstream", "Running", "4"], "{listed}");

    // Nothing the operator wrote (status, owned objects) shows up as drift of the Git source.
    let diff = tokio::task::block_in_place(|| {
        tools::run_raw(
            "kubectl",
            Some(&kubeconfig),
            &["diff", "--server-side", "-k", OVERLAY],
        )
    })?;
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff shows drift:\n{}\n{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    let scaled = kubectl(&["scale", "mp/clickstream", "-n", "marketing", "--replicas=6"])?;
    assert!(scaled.contains("scaled"), "{scaled}");
    eventually(WAIT, "six workers", || async {
        replicas(&cluster).await.filter(|r| *r == 6)
    })
    .await?;
    let parallelism = eventually(WAIT, "status.parallelism 6", || async {
        let out = kubectl(&[
            "get",
            "mp",
            "clickstream",
            "-n",
            "marketing",
            "-o",
            "jsonpath={.status.parallelism}",
        ])
        .ok()?;
        (out.trim() == "6").then_some(out)
    })
    .await?;
    assert_eq!(parallelism.trim(), "6");

    let explained = kubectl(&["explain", "mp.spec.parallelism"])?;
    assert!(
        explained.contains("Number of workers when autoscaling is disabled"),
        "{explained}"
    );
    Ok(())
}
