//! Exactly-once actions, proven with worker processes against a broker that writes transaction
//! markers and fences producers (noida-db): the abandoned-cart coupons (`examples/abandoned-cart.yaml`
//! with a small budget, so that decisions refuse candidates too) under `delivery: exactlyOnce`,
//! the worker killed with SIGKILL at random moments. A `read_committed` reader of the coupon
//! topic must then see every action record of the reference exactly once — by `action_id`,
//! with the same outcome and parameters — and a `read_uncommitted` reader the records of the
//! aborted transactions (the kills hit open transactions).
//!
//! The reference is the same events through the engine in process, one task, uninterrupted
//! (`worker/src/analytics/action/tests/` ties the engine's decisions to a brute-force oracle).
//!
//! Without noida-db these tests print a skip message and pass, unless `TIDEMARK_REQUIRE_NOIDA=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kafka_support::exactly_once::{read_to_end, snapshot, Read};
use kafka_support::noida::Noida;
use kafka_support::quickstart::{self, Event};
use kafka_support::reference;
use kafka_support::worker::{WorkerArgs, WorkerProcess};
use kafka_support::Random;
use tidemark_worker::metrics::RECORDS_OUT_TOTAL;

const COUPONS: &str = "coupon_topic";
const EVENTS: u64 = 12_000;

/// The example under test: checkpoints every 500 ms, 4 coupons an hour at most, a 20 % holdout.
fn manifest_text() -> String {
    include_str!("../../examples/abandoned-cart.yaml")
        .replace("interval: 10s", "interval: 500ms")
        .replace(
            "budget: { maxActions: 200, per: 1h }",
            "budget: { maxActions: 4, per: 1h }",
        )
        .replace("holdoutPercent: 10", "holdoutPercent: 20")
        .replace("cooldown: 24h", "cooldown: 3h")
}

/// An action record: (outcome, user, the whole value but `emitted_at`).
type Action = (String, String, String);

/// The action records of `values` by `action_id` (every record of the action analytic that is
/// not an uplift report), with how often each appeared.
fn actions<'a>(values: impl Iterator<Item = &'a str>) -> BTreeMap<String, (Action, u32)> {
    let mut out: BTreeMap<String, (Action, u32)> = BTreeMap::new();
    for value in values {
        let mut v: serde_json::Value = serde_json::from_str(value).unwrap();
        if v["record"] != "action" {
            continue;
        }
        v.as_object_mut().unwrap().remove("emitted_at");
        let id = v["action_id"].as_str().unwrap().to_owned();
        let action = (
            v["outcome"].as_str().unwrap().to_owned(),
            v["user"].as_str().unwrap().to_owned(),
            v.to_string(),
        );
        out.entry(id).or_insert((action, 0)).1 += 1;
    }
    out
}

/// The reference: `events` through one in-process task, uninterrupted.
fn reference(events: &[Event]) -> BTreeMap<String, Action> {
    let values = reference::results(&manifest_text(), "abandoned-cart", events, true);
    actions(values.iter().map(String::as_str))
        .into_iter()
        .map(|(id, (action, _))| (id, action))
        .collect()
}

/// A broker with the example's topics, the manifest, the events and the reference.
struct Setup {
    noida: Noida,
    dir: tempfile::TempDir,
    manifest: PathBuf,
    events: Vec<Event>,
    expected: BTreeMap<String, Action>,
}

impl Setup {
    fn new(partitions: i32) -> Option<Setup> {
        let noida = Noida::start(&[
            ("click_topic", partitions),
            ("purchase_topic", partitions),
            ("abandoned_cart_topic", 1),
            (COUPONS, 1),
            ("tidemark_dead_letter", 1),
        ])?;
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("pipeline.yaml");
        std::fs::write(&manifest, manifest_text()).unwrap();
        // Events 5 s apart: 16 hours of event time, so decisions are made all through the run.
        let events = quickstart::events_every(EVENTS, 5_000, partitions);
        let expected = reference(&events);
        Some(Setup {
            noida,
            dir,
            manifest,
            events,
            expected,
        })
    }

    fn worker(&self, ordinal: u32, parallelism: u32) -> WorkerProcess {
        WorkerProcess::start(&WorkerArgs {
            manifest: &self.manifest,
            bootstrap: &self.noida.bootstrap,
            ordinal,
            parallelism,
            checkpoint_dir: &self.dir.path().join(format!("worker-{ordinal}")),
            delivery: "exactlyOnce",
        })
    }

    /// Produces the events in 20 chunks, 400 ms apart, on a thread of its own.
    fn produce_slowly(&self) -> std::thread::JoinHandle<()> {
        let (events, pause) = (self.events.clone(), Duration::from_millis(400));
        quickstart::produce_in_chunks(&self.noida.bootstrap, events, 20, pause)
    }

