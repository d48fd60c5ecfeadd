//! Dereference: the reconcile's reads of the cluster, done before anything is decided, so that
//! the steps after it are pure. It reads the current StatefulSet (to tell a creation from a
//! config change) and whether the ServiceMonitor API exists. No Secrets are read: the operator
//! has no access to them (docs/design.md, security); the workers mount them.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{Api, Client, ResourceExt};
use tidemark_api::MarketingPipeline;

use crate::call::{call, call_opt, CallError};
use crate::names::{workload_name, ANNOTATION_CONFIG_HASH};
use crate::rescale::{Assignment, ANNOTATION_ASSIGNMENT};
use crate::status::Workers;

/// API group and version of the Prometheus Operator's ServiceMonitor.
const MONITORING_GROUP_VERSION: &str = "monitoring.coreos.com/v1";

/// What the cluster holds for one pipeline.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The pipeline's StatefulSet, if it exists.
    pub stateful_set: Option<StatefulSet>,
    /// Whether the API server serves `monitoring.coreos.com/v1` ServiceMonitors.
    pub service_monitor_api: bool,
}

impl Observed {
    /// The config hash on the existing pod template.
    pub fn config_hash(&self) -> Option<&str> {
        let template = self
            .stateful_set
            .as_ref()?
            .spec
            .template
            .metadata
            .as_ref()?;
        template
            .annotations
            .as_ref()?
            .get(ANNOTATION_CONFIG_HASH)
            .map(String::as_str)
    }

    /// The assignment the existing StatefulSet records (`crate::rescale`).
    pub fn assignment(&self) -> Option<Assignment> {
        let annotations = self.stateful_set.as_ref()?.metadata.annotations.as_ref()?;
        Assignment::from_annotation(annotations.get(ANNOTATION_ASSIGNMENT)?)
    }

    /// Whether the existing StatefulSet runs `replicas` pods of the template with `config_hash`,
    /// every one ready on it and the rollout finished: a hand-off step is done.
    pub fn runs_ready(&self, config_hash: &str, replicas: i32) -> bool {
        let Some(sts) = &self.stateful_set else {
            return false;
        };
        let workers = Workers::from_stateful_set(sts);
        self.config_hash() == Some(config_hash)
            && sts.spec.replicas == Some(replicas)
            && workers.rolled_out
            && workers.replicas == replicas
            && workers.ready >= replicas
            && workers.updated >= replicas
    }
}

/// Failed to read the cluster.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    /// The pipeline has no namespace.
    #[error("failed to read owned objects: pipeline has no namespace")]
    NoNamespace,
    /// Reading the StatefulSet failed.
    #[error("failed to read StatefulSet {0}")]
    StatefulSet(String, #[source] CallError),
    /// API discovery failed for another reason than the group being absent.
    #[error("failed to discover {MONITORING_GROUP_VERSION}")]
    Discovery(#[source] CallError),
}

/// Reads what the reconcile of `pipeline` needs. Read-only and idempotent.
pub async fn dereference(
    client: &Client,
    pipeline: &MarketingPipeline,
) -> Result<Observed, DereferenceError> {
    let namespace = pipeline.namespace().ok_or(DereferenceError::NoNamespace)?;
    let name = workload_name(&pipeline.name_any());
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let stateful_set = call_opt(api.get(&name))
        .await
        .map_err(|err| DereferenceError::StatefulSet(name, err))?;
    let service_monitor_api = service_monitor_api(client).await?;
    Ok(Observed {
        stateful_set,
        service_monitor_api,
    })
}

/// Whether ServiceMonitors are served. A 404 (group absent) is an answer, not an error.
pub async fn service_monitor_api(client: &Client) -> Result<bool, DereferenceError> {
    match call(client.list_api_group_resources(MONITORING_GROUP_VERSION)).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.kind == "ServiceMonitor")),
        Err(err) if err.is_not_found() => Ok(false),
        Err(err) => Err(DereferenceError::Discovery(err)),
    }
}
