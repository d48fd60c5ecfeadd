//! Two replicas of the real operator binary against one API emulator: exactly one leads.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::eventually;
use tidemark_e2e::operator::{Operator, Options};

const PIPELINE: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata:
  name: NAME
spec:
  sources: [{ name: events, generator: {} }]
  analytics:
    - name: per_user
      aggregate:
        sources: [events]
        window: { type: tumbling, size: 1m }
        aggregates: [{ name: events, op: count }]
  sinks: [{ name: out, stdout: {} }]
"#;

async fn holder(cluster: &Cluster) -> Option<String> {
    let lease = Api::<Lease>::namespaced(cluster.client.clone(), "default")
        .get_opt("tidemark-operator")
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn is_leader(operator: &Operator) -> bool {
    operator
        .http_get("/metrics")
        .await
        .is_ok_and(|m| m.lines().any(|l| l.trim() == "tidemark_operator_leader 1"))
}

async fn reconciled(cluster: &Cluster, name: &str) -> Option<StatefulSet> {
    Api::<StatefulSet>::namespaced(cluster.client.clone(), "default")
        .get_opt(name)
        .await
        .ok()?
}

#[tokio::test]
async fn of_two_replicas_one_leads_and_the_other_takes_over_when_it_stops() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let a = Operator::start(
        &cluster.kubeconfig(),
        &Options {
            identity: "operator-a".into(),
            ..Options::default()
        },
    )
    .await?;
    let first = eventually(Duration::from_secs(20), "a Lease holder", || {
        holder(&cluster)
    })
    .await?;
    assert_eq!(first, "operator-a");
    let b = Operator::start(
        &cluster.kubeconfig(),
        &Options {
            identity: "operator-b".into(),
            ..Options::default()
        },
    )
    .await?;
    eventually(
        Duration::from_secs(20),
        "operator-b serving metrics",
        || async {
            b.http_get("/healthz")
                .await
                .ok()
                .filter(|r| r.starts_with("HTTP/1.1 200"))
        },
    )
    .await?;

    cluster
        .apply_pipeline("default", &PIPELINE.replace("NAME", "one"))
        .await?;
    eventually(Duration::from_secs(20), "pipeline one reconciled", || {
        reconciled(&cluster, "one")
    })
    .await?;
    // Hold for more than a lease duration: the standby must not take over a renewed Lease.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(holder(&cluster).await.as_deref(), Some("operator-a"));
    assert!(is_leader(&a).await);
    assert!(!is_leader(&b).await, "the standby does not lead");
    assert!(tidemark_e2e::fixtures::reconciles(&a, "success").await? > 0);
    assert_eq!(
        tidemark_e2e::fixtures::reconciles(&b, "success").await?,
        0,
        "the standby does not reconcile"
    );

    // Graceful stop releases the Lease; the standby takes it without waiting for expiry.
    let status = a.terminate(Duration::from_secs(15)).await?;
    assert!(status.success());
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(20),
        "operator-b holding the Lease",
        || async { holder(&cluster).await.filter(|h| h == "operator-b") },
    )
    .await?;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    cluster
        .apply_pipeline("default", &PIPELINE.replace("NAME", "two"))
        .await?;
    eventually(
        Duration::from_secs(20),
        "pipeline two reconciled by the new leader",
        || reconciled(&cluster, "two"),
    )
    .await?;
    assert!(is_leader(&b).await);
    Ok(())
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_after_its_lease_expires() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let a = Operator::start(
        &cluster.kubeconfig(),
        &Options {
            identity: "operator-a".into(),
            ..Options::default()
        },
    )
    .await?;
    eventually(Duration::from_secs(20), "operator-a leading", || async {
        holder(&cluster).await.filter(|h| h == "operator-a")
    })
    .await?;
    let b = Operator::start(
        &cluster.kubeconfig(),
        &Options {
            identity: "operator-b".into(),
            ..Options::default()
        },
    )
    .await?;
    a.kill().await?;
    eventually(
        Duration::from_secs(30),
        "operator-b leading after the crash",
        || async { holder(&cluster).await.filter(|h| h == "operator-b") },
    )
    .await?;
    cluster
        .apply_pipeline("default", &PIPELINE.replace("NAME", "three"))
        .await?;
    eventually(
        Duration::from_secs(20),
        "pipeline reconciled by the new leader",
        || reconciled(&cluster, "three"),
    )
    .await?;
    assert!(is_leader(&b).await);
    Ok(())
}
