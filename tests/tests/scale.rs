//! Measurement: the real operator binary with 100 pipelines against the API emulator. Reports the
//! time until every pipeline has its StatefulSet, the mean reconcile time from the operator's own
//! histogram, and the operator's resident memory once settled.
//!
//! Ignored by default (it takes a while on a small machine); run it with
//! `cargo nextest run -p tidemark-e2e --run-ignored only -E 'binary(scale)' --no-capture`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::ListParams;
use kube::Api;
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::eventually;
use tidemark_e2e::operator::{Operator, Options};

const PIPELINES: usize = 100;

const PIPELINE: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata:
  name: NAME
spec:
  kafka: { bootstrapServers: "kafka:9092" }
  sources:
    - { name: clicks, kafka: { topic: click_topic } }
    - { name: purchases, kafka: { topic: purchase_topic } }
  analytics:
    - name: report
      join:
        left: clicks
        right: purchases
        window: { type: tumbling, size: 1h }
        aggregates:
          - { name: clicks, op: count, source: clicks }
          - { name: purchases, op: count, source: purchases }
  sinks: [{ name: out, kafka: { topic: reports } }]
  parallelism: 2
"#;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn one_hundred_pipelines_reconcile_and_the_operator_stays_small() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    eventually(Duration::from_secs(20), "operator up", || async {
        operator.http_get("/healthz").await.ok()
    })
    .await?;
    let idle_rss = operator.rss_kib().unwrap_or(0);

    // One at a time first: the reconcile time of a pipeline without contention.
    let statefulsets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "default");
    for i in 0..10 {
        let name = format!("solo{i}");
        cluster
            .apply_pipeline("default", &PIPELINE.replace("NAME", &name))
            .await?;
        eventually(Duration::from_secs(30), "its StatefulSet", || async {
            statefulsets.get_opt(&name).await.ok()?
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let text = operator.http_get("/metrics").await?;
    let solo_count = metric(&text, "tidemark_operator_reconcile_duration_seconds_count");
    let solo_sum = metric(&text, "tidemark_operator_reconcile_duration_seconds_sum");
    println!(
        "FIGURES solo: reconciles={solo_count} mean_reconcile_ms={:.1}",
        solo_sum / solo_count.max(1.0) * 1000.0
    );

    let started = Instant::now();
    for i in 0..PIPELINES {
        cluster
            .apply_pipeline("default", &PIPELINE.replace("NAME", &format!("p{i:03}")))
            .await?;
    }
    let applied = started.elapsed();
    eventually(Duration::from_secs(300), "every StatefulSet", || async {
        let n = statefulsets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len();
        (n == PIPELINES + 10).then_some(())
    })
    .await?;
    let all_built = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let text = operator.http_get("/metrics").await?;
    let count = metric(&text, "tidemark_operator_reconcile_duration_seconds_count") - solo_count;
    let sum = metric(&text, "tidemark_operator_reconcile_duration_seconds_sum") - solo_sum;
    let rss = operator.rss_kib().unwrap_or(0);
    println!(
        "FIGURES pipelines={PIPELINES} apply_all={applied:?} all_statefulsets={all_built:?} reconciles={count} \
         mean_reconcile_ms={:.1} rss_idle_mib={:.1} rss_100_pipelines_mib={:.1}",
        sum / count.max(1.0) * 1000.0,
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    assert!(
        rss < 256 * 1024,
        "operator RSS {rss} KiB with {PIPELINES} pipelines"
    );
    Ok(())
}
