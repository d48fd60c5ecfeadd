//! Fault injection: the API server going away for a while.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, WatchParams};
use tidemark_kube_emulator::Emulator;

use crate::common::status;

#[tokio::test]
async fn an_unavailable_api_answers_503_closes_watches_and_recovers() {
    let emulator = Emulator::start().await.expect("start");
    let mut config = emulator.config();
    config.default_retry = false; // see the raw 503 instead of kube's retries
    let cms: Api<ConfigMap> =
        Api::default_namespaced(kube::Client::try_from(config).expect("client"));
    let mut watch = cms
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();

    emulator.set_unavailable(true);
    let err = status(cms.list(&ListParams::default()).await.expect_err("down"));
    assert_eq!(err.code, 503);
    assert_eq!(err.reason, "ServiceUnavailable");
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("watch ends promptly");
    assert!(ended.is_none(), "open watch closed: {ended:?}");

    emulator.set_unavailable(false);
    assert!(cms.list(&ListParams::default()).await.is_ok());
}

#[tokio::test]
async fn the_default_client_retries_through_a_short_outage() {
    let emulator = Emulator::start().await.expect("start");
    let cms: Api<ConfigMap> = Api::default_namespaced(emulator.client());
    emulator.set_unavailable(true);
    let request = tokio::spawn(async move {
        cms.list(&ListParams::default())
            .await
            .map(|l| l.items.len())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    emulator.set_unavailable(false);
    let listed = request
        .await
        .expect("task")
        .expect("succeeds after the outage");
    assert_eq!(listed, 0);
}
