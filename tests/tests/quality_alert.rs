//! `TidemarkInvalidShareHigh` end to end: the chart's PrometheusRule, rendered by the real
//! `helm`, is loaded into the real Prometheus (Debian package, `.ci/tools/prometheus.sh`), which
//! scrapes two real `tidemark` worker processes (`tidemark run --embedded`: the worker on an
//! in-process Kafka, with its real `/metrics`). One is fed 30 % duplicates, which it
//! dead-letters; the other 1 %. With the threshold at 10 % the alert fires for the first and
//! never for the second. The first worker also writes its data-quality report to a Kafka sink,
//! which it prints: the report's records reach the sink.
//!
//! Runs with `TIDEMARK_KUBECTL_TESTS=1` (helm from `.ci/tools/kube.sh`); needs the `prometheus`
//! binary and fails without it when `TIDEMARK_REQUIRE_PROMETHEUS=1` (`.ci/operator.sh`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tidemark_e2e::{eventually, prometheus, repo_path, tools};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const THRESHOLD: &str = "0.1";

fn manifest(name: &str) -> String {
    format!(
        r#"apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: {{ name: {name} }}
spec:
  kafka: {{ bootstrapServers: "unused:9092" }}
  sources:
    - name: clicks
      kafka: {{ topic: click_topic }}
      fields: {{ extra: [event_id] }}
  watermark: {{ maxOutOfOrderness: 10s }}
  dataQuality:
    deduplicate: {{ field: event_id, horizon: 10m }}
    report: {{ window: 10s, sink: quality }}
  analytics:
    - name: per_user
      aggregate:
        sources: [clicks]
        keyBy: user
        window: {{ type: tumbling, size: 1m }}
        aggregates: [{{ name: events, op: count }}]
  sinks:
    - name: out
      kafka: {{ topic: out_topic }}
    - name: quality
      kafka: {{ topic: quality_topic }}
"#
    )
}

/// The `tidemark` binary, built into this test's target directory.
fn worker_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test executable path")?;
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .unwrap_or("debug")
        .to_owned();
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args([
        "build",
        "--quiet",
        "-p",
        "tidemark-worker",
        "--bin",
        "tidemark",
    ]);
    cargo
        .arg("--target-dir")
        .arg(profile_dir.parent().context("no target directory")?);
    if profile != "debug" {
        cargo.args(["--profile", &profile]);
    }
    anyhow::ensure!(
        cargo.status()?.success(),
        "cargo build -p tidemark-worker failed"
    );
    Ok(profile_dir.join("tidemark"))
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Starts a worker of pipeline `name` whose generator repeats `duplicates` of its records.
fn start_worker(
    bin: &Path,
    dir: &Path,
    name: &str,
    duplicates: &str,
) -> anyhow::Result<(Child, SocketAddr)> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest(name))?;
    let addr = free_addr()?;
    let child = Command::new(bin)
        .args(["run", "--embedded", "--quiet", "--partitions", "1"])
        .arg("-f")
        .arg(&file)
        .args([
            "--rate",
            "400",
            "--out-of-order",
            "0",
            "--duplicates",
            duplicates,
        ])
        .arg(format!("--http-addr={addr}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start tidemark")?;
    Ok((child, addr))
}

/// GET with `Connection: close`; `None` while nothing listens yet.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.get(9..12)?.parse().ok()?, body.to_owned()))
}

/// The PrometheusRule's groups, rendered by helm with a fast rate window and `for`, as a
/// Prometheus rules file (JSON is YAML).
fn rules_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let text = tools::run(
        "helm",
        None,
        &[
            "template",
            "tidemark",
            "charts/tidemark",
            "--namespace",
            "tidemark-system",
            "--set=prometheusRules.enabled=true",
            &format!("--set-json=prometheusRules.invalidShareThreshold={THRESHOLD}"),
            "--set=prometheusRules.invalidShareWindow=5s",
            "--set=prometheusRules.invalidShareFor=2s",
        ],
    )?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).context("rendered YAML parses")?;
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .context("no PrometheusRule rendered")?;
    let file = dir.join("rules.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({ "groups": rule["spec"]["groups"] }))?,
    )?;
    Ok(file)
}

