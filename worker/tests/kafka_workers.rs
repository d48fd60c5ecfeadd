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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_support::quickstart::*;
use kafka_support::*;

const PARTITIONS: i32 = 4;

fn start_mock() -> (Child, String) {
    let topics: Vec<String> = topics(PARTITIONS)
        .iter()
        .map(|(name, partitions)| format!("{name}:{partitions}"))
        .collect();
    start_mock_binary(&topics.iter().map(String::as_str).collect::<Vec<_>>())
}

fn worker(manifest: &Path, bootstrap: &str, ordinal: u32, dir: &Path) -> Child {
    worker_with(manifest, bootstrap, ordinal, dir, "atLeastOnce")
}

fn worker_with(
    manifest: &Path,
    bootstrap: &str,
    ordinal: u32,
    dir: &Path,
    delivery: &str,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "-q", "-f", manifest.to_str().unwrap()])
        .args([
            "--bootstrap-servers",
            bootstrap,
            "--ordinal",
            &ordinal.to_string(),
            "--parallelism",
            "2",
            "--http-addr",
            "127.0.0.1:0",
            "--delivery",
            delivery,
        ])
        .arg("--checkpoint-dir")
        .arg(dir.join(format!("worker-{ordinal}")))
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every report of `expected` read back (and 2 s more, to see duplicates), compared.
fn read_and_check(bootstrap: &str, expected: &Expected) -> Comparison {
    let reader = reader(bootstrap, "marketing_report_topic", 1);
    let reports = read_reports(
        &reader,
        expected,
        Duration::from_secs(2),
        Duration::from_secs(120),
    );
    check_at_least_once(&reports, expected)
}

/// Waits until `task_dir` holds a checkpoint newer than `before` (any, for `None`), then kills
/// `victim` with SIGKILL: at a different point of its checkpoint cycle each time, since
/// production and checkpoints are not in step.
fn kill_after_a_new_checkpoint(victim: &mut Child, task_dir: &Path, before: Option<PathBuf>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while newest_checkpoint(task_dir) == before {
        assert!(
            Instant::now() < deadline,
            "no checkpoint newer than {before:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
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
    let manifest = write_manifest(dir.path(), "500ms");
    let events = events(12_000, PARTITIONS);
    let expected = oracle(&events);
    let workers = [
        worker(&manifest, &bootstrap, 0, dir.path()),
        worker(&manifest, &bootstrap, 1, dir.path()),
    ];
    produce_all(&bootstrap, &events);
    let comparison = read_and_check(&bootstrap, &expected);
    assert_eq!(
        comparison.duplicates, 0,
        "without a crash no report is written twice: {comparison:?}"
    );
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

#[test]
fn a_worker_killed_ten_times_mid_stream_resumes_from_its_checkpoints_and_loses_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest(dir.path(), "500ms");
    let events = events(12_000, PARTITIONS);
    let expected = oracle(&events);
    let steady = worker(&manifest, &bootstrap, 1, dir.path());
    let mut victim = worker(&manifest, &bootstrap, 0, dir.path());
    let task_dir = dir.path().join("worker-0/task-0");
    let chunks: Vec<_> = events.chunks(events.len() / 10 + 1).collect();
    for (round, chunk) in chunks.iter().enumerate() {
        let before = newest_checkpoint(&task_dir);
        produce_all(&bootstrap, chunk);
        kill_after_a_new_checkpoint(&mut victim, &task_dir, before);
        if round == chunks.len() - 1 {
            // A flipped bit in the newest checkpoint: the restart falls back to the previous one.
            let newest = newest_checkpoint(&task_dir).unwrap();
            let mut bytes = std::fs::read(&newest).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
            std::fs::write(&newest, bytes).unwrap();
        }
        victim = worker(&manifest, &bootstrap, 0, dir.path());
    }
    read_and_check(&bootstrap, &expected);
    assert!(terminate(victim).success());
    assert!(terminate(steady).success());
    drop(mock);
}

#[test]
fn a_worker_killed_mid_stream_resumes_from_its_checkpoint_and_loses_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest(dir.path(), "500ms");
    let events = events(12_000, PARTITIONS);
    let expected = oracle(&events);
    let (first, second) = events.split_at(events.len() / 2);
    let steady = worker(&manifest, &bootstrap, 1, dir.path());
    let mut victim = worker(&manifest, &bootstrap, 0, dir.path());
    produce_all(&bootstrap, first);
    // Let the victim checkpoint part of the first half, then kill it without warning.
    kill_after_a_new_checkpoint(&mut victim, &dir.path().join("worker-0/task-0"), None);
    produce_all(&bootstrap, second);
    let restarted = worker(&manifest, &bootstrap, 0, dir.path());
    read_and_check(&bootstrap, &expected);
    assert!(terminate(restarted).success());
    assert!(terminate(steady).success());
    drop(mock);
}

/// Under exactly-once the results a task emits while its checkpoint is being written are held
/// for the next transaction. The mock commits transactions (without markers, so a crash's
/// aborted records would stay visible): without a crash every report appears exactly once; after
/// kills the exactly-once restart path (restore point without a marker on the mock) loses none.
#[test]
fn under_exactly_once_every_report_is_written_once_and_kills_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest(dir.path(), "300ms");
    let events = events(12_000, PARTITIONS);
    let expected = oracle(&events);
    let (first, second) = events.split_at(events.len() / 2);
    let steady = worker_with(&manifest, &bootstrap, 1, dir.path(), "exactlyOnce");
    let mut victim = worker_with(&manifest, &bootstrap, 0, dir.path(), "exactlyOnce");
    produce_all(&bootstrap, first);
    let task_dir = dir.path().join("worker-0/task-0");
    for _ in 0..3 {
        let before = newest_checkpoint(&task_dir);
        kill_after_a_new_checkpoint(&mut victim, &task_dir, before);
        victim = worker_with(&manifest, &bootstrap, 0, dir.path(), "exactlyOnce");
    }
    produce_all(&bootstrap, second);
    read_and_check(&bootstrap, &expected);
    assert!(terminate(victim).success());
    assert!(terminate(steady).success());

    // The same events through two exactly-once workers that never crash: each report once.
    let (mock2, bootstrap2) = start_mock();
    let dir2 = tempfile::tempdir().unwrap();
    let workers = [
        worker_with(&manifest, &bootstrap2, 0, dir2.path(), "exactlyOnce"),
        worker_with(&manifest, &bootstrap2, 1, dir2.path(), "exactlyOnce"),
    ];
    produce_all(&bootstrap2, &events);
    let comparison = read_and_check(&bootstrap2, &expected);
    assert_eq!(comparison.duplicates, 0, "{comparison:?}");
    for w in workers {
        assert!(terminate(w).success());
    }
    drop((mock, mock2));
}

