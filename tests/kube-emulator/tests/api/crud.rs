//! Create, read, list, update, delete semantics of built-in kinds.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tidemark_kube_emulator::Emulator;

use crate::common::status;

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .expect("valid")
}

#[tokio::test]
async fn created_objects_get_server_metadata_and_can_be_listed_by_label() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let a = cms
        .create(
            &PostParams::default(),
            &config_map("a", json!({"app": "x"})),
        )
        .await
        .expect("create a");
    cms.create(
        &PostParams::default(),
        &config_map("b", json!({"app": "y"})),
    )
    .await
    .expect("create b");

    let meta = &a.metadata;
    assert!(
        meta.uid.as_deref().is_some_and(|u| u.len() == 36),
        "uid: {:?}",
        meta.uid
    );
    assert!(meta.creation_timestamp.is_some());
    let rv: u64 = meta
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("integer rv");
    assert!(rv > 0);

    let selected = cms
        .list(&ListParams::default().labels("app=x"))
        .await
        .expect("list");
    let names: Vec<_> = selected
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["a"]);
    let by_field = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(by_field.items.len(), 1);
    let list_rv: u64 = selected
        .metadata
        .resource_version
        .expect("list rv")
        .parse()
        .expect("integer");
    assert!(list_rv > rv);
}

#[tokio::test]
async fn creating_an_existing_name_answers_already_exists_and_a_missing_one_not_found() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    cms.create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .expect("create");
    let err = status(
        cms.create(&PostParams::default(), &config_map("a", json!({})))
            .await
            .expect_err("dup"),
    );
    assert!(err.is_already_exists());
    assert_eq!(err.code, 409);
    let missing = status(cms.get("nope").await.expect_err("missing"));
    assert!(missing.is_not_found());
    assert_eq!(missing.message, "configmaps \"nope\" not found");
}

#[tokio::test]
async fn replacing_with_a_stale_resource_version_answers_conflict() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let first = cms
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .expect("create");
    let mut updated = first.clone();
    updated.data = Some([("k".to_string(), "new".to_string())].into());
    cms.replace("a", &PostParams::default(), &updated)
        .await
        .expect("first writer wins");
    let err = status(
        cms.replace("a", &PostParams::default(), &first)
            .await
            .expect_err("stale"),
    );
    assert!(err.is_conflict());
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn two_lease_holders_racing_on_the_same_version_let_exactly_one_win() {
    let emulator = Emulator::start().await.expect("start");
    let leases: Api<Lease> = Api::default_namespaced(emulator.client());
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "nobody"}}),
    )
    .expect("valid");
    let base = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let claim = |who: &str| {
        let mut l = base.clone();
        l.spec.get_or_insert_with(Default::default).holder_identity = Some(who.to_string());
        l
    };
    let (claim_a, claim_b, pp) = (
        claim("replica-a"),
        claim("replica-b"),
        PostParams::default(),
    );
    let (a, b) = tokio::join!(
        leases.replace("leader", &pp, &claim_a),
        leases.replace("leader", &pp, &claim_b)
    );
    assert!(
        a.is_ok() ^ b.is_ok(),
        "exactly one claim succeeds: {a:?} / {b:?}"
    );
    let holder = leases
        .get("leader")
        .await
        .expect("get")
        .spec
        .and_then(|s| s.holder_identity);
    let winner = if a.is_ok() { "replica-a" } else { "replica-b" };
    assert_eq!(holder.as_deref(), Some(winner));
}

#[tokio::test]
async fn finalizers_keep_a_deleted_object_until_they_are_removed() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let mut cm = config_map("a", json!({}));
    cm.metadata.finalizers = Some(vec!["tidemark.dev/cleanup".into()]);
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let pending = cms
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = pending
        .left()
        .expect("the object is returned while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(cms.get("a").await.is_ok(), "still there");
    let clear = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    cms.patch("a", &PatchParams::default(), &clear)
        .await
        .expect("remove finalizer");
    assert!(
        cms.get_opt("a").await.expect("get").is_none(),
        "deleted once finalizers are gone"
    );
}

#[tokio::test]
async fn dry_run_validates_but_stores_nothing() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let created = cms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &config_map("a", json!({})),
        )
        .await
        .expect("dry run");
    assert_eq!(created.metadata.name.as_deref(), Some("a"));
    assert!(cms.get_opt("a").await.expect("get").is_none());
}

#[tokio::test]
async fn generate_name_creates_unique_names() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let template: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).expect("valid");
    let a = cms
        .create(&PostParams::default(), &template)
        .await
        .expect("a")
        .metadata
        .name
        .expect("name");
    let b = cms
        .create(&PostParams::default(), &template)
        .await
        .expect("b")
        .metadata
        .name
        .expect("name");
    assert!(a.starts_with("job-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn a_client_built_from_the_kubeconfig_reaches_the_emulator() {
    let emulator = Emulator::start().await.expect("start");
    let kubeconfig = Kubeconfig::from_yaml(&emulator.kubeconfig_yaml()).expect("parse kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<_> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
}
