//! Watches: raw watch events, resourceVersion start points, 410 relists, kube-runtime watchers.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use tidemark_kube_emulator::Emulator;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("valid")
}

#[tokio::test]
async fn a_watch_from_a_resource_version_streams_later_changes_in_order() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let before = cms
        .create(&PostParams::default(), &cm("old"))
        .await
        .expect("create");
    let rv = before.metadata.resource_version.expect("rv");

    cms.create(&PostParams::default(), &cm("a"))
        .await
        .expect("create a");
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .expect("patch");
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");

    let stream = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .expect("watch");
    let events: Vec<String> = stream
        .take(3)
        .map_ok(|e| match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.unwrap_or_default()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.data.unwrap_or_default()["x"]),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.unwrap_or_default()),
            other => format!("{other:?}"),
        })
        .try_collect()
        .await
        .expect("events");
    assert_eq!(events, ["ADDED a", "MODIFIED 1", "DELETED a"]);
}

#[tokio::test]
async fn a_label_selector_watch_sees_objects_enter_and_leave_the_selection() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    cms.create(&PostParams::default(), &cm("a"))
        .await
        .expect("create");
    let rv = emulator.resource_version().to_string();
    let labelled = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"team": v}}}));
    cms.patch("a", &PatchParams::default(), &labelled(Some("x")))
        .await
        .expect("label");
    cms.patch("a", &PatchParams::default(), &labelled(None))
        .await
        .expect("unlabel");

    let stream = cms
        .watch(&WatchParams::default().labels("team=x").timeout(5), &rv)
        .await
        .expect("watch");
    let kinds: Vec<&str> = stream
        .take(2)
        .map_ok(|e| match e {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Deleted(_) => "DELETED",
            _ => "OTHER",
        })
        .try_collect()
        .await
        .expect("events");
    assert_eq!(kinds, ["ADDED", "DELETED"]);
}

#[tokio::test]
async fn a_runtime_watcher_lists_then_follows_changes() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    cms.create(&PostParams::default(), &cm("existing"))
        .await
        .expect("create");
    let mut objects =
        std::pin::pin!(watcher::watcher(cms.clone(), watcher::Config::default()).touched_objects());
    let first = tokio::time::timeout(Duration::from_secs(5), objects.next())
        .await
        .expect("in time")
        .expect("item")
        .expect("ok");
    assert_eq!(first.metadata.name.as_deref(), Some("existing"));
    cms.create(&PostParams::default(), &cm("new"))
        .await
        .expect("create new");
    let second = tokio::time::timeout(Duration::from_secs(5), objects.next())
        .await
        .expect("in time")
        .expect("item")
        .expect("ok");
    assert_eq!(second.metadata.name.as_deref(), Some("new"));
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_initial_events_then_changes() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    cms.create(&PostParams::default(), &cm("existing"))
        .await
        .expect("create");
    let config = watcher::Config::default().streaming_lists();
    let mut events = std::pin::pin!(watcher::watcher(cms.clone(), config));
    let mut seen = Vec::new();
    while !seen.contains(&"InitDone".to_string()) {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("in time")
            .expect("item")
            .expect("ok");
        seen.push(match event {
            watcher::Event::Init => "Init".to_string(),
            watcher::Event::InitApply(o) => {
                format!("InitApply {}", o.metadata.name.unwrap_or_default())
            }
            watcher::Event::InitDone => "InitDone".to_string(),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["Init", "InitApply existing", "InitDone"]);
    cms.create(&PostParams::default(), &cm("new"))
        .await
        .expect("create new");
    let next = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("in time")
        .expect("item")
        .expect("ok");
    assert!(matches!(next, watcher::Event::Apply(o) if o.metadata.name.as_deref() == Some("new")));
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_and_the_watcher_relists() {
    let options = tidemark_kube_emulator::Options {
        event_log_capacity: 3,
        ..Default::default()
    };
    let emulator = Emulator::start_with(options).await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    let first = cms
        .create(&PostParams::default(), &cm("c0"))
        .await
        .expect("create");
    for i in 1..6 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}")))
            .await
            .expect("create");
    }
    let old_rv = first.metadata.resource_version.expect("rv");
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .expect("watch")
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // kube-runtime recovers by relisting: it still sees every object.
    let mut objects =
        std::pin::pin!(watcher::watcher(cms.clone(), watcher::Config::default()).touched_objects());
    let mut names = Vec::new();
    while names.len() < 6 {
        let o = tokio::time::timeout(Duration::from_secs(5), objects.next())
            .await
            .expect("in time")
            .expect("item")
            .expect("ok");
        names.push(o.metadata.name.unwrap_or_default());
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5"]);
}