/// The alerts named TidemarkInvalidShareHigh: (pipeline, source, state).
async fn invalid_share_alerts(prometheus: SocketAddr) -> Option<Vec<(String, String, String)>> {
    let (code, body) = get(prometheus, "/api/v1/alerts").await?;
    let reply: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    let alerts = reply["data"]["alerts"].as_array()?;
    Some(
        alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == "TidemarkInvalidShareHigh")
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_owned();
                (
                    label("pipeline"),
                    label("source"),
                    a["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

/// The invalid share of pipeline `pipeline` as Prometheus computes it (the alert's ratio).
async fn share(prometheus: SocketAddr, pipeline: &str) -> Option<f64> {
    let q = format!(
        "sum(rate(tidemark_dead_letter_total{{pipeline=\"{pipeline}\"}}[5s])) / \
         sum(rate(tidemark_records_in_total{{pipeline=\"{pipeline}\"}}[5s]))"
    );
    let encoded: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (_, body) = get(prometheus, &format!("/api/v1/query?query={encoded}")).await?;
    let reply: Value = serde_json::from_str(&body).ok()?;
    reply["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_share_alert_fires_above_the_threshold_and_not_below() -> anyhow::Result<()> {
    if !tools::enabled() {
        eprintln!("skipped: set TIDEMARK_KUBECTL_TESTS=1 (helm from .ci/tools/kube.sh)");
        return Ok(());
    }
    let Some(prometheus_bin) = prometheus::binary()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let rules = rules_file(dir.path())?;
    // The real promtool (same package) accepts the rendered rules, when it is there.
    let promtool = Path::new(&prometheus_bin).with_file_name("promtool");
    let promtool = if promtool.is_file() {
        promtool
    } else {
        PathBuf::from("promtool")
    };
    if let Ok(out) = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        anyhow::ensure!(
            out.status.success(),
            "promtool check rules: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let bin = worker_binary()?;
    let (mut high, high_addr) = start_worker(&bin, dir.path(), "dq-high", "0.3")?;
    let (_low, low_addr) = start_worker(&bin, dir.path(), "dq-low", "0.01")?;

    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 500ms\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: workers\n    static_configs:\n      \
             - targets: ['{high_addr}', '{low_addr}']\n",
            rules.display()
        ),
    )?;
    let prometheus = free_addr()?;
    let _server = Command::new(&prometheus_bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus}"))
        .current_dir(repo_path("."))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start prometheus")?;

    // Above the threshold: the alert reaches `firing` for the source of dq-high.
    let firing = eventually(Duration::from_secs(120), "the alert to fire", || async {
        let alerts = invalid_share_alerts(prometheus).await?;
        alerts
            .iter()
            .any(|(p, s, state)| p == "dq-high" && s == "clicks" && state == "firing")
            .then_some(alerts)
    })
    .await?;
    assert!(
        firing.iter().all(|(p, _, _)| p == "dq-high"),
        "only dq-high alerts: {firing:?}"
    );
    // Below it: dq-low has a share (it is scraped and computed, more than 0, under 10 %) and
    // no alert, pending or firing, over several evaluations more.
    let low_share = eventually(Duration::from_secs(30), "dq-low's share", || async {
        share(prometheus, "dq-low").await.filter(|s| *s > 0.0)
    })
    .await?;
    assert!(
        low_share < 0.1,
        "dq-low's share {low_share} is under the threshold"
    );
    let high_share = share(prometheus, "dq-high").await.unwrap_or_default();
    assert!(high_share > 0.1, "dq-high's share {high_share}");
    for _ in 0..10 {
        let alerts = invalid_share_alerts(prometheus)
            .await
            .context("alerts API")?;
        assert!(
            alerts.iter().all(|(p, _, _)| p != "dq-low"),
            "no alert for dq-low: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The data-quality report reached its Kafka sink (the worker prints its sink topics).
    let stdout = high.stdout.take().context("worker stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let report = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("\"report\":\"quality\"") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!("the worker's output ended without a report record")
    })
    .await
    .context("no report record within 60 s")??;
    let start = report.find('{').context("a JSON value")?;
    let value: Value = serde_json::from_str(&report[start..])?;
    assert_eq!(value["pipeline"], "dq-high");
    assert_eq!(value["source"], "clicks");
    let records_in = value["records_in"].as_u64().context("records_in")?;
    let valid = value["valid"]["count"].as_u64().context("valid")?;
    let duplicates = value["reasons"]["duplicate"]["count"]
        .as_u64()
        .context("duplicates")?;
    assert!(
        records_in > 0 && valid + duplicates <= records_in,
        "{value}"
    );
    let _ = get(high_addr, "/metrics").await;
    Ok(())
}