    /// Whether a fresh `read_committed` reader sees every expected action within `wait`.
    fn all_actions_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let now = snapshot(&self.noida.bootstrap, COUPONS, 1, "read_committed");
            let seen = actions(now.iter().map(|r| r.value.as_str()));
            if self.expected.keys().all(|id| seen.contains_key(id)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits for every action, stops `workers`, reads the coupon topic to its end under both
    /// isolation levels and asserts: nothing lost, doubled or different; some records aborted.
    fn finish_exactly_once(&self, workers: Vec<WorkerProcess>) {
        let arrived = self.all_actions_within(Duration::from_secs(90));
        for worker in workers {
            let log = worker.log_text();
            assert!(worker.terminate().success(), "SIGTERM ends it; log:\n{log}");
        }
        let wait = Duration::from_secs(60);
        let committed = read_to_end(&self.noida.bootstrap, COUPONS, 1, "read_committed", wait);
        let uncommitted = read_to_end(&self.noida.bootstrap, COUPONS, 1, "read_uncommitted", wait);
        let seen = actions(committed.iter().map(|r| r.value.as_str()));
        let lost: Vec<&String> = self
            .expected
            .keys()
            .filter(|id| !seen.contains_key(*id))
            .collect();
        let doubled: Vec<&String> = seen
            .iter()
            .filter(|(_, (_, n))| *n > 1)
            .map(|(id, _)| id)
            .collect();
        let wrong: Vec<&String> = seen
            .iter()
            .filter(|(id, (action, _))| self.expected.get(*id) != Some(action))
            .map(|(id, _)| id)
            .collect();
        let aborted = aborted(&committed, &uncommitted);
        eprintln!(
            "{} actions expected ({} sent), {} seen; lost {}, doubled {}, wrong {}; {} records \
             of aborted transactions; all arrived in time: {arrived}",
            self.expected.len(),
            self.expected.values().filter(|a| a.0 == "sent").count(),
            seen.len(),
            lost.len(),
            doubled.len(),
            wrong.len(),
            aborted
        );
        assert!(
            self.expected.len() >= 20,
            "the run decides enough: {}",
            self.expected.len()
        );
        assert!(
            self.expected.values().any(|a| a.0 == "holdout"),
            "some candidates are held out"
        );
        assert_eq!(
            (lost.len(), doubled.len(), wrong.len()),
            (0, 0, 0),
            "lost {lost:?}, doubled {doubled:?}, wrong {wrong:?}"
        );
        assert!(
            aborted > 0,
            "the kills left aborted transactions with actions"
        );
    }
}

/// Records the `read_uncommitted` reader saw that the `read_committed` one did not.
fn aborted(committed: &[Read], uncommitted: &[Read]) -> usize {
    let offsets: std::collections::HashSet<(i32, i64)> =
        committed.iter().map(|r| (r.partition, r.offset)).collect();
    uncommitted
        .iter()
        .filter(|r| !offsets.contains(&(r.partition, r.offset)))
        .count()
}

/// Kills `worker` with SIGKILL at a random moment: every third kill within 400 ms of its first
/// records out (so that it dies with actions in an open transaction), otherwise within 2.5 s.
fn kill_at_random(mut worker: WorkerProcess, random: &mut Random, kills: u32) {
    let within = if kills % 3 == 2 {
        worker.wait_metric(RECORDS_OUT_TOTAL, 1.0, Duration::from_secs(5));
        400
    } else {
        2_500
    };
    std::thread::sleep(Duration::from_millis(random.below(within)));
    worker.kill();
}

#[test]
fn actions_decided_in_a_task_killed_at_random_moments_are_written_exactly_once() {
    // One partition, one task: the task decides (no global stage).
    let Some(setup) = Setup::new(1) else {
        return;
    };
    let started = Instant::now();
    let mut random = Random::new();
    let producing = setup.produce_slowly();
    let mut kills = 0;
    while kills < 10 {
        kill_at_random(setup.worker(0, 1), &mut random, kills);
        kills += 1;
    }
    producing.join().unwrap();
    let mut last = setup.worker(0, 1);
    last.wait_ready();
    setup.finish_exactly_once(vec![last]);
    eprintln!(
        "the worker killed {kills} times with SIGKILL; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "noida-db 0.2.3 reports an aborted transaction again to fetches that start after its \
            abort marker, so librdkafka drops the restarted tasks' later committed partials \
            (exactly_once_broker.rs: a_reader_past_an_abort_marker_...): with 10 kills none of \
            the 72 actions is written, without kills (TIDEMARK_TEST_KILLS=0) all are, once"]
fn actions_decided_by_a_global_stage_killed_at_random_moments_are_written_exactly_once() {
    // Four partitions over two workers: the tasks send candidates and outcomes to the global
    // stage on ordinal 0, which decides; ordinal 0 is killed (TIDEMARK_TEST_KILLS times, 10 by
    // default).
    let Some(setup) = Setup::new(4) else {
        return;
    };
    let started = Instant::now();
    let mut random = Random::new();
    let mut steady = setup.worker(1, 2);
    steady.wait_ready();
    let producing = setup.produce_slowly();
    let mut kills = 0;
    let want: u32 = std::env::var("TIDEMARK_TEST_KILLS").map_or(10, |v| v.parse().unwrap());
    while kills < want {
        kill_at_random(setup.worker(0, 2), &mut random, kills);
        kills += 1;
    }
    producing.join().unwrap();
    let mut last = setup.worker(0, 2);
    last.wait_ready();
    setup.finish_exactly_once(vec![last, steady]);
    eprintln!(
        "ordinal 0 (global stage) killed {kills} times with SIGKILL; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