/// An analytic keyed by category over four partitions runs in two phases: each task's partials
/// go to the partials topic (created by the workers) and the global stage on ordinal 0 merges
/// them. Ordinal 0 — the global stage and two tasks — is killed three times, each time after a
/// new checkpoint of the stage; every category report is still written with the oracle's
/// values.
#[test]
fn a_global_analytic_over_two_worker_processes_survives_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest_keyed(dir.path(), "300ms", "category");
    let events = events(12_000, PARTITIONS);
    let expected = oracle_by(&events, |_, v| v["category"].as_str().unwrap().to_owned());
    assert!(expected.len() > 8, "{}", expected.len());
    let (first, second) = events.split_at(events.len() / 2);
    let steady = worker_with(&manifest, &bootstrap, 1, dir.path(), "exactlyOnce");
    let mut victim = worker_with(&manifest, &bootstrap, 0, dir.path(), "exactlyOnce");
    produce_all(&bootstrap, first);
    let stage_dir = dir.path().join("worker-0/global");
    for _ in 0..3 {
        let before = newest_checkpoint(&stage_dir);
        kill_after_a_new_checkpoint(&mut victim, &stage_dir, before);
        victim = worker_with(&manifest, &bootstrap, 0, dir.path(), "exactlyOnce");
    }
    produce_all(&bootstrap, second);
    read_and_check(&bootstrap, &expected);
    assert!(terminate(victim).success());
    assert!(terminate(steady).success());
    assert!(
        !dir.path().join("worker-1/global").exists(),
        "only ordinal 0 hosts the global stage"
    );
    drop(mock);
}

/// Deduplication across kills: each round repeats the last events of the round before (the
/// same `event_id`s, within the horizon) after ordinal 0 was killed past a checkpoint holding
/// their originals, so the repeats are dropped only if the restored worker still remembers
/// those ids (the `tidemark.dedup` snapshot section). The reports must be those of the events
/// without the repeats.
#[test]
fn a_deduplicating_worker_killed_mid_stream_remembers_the_ids_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, bootstrap) = start_mock();
    let manifest = write_manifest(dir.path(), "500ms");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text
        .replace(
            "eventTypes: [view, click, add_to_cart]",
            "eventTypes: [view, click, add_to_cart]\n      fields: { extra: [event_id] }",
        )
        .replace(
            "eventTypes: [purchase]",
            "eventTypes: [purchase]\n      fields: { extra: [event_id] }",
        )
        .replace(
            "  watermark:",
            "  dataQuality:\n    deduplicate: { field: event_id, horizon: 1h }\n  watermark:",
        );
    assert!(text.contains("deduplicate"), "{text}");
    std::fs::write(&manifest, text).unwrap();
    let events = events(8_000, PARTITIONS);
    let (real, flush) = events.split_at(events.len() - flush_events(0, PARTITIONS).len());
    assert!(real.iter().all(|e| e.value.contains("\"event_id\"")));
    let expected = oracle(&events);
    let steady = worker(&manifest, &bootstrap, 1, dir.path());
    let mut victim = worker(&manifest, &bootstrap, 0, dir.path());
    let task_dir = dir.path().join("worker-0/task-0");
    let chunks: Vec<&[Event]> = real.chunks(real.len() / 8 + 1).collect();
    let (mut repeated, mut kills) = (0, 0);
    for (round, chunk) in chunks.iter().enumerate() {
        let mut batch: Vec<Event> = Vec::new();
        if round > 0 {
            // The last 40 events of the round before, again: duplicates 20 s of event time
            // after their originals at most.
            let before = chunks[round - 1];
            batch.extend_from_slice(&before[before.len().saturating_sub(40)..]);
            repeated += batch.len();
        }
        batch.extend_from_slice(chunk);
        let before = newest_checkpoint(&task_dir);
        produce_all(&bootstrap, &batch);
        kill_after_a_new_checkpoint(&mut victim, &task_dir, before);
        kills += 1;
        victim = worker(&manifest, &bootstrap, 0, dir.path());
    }
    produce_all(&bootstrap, flush);
    let comparison = read_and_check(&bootstrap, &expected);
    eprintln!("{repeated} repeated events, ordinal 0 killed {kills} times: {comparison:?}");
    assert!(terminate(victim).success());
    assert!(terminate(steady).success());
    drop(mock);
}
