//! Exactly-once model results, proven with a worker process against a broker that writes
//! transaction markers and fences producers (noida-db): the customer segments of
//! `examples/segments.yaml` under `delivery: exactlyOnce` on one partition (the task learns),
//! the worker killed with SIGKILL at random moments while the events arrive. A
//! `read_committed` reader of the segments topic must then see every record of the reference —
//! model versions with their centroids, users' segment changes — exactly once and byte for
//! byte (but `emitted_at`), and a `read_uncommitted` reader the records of the aborted
//! transactions (the kills hit open transactions).
//!
//! The reference is the same events through the engine in process, one task, uninterrupted,
//! its input left open as the worker's is (`worker/tests/model_workers.rs` holds the same
//! records over 1–5 tasks; `worker/src/analytics/segments/tests.rs` ties them to oracles).
//!
//! Without noida-db this test prints a skip message and passes, unless
//! `TIDEMARK_REQUIRE_NOIDA=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_support::exactly_once::{read_to_end, snapshot, Read};
use kafka_support::noida::Noida;
use kafka_support::quickstart::{self, Event};
use kafka_support::reference;
use kafka_support::reference::without_emitted_at;
use kafka_support::worker::{WorkerArgs, WorkerProcess};
use kafka_support::Random;

const SEGMENTS: &str = "customer_segments";

/// The example with 20-minute epochs (the events span about 16 hours) and checkpoints every
/// 500 ms.
fn manifest_text() -> String {
    include_str!("../../examples/segments.yaml")
        .replace("epoch: 1h", "epoch: 20m")
        .replace("interval: 10s", "interval: 500ms")
}

/// The records of `reads`, without `emitted_at`, with how often each came.
fn counted(reads: &[Read]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for r in reads {
        *out.entry(without_emitted_at(&r.value)).or_insert(0) += 1;
    }
    out
}

/// The reference: `events` through one in-process task, its input left open.
fn reference(events: &[Event]) -> BTreeSet<String> {
    reference::results(&manifest_text(), "segments", events, false)
        .iter()
        .map(|v| without_emitted_at(v))
        .collect()
}

#[test]
fn segments_learned_in_a_task_killed_at_random_moments_are_written_exactly_once() {
    let Some(noida) = Noida::start(&[
        ("click_topic", 1),
        ("purchase_topic", 1),
        (SEGMENTS, 1),
        ("tidemark_dead_letter", 1),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pipeline.yaml");
    std::fs::write(&manifest, manifest_text()).unwrap();
    // Events 10 s apart: about 16 hours of event time, so epochs end all through the run.
    let events = quickstart::events_every(6_000, 10_000, 1);
    let expected = reference(&events);
    let models = expected
        .iter()
        .filter(|r| r.contains(r#""record":"model""#))
        .count();
    assert!(
        models >= 20 && expected.len() >= 300,
        "{models} of {}",
        expected.len()
    );
    let worker = || {
        WorkerProcess::start(&WorkerArgs {
            manifest: &manifest,
            bootstrap: &noida.bootstrap,
            ordinal: 0,
            parallelism: 1,
            checkpoint_dir: &dir.path().join("worker-0"),
            delivery: "exactlyOnce",
        })
    };
    let started = Instant::now();
    let producing = quickstart::produce_in_chunks(
        &noida.bootstrap,
        events.clone(),
        20,
        Duration::from_millis(400),
    );
    let mut random = Random::new();
    let mut kills = 0;
    while kills < 8 {
        let victim = worker();
        std::thread::sleep(Duration::from_millis(random.below(2_500)));
        victim.kill();
        kills += 1;
    }
    producing.join().unwrap();
    let mut last = worker();
    last.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let now = counted(&snapshot(&noida.bootstrap, SEGMENTS, 1, "read_committed"));
        if expected.iter().all(|e| now.contains_key(e)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = last.log_text();
    assert!(last.terminate().success(), "SIGTERM ends it; log:\n{log}");
    let wait = Duration::from_secs(60);
    let committed = read_to_end(&noida.bootstrap, SEGMENTS, 1, "read_committed", wait);
    let uncommitted = read_to_end(&noida.bootstrap, SEGMENTS, 1, "read_uncommitted", wait);
    let seen = counted(&committed);
    let lost: Vec<&String> = expected.iter().filter(|e| !seen.contains_key(*e)).collect();
    let doubled: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, _)| r)
        .collect();
    let foreign: Vec<&String> = seen.keys().filter(|r| !expected.contains(*r)).collect();
    let aborted = uncommitted.len() - committed.len();
    eprintln!(
        "{} records expected ({models} model versions), {} committed; lost {}, doubled {}, \
         not in the reference {}; {aborted} records of aborted transactions; the worker killed \
         {kills} times; {:.1} s",
        expected.len(),
        committed.len(),
        lost.len(),
        doubled.len(),
        foreign.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (lost.len(), doubled.len(), foreign.len()),
        (0, 0, 0),
        "lost {:?}, doubled {:?}, not in the reference {:?}",
        lost.first(),
        doubled.first(),
        foreign.first()
    );
    assert!(
        aborted > 0,
        "the kills left aborted transactions with results"
    );
}
