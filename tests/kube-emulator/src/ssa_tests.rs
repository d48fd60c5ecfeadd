//! Unit tests of server-side apply ownership rules.

use super::*;
use serde_json::json;

fn writer(manager: &str) -> Writer<'_> {
    Writer {
        manager,
        subresource: "",
        api_version: "v1",
        now: "2024-01-01T00:00:00Z",
    }
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

#[test]
fn second_manager_setting_a_different_value_conflicts_unless_forced() {
    let policy = ListPolicy::default();
    let mut entries = Vec::new();
    let live = apply(
        None,
        &cm(json!({"a": "1"})),
        &mut entries,
        &writer("alice"),
        false,
        &policy,
    )
    .expect("create");
    let err = apply(
        Some(&live),
        &cm(json!({"a": "2"})),
        &mut entries,
        &writer("bob"),
        false,
        &policy,
    )
    .expect_err("conflict");
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .data.a"
    );

    let forced = apply(
        Some(&live),
        &cm(json!({"a": "2"})),
        &mut entries,
        &writer("bob"),
        true,
        &policy,
    )
    .expect("forced");
    assert_eq!(forced["data"]["a"], "2");
    let owners: Vec<&str> = entries.iter().map(|e| e.manager.as_str()).collect();
    assert_eq!(owners, ["bob"], "alice lost her only field");
}

#[test]
fn same_value_from_two_managers_is_shared_not_a_conflict() {
    let policy = ListPolicy::default();
    let mut entries = Vec::new();
    let live = apply(
        None,
        &cm(json!({"a": "1"})),
        &mut entries,
        &writer("alice"),
        false,
        &policy,
    )
    .expect("create");
    apply(
        Some(&live),
        &cm(json!({"a": "1"})),
        &mut entries,
        &writer("bob"),
        false,
        &policy,
    )
    .expect("no conflict for an equal value");
    assert_eq!(entries.len(), 2);
}

#[test]
fn a_field_the_manager_stops_applying_is_removed() {
    let policy = ListPolicy::default();
    let mut entries = Vec::new();
    let live = apply(
        None,
        &cm(json!({"a": "1", "b": "2"})),
        &mut entries,
        &writer("m"),
        false,
        &policy,
    )
    .expect("create");
    let next = apply(
        Some(&live),
        &cm(json!({"a": "1"})),
        &mut entries,
        &writer("m"),
        false,
        &policy,
    )
    .expect("apply");
    assert_eq!(next["data"], json!({"a": "1"}));
}

#[test]
fn a_dropped_field_someone_else_owns_stays() {
    let policy = ListPolicy::default();
    let mut entries = Vec::new();
    let live = apply(
        None,
        &cm(json!({"a": "1", "b": "2"})),
        &mut entries,
        &writer("m"),
        false,
        &policy,
    )
    .expect("create");
    let live = apply(
        Some(&live),
        &cm(json!({"b": "2"})),
        &mut entries,
        &writer("other"),
        false,
        &policy,
    )
    .expect("shared");
    let next = apply(
        Some(&live),
        &cm(json!({"a": "1"})),
        &mut entries,
        &writer("m"),
        false,
        &policy,
    )
    .expect("apply");
    assert_eq!(next["data"], json!({"a": "1", "b": "2"}));
}

#[test]
fn an_update_takes_ownership_of_the_fields_it_changes() {
    let policy = ListPolicy::default();
    let mut entries = Vec::new();
    let live = apply(
        None,
        &cm(json!({"a": "1"})),
        &mut entries,
        &writer("applier"),
        false,
        &policy,
    )
    .expect("create");
    let edited = cm(json!({"a": "changed"}));
    record_update(
        Some(&live),
        &edited,
        &mut entries,
        &writer("kubectl-edit"),
        &policy,
    );
    let owners: Vec<(&str, Operation)> = entries
        .iter()
        .map(|e| (e.manager.as_str(), e.operation))
        .collect();
    assert_eq!(owners, [("kubectl-edit", Operation::Update)]);
}

#[test]
fn containers_merge_by_name() {
    let policy = ListPolicy::default();
    let mut live =
        json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
    merge(
        &mut live,
        &json!({"spec": {"containers": [{"name": "b", "image": "2"}]}}),
        &mut Vec::new(),
        &policy,
    );
    assert_eq!(
        live,
        json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}})
    );
}

#[test]
fn managed_fields_round_trip_through_the_object() {
    let policy = ListPolicy::default();
    let mut entries = Vec::new();
    let mut live = apply(
        None,
        &cm(json!({"a": "1"})),
        &mut entries,
        &writer("m"),
        false,
        &policy,
    )
    .expect("create");
    write_managed(&mut live, &entries);
    assert_eq!(
        live["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(read_managed(&live), entries);
}

#[test]
fn a_manager_does_not_conflict_with_its_own_earlier_update() {
    let policy = ListPolicy::default();
    let mut entries = Vec::new();
    let created = cm(json!({"a": "1"}));
    record_update(None, &created, &mut entries, &writer("operator"), &policy);
    let applied = apply(
        Some(&created),
        &cm(json!({"a": "2"})),
        &mut entries,
        &writer("operator"),
        false,
        &policy,
    )
    .expect("no conflict with itself");
    assert_eq!(applied["data"]["a"], "2");
}
