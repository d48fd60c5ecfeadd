//! The real operator binary against the API emulator: what depends on the cluster around it —
//! the ServiceMonitor API, the watched namespaces, and the CRD's own validation rules.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use serde_json::json;
use std::time::Duration;
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::eventually;
use tidemark_e2e::fixtures::*;
use tidemark_e2e::operator::{Operator, Options};

#[tokio::test]
async fn a_service_monitor_is_created_when_its_crd_exists() -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let cluster = Cluster::start().await?;
    // A minimal stand-in for the Prometheus Operator's CRD.
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "servicemonitors.monitoring.coreos.com" },
        "spec": {
            "group": "monitoring.coreos.com",
            "names": { "kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor", "listKind": "ServiceMonitorList" },
            "scope": "Namespaced",
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "properties": {
                    "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } } } }]
        }
    }))?;
    Api::<CustomResourceDefinition>::all(cluster.client.clone())
        .create(&Default::default(), &crd)
        .await?;
    let _operator = Operator::start(&cluster.kubeconfig(), &Options::default()).await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    let resource = tidemark_operator::build::service_monitor_resource();
    let monitors: Api<kube::api::DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), "default", &resource);
    let monitor = eventually(WAIT, "the ServiceMonitor", || async {
        monitors.get_opt("clicks-metrics").await.ok()?
    })
    .await?;
    assert_eq!(
        monitor.data["spec"]["endpoints"][0]["relabelings"][0]["replacement"],
        "clicks"
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_limited_to_a_namespace_ignores_pipelines_elsewhere() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    cluster.ensure_namespace("shop").await?;
    let options = Options {
        namespaces: vec!["shop".into()],
        ..Options::default()
    };
    let _operator = Operator::start(&cluster.kubeconfig(), &options).await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    cluster.apply_pipeline("shop", PIPELINE).await?;
    let shop: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "shop");
    eventually(WAIT, "the StatefulSet in shop", || async {
        shop.get_opt("clicks").await.ok()?
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get::<StatefulSet>(&cluster, "clicks").await.is_none(),
        "default is not watched"
    );
    assert!(pipeline(&cluster).await.and_then(|p| p.status).is_none());
    Ok(())
}

#[tokio::test]
async fn the_api_server_rejects_specs_that_break_the_crd_rules() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let cases = [
        (
            PIPELINE.replace(
                "parallelism: 2",
                "parallelism: 2\n  autoscaling: { minParallelism: 5, maxParallelism: 2 }",
            ),
            "minParallelism must not exceed maxParallelism",
        ),
        (
            PIPELINE.replace(
                "{ type: tumbling, size: 1m }",
                "{ type: sliding, size: 1m, slide: 5m }",
            ),
            "slide must not exceed size",
        ),
        (
            PIPELINE.replace(
                "generator: { rate: 100 }",
                "generator: {}\n      file: { path: x }",
            ),
            "exactly one of",
        ),
        (
            PIPELINE.replace("parallelism: 2", "parallelism: 0"),
            "parallelism",
        ),
    ];
    for (yaml, expected) in cases {
        let err = cluster
            .apply_pipeline("default", &yaml)
            .await
            .expect_err("rejected");
        let text = format!("{err:#}");
        assert!(text.contains(expected), "expected {expected:?} in {text}");
    }
    assert!(pipeline(&cluster).await.is_none());
    Ok(())
}
