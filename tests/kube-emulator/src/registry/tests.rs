//! Unit tests of registry semantics without HTTP.

use super::*;
use serde_json::json;

fn opts(manager: &str) -> WriteOptions {
    WriteOptions {
        dry_run: false,
        manager: manager.into(),
        force: false,
        strict: false,
    }
}

fn def(state: &State, group: &str, version: &str, plural: &str) -> ResourceDef {
    state
        .catalog
        .find(group, version, plural)
        .cloned()
        .expect("served resource")
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {
            "group": "example.dev", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 0, "default": 1}}},
                    "status": {"type": "object", "properties": {"size": {"type": "integer"}, "phase": {"type": "string"}}}
                }}}
            }]
        }
    })
}

fn with_widgets() -> (State, ResourceDef) {
    let mut state = State::default();
    let crds = def(
        &state,
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
    );
    let crd = state
        .create(&crds, None, widget_crd(), &opts("test"))
        .expect("crd created");
    assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
    let widgets = def(&state, "example.dev", "v1", "widgets");
    (state, widgets)
}

#[test]
fn creating_a_crd_serves_its_resource_with_defaults_applied() {
    let (mut state, widgets) = with_widgets();
    let w = state
        .create(
            &widgets,
            Some("default"),
            json!({"metadata": {"name": "w"}, "spec": {}, "status": {"phase": "x"}}),
            &opts("t"),
        )
        .expect("created");
    assert_eq!(w["spec"]["size"], 1, "default applied");
    assert_eq!(
        w.get("status"),
        None,
        "status is ignored on create with a status subresource"
    );
    assert_eq!(w["metadata"]["generation"], 1);
    assert_eq!(w["apiVersion"], "example.dev/v1");
}

#[test]
fn status_writes_do_not_bump_generation_and_spec_writes_do() {
    let (mut state, widgets) = with_widgets();
    let w = state
        .create(
            &widgets,
            Some("default"),
            json!({"metadata": {"name": "w"}, "spec": {"size": 1}}),
            &opts("t"),
        )
        .expect("created");
    let mut with_status = w.clone();
    with_status["status"] = json!({"phase": "Running"});
    with_status["spec"]["size"] = json!(7);
    let after = state
        .replace(
            &widgets,
            Some("default"),
            "w",
            with_status,
            Sub::Status,
            &opts("t"),
        )
        .expect("status");
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(after["spec"]["size"], 1, "spec untouched by /status");
    assert_eq!(after["metadata"]["generation"], 1);
    let scaled = state
        .patch(
            &widgets,
            Some("default"),
            "w",
            PatchKind::Merge,
            br#"{"spec":{"replicas":3}}"#,
            Sub::Scale,
            &opts("t"),
        )
        .expect("scale");
    assert_eq!(scaled["spec"]["replicas"], 3);
    let now = state.get(&widgets, Some("default"), "w").expect("get");
    assert_eq!(now["spec"]["size"], 3);
    assert_eq!(now["metadata"]["generation"], 2);
}

#[test]
fn a_stale_resource_version_conflicts() {
    let mut state = State::default();
    let cms = def(&state, "", "v1", "configmaps");
    let cm = state
        .create(
            &cms,
            Some("default"),
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
            &opts("t"),
        )
        .expect("created");
    let mut changed = cm.clone();
    changed["data"]["a"] = json!("2");
    state
        .replace(&cms, Some("default"), "c", changed, Sub::Main, &opts("t"))
        .expect("first update");
    let err = state
        .replace(&cms, Some("default"), "c", cm, Sub::Main, &opts("t"))
        .expect_err("stale");
    assert_eq!(err.code(), 409);
    assert_eq!(err.reason(), "Conflict");
}

#[test]
fn a_write_that_changes_nothing_keeps_the_resource_version_and_sends_no_event() {
    let mut state = State::default();
    let cms = def(&state, "", "v1", "configmaps");
    let cm = state
        .create(
            &cms,
            Some("default"),
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
            &opts("t"),
        )
        .expect("created");
    state.store.take_pending();
    let same = state
        .replace(
            &cms,
            Some("default"),
            "c",
            cm.clone(),
            Sub::Main,
            &opts("t"),
        )
        .expect("no-op update");
    assert_eq!(
        same["metadata"]["resourceVersion"],
        cm["metadata"]["resourceVersion"]
    );
    assert!(state.store.take_pending().is_empty(), "no watch event");
    // The same object again still carries a current resourceVersion.
    state
        .replace(&cms, Some("default"), "c", cm, Sub::Main, &opts("t"))
        .expect("still current");
}

