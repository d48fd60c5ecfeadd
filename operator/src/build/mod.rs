//! Build: the Kubernetes objects a pipeline should own, as pure functions of the pipeline and the
//! decisions of earlier steps. One file per kind; nothing here reads or writes the cluster.
//!
//! Every object carries the worker labels and a controller owner reference to the pipeline, so
//! the garbage collector removes it with the pipeline and [`crate::apply`] can find orphans by
//! label.

mod config_map;
mod network_policy;
mod pod_disruption_budget;
mod secret;
mod service;
mod service_monitor;
mod stateful_set;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use tidemark_api::MarketingPipeline;

pub use config_map::{config_hash, config_map, pipeline_manifest, runtime_yaml};
pub use network_policy::network_policy;
pub use pod_disruption_budget::pod_disruption_budget;
pub use secret::handoff_secret;
pub use service::{headless_service, metrics_service};
pub use service_monitor::{service_monitor, service_monitor_resource};
pub use stateful_set::stateful_set;

use crate::names::*;
use crate::rescale::Assignment;

/// What earlier steps decided, the rest of the build input besides the pipeline itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildParams {
    /// Image when the pipeline does not set `spec.worker.image`.
    pub default_image: String,
    /// Number of workers in effect (`status.parallelism`).
    pub parallelism: i32,
    /// Assignment epoch of task ownership.
    pub assignment_epoch: i64,
    /// The last rescale's hand-off, if any (`crate::rescale`).
    pub handoff: Option<tidemark_api::HandoffStatus>,
    /// Whether the ServiceMonitor CRD exists (and the operator may create ServiceMonitors).
    pub service_monitor: bool,
    /// Whether to build the workers' NetworkPolicy.
    pub network_policy: bool,
    /// Namespaces whose pods may reach the workers' port (Prometheus scraping).
    pub scrape_namespaces: Vec<String>,
}

impl BuildParams {
    /// The assignment these parameters describe.
    pub fn assignment(&self) -> Assignment {
        Assignment {
            epoch: self.assignment_epoch,
            parallelism: self.parallelism,
            handoff: self.handoff.clone(),
        }
    }
}

/// Every object a pipeline owns, in the order they are applied.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Worker configuration.
    pub config_map: ConfigMap,
    /// Headless Service giving each worker a DNS name (snapshot hand-off).
    pub headless_service: Service,
    /// ClusterIP Service of the workers' metrics port.
    pub metrics_service: Service,
    /// The workers.
    pub stateful_set: StatefulSet,
    /// At most one worker down at a time, when there is more than one.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// Prometheus Operator scrape config, when that CRD exists.
    pub service_monitor: Option<DynamicObject>,
    /// The workers' NetworkPolicy, unless turned off.
    pub network_policy: Option<NetworkPolicy>,
}

/// Failed to build the owned objects.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The pipeline has no name, namespace or uid (it did not come from an API server).
    #[error("failed to build owned objects: pipeline metadata lacks {0}")]
    MissingMetadata(&'static str),
    /// The pipeline manifest could not be written for the worker.
    #[error("failed to serialize the pipeline manifest")]
    Manifest(#[source] serde_saphyr::SerializeError),
}

/// Builds every object `pipeline` owns. Deterministic: the same input gives byte-identical
/// objects, so re-applying them is a no-op and the config hash only moves with the config.
pub fn desired(pipeline: &MarketingPipeline, params: &BuildParams) -> Result<Desired, BuildError> {
    let context = Context::new(pipeline)?;
    let config_map = config_map(&context, pipeline, params)?;
    let hash = config_hash(&config_map);
    Ok(Desired {
        headless_service: headless_service(&context),
        metrics_service: metrics_service(&context),
        stateful_set: stateful_set(&context, pipeline, params, &hash),
        pod_disruption_budget: (params.assignment().replicas() > 1)
            .then(|| pod_disruption_budget(&context)),
        service_monitor: params.service_monitor.then(|| service_monitor(&context)),
        network_policy: params
            .network_policy
            .then(|| network_policy(&context, &params.scrape_namespaces)),
        config_map,
    })
}

/// The parts of the pipeline every builder needs.
#[derive(Clone, Debug)]
pub struct Context {
    /// Pipeline name.
    pub name: String,
    /// Pipeline namespace.
    pub namespace: String,
    /// Controller owner reference to the pipeline.
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
}

impl Context {
    /// Reads name, namespace and owner reference from the pipeline.
    pub fn new(pipeline: &MarketingPipeline) -> Result<Self, BuildError> {
        let name = pipeline
            .metadata
            .name
            .clone()
            .ok_or(BuildError::MissingMetadata("name"))?;
        let namespace = pipeline
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let mut owner = pipeline
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        owner.block_owner_deletion = Some(true);
        Ok(Self {
            name,
            namespace,
            owner,
        })
    }

    /// The pipeline's uid.
    pub fn uid(&self) -> &str {
        &self.owner.uid
    }

    /// Labels of every owned object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
        labels.insert(LABEL_PIPELINE.into(), self.name.clone());
        labels
    }

    /// Labels that select the worker pods (immutable once a StatefulSet exists).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        selector_labels(&self.name)
    }

    /// Metadata of an owned object called `name`.
    pub fn metadata(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Labels that select the worker pods of pipeline `name`.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), WORKER_APP_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), name.to_owned()),
    ])
}

/// The label selector string of the worker pods (`status.selector`, scale subresource).
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Label selector of every object the operator owns for pipeline `name` (orphan search).
pub fn owned_selector(name: &str) -> String {
    format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME},{LABEL_PIPELINE}={name}")
}

#[cfg(test)]
pub(crate) mod fixtures;
