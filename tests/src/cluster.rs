//! A test cluster: the API emulator with Tidemark's CRD installed, a kubeconfig file for child
//! processes, and the bits of a real cluster the emulator does not run (the StatefulSet
//! controller's status updates).

use std::path::PathBuf;

use anyhow::Context;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tidemark_api::MarketingPipeline;
use tidemark_kube_emulator::{Emulator, EmulatorHandle};

/// The emulator, its kubeconfig file and a client.
pub struct Cluster {
    /// The running emulator.
    pub emulator: EmulatorHandle,
    /// A client of it.
    pub client: Client,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts an emulator, installs the committed CRD and writes a kubeconfig.
    pub async fn start() -> anyhow::Result<Self> {
        let cluster = Self::start_without_crd().await?;
        let crd_yaml = std::fs::read_to_string(crate::repo_path(tidemark_operator::crd::CRD_FILE))?;
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(crd_yaml.split("\n---\n").nth(1).context("CRD document")?)?;
        Api::<CustomResourceDefinition>::all(cluster.client.clone())
            .create(&PostParams::default(), &crd)
            .await
            .context("failed to install the CRD")?;
        Ok(cluster)
    }

    /// Starts an emulator with namespace `default` and no CRD (for installing the chart).
    pub async fn start_without_crd() -> anyhow::Result<Self> {
        let emulator = Emulator::start()
            .await
            .context("failed to start the API emulator")?;
        let client = emulator.client();
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("kubeconfig"), emulator.kubeconfig_yaml())?;
        let cluster = Self {
            emulator,
            client,
            dir,
        };
        cluster.ensure_namespace("default").await?;
        Ok(cluster)
    }

    /// Path of a kubeconfig for the emulator.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Creates namespace `name` unless it exists.
    pub async fn ensure_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if api.get_opt(name).await?.is_none() {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            api.create(&PostParams::default(), &ns).await?;
        }
        Ok(())
    }

    /// The pipelines API of `namespace`.
    pub fn pipelines(&self, namespace: &str) -> Api<MarketingPipeline> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Applies a pipeline manifest (YAML) as a user would (`kubectl apply --server-side`).
    pub async fn apply_pipeline(
        &self,
        namespace: &str,
        yaml: &str,
    ) -> anyhow::Result<MarketingPipeline> {
        let value: serde_json::Value = serde_saphyr::from_str(yaml)?;
        let name = value["metadata"]["name"]
            .as_str()
            .context("metadata.name")?
            .to_owned();
        let params = PatchParams::apply("e2e-user").force();
        Ok(self
            .pipelines(namespace)
            .patch(&name, &params, &Patch::Apply(&value))
            .await?)
    }

    /// Plays the StatefulSet controller mid-rollout: of the `spec.replicas` pods of `name`,
    /// `updated` run the newest pod template (its revision named after the template's config
    /// hash, as a real controller names revisions after the template) and `ready` are ready. The
    /// rollout is complete (`currentRevision == updateRevision`) only when every pod is updated
    /// and ready, as the real controller reports it.
    pub async fn report_workers(
        &self,
        namespace: &str,
        name: &str,
        updated: i32,
        ready: i32,
    ) -> anyhow::Result<()> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let sts = api.get(name).await?;
        let replicas = sts.spec.replicas.unwrap_or(1);
        let hash = crate::fixtures::config_hash(&sts).unwrap_or_default();
        let update_revision = format!("{name}-{}", &hash[..hash.len().min(10)]);
        let current_revision = if updated >= replicas && ready >= replicas {
            update_revision.clone()
        } else {
            sts.status
                .as_ref()
                .and_then(|s| s.current_revision.clone())
                .filter(|r| *r != update_revision)
                .unwrap_or_else(|| format!("{name}-previous"))
        };
        let status = json!({ "status": {
            "observedGeneration": sts.metadata.generation,
            "replicas": replicas,
            "readyReplicas": ready.min(replicas),
            "availableReplicas": ready.min(replicas),
            "updatedReplicas": updated.min(replicas),
            "currentReplicas": replicas - updated.min(replicas),
            "currentRevision": current_revision,
            "updateRevision": update_revision,
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    /// Plays the StatefulSet controller and kubelet: reports every pod of `name` created, ready and
    /// on the newest revision.
    pub async fn mark_workers_ready(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let sts = api.get(name).await?;
        let replicas = sts.spec.replicas.unwrap_or(1);
        let status = json!({ "status": {
            "observedGeneration": sts.metadata.generation,
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "updatedReplicas": replicas,
            "currentReplicas": replicas,
            "currentRevision": format!("{name}-rev"),
            "updateRevision": format!("{name}-rev"),
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }
}
