//! Restart-to-caught-up of a worker holding 1 M live key-windows (a measurement, not an
//! assertion of speed: ignored by default, run with
//! `cargo test --release -p tidemark-worker --test restart_catch_up -- --ignored --nocapture`).
//!
//! Against `tidemark-mock-kafka` (32 partitions per source topic: the mock keeps about 5 MB per
//! partition, and 1.1 M events are ≈ 70 MB), at-least-once, checkpoints every 2 s:
//!
//! 1. 1 M clicks of 1 M distinct users, all in one 1-hour window that stays open, are produced;
//! 2. one worker (`--parallelism 1`, so it owns all 32 tasks) takes them all and checkpoints;
//!    the test waits until the checkpoints on disk hold every offset and each task has the 3
//!    retained checkpoints a restart scans, then SIGKILLs it;
//! 3. 100 k more clicks (a second click of 100 k of the users) are produced;
//! 4. the worker is restarted and timed from the spawn of its process until it is *caught up*:
//!    `/readyz` answers 200 and it has taken every record after its checkpoints' offsets
//!    (`tidemark_records_in_total` of the new process reaches the backlog, computed exactly from
//!    the checkpoint files and the partitions' high watermarks). The time until
//!    `tidemark_source_lag` shows 0 for every partition is printed too; it trails by up to the
//!    metric's refresh period.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::time::{Duration, Instant};

use kafka_support::worker::{http_get, metric_series, metric_sum, WorkerArgs, WorkerProcess};
use kafka_support::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::ClientConfig;
use tidemark_worker::checkpoint::CheckpointStore;
use tidemark_worker::metrics::{RECORDS_IN_TOTAL, SOURCE_LAG, STATE_WINDOWS};

const PARTITIONS: i32 = 32;
const USERS: u64 = 1_000_000;
const MORE: u64 = 100_000;
/// 2026-01-01T00:00:00Z: every event falls in the hour from here.
const T0: i64 = 1_767_225_600_000;

