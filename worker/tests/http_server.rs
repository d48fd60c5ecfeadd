//! The worker's HTTP endpoint on a real loopback socket (port 0): probes, metrics, the snapshot
//! hand-off and graceful shutdown. No sleeps: every wait is a poll or a read under a timeout.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tidemark_worker::checkpoint::{Checkpoint, CheckpointStore, Metadata};
use tidemark_worker::http::{self, AppState, Health};
use tidemark_worker::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Metrics,
    store: CheckpointStore,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), http::HttpError>>,
    _dir: tempfile::TempDir,
}

async fn start(stale_after: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3);
    let health = Arc::new(Health::new(stale_after));
    let metrics = Metrics::new("quickstart").unwrap();
    let (stop, stopped) = watch::channel(false);
    let state = AppState {
        metrics: metrics.clone(),
        health: health.clone(),
        store: store.clone(),
    };
    let (addr, server) = http::serve("127.0.0.1:0".parse().unwrap(), state, stopped)
        .await
        .unwrap();
    Server {
        addr,
        health,
        metrics,
        store,
        stop,
        task: tokio::spawn(server),
        _dir: dir,
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 GET with `Connection: close`; the body is everything after the headers.
async fn get(addr: SocketAddr, path: &str) -> Reply {
    timeout(LIMIT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let headers = String::from_utf8(raw[..split].to_vec()).unwrap();
        let status = headers[9..12].parse().unwrap();
        Reply {
            status,
            headers: headers.to_ascii_lowercase(),
            body: raw[split + 4..].to_vec(),
        }
    })
    .await
    .expect("request timed out")
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test]
async fn healthz_answers_200_while_the_loop_beats_and_503_once_it_is_stale() {
    let fresh = start(Duration::from_secs(60)).await;
    fresh.health.beat();
    assert_eq!(get(fresh.addr, "/healthz").await.status, 200);

    let stale = start(Duration::from_millis(1)).await;
    // The heartbeat ages without sleeping in the test: poll until it is older than 1 ms.
    let reply = timeout(LIMIT, async {
        loop {
            let reply = get(stale.addr, "/healthz").await;
            if reply.status != 200 {
                return reply;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        text(&reply).contains("worker loop silent"),
        "{}",
        text(&reply)
    );
}

#[tokio::test]
async fn readyz_says_why_until_the_worker_is_restored_and_consuming() {
    let server = start(Duration::from_secs(60)).await;
    let reply = get(server.addr, "/readyz").await;
    assert_eq!((reply.status, text(&reply).trim()), (503, "starting"));
    server.health.set_not_ready("restoring task 3");
    assert_eq!(
        text(&get(server.addr, "/readyz").await).trim(),
        "restoring task 3"
    );
    server.health.set_ready();
    assert_eq!(get(server.addr, "/readyz").await.status, 200);
}

#[tokio::test]
async fn metrics_are_served_in_the_text_format_with_the_pipeline_label() {
    let server = start(Duration::from_secs(60)).await;
    server.metrics.records_out("reports", 5);
    server.metrics.checkpoint_failed();
    let reply = get(server.addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .headers
        .contains("content-type: text/plain; version=0.0.4"));
    let body = text(&reply);
    // The registry appends its constant `pipeline` label after the metric's own labels.
    assert!(
        body.contains(r#"tidemark_records_out_total{sink="reports",pipeline="quickstart"} 5"#),
        "{body}"
    );
    assert!(body.contains(r#"tidemark_checkpoint_failures_total{pipeline="quickstart"} 1"#));
}

#[tokio::test]
async fn a_released_task_serves_its_newest_valid_checkpoint_byte_for_byte() {
    let server = start(Duration::from_secs(60)).await;
    let state: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for id in 1..=2 {
        let meta = Metadata {
            task: 5,
            checkpoint_id: id,
            epoch: 9,
            ..Metadata::default()
        };
        server.store.write(&meta, &state).unwrap();
    }
    let reply = get(server.addr, "/v1/tasks/5/snapshot").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers.contains("x-tidemark-checkpoint-id: 2"),
        "{}",
        reply.headers
    );
    assert!(reply.headers.contains("x-tidemark-epoch: 9"));
    let fetched = Checkpoint::decode(reply.body).unwrap();
    assert_eq!(fetched.meta.checkpoint_id, 2);
    assert!(fetched.state() == state.as_slice());
}

#[tokio::test]
async fn a_task_still_running_here_refuses_its_snapshot_with_409() {
    let server = start(Duration::from_secs(60)).await;
    let meta = Metadata {
        task: 1,
        checkpoint_id: 1,
        ..Metadata::default()
    };
    server.store.write(&meta, b"state").unwrap();
    server.health.claim(1);
    assert_eq!(get(server.addr, "/v1/tasks/1/snapshot").await.status, 409);
    server.health.release(1);
    assert_eq!(get(server.addr, "/v1/tasks/1/snapshot").await.status, 200);
}

#[tokio::test]
async fn a_task_without_a_checkpoint_is_404_and_a_bad_task_id_is_400() {
    let server = start(Duration::from_secs(60)).await;
    assert_eq!(get(server.addr, "/v1/tasks/7/snapshot").await.status, 404);
    assert_eq!(
        get(server.addr, "/v1/tasks/seven/snapshot").await.status,
        400
    );
}

#[tokio::test]
async fn the_server_stops_gracefully_when_shutdown_is_signalled() {
    let server = start(Duration::from_secs(60)).await;
    assert_eq!(get(server.addr, "/healthz").await.status, 200);
    server.stop.send(true).unwrap();
    timeout(LIMIT, server.task).await.unwrap().unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn a_corrupt_newest_checkpoint_is_not_served_and_the_previous_one_is() {
    let server = start(Duration::from_secs(60)).await;
    for id in 1..=2 {
        let meta = Metadata {
            task: 2,
            checkpoint_id: id,
            ..Metadata::default()
        };
        server.store.write(&meta, &[id as u8; 1000]).unwrap();
    }
    let newest = server.store.list(2).unwrap()[0].path.clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[500] ^= 1;
    std::fs::write(&newest, bytes).unwrap();

    let reply = get(server.addr, "/v1/tasks/2/snapshot").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers.contains("x-tidemark-checkpoint-id: 1"),
        "{}",
        reply.headers
    );
    assert_eq!(Checkpoint::decode(reply.body).unwrap().state(), [1u8; 1000]);
}
