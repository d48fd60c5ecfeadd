//! The real Prometheus server (Debian package, `.ci/tools/prometheus.sh`) on a loopback port,
//! scraping stand-ins for worker pods.
//!
//! The API emulator runs no pods, so a worker's `/metrics` is played by an [`Exporter`]: it
//! serves the series the autoscaler reads (names from `tidemark_api::metrics`, the ones the
//! worker exports) with values that follow a load the test sets — counters and lag integrate
//! their rates over time, as a worker's would. Everything between the exporter and the operator
//! is real: Prometheus scrapes, stores and answers PromQL; the operator queries its HTTP API.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tidemark_api::metrics::{
    BUSY_RATIO, CHECKPOINT_CORRUPT_TOTAL, CHECKPOINT_FAILURES_TOTAL,
    CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS, PIPELINE_TASKS, RECORDS_IN_TOTAL, SOURCE_LAG,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// The `prometheus` binary (`$PROMETHEUS_BIN` or on `PATH`), if it runs. Without it a test
/// should skip, unless `TIDEMARK_REQUIRE_PROMETHEUS` is set (CI), which makes it fail.
pub fn binary() -> anyhow::Result<Option<String>> {
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".to_owned());
    let works = std::process::Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(Some(bin));
    }
    anyhow::ensure!(
        std::env::var_os("TIDEMARK_REQUIRE_PROMETHEUS").is_none(),
        "prometheus not found; install it with .ci/tools/prometheus.sh"
    );
    eprintln!("skipped: no prometheus binary (install it with .ci/tools/prometheus.sh)");
    Ok(None)
}

/// A Prometheus server; killed when dropped.
pub struct Prometheus {
    _child: Child,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

/// A scrape target: its address and the target labels Kubernetes service discovery would give
/// a worker pod (`namespace`, `pod`).
#[derive(Clone, Debug)]
pub struct Target {
    /// Address of its `/metrics`.
    pub addr: SocketAddr,
    /// Namespace label.
    pub namespace: String,
    /// Pod label.
    pub pod: String,
}

impl Prometheus {
    /// Starts `bin` scraping `targets` every 500 ms and waits until its API answers.
    pub async fn start(bin: &str, targets: &[Target]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n  \
             evaluation_interval: 500ms\nscrape_configs:\n  - job_name: tidemark-workers\n    \
             static_configs:\n",
        );
        for t in targets {
            config.push_str(&format!(
                "      - targets: ['{}']\n        labels: {{ namespace: '{}', pod: '{}' }}\n",
                t.addr, t.namespace, t.pod
            ));
        }
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start prometheus")?;
        let prometheus = Self {
            _child: child,
            _dir: dir,
            addr,
        };
        crate::eventually(Duration::from_secs(60), "Prometheus to answer", || async {
            http_get(addr, "/-/ready")
                .await
                .filter(|(code, _)| *code == 200)
        })
        .await?;
        Ok(prometheus)
    }

    /// Base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until instant query `promql` returns at least one series.
    pub async fn wait_for_series(&self, promql: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        crate::eventually(
            Duration::from_secs(60),
            &format!("Prometheus to hold {promql}"),
            || async {
                http_get(self.addr, &path)
                    .await
                    .filter(|(code, body)| *code == 200 && body.contains("\"result\":[{"))
            },
        )
        .await
        .map(drop)
    }
}

/// The load a stand-in worker reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// Records per second it takes.
    pub rate: f64,
    /// Busy ratio, 0..1.
    pub busy: f64,
    /// Records per second its partitions' lag grows (negative: shrinks, down to 0).
    pub lag_growth: f64,
}

struct State {
    load: Load,
    records_in: f64,
    lag: f64,
    at: Instant,
    checkpoint_failures: u64,
    corrupt_checkpoints: u64,
}

/// A stand-in for one worker pod's `/metrics` of pipeline `pipeline` with `tasks` tasks; serves
/// until dropped.
pub struct Exporter {
    /// Address of its `/metrics`.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Starts serving on a loopback port; `partition` labels this worker's lag series, and
    /// `checkpoint` is its last checkpoint time (Unix seconds).
    pub async fn start(
        pipeline: &str,
        tasks: u32,
        partition: u32,
        checkpoint: f64,
        load: Load,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            load,
            records_in: 0.0,
            lag: 0.0,
            at: Instant::now(),
            checkpoint_failures: 0,
            corrupt_checkpoints: 0,
        }));
        let shared = state.clone();
        let pipeline = pipeline.to_owned();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = {
                    let mut s = shared
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    advance(&mut s);
                    format!(
                        "# TYPE {RECORDS_IN_TOTAL} counter\n\
                         {RECORDS_IN_TOTAL}{{pipeline=\"{pipeline}\",source=\"events\"}} {}\n\
                         # TYPE {SOURCE_LAG} gauge\n\
                         {SOURCE_LAG}{{pipeline=\"{pipeline}\",source=\"events\",partition=\"{partition}\"}} {}\n\
                         # TYPE {BUSY_RATIO} gauge\n\
                         {BUSY_RATIO}{{pipeline=\"{pipeline}\"}} {}\n\
                         # TYPE {PIPELINE_TASKS} gauge\n\
                         {PIPELINE_TASKS}{{pipeline=\"{pipeline}\"}} {tasks}\n\
                         # TYPE {CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS} gauge\n\
                         {CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS}{{pipeline=\"{pipeline}\"}} {checkpoint}\n\
                         # TYPE {CHECKPOINT_FAILURES_TOTAL} counter\n\
                         {CHECKPOINT_FAILURES_TOTAL}{{pipeline=\"{pipeline}\"}} {}\n\
                         # TYPE {CHECKPOINT_CORRUPT_TOTAL} counter\n\
                         {CHECKPOINT_CORRUPT_TOTAL}{{pipeline=\"{pipeline}\"}} {}\n",
                        s.records_in.floor(),
                        s.lag.floor(),
                        s.load.busy,
                        s.checkpoint_failures,
                        s.corrupt_checkpoints,
                    )
                };
                tokio::spawn(async move {
                    let mut request = [0u8; 2048];
                    let _ = stream.read(&mut request).await;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// Reports `load` from now on.
    pub fn set_load(&self, load: Load) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        advance(&mut s);
        s.load = load;
    }

    /// Counts `failures` more failed checkpoint writes and `corrupt` more corrupt checkpoints
    /// found at restore.
    pub fn checkpoint_trouble(&self, failures: u64, corrupt: u64) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.checkpoint_failures += failures;
        s.corrupt_checkpoints += corrupt;
    }

    /// The lag it reports now.
    pub fn lag(&self) -> f64 {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        advance(&mut s);
        s.lag
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn advance(s: &mut State) {
    let dt = s.at.elapsed().as_secs_f64();
    s.at = Instant::now();
    s.records_in += s.load.rate * dt;
    s.lag = (s.lag + s.load.lag_growth * dt).max(0.0);
}

/// GET with `Connection: close`: status code and body; `None` while nothing answers.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: prometheus\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.get(9..12)?.parse().ok()?, body.to_owned()))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
