//! Server-side apply through kube's `Patch::Apply`.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tidemark_kube_emulator::Emulator;

use crate::common::{status, widget, with_widgets};

fn applied(data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": data})
}

#[tokio::test]
async fn apply_creates_records_its_manager_and_removes_fields_it_stops_applying() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let pp = PatchParams::apply("tidemark-operator");
    let created = cms
        .patch(
            "cfg",
            &pp,
            &Patch::Apply(applied(json!({"a": "1", "b": "2"}))),
        )
        .await
        .expect("create by apply");
    let managed = created.metadata.managed_fields.expect("managedFields");
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("tidemark-operator"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    assert_eq!(
        managed[0].fields_v1.as_ref().map(|f| f.0.clone()),
        Some(json!({"f:data": {"f:a": {}, "f:b": {}}}))
    );

    let next = cms
        .patch("cfg", &pp, &Patch::Apply(applied(json!({"a": "1"}))))
        .await
        .expect("re-apply");
    assert_eq!(next.data, Some([("a".to_string(), "1".to_string())].into()));
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_unless_forced() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    cms.patch(
        "cfg",
        &PatchParams::apply("operator"),
        &Patch::Apply(applied(json!({"a": "1"}))),
    )
    .await
    .expect("create");

    let err = status(
        cms.patch(
            "cfg",
            &PatchParams::apply("intruder"),
            &Patch::Apply(applied(json!({"a": "2"}))),
        )
        .await
        .expect_err("conflict"),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"operator\": .data.a"
    );

    let forced = cms
        .patch(
            "cfg",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(applied(json!({"a": "2"}))),
        )
        .await
        .expect("forced");
    assert_eq!(
        forced.data.and_then(|d| d.get("a").cloned()).as_deref(),
        Some("2")
    );
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["intruder"]);
}

#[tokio::test]
async fn applying_status_through_the_subresource_is_tracked_separately() {
    let (_emulator, _client, widgets) = with_widgets().await;
    let pp = PatchParams::apply("operator");
    let desired = json!({"apiVersion": "test.tidemark.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"topic": "clicks"}});
    widgets
        .patch("w", &pp, &Patch::Apply(&desired))
        .await
        .expect("apply spec");
    let status_patch = json!({"apiVersion": "test.tidemark.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"phase": "Running"}});
    let after = widgets
        .patch_status("w", &pp, &Patch::Apply(&status_patch))
        .await
        .expect("apply status");
    assert_eq!(after.data["status"]["phase"], "Running");
    assert_eq!(after.data["spec"]["topic"], "clicks", "spec untouched");
    let subresources: Vec<_> = after
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.subresource.unwrap_or_default())
        .collect();
    assert_eq!(subresources, ["", "status"]);
    let _ = widget;
}