#[test]
fn finalizers_delay_deletion_until_they_are_removed() {
    let mut state = State::default();
    let cms = def(&state, "", "v1", "configmaps");
    state
        .create(
            &cms,
            Some("default"),
            json!({"metadata": {"name": "c", "finalizers": ["x/y"]}}),
            &opts("t"),
        )
        .expect("created");
    let pending = state
        .delete(&cms, Some("default"), "c", &DeleteOptions::default())
        .expect("delete");
    assert!(pending.pointer("/metadata/deletionTimestamp").is_some());
    let released = state
        .patch(
            &cms,
            Some("default"),
            "c",
            PatchKind::Merge,
            br#"{"metadata":{"finalizers":null}}"#,
            Sub::Main,
            &opts("t"),
        )
        .expect("patch");
    assert_eq!(released["metadata"]["name"], "c");
    assert!(
        state.get(&cms, Some("default"), "c").is_err(),
        "gone once finalizers are empty"
    );
}

#[test]
fn dependents_are_garbage_collected_when_their_owner_goes() {
    let (mut state, widgets) = with_widgets();
    let w = state
        .create(
            &widgets,
            Some("default"),
            json!({"metadata": {"name": "w"}, "spec": {}}),
            &opts("t"),
        )
        .expect("owner");
    let owner_ref = json!([{"apiVersion": "example.dev/v1", "kind": "Widget", "name": "w", "uid": w["metadata"]["uid"]}]);
    let cms = def(&state, "", "v1", "configmaps");
    state
        .create(
            &cms,
            Some("default"),
            json!({"metadata": {"name": "child", "ownerReferences": owner_ref}}),
            &opts("t"),
        )
        .expect("child");
    state
        .create(
            &cms,
            Some("default"),
            json!({"metadata": {"name": "other"}}),
            &opts("t"),
        )
        .expect("unrelated");
    state
        .delete(&widgets, Some("default"), "w", &DeleteOptions::default())
        .expect("delete owner");
    assert!(state.get(&cms, Some("default"), "child").is_err());
    assert!(state.get(&cms, Some("default"), "other").is_ok());
}

#[test]
fn schema_violations_answer_422_with_every_field() {
    let (mut state, widgets) = with_widgets();
    let err = state
        .create(
            &widgets,
            Some("default"),
            json!({"metadata": {"name": "w"}, "spec": {"size": -1}}),
            &opts("t"),
        )
        .expect_err("invalid");
    assert_eq!(err.code(), 422);
    assert_eq!(
        err.to_string(),
        "Widget.example.dev \"w\" is invalid: spec.size: Invalid value: -1: spec.size in body should be greater than or equal to 0"
    );
}

#[test]
fn creating_in_a_missing_namespace_is_not_found() {
    let mut state = State::default();
    let cms = def(&state, "", "v1", "configmaps");
    let err = state
        .create(
            &cms,
            Some("nope"),
            json!({"metadata": {"name": "c"}}),
            &opts("t"),
        )
        .expect_err("no ns");
    assert_eq!(err.to_string(), "namespaces \"nope\" not found");
}

#[test]
fn deleting_a_namespace_deletes_its_contents() {
    let mut state = State::default();
    let nss = def(&state, "", "v1", "namespaces");
    let cms = def(&state, "", "v1", "configmaps");
    state
        .create(
            &nss,
            None,
            json!({"metadata": {"name": "team"}}),
            &opts("t"),
        )
        .expect("ns");
    state
        .create(
            &cms,
            Some("team"),
            json!({"metadata": {"name": "c"}}),
            &opts("t"),
        )
        .expect("cm");
    state
        .delete(&nss, None, "team", &DeleteOptions::default())
        .expect("delete ns");
    assert!(state.get(&cms, Some("team"), "c").is_err());
}

#[test]
fn strict_field_validation_rejects_unknown_fields_of_custom_resources() {
    let (mut state, widgets) = with_widgets();
    let strict = WriteOptions {
        strict: true,
        ..opts("t")
    };
    let err = state
        .create(
            &widgets,
            Some("default"),
            json!({"metadata": {"name": "w"}, "spec": {"colour": "red"}}),
            &strict,
        )
        .expect_err("unknown field");
    assert_eq!(err.code(), 400);
    assert_eq!(
        err.to_string(),
        "strict decoding error: unknown field \"spec.colour\""
    );
}

#[test]
fn an_event_note_over_1024_bytes_is_rejected_as_the_api_server_rejects_it() {
    let mut state = State::default();
    let events = def(&state, "events.k8s.io", "v1", "events");
    let event = |name: &str, note: String| {
        json!({"metadata": {"name": name}, "reason": "R", "action": "A", "note": note,
               "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "c",
               "reportingInstance": "i", "type": "Warning"})
    };
    state
        .create(
            &events,
            Some("default"),
            event("fits", "x".repeat(1024)),
            &opts("t"),
        )
        .expect("a 1024-byte note fits");
    let err = state
        .create(
            &events,
            Some("default"),
            event("long", "x".repeat(1025)),
            &opts("t"),
        )
        .expect_err("a 1025-byte note is too long");
    assert_eq!(err.code(), 422);
    assert_eq!(
        err.to_string(),
        "Event.events.k8s.io \"long\" is invalid: message: Invalid value: \"\": can have at most 1024 characters"
    );
}
