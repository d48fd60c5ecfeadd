//! Deterministic models, proven with worker processes against a Kafka that outlives them
//! (`tidemark-mock-kafka`): the examples' models (`examples/segments.yaml`,
//! `examples/propensity.yaml`, `examples/recommendations.yaml`) over 1, 2, 3 and 5 partitions
//! (so 1, 2, 3 and 5 tasks; over several, the global stage on ordinal 0 learns), ordinal 0
//! killed with SIGKILL after a new checkpoint mid-stream and restarted from it. Every record on
//! the model's topic — model versions, users' segments, scores or recommendations — must be
//! byte for byte (but `emitted_at`) a record of the reference, the same events through one
//! in-process task, and every record of the reference must arrive.
//! Delivery is at-least-once (the mock writes no transaction markers): a record written again
//! after the kill would have to be the same bytes as its first copy (results are written with
//! checkpoints, so in practice none is).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use kafka_support::exactly_once::snapshot;
use kafka_support::quickstart::{self, Event};
use kafka_support::reference;
use kafka_support::reference::without_emitted_at;
use kafka_support::start_mock_binary;
use kafka_support::worker::{WorkerArgs, WorkerProcess};

/// One example under test.
struct Case {
    /// The pipeline's name.
    name: &'static str,
    /// The manifest, checkpointing every 300 ms.
    manifest: String,
    /// The topic of the model's results.
    topic: &'static str,
}

impl Case {
    fn new(name: &'static str, text: &str, topic: &'static str) -> Case {
        Case {
            name,
            manifest: text.replace("interval: 10s", "interval: 300ms"),
            topic,
        }
    }
}

/// The reference: `events` through one in-process task, uninterrupted, its input left open
/// (the workers' input does not end either, so the epoch of the flush events stays open in
/// both).
fn reference(case: &Case, events: &[Event]) -> BTreeSet<String> {
    reference::results(&case.manifest, case.name, events, false)
        .iter()
        .map(|v| without_emitted_at(v))
        .collect()
}

fn worker(
    manifest: &Path,
    bootstrap: &str,
    dir: &Path,
    ordinal: u32,
    workers: u32,
) -> WorkerProcess {
    WorkerProcess::start(&WorkerArgs {
        manifest,
        bootstrap,
        ordinal,
        parallelism: workers,
        checkpoint_dir: &dir.join(format!("worker-{ordinal}")),
        delivery: "atLeastOnce",
    })
}

/// The generator's events (300 users, 10 s apart) and, three hours after the last, five flush
/// users' click and purchase: the same events for every run, each partition getting at least
/// one flush (`i mod partitions`), so every task's watermark passes the last epoch.
fn events(partitions: i32) -> Vec<Event> {
    let mut events: Vec<Event> = quickstart::events_every(6_000, 10_000, 1)
        .into_iter()
        .filter(|e| e.partition.is_none())
        .collect();
    let last = events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.value).unwrap()["ts"]
                .as_i64()
                .unwrap()
        })
        .max()
        .unwrap();
    for i in 0..5 {
        for (topic, kind) in [("click_topic", "click"), ("purchase_topic", "purchase")] {
            events.push(Event {
                topic,
                key: format!("flush-{i}"),
                value: format!(
                    r#"{{"type":"{kind}","user_id":"flush-{i}","price":1,"ts":{}}}"#,
                    last + 3 * 3_600_000
                ),
                partition: Some(i % partitions),
            });
        }
    }
    events
}

