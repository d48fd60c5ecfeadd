//! Apply: writes the desired objects with server-side apply under one field manager, in order
//! (config before the workers that read it), then deletes orphans: objects labelled as owned by
//! this pipeline that the desired set no longer has (a PodDisruptionBudget after scaling to one
//! worker, a ServiceMonitor whose CRD went away is simply not listed).
//!
//! Idempotent: applying the same objects again changes nothing. Cancellation between calls
//! leaves a prefix applied, which the next reconcile completes.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::{owned_selector, service_monitor_resource, Desired};
use crate::call::{call, CallError};
use crate::names::FIELD_MANAGER;

/// What apply did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The StatefulSet as the API server returned it, status included.
    pub stateful_set: StatefulSet,
    /// Orphans deleted, as `Kind/name`.
    pub deleted: Vec<String>,
}

/// Failed to write an owned object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Server-side apply of one object failed.
    #[error("failed to apply {0}")]
    Apply(String, #[source] CallError),
    /// Listing or deleting orphans failed.
    #[error("failed to delete orphaned {0}")]
    Orphan(String, #[source] CallError),
}

impl ApplyError {
    /// Whether the API server refused the object itself (422/400): retrying the same object
    /// cannot succeed, only a spec change or a manual fix can.
    pub fn is_rejected(&self) -> bool {
        let (Self::Apply(_, err) | Self::Orphan(_, err)) = self;
        matches!(err.code(), Some(400 | 422))
    }
}

/// Applies `desired` into `namespace` and removes the orphans of pipeline `name` (owner `uid`).
pub async fn apply(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
    desired: &Desired,
) -> Result<Applied, ApplyError> {
    ssa(client, namespace, &desired.config_map).await?;
    ssa(client, namespace, &desired.headless_service).await?;
    ssa(client, namespace, &desired.metrics_service).await?;
    if let Some(policy) = &desired.network_policy {
        ssa(client, namespace, policy).await?;
    }
    let stateful_set = ssa(client, namespace, &desired.stateful_set).await?;
    if let Some(pdb) = &desired.pod_disruption_budget {
        ssa(client, namespace, pdb).await?;
    }
    let monitors = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &service_monitor_resource(),
    );
    if let Some(monitor) = &desired.service_monitor {
        let object_name = monitor.name_any();
        call(monitors.patch(&object_name, &params(), &Patch::Apply(monitor)))
            .await
            .map_err(|err| ApplyError::Apply(format!("ServiceMonitor/{object_name}"), err))?;
    }

    let mut deleted = Vec::new();
    let keep = |o: &Option<String>| o.iter().cloned().collect::<Vec<_>>();
    let services = [
        desired.headless_service.metadata.name.clone(),
        desired.metrics_service.metadata.name.clone(),
    ];
    delete_orphans::<ConfigMap>(
        client,
        namespace,
        name,
        uid,
        &keep(&desired.config_map.metadata.name),
        &mut deleted,
    )
    .await?;
    delete_orphans::<Service>(
        client,
        namespace,
        name,
        uid,
        &services.into_iter().flatten().collect::<Vec<_>>(),
        &mut deleted,
    )
    .await?;
    delete_orphans::<StatefulSet>(
        client,
        namespace,
        name,
        uid,
        &keep(&desired.stateful_set.metadata.name),
        &mut deleted,
    )
    .await?;
    let pdb_name = desired
        .pod_disruption_budget
        .as_ref()
        .and_then(|p| p.metadata.name.clone());
    delete_orphans::<PodDisruptionBudget>(
        client,
        namespace,
        name,
        uid,
        &keep(&pdb_name),
        &mut deleted,
    )
    .await?;
    let policy_name = desired
        .network_policy
        .as_ref()
        .and_then(|p| p.metadata.name.clone());
    delete_orphans::<NetworkPolicy>(
        client,
        namespace,
        name,
        uid,
        &keep(&policy_name),
        &mut deleted,
    )
    .await?;
    Ok(Applied {
        stateful_set,
        deleted,
    })
}

fn params() -> PatchParams {
    // Force: the operator owns these objects; a field another manager took is taken back.
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn ssa<K>(client: &Client, namespace: &str, object: &K) -> Result<K, ApplyError>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let object_name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    call(api.patch(&object_name, &params(), &Patch::Apply(object)))
        .await
        .map_err(|err| ApplyError::Apply(format!("{}/{object_name}", K::kind(&())), err))
}

/// Deletes objects of kind `K` labelled as owned by pipeline `name`, controlled by `uid`, whose
/// name is not in `keep`.
async fn delete_orphans<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
    keep: &[String],
    deleted: &mut Vec<String>,
) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = K::kind(&()).to_string();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let listed = call(api.list(&ListParams::default().labels(&owned_selector(name))))
        .await
        .map_err(|err| ApplyError::Orphan(kind.clone(), err))?;
    for object in listed.items {
        let object_name = object.name_any();
        let ours = object
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true));
        if !ours || keep.contains(&object_name) {
            continue;
        }
        match call(api.delete(&object_name, &DeleteParams::background())).await {
            Ok(_) => deleted.push(format!("{kind}/{object_name}")),
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(ApplyError::Orphan(format!("{kind}/{object_name}"), err)),
        }
    }
    Ok(())
}
