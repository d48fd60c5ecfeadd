//! The snapshot hand-off's protection, as the real operator binary sets it up against the API
//! emulator: a per-pipeline Secret with a random bearer token (owned by the pipeline, mounted
//! into the workers, a new one when the pipeline is re-created) and a NetworkPolicy admitting
//! port 9102 only from the pipeline's own workers and the configured scrape namespaces.
//!
//! That a worker without the token gets 401 and one with it gets the snapshot is tested against
//! real worker HTTP servers in `worker/src/handoff/tests.rs` (the emulator runs no pods).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams};
use kube::Api;
use tidemark_e2e::cluster::Cluster;
use tidemark_e2e::eventually;
use tidemark_e2e::fixtures::*;
use tidemark_e2e::operator::{Operator, Options};

/// The hand-off Secret of pipeline `clicks`, if there is one, with its owner uid and token.
async fn handoff_secret(cluster: &Cluster) -> Option<(String, String, String)> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    let list = api.list(&ListParams::default()).await.ok()?;
    let secret = list.items.into_iter().find(|s| {
        s.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("clicks-handoff-"))
    })?;
    let owner = secret.metadata.owner_references.as_ref()?.first()?.clone();
    let token = String::from_utf8(secret.data.as_ref()?.get("token")?.0.clone()).ok()?;
    Some((secret.metadata.name?, owner.uid, token))
}

#[tokio::test]
async fn each_pipeline_gets_an_owned_token_secret_mounted_into_its_workers_and_a_network_policy(
) -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let _operator = Operator::start(
        &cluster.kubeconfig(),
        &Options {
            scrape_namespaces: vec!["monitoring".into()],
            ..Options::default()
        },
    )
    .await?;
    let created = cluster.apply_pipeline("default", PIPELINE).await?;
    let uid = created.metadata.uid.clone().unwrap_or_default();

    let (name, owner, token) =
        eventually(WAIT, "the hand-off Secret", || handoff_secret(&cluster)).await?;
    assert_eq!(owner, uid, "owned by the pipeline");
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));

    let sts: StatefulSet = eventually(WAIT, "the StatefulSet", || get(&cluster, "clicks")).await?;
    let pod = sts.spec.template.spec.expect("pod spec");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(name.as_str()))
        .expect("the token Secret is a volume");
    let container = &pod.containers[0];
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("mounted");
    assert_eq!(mount.read_only, Some(true));
    let env = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "TIDEMARK_HANDOFF_TOKEN_FILE");
    assert_eq!(
        env.and_then(|e| e.value.clone()),
        Some(format!("{}/token", mount.mount_path))
    );

    let policy: NetworkPolicy = eventually(WAIT, "the NetworkPolicy", || {
        get(&cluster, "clicks-workers")
    })
    .await?;
    let owner = &policy.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (uid.as_str(), Some(true))
    );
    let spec = serde_json::to_value(policy.spec.expect("spec"))?;
    assert_eq!(spec["ingress"][0]["ports"][0]["port"], 9102);
    assert_eq!(
        spec["ingress"][0]["from"][1]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["monitoring"])
    );

    // Deleting the pipeline takes its Secret along; a re-created pipeline gets a new token.
    cluster
        .pipelines("default")
        .delete("clicks", &DeleteParams::background())
        .await?;
    eventually(WAIT, "the old Secret collected", || async {
        handoff_secret(&cluster).await.is_none().then_some(())
    })
    .await?;
    cluster.apply_pipeline("default", PIPELINE).await?;
    let (_, new_owner, new_token) = eventually(WAIT, "a new hand-off Secret", || async {
        handoff_secret(&cluster).await.filter(|(_, o, _)| *o != uid)
    })
    .await?;
    assert_ne!(new_token, token, "a new pipeline, a new token");
    assert_ne!(new_owner, uid);
    Ok(())
}