/// Runs the events over `partitions` partitions with ordinal 0 killed once mid-stream; returns
/// each distinct record read back (without `emitted_at`) with how often it came.
fn run(case: &Case, partitions: i32, expected: &BTreeSet<String>) -> BTreeMap<String, u32> {
    let events = events(partitions);
    let (mut mock, bootstrap) = start_mock_binary(&[
        &format!("click_topic:{partitions}"),
        &format!("purchase_topic:{partitions}"),
        &format!("{}:1", case.topic),
        "tidemark_dead_letter:1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pipeline.yaml");
    std::fs::write(&manifest, &case.manifest).unwrap();
    let workers = if partitions > 1 { 2 } else { 1 };
    let steady = (workers > 1).then(|| worker(&manifest, &bootstrap, dir.path(), 1, workers));
    let victim = worker(&manifest, &bootstrap, dir.path(), 0, workers);
    // The first half of the events; ordinal 0 is killed once the stage (over several tasks) or
    // its task has written two checkpoints, then restarted from them before the second half.
    let (first, second) = events.split_at(events.len() / 2);
    quickstart::produce_all(&bootstrap, first);
    let watched = if workers > 1 { "global" } else { "task-0" };
    let dir0 = dir.path().join("worker-0").join(watched);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_one = false;
    let mut before = quickstart::newest_checkpoint(&dir0);
    loop {
        let now = quickstart::newest_checkpoint(&dir0);
        if now.is_some() && now != before {
            if seen_one {
                break;
            }
            seen_one = true;
            before = now;
        }
        assert!(Instant::now() < deadline, "no checkpoint of ordinal 0");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    victim.kill();
    let victim = worker(&manifest, &bootstrap, dir.path(), 0, workers);
    quickstart::produce_all(&bootstrap, second);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        seen.clear();
        for r in snapshot(&bootstrap, case.topic, 1, "read_uncommitted") {
            *seen.entry(without_emitted_at(&r.value)).or_default() += 1;
        }
        if expected.iter().all(|e| seen.contains_key(e)) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(victim.terminate().success());
    if let Some(steady) = steady {
        assert!(steady.terminate().success());
    }
    let _ = mock.kill();
    seen
}

/// Runs `case` over 1, 2, 3 and 5 partitions and compares each run with the reference;
/// `enough` checks the reference (per-user records, model records) is a real test.
fn byte_identical_over_one_to_five_tasks(case: &Case, enough: impl Fn(usize, usize) -> bool) {
    let expected = reference(case, &events(1));
    let models = expected
        .iter()
        .filter(|r| r.contains(r#""record":"model""#))
        .count();
    let users = expected.len() - models;
    assert!(
        enough(models, users),
        "{models} models, {users} per-user records"
    );
    for partitions in [1, 2, 3, 5] {
        let started = Instant::now();
        let seen = run(case, partitions, &expected);
        let missing: Vec<&String> = expected.iter().filter(|e| !seen.contains_key(*e)).collect();
        let foreign: Vec<&String> = seen.keys().filter(|s| !expected.contains(*s)).collect();
        let replayed = seen.values().filter(|n| **n > 1).count();
        eprintln!(
            "{}, {partitions} tasks: {} records expected, {} distinct seen, {replayed} replayed; \
             {:.1} s",
            case.name,
            expected.len(),
            seen.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            missing.is_empty() && foreign.is_empty(),
            "{partitions} tasks: {} missing (first {:?}), {} not in the reference (first {:?})",
            missing.len(),
            missing.first(),
            foreign.len(),
            foreign.first()
        );
    }
}

#[test]
fn segments_are_byte_identical_over_one_to_five_tasks_with_a_kill() {
    // 20-minute epochs: the events span about 16 hours.
    let text = include_str!("../../examples/segments.yaml").replace("epoch: 1h", "epoch: 20m");
    let case = Case::new("segments", &text, "customer_segments");
    byte_identical_over_one_to_five_tasks(&case, |models, users| models >= 20 && users >= 300);
}

#[test]
fn propensity_scores_are_byte_identical_over_one_to_five_tasks_with_a_kill() {
    // A 2-hour horizon: labels are known within the 16 hours of events.
    let text = include_str!("../../examples/propensity.yaml").replace("horizon: 6h", "horizon: 2h");
    let case = Case::new("propensity", &text, "purchase_propensity");
    byte_identical_over_one_to_five_tasks(&case, |models, users| models >= 50 && users >= 1000);
}

#[test]
fn recommendations_are_byte_identical_over_one_to_five_tasks_with_a_kill() {
    let text = include_str!("../../examples/recommendations.yaml");
    let case = Case::new("recommendations", text, "recommendation_topic");
    byte_identical_over_one_to_five_tasks(&case, |models, users| models >= 50 && users >= 300);
}
