//! Custom resources: discovery, schema and CEL validation, subresources, tables, garbage collection.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{json, Value};

use crate::common::{status, widget, with_widgets};

#[tokio::test]
async fn an_applied_crd_appears_in_discovery_with_its_short_names_and_subresources() {
    let (_emulator, client, _) = with_widgets().await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let group = discovery.get("test.tidemark.dev").expect("group served");
    let (resource, caps) = group
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.kind == "Widget")
        .expect("Widget served");
    assert_eq!(resource.plural, "widgets");
    let subresources: Vec<_> = caps
        .subresources
        .iter()
        .map(|(r, _)| r.plural.clone())
        .collect();
    assert!(
        subresources.contains(&"status".to_string()) && subresources.contains(&"scale".to_string()),
        "{subresources:?}"
    );
    let raw: Value = client
        .request(
            axum::http::Request::get("/apis/test.tidemark.dev/v1")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("resource list");
    assert_eq!(raw["resources"][0]["shortNames"], json!(["wd"]));
}

#[tokio::test]
async fn schema_violations_and_failed_cel_rules_are_rejected_with_every_reason() {
    let (_emulator, _client, widgets) = with_widgets().await;
    let bad = widget(
        "bad",
        json!({"topic": "Not Valid", "replicas": -1, "minReplicas": 5, "maxReplicas": 2, "mode": "turbo"}),
    );
    let err = status(
        widgets
            .create(&PostParams::default(), &bad)
            .await
            .expect_err("invalid"),
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert_eq!(
        err.message,
        "Widget.test.tidemark.dev \"bad\" is invalid: [\
         spec.mode: Unsupported value: \"turbo\": supported values: \"fast\", \"safe\", \
         spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0, \
         spec.topic: Invalid value: \"Not Valid\": spec.topic in body should match '^[a-z_]+$', \
         spec: Invalid value: \"object\": minReplicas must not exceed maxReplicas]"
    );
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_defaults_applied() {
    let (_emulator, _client, widgets) = with_widgets().await;
    let created = widgets
        .create(
            &PostParams::default(),
            &widget("w", json!({"topic": "clicks", "surprise": true})),
        )
        .await
        .expect("create");
    assert_eq!(
        created.data["spec"],
        json!({"topic": "clicks", "replicas": 1, "minReplicas": 1, "maxReplicas": 10, "mode": "safe"})
    );
    assert_eq!(created.metadata.generation, Some(1));
}

#[tokio::test]
async fn the_status_subresource_changes_only_status_and_the_main_endpoint_only_spec() {
    let (_emulator, _client, widgets) = with_widgets().await;
    widgets
        .create(
            &PostParams::default(),
            &widget("w", json!({"topic": "clicks"})),
        )
        .await
        .expect("create");
    let pp = PatchParams::default();
    let both = Patch::Merge(json!({"spec": {"replicas": 4}, "status": {"phase": "Running"}}));

    let after_status = widgets
        .patch_status("w", &pp, &both)
        .await
        .expect("status patch");
    assert_eq!(after_status.data["status"]["phase"], "Running");
    assert_eq!(
        after_status.data["spec"]["replicas"], 1,
        "spec ignored by /status"
    );
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status writes keep generation"
    );

    let main = Patch::Merge(json!({"spec": {"replicas": 4}, "status": {"phase": "Hacked"}}));
    let after_main = widgets.patch("w", &pp, &main).await.expect("main patch");
    assert_eq!(
        after_main.data["status"]["phase"], "Running",
        "status ignored by the main endpoint"
    );
    assert_eq!(after_main.data["spec"]["replicas"], 4);
    assert_eq!(
        after_main.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );
}

#[tokio::test]
async fn the_scale_subresource_maps_replicas_and_selector() {
    let (_emulator, client, widgets) = with_widgets().await;
    widgets
        .create(
            &PostParams::default(),
            &widget("w", json!({"topic": "clicks", "replicas": 2})),
        )
        .await
        .expect("create");
    let status = Patch::Merge(json!({"status": {"replicas": 2, "selector": "app=w"}}));
    widgets
        .patch_status("w", &PatchParams::default(), &status)
        .await
        .expect("status");

    let scale = widgets.get_scale("w").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(scale.status.as_ref().map(|s| s.replicas), Some(2));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app=w")
    );

    let patched = widgets
        .patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale");
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(5));
    assert_eq!(
        widgets.get("w").await.expect("get").data["spec"]["replicas"],
        5
    );

    let statefulsets: Api<StatefulSet> = Api::default_namespaced(client);
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "s"},
        "spec": {"replicas": 1, "serviceName": "s", "selector": {"matchLabels": {"app": "s"}},
                 "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    })).expect("valid");
    statefulsets
        .create(&PostParams::default(), &sts)
        .await
        .expect("sts");
    let mut scale = statefulsets.get_scale("s").await.expect("sts scale");
    assert_eq!(
        scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .as_deref(),
        Some("app=s")
    );
    scale.spec.get_or_insert_with(Default::default).replicas = Some(3);
    statefulsets
        .replace_scale("s", &PostParams::default(), &scale)
        .await
        .expect("replace scale");
    assert_eq!(
        statefulsets.get("s").await.expect("get").spec.replicas,
        Some(3)
    );
}

