//! Shared inputs and probes of the operator scenarios.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use tidemark_api::MarketingPipeline;
use tidemark_operator::names::ANNOTATION_CONFIG_HASH;

use crate::cluster::Cluster;
use crate::operator::Operator;

/// How long a scenario waits for the operator.
pub const WAIT: Duration = Duration::from_secs(30);

/// A pipeline `clicks` with the built-in generator: no Kafka, no Secrets; two workers.
pub const PIPELINE: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata:
  name: clicks
spec:
  sources:
    - name: events
      generator: { rate: 100 }
  analytics:
    - name: per_user
      aggregate:
        sources: [events]
        keyBy: user
        window: { type: tumbling, size: 1m }
        aggregates: [{ name: events, op: count }]
  sinks:
    - name: out
      stdout: {}
  checkpoint: { storageSize: 2Gi, storageClassName: standard }
  parallelism: 2
"#;

/// Object `name` of kind `K` in namespace `default`, if it exists.
pub async fn get<K>(cluster: &Cluster, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(cluster.client.clone(), "default")
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// Status and reason of condition `type_`.
pub fn condition(p: &MarketingPipeline, type_: &str) -> Option<(String, String)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The config hash on the pod template.
pub fn config_hash(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(ANNOTATION_CONFIG_HASH)
        .cloned()
}

/// The operator's reconcile counter for `result`.
pub async fn reconciles(operator: &Operator, result: &str) -> anyhow::Result<u64> {
    let text = operator.http_get("/metrics").await?;
    let prefix = format!("tidemark_operator_reconciles_total{{result=\"{result}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&prefix));
    Ok(line
        .and_then(|l| l[prefix.len()..].trim().parse().ok())
        .unwrap_or(0))
}

/// Pipeline `clicks` in `default`.
pub async fn pipeline(cluster: &Cluster) -> Option<MarketingPipeline> {
    cluster
        .pipelines("default")
        .get_opt("clicks")
        .await
        .ok()
        .flatten()
}

/// Notes of the events of `reason` in `default`.
pub async fn events(cluster: &Cluster, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), "default");
    let Ok(list) = api.list(&kube::api::ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}
