//! The real Prometheus server (Debian package, `.ci/tools/prometheus.sh`) scrapes the worker's
//! `/metrics` on a loopback port and answers a query with the worker's series and labels.
//!
//! Needs the `prometheus` binary (PATH or `PROMETHEUS_BIN`). Without it the test prints why and
//! passes, unless `TIDEMARK_REQUIRE_PROMETHEUS=1` makes a missing binary a failure.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tidemark_worker::checkpoint::CheckpointStore;
use tidemark_worker::http::{self, AppState, Health};
use tidemark_worker::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::timeout;

fn prometheus_bin() -> Option<String> {
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".to_owned());
    let works = std::process::Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    works.then_some(bin)
}

/// A free loopback port (bound, read, released: Prometheus binds it right after).
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// GET with `Connection: close`; `None` while nothing listens yet.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: prometheus\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.get(9..12)?.parse().ok()?, body.to_owned()))
}

#[tokio::test]
async fn prometheus_scrapes_the_worker_and_finds_its_series_with_the_pipeline_label() {
    let Some(bin) = prometheus_bin() else {
        assert!(
            std::env::var_os("TIDEMARK_REQUIRE_PROMETHEUS").is_none(),
            "prometheus not found; install it with .ci/tools/prometheus.sh"
        );
        eprintln!("skipped: no prometheus binary (install it with .ci/tools/prometheus.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new("quickstart").unwrap();
    metrics.records_out("reports", 5);
    let (stop, stopped) = watch::channel(false);
    let state = AppState {
        metrics,
        health: Arc::new(Health::new(http::DEFAULT_STALE_AFTER)),
        store: CheckpointStore::new(dir.path().join("checkpoints"), 3),
    };
    let (worker, server) = http::serve("127.0.0.1:0".parse().unwrap(), state, stopped)
        .await
        .unwrap();
    let server = tokio::spawn(server);

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n\
             scrape_configs:\n  - job_name: worker\n    static_configs:\n      \
             - targets: ['{worker}']\n"
        ),
    )
    .unwrap();
    let prometheus: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Poll the query API until a scrape has landed; each round is a few milliseconds of work.
    let query = "/api/v1/query?query=tidemark_records_out_total";
    let body = timeout(Duration::from_secs(60), async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if let Some((200, body)) = get(prometheus, query).await {
                if body.contains("\"result\":[{") {
                    return body;
                }
            }
        }
    })
    .await
    .expect("prometheus scraped nothing within 60 s");

    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sample = &reply["data"]["result"][0];
    assert_eq!(sample["metric"]["pipeline"], "quickstart", "{body}");
    assert_eq!(sample["metric"]["sink"], "reports");
    assert_eq!(sample["metric"]["job"], "worker");
    assert_eq!(sample["value"][1], "5");

    child.kill().await.unwrap();
    stop.send(true).unwrap();
    timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