/// Produces one click of user `u<i>` for every `i` in `users`, at `T0` + 3 ms × i (all within
/// the first hour).
fn produce_clicks(bootstrap: &str, users: std::ops::Range<u64>) {
    let producer = producer(bootstrap);
    for i in users {
        let user = format!("u{i:07}");
        let value = format!(
            r#"{{"type":"click","user_id":"{user}","ts":{}}}"#,
            T0 + 3 * i as i64
        );
        let mut record = BaseRecord::to("click_topic").key(&user).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// A source partition (topic, partition) and its (low, high) watermarks.
type Marks = ((&'static str, i32), (i64, i64));

/// The watermarks of every partition of the source topics.
fn watermarks(bootstrap: &str) -> Vec<Marks> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut out = Vec::new();
    for topic in ["click_topic", "purchase_topic"] {
        for p in 0..PARTITIONS {
            let marks = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            out.push(((topic, p), marks));
        }
    }
    out
}

/// Records between the newest valid checkpoint of each task and the end of its partitions.
fn backlog(store: &CheckpointStore, bootstrap: &str) -> i64 {
    let marks = watermarks(bootstrap);
    let mut total = 0;
    for ((topic, p), (low, high)) in marks {
        let source = if topic == "click_topic" {
            "clicks"
        } else {
            "purchases"
        };
        let recovery = store.latest_valid(p as u32).unwrap();
        let from = recovery
            .checkpoint
            .and_then(|c| c.meta.offsets.get(source)?.get(&p).copied())
            .unwrap_or(low);
        total += high - from;
    }
    total
}

#[test]
#[ignore = "a measurement; run explicitly in release mode"]
fn restart_to_caught_up_with_a_million_live_key_windows() {
    let (mut mock, bootstrap) = start_mock_binary(&[
        "click_topic:32",
        "purchase_topic:32",
        "marketing_report_topic:1",
        "tidemark_dead_letter:1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pipeline.yaml");
    std::fs::write(
        &manifest,
        include_str!("../../examples/quickstart.yaml")
            .replace("delivery: exactlyOnce", "delivery: atLeastOnce")
            .replace("interval: 10s", "interval: 2s"),
    )
    .unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let args = WorkerArgs {
        manifest: &manifest,
        bootstrap: &bootstrap,
        ordinal: 0,
        parallelism: 1,
        checkpoint_dir: &checkpoints,
        delivery: "atLeastOnce",
    };
    let store = CheckpointStore::new(&checkpoints, 3);

    let started = Instant::now();
    produce_clicks(&bootstrap, 0..USERS);
    eprintln!(
        "produced {USERS} clicks of distinct users in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let produced: i64 = watermarks(&bootstrap).iter().map(|(_, (l, h))| h - l).sum();
    assert_eq!(
        produced, USERS as i64,
        "the mock kept every record (raise PARTITIONS if not)"
    );

    // Build the state and checkpoint it: wait until the checkpoints hold every offset.
    let mut worker = WorkerProcess::start(&args);
    worker.wait_ready();
    let started = Instant::now();
    loop {
        let pending = backlog(&store, &bootstrap);
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{pending} records not checkpointed; log:\n{}",
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A restart scans every retained checkpoint (3): let the worker write that many.
    while (0..PARTITIONS as u32).any(|t| store.list(t).unwrap().len() < 3) {
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(200));
    }
    let body = worker.get("/metrics").unwrap().1;
    let windows = metric_sum(&body, STATE_WINDOWS).unwrap_or(0.0);
    eprintln!(
        "worker took and checkpointed {USERS} records in {:.1} s; live key-windows: {windows}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(windows, USERS as f64, "one live key-window per user");
    let pauses = metric_sum(&body, "tidemark_checkpoint_pause_seconds_count").unwrap_or(0.0);
    let paused = metric_sum(&body, "tidemark_checkpoint_pause_seconds_sum").unwrap_or(0.0);
    let slow = metric_series(&body, "tidemark_checkpoint_pause_seconds_bucket")
        .into_iter()
        .find(|(labels, _)| labels.contains("le=\"0.1\""))
        .map_or(0.0, |(_, under)| pauses - under);
    eprintln!(
        "checkpoint pauses: {pauses} of {:.2} ms on average, {slow} over 100 ms",
        1000.0 * paused / pauses.max(1.0)
    );
    let bytes: u64 = (0..PARTITIONS as u32)
        .filter_map(|t| store.list(t).ok()?.first().map(|f| f.len))
        .sum();
    worker.kill();

    produce_clicks(&bootstrap, 0..MORE);
    let pending = backlog(&store, &bootstrap);
    assert_eq!(pending, MORE as i64);

    // The measurement.
    let spawned = Instant::now();
    let mut worker = WorkerProcess::start(&args);
    let mut ready = None;
    let mut caught_up = None;
    let mut lag_zero = None;
    while lag_zero.is_none() || caught_up.is_none() {
        assert!(
            spawned.elapsed() < Duration::from_secs(120),
            "not caught up (ready {ready:?}, caught up {caught_up:?}, lag 0 {lag_zero:?}); log:\n{}",
            worker.log_text()
        );
        let Some(addr) = worker.addr_within(Duration::ZERO) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        if ready.is_none() && http_get(addr, "/readyz").is_some_and(|(code, _)| code == 200) {
            ready = Some(spawned.elapsed());
        }
        if ready.is_some() {
            if let Some((_, body)) = http_get(addr, "/metrics") {
                let now = spawned.elapsed();
                let taken = metric_sum(&body, RECORDS_IN_TOTAL).unwrap_or(0.0);
                if caught_up.is_none() && taken >= pending as f64 {
                    caught_up = Some(now);
                }
                let lags = metric_series(&body, SOURCE_LAG);
                if lag_zero.is_none()
                    && lags.len() == 2 * PARTITIONS as usize
                    && lags.iter().all(|(_, v)| *v == 0.0)
                {
                    lag_zero = Some(now);
                }
            }
        }
        if let Some(at) = caught_up {
            if lag_zero.is_none() && spawned.elapsed() > at + Duration::from_secs(10) {
                eprintln!("{SOURCE_LAG} did not show 0 for every partition within 10 s");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready = ready.unwrap();
    let caught_up = caught_up.unwrap();
    eprintln!(
        "restart with {USERS} live key-windows in {PARTITIONS} tasks ({:.1} MB of newest checkpoints) and {pending} records to replay: ready after {:.2} s, caught up after {:.2} s{}",
        bytes as f64 / 1e6,
        ready.as_secs_f64(),
        caught_up.as_secs_f64(),
        lag_zero.map_or(String::new(), |t| format!(
            ", {SOURCE_LAG} 0 everywhere after {:.2} s",
            t.as_secs_f64()
        ))
    );
    let restored = worker
        .log()
        .iter()
        .filter(|l| l.contains("restored checkpoint"))
        .count();
    assert_eq!(
        restored, PARTITIONS as usize,
        "every task restored a checkpoint"
    );
    let windows = worker
        .metric(STATE_WINDOWS)
        .expect("the worker publishes its state");
    assert_eq!(
        windows, USERS as f64,
        "the restored state holds every key-window"
    );
    worker.kill();
    drop(mock.stdin.take());
    let _ = mock.wait();
}