#[tokio::test]
async fn tables_show_the_printer_columns_when_asked() {
    let (_emulator, client, widgets) = with_widgets().await;
    widgets
        .create(
            &PostParams::default(),
            &widget("w", json!({"topic": "clicks", "replicas": 3})),
        )
        .await
        .expect("create");
    let ready = Patch::Merge(
        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    widgets
        .patch_status("w", &PatchParams::default(), &ready)
        .await
        .expect("status");

    let request = axum::http::Request::get("/apis/test.tidemark.dev/v1/namespaces/default/widgets")
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .expect("request");
    let table: Value = client.request(request).await.expect("table");
    assert_eq!(table["kind"], "Table");
    let headers: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(headers, ["Name", "Phase", "Replicas", "Ready", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(
        cells.as_array().expect("cells")[..4],
        json!(["w", "Running", 3, "True"])
            .as_array()
            .expect("array")[..]
    );
    assert!(
        cells[4].as_str().is_some_and(|age| age.ends_with('s')),
        "{cells}"
    );

    let plain = widgets
        .list(&Default::default())
        .await
        .expect("plain json without the Accept header");
    assert_eq!(plain.items.len(), 1);
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_what_it_owns() {
    let (_emulator, client, widgets) = with_widgets().await;
    let owner = widgets
        .create(
            &PostParams::default(),
            &widget("w", json!({"topic": "clicks"})),
        )
        .await
        .expect("owner");
    let owner_ref = json!([{"apiVersion": "test.tidemark.dev/v1", "kind": "Widget", "name": "w",
        "uid": owner.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    for name in ["owned-1", "owned-2"] {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": name, "ownerReferences": owner_ref}}),
        )
        .expect("valid");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("owned");
    }
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "free"}})).expect("valid"),
    )
    .await
    .expect("free");

    widgets
        .delete("w", &DeleteParams::background())
        .await
        .expect("delete owner");
    let left: Vec<_> = cms
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["free"]);
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_and_drops_their_owner_reference() {
    let (_emulator, client, widgets) = with_widgets().await;
    let owner = widgets
        .create(
            &PostParams::default(),
            &widget("w", json!({"topic": "clicks"})),
        )
        .await
        .expect("owner");
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kept", "ownerReferences": [
        {"apiVersion": "test.tidemark.dev/v1", "kind": "Widget", "name": "w", "uid": owner.metadata.uid}
    ]}})).expect("valid");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("owned");
    widgets
        .delete("w", &DeleteParams::orphan())
        .await
        .expect("delete");
    let kept = cms.get("kept").await.expect("dependent kept");
    assert!(kept.metadata.owner_references.is_none());
}
