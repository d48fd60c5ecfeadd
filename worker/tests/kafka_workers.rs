//! Worker processes over TCP against a Kafka that outlives them (`tidemark-mock-kafka`): the
//! quickstart's report topic is compared with an answer computed independently from the events
//! produced, with two workers sharing four partitions, and again after one worker is killed with
//! SIGKILL mid-stream and restarted from its checkpoints.
//!
//! The mock cluster commits transactions but writes no transaction markers (see
//! `kafka_sink.rs`), so these tests prove the at-least-once path end to end; exactly-once
//! visibility needs a real broker.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_support::*;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;
use tidemark_api::GeneratorSpec;
use tidemark_worker::source::generator::Generator;

const HOUR: i64 = 3_600_000;
const PARTITIONS: i32 = 4;

fn start_mock() -> (Child, String) {
    start_mock_binary(&[
        "click_topic:4",
        "purchase_topic:4",
        "marketing_report_topic:1",
        "tidemark_dead_letter:1",
    ])
}

fn write_manifest(dir: &Path, bootstrap: &str) -> std::path::PathBuf {
    let text = include_str!("../../examples/quickstart.yaml")
        .replace(
            "bootstrapServers: kafka:9092",
            &format!("bootstrapServers: \"{bootstrap}\""),
        )
        .replace("delivery: exactlyOnce", "delivery: atLeastOnce")
        .replace("interval: 10s", "interval: 500ms");
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn worker(manifest: &Path, ordinal: u32, dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "-q", "-f", manifest.to_str().unwrap()])
        .args([
            "--ordinal",
            &ordinal.to_string(),
            "--parallelism",
            "2",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--checkpoint-dir")
        .arg(dir.join(format!("worker-{ordinal}")))
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Generated events as (topic, key, value); then one far-future event per partition of each
/// topic, so that every real window closes.
fn events(n: u64) -> Vec<(&'static str, String, String, Option<i32>)> {
    let spec = GeneratorSpec {
        events: Some(n),
        users: 300,
        time_step: tidemark_api::Duration::from_millis(500),
        ..GeneratorSpec::default()
    };
    let mut generator = Generator::new(&spec);
    let mut line = Vec::new();
    let mut out = Vec::new();
    let mut last = 0;
    while let Some(kind) = generator.next_into(&mut line) {
        let value = String::from_utf8(std::mem::take(&mut line)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        last = last.max(v["ts"].as_i64().unwrap());
        let topic = if kind == "purchase" {
            "purchase_topic"
        } else {
            "click_topic"
        };
        out.push((
            topic,
            v["user_id"].as_str().unwrap().to_owned(),
            value,
            None,
        ));
    }
    for p in 0..PARTITIONS {
        for (topic, kind) in [("click_topic", "click"), ("purchase_topic", "purchase")] {
            let value = format!(
                r#"{{"type":"{kind}","user_id":"flush","price":1,"ts":{}}}"#,
                last + 3 * HOUR
            );
            out.push((topic, "flush".into(), value, Some(p)));
        }
    }
    out
}

fn produce_all(bootstrap: &str, events: &[(&'static str, String, String, Option<i32>)]) {
    let producer = producer(bootstrap);
    for (topic, key, value, partition) in events {
        let mut record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str());
        if let Some(p) = partition {
            record = record.partition(*p);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(DEADLINE).unwrap();
}

/// (user, window start) → (clicks, purchases, revenue) of the real events.
fn oracle(
    events: &[(&'static str, String, String, Option<i32>)],
) -> HashMap<(String, String), (u64, u64, f64)> {
    let mut reports: HashMap<(String, String), (u64, u64, f64)> = HashMap::new();
    for (topic, user, value, partition) in events {
        if partition.is_some() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let start = v["ts"].as_i64().unwrap().div_euclid(HOUR) * HOUR;
        let window = tidemark_worker::result::rfc3339(start);
        let entry = reports.entry((user.clone(), window)).or_default();
        if *topic == "purchase_topic" {
            entry.1 += 1;
            entry.2 += v["price"].as_f64().unwrap();
        } else {
            entry.0 += 1;
        }
    }
    reports
}

/// Reads reports until every expected key has arrived (and then 2 s more, to see duplicates).
fn read_reports(consumer: &BaseConsumer, expected: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reports: Vec<serde_json::Value> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut quiet_until: Option<Instant> = None;
    while quiet_until.is_none_or(|t| Instant::now() < t) {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} reports arrived",
            keys.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            keys.insert(String::from_utf8(message.key().unwrap().to_vec()).unwrap());
            reports.push(value);
        }
        if keys.len() >= expected && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    reports
}

fn check(
    reports: &[serde_json::Value],
    expected: &HashMap<(String, String), (u64, u64, f64)>,
    exactly_once: bool,
) {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in reports {
        let id = (
            r["key"].as_str().unwrap().to_owned(),
            r["window"]["start"].as_str().unwrap().to_owned(),
        );
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected report {r}"));
        assert_eq!(
            (
                r["clicks"].as_u64().unwrap(),
                r["purchases"].as_u64().unwrap()
            ),
            (want.0, want.1),
            "{r}"
        );
        assert!(
            (r["revenue"].as_f64().unwrap() - want.2).abs() < 1e-6,
            "{r}"
        );
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "every user and window is reported"
    );
    if exactly_once {
        assert!(
            seen.values().all(|n| *n == 1),
            "without a crash no report is written twice"
        );
    }
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "worker did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_workers_produce_every_report_once_and_stop_with_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest(dir.path(), &bootstrap);
    let events = events(12_000);
    let expected = oracle(&events);
    let workers = [
        worker(&manifest, 0, dir.path()),
        worker(&manifest, 1, dir.path()),
    ];
    produce_all(&bootstrap, &events);
    let reader = reader(&bootstrap, "marketing_report_topic", 1);
    let reports = read_reports(&reader, expected.len());
    check(&reports, &expected, true);
    for w in workers {
        assert!(terminate(w).success(), "SIGTERM ends a worker cleanly");
    }
    for (ordinal, tasks) in [(0, [0, 2]), (1, [1, 3])] {
        for task in tasks {
            let task_dir = dir.path().join(format!("worker-{ordinal}/task-{task}"));
            let files = std::fs::read_dir(&task_dir).map(|d| d.count()).unwrap_or(0);
            assert!(files > 0, "worker {ordinal} checkpointed its task {task}");
        }
    }
    drop(mock);
}

/// Newest checkpoint file of `task_dir`, if any.
fn newest_checkpoint(task_dir: &Path) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(task_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tdmk"))
        .collect();
    files.sort();
    files.pop()
}

#[test]
fn a_worker_killed_ten_times_mid_stream_resumes_from_its_checkpoints_and_loses_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest(dir.path(), &bootstrap);
    let events = events(12_000);
    let expected = oracle(&events);
    let steady = worker(&manifest, 1, dir.path());
    let mut victim = worker(&manifest, 0, dir.path());
    let task_dir = dir.path().join("worker-0/task-0");
    let chunks: Vec<_> = events.chunks(events.len() / 10 + 1).collect();
    for (round, chunk) in chunks.iter().enumerate() {
        let before = newest_checkpoint(&task_dir);
        produce_all(&bootstrap, chunk);
        // Kill after the victim checkpointed something new: at a different point of its
        // checkpoint cycle each round, since production and checkpoints are not in step.
        let deadline = Instant::now() + Duration::from_secs(60);
        while newest_checkpoint(&task_dir) == before {
            assert!(
                Instant::now() < deadline,
                "round {round}: no new checkpoint"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        victim.kill().unwrap();
        victim.wait().unwrap();
        if round == chunks.len() - 1 {
            // A flipped bit in the newest checkpoint: the restart falls back to the previous one.
            let newest = newest_checkpoint(&task_dir).unwrap();
            let mut bytes = std::fs::read(&newest).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
            std::fs::write(&newest, bytes).unwrap();
        }
        victim = worker(&manifest, 0, dir.path());
    }
    let reader = reader(&bootstrap, "marketing_report_topic", 1);
    let reports = read_reports(&reader, expected.len());
    check(&reports, &expected, false);
    assert!(terminate(victim).success());
    assert!(terminate(steady).success());
    drop(mock);
}

#[test]
fn a_worker_killed_mid_stream_resumes_from_its_checkpoint_and_loses_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest(dir.path(), &bootstrap);
    let events = events(12_000);
    let expected = oracle(&events);
    let (first, second) = events.split_at(events.len() / 2);
    let steady = worker(&manifest, 1, dir.path());
    let mut victim = worker(&manifest, 0, dir.path());
    produce_all(&bootstrap, first);
    // Let the victim checkpoint part of the first half, then kill it without warning.
    let checkpoint = dir.path().join("worker-0/task-0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&checkpoint)
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the victim never checkpointed");
        std::thread::sleep(Duration::from_millis(50));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    produce_all(&bootstrap, second);
    let restarted = worker(&manifest, 0, dir.path());
    let reader = reader(&bootstrap, "marketing_report_topic", 1);
    let reports = read_reports(&reader, expected.len());
    check(&reports, &expected, false);
    assert!(terminate(restarted).success());
    assert!(terminate(steady).success());
    drop(mock);
}
