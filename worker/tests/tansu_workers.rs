//! Worker processes against a real Kafka-compatible broker, tansu (`.ci/tools/tansu.sh`), on the
//! quickstart: the report topic is compared with an answer computed independently from the
//! produced events (`kafka_support::quickstart`), with two workers sharing four partitions, with a
//! worker killed with SIGKILL at random moments, with a corrupt newest checkpoint, and with a
//! checkpoint path that cannot be written for a while.
//!
//! Tansu 0.6 has no Kafka transactions (EndTxn), so these run `--delivery atLeastOnce`: the
//! report topic may hold a report more than once after a crash (same key, revision and values),
//! never miss one. Each test starts its own broker with in-memory storage on a free port.
//!
//! Without tansu these tests print a skip message and pass, unless `TIDEMARK_REQUIRE_TANSU=1`
//! (`.ci/test.sh` sets it), where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kafka_support::quickstart::{self, Event, Expected};
use kafka_support::tansu::Tansu;
use kafka_support::worker::{metric_series, WorkerArgs, WorkerProcess};
use kafka_support::{reader, DEADLINE};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tidemark_worker::checkpoint::CheckpointStore;
use tidemark_worker::metrics::{
    CHECKPOINT_CORRUPT_TOTAL, CHECKPOINT_FAILURES_TOTAL, GLOBAL_PARTIALS_TOTAL, RECORDS_IN_TOTAL,
    RECORDS_OUT_TOTAL,
};

const PARTITIONS: i32 = 4;
const EVENTS: u64 = 12_000;
/// Time to keep reading after the last expected report, to count late duplicates.
const QUIET: Duration = Duration::from_secs(2);

/// A broker with the quickstart's topics, a temporary directory with the manifest, and the
/// events with their oracle.
struct Setup {
    tansu: Tansu,
    dir: tempfile::TempDir,
    manifest: PathBuf,
    events: Vec<Event>,
    expected: Expected,
}

impl Setup {
    /// Checkpoints every `interval` (e.g. `500ms`); [`EVENTS`] events half a second apart.
    fn new(interval: &str) -> Option<Setup> {
        Self::with_events(interval, quickstart::events(EVENTS, PARTITIONS))
    }

    fn with_events(interval: &str, events: Vec<Event>) -> Option<Setup> {
        Self::keyed(interval, events, "user")
    }

    /// The report keyed by category (the global stage over the four partitions).
    fn by_category(interval: &str) -> Option<Setup> {
        Self::keyed(interval, quickstart::events(EVENTS, PARTITIONS), "category")
    }

    /// The report keyed by `key_by` (`user`: the quickstart as it is).
    fn keyed(interval: &str, events: Vec<Event>, key_by: &str) -> Option<Setup> {
        let tansu = Tansu::start(&quickstart::topics(PARTITIONS))?;
        let dir = tempfile::tempdir().unwrap();
        let (manifest, expected) = if key_by == "user" {
            let manifest = quickstart::write_manifest(dir.path(), interval);
            (manifest, quickstart::oracle(&events))
        } else {
            let manifest = quickstart::write_manifest_keyed(dir.path(), interval, key_by);
            let expected =
                quickstart::oracle_by(&events, |_, v| v[key_by].as_str().unwrap().to_owned());
            (manifest, expected)
        };
        Some(Setup {
            tansu,
            dir,
            manifest,
            events,
            expected,
        })
    }

    fn checkpoint_dir(&self, ordinal: u32) -> PathBuf {
        self.dir.path().join(format!("worker-{ordinal}"))
    }

    fn task_dir(&self, ordinal: u32, task: u32) -> PathBuf {
        self.checkpoint_dir(ordinal).join(format!("task-{task}"))
    }

    fn worker(&self, ordinal: u32) -> WorkerProcess {
        let dir = self.checkpoint_dir(ordinal);
        WorkerProcess::start(&WorkerArgs {
            manifest: &self.manifest,
            bootstrap: &self.tansu.bootstrap,
            ordinal,
            parallelism: 2,
            checkpoint_dir: &dir,
            delivery: "atLeastOnce",
        })
    }

    fn produce(&self, events: &[Event]) {
        quickstart::produce_all(&self.tansu.bootstrap, events);
    }

    /// Reads the report topic until every expected report is there and compares.
    fn check_reports(&self) -> quickstart::Comparison {
        let reader = reader(&self.tansu.bootstrap, "marketing_report_topic", 1);
        let reports =
            quickstart::read_reports(&reader, &self.expected, QUIET, Duration::from_secs(120));
        let comparison = quickstart::check_at_least_once(&reports, &self.expected);
        eprintln!(
            "report topic: {} records, {} distinct (key, revision) = the oracle's {} reports, {} duplicates",
            comparison.records,
            comparison.distinct,
            self.expected.len(),
            comparison.duplicates
        );
        comparison
    }

    /// Records in the source partitions of `tasks` (the sum of their high watermarks).
    fn records_of(&self, tasks: &[i32]) -> i64 {
        end_offsets(&self.tansu.bootstrap, tasks)
    }
}

fn end_offsets(bootstrap: &str, tasks: &[i32]) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut total = 0;
    for topic in ["click_topic", "purchase_topic"] {
        for &p in tasks {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            total += high;
        }
    }
    total
}

/// Polls `condition` every 20 ms until it holds; fails with `what` after `wait`.
fn wait_for(what: &str, wait: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `worker` has taken `records` records since it started (`tidemark_records_in_total`).
fn wait_consumed(worker: &mut WorkerProcess, records: i64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let taken = worker.metric(RECORDS_IN_TOTAL).unwrap_or(0.0);
        if taken >= records as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker took {taken} of {records} records; log:\n{}",
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `task_dir` holds a checkpoint newer than `than`; returns it.
fn wait_new_checkpoint(task_dir: &Path, than: Option<&PathBuf>) -> PathBuf {
    let mut newest = None;
    wait_for(
        &format!("a new checkpoint in {}", task_dir.display()),
        DEADLINE,
        || {
            newest = quickstart::newest_checkpoint(task_dir);
            newest.is_some() && newest.as_ref() != than
        },
    );
    newest.unwrap()
}

/// A small deterministic pseudo-random sequence (xorshift64*), seeded from
/// `TIDEMARK_TEST_SEED` or the clock, so that a failing run can be repeated.
struct Random(u64);

impl Random {
    fn new() -> Random {
        let seed = std::env::var("TIDEMARK_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill schedule seed: TIDEMARK_TEST_SEED={seed}");
        Random(seed.max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn two_workers_over_four_partitions_write_every_report() {
    let Some(setup) = Setup::new("500ms") else {
        return;
    };
    let mut workers = [setup.worker(0), setup.worker(1)];
    for w in &mut workers {
        let took = w.wait_ready();
        eprintln!("worker ready {} ms after its start", took.as_millis());
    }
    setup.produce(&setup.events);
    let comparison = setup.check_reports();
    // Each worker counts the results it wrote under the sink's name.
    let mut written = 0.0;
    for w in &mut workers {
        let (_, body) = w.get("/metrics").unwrap();
        for (labels, n) in metric_series(&body, RECORDS_OUT_TOTAL) {
            assert!(labels.contains(r#"sink="reports""#), "{labels}");
            written += n;
        }
    }
    assert_eq!(written, comparison.records as f64, "{comparison:?}");
    for (ordinal, w) in workers.into_iter().enumerate() {
        let log = w.log_text();
        assert!(
            w.terminate().success(),
            "SIGTERM ends worker {ordinal}; log:\n{log}"
        );
    }
    for (ordinal, tasks) in [(0, [0, 2]), (1, [1, 3])] {
        for task in tasks {
            assert!(
                !quickstart::checkpoints(&setup.task_dir(ordinal, task)).is_empty(),
                "worker {ordinal} checkpointed its task {task}"
            );
        }
    }
}

/// The report keyed by category: tasks send partials through tansu (the workers create the
/// partials topic), the global stage on ordinal 0 merges them. Ordinal 0 is killed three times
/// after a checkpoint of the stage; every category report arrives with the oracle's values.
#[test]
fn a_global_analytic_merged_on_ordinal_0_survives_its_kills() {
    let Some(setup) = Setup::by_category("500ms") else {
        return;
    };
    assert!(setup.expected.len() > 8, "{}", setup.expected.len());
    let mut steady = setup.worker(1);
    steady.wait_ready();
    let mut victim = setup.worker(0);
    victim.wait_ready();
    let stage_dir = setup.checkpoint_dir(0).join("global");
    let chunks: Vec<_> = setup.events.chunks(setup.events.len() / 3 + 1).collect();
    for chunk in chunks {
        let before = quickstart::newest_checkpoint(&stage_dir);
        setup.produce(chunk);
        wait_new_checkpoint(&stage_dir, before.as_ref());
        victim.kill();
        victim = setup.worker(0);
        victim.wait_ready();
    }
    setup.check_reports();
    let (_, body) = victim.get("/metrics").unwrap();
    let merged: f64 = metric_series(&body, GLOBAL_PARTIALS_TOTAL)
        .iter()
        .filter(|(labels, _)| labels.contains(r#"outcome="merged""#))
        .map(|(_, n)| n)
        .sum();
    assert!(merged > 0.0, "the restarted stage merged partials:\n{body}");
    assert!(victim.terminate().success());
    assert!(steady.terminate().success());
}

#[test]
fn a_worker_killed_at_random_moments_twelve_times_loses_no_report() {
    // Events 5 s apart: 16 hours of event time, so windows close all through the run and
    // kills land between writing reports and checkpointing them.
    let events = quickstart::events_every(EVENTS, 5_000, PARTITIONS);
    let Some(setup) = Setup::with_events("500ms", events) else {
        return;
    };
    let mut random = Random::new();
    let mut steady = setup.worker(1);
    steady.wait_ready();
    // Production runs alongside the kills, in chunks, so kills land before, during and after
    // records arrive, checkpoints are written and restores run.
    let producing = {
        let bootstrap = setup.tansu.bootstrap.clone();
        let events = setup.events.clone();
        std::thread::spawn(move || {
            for chunk in events.chunks(events.len() / 20 + 1) {
                quickstart::produce_all(&bootstrap, chunk);
                std::thread::sleep(Duration::from_millis(400));
            }
        })
    };
    let (mut kills, mut before_ready, mut restored) = (0, 0, 0);
    while kills < 12 {
        let mut victim = setup.worker(0);
        // A random moment: every fourth within 100 ms of the start (start-up and restore),
        // the others within 2.5 s (a running loop, at any point of its 500 ms checkpoint cycle).
        let within = if kills % 4 == 0 { 100 } else { 2_500 };
        std::thread::sleep(Duration::from_millis(random.below(within)));
        if victim.get("/readyz").is_none_or(|(code, _)| code != 200) {
            before_ready += 1;
        }
        if victim.logged("restored checkpoint") {
            restored += 1;
        }
        victim.kill();
        kills += 1;
    }
    producing.join().unwrap();
    // The last run is not killed: it must catch up from the checkpoints the others left.
    let mut last = setup.worker(0);
    last.wait_ready();
    for task in [0, 2] {
        assert!(
            last.logged(&format!("restored checkpoint task={task}")),
            "the last restart restores task {task} from a checkpoint; log:\n{}",
            last.log_text()
        );
    }
    let comparison = setup.check_reports();
    eprintln!(
        "victim killed {kills} times with SIGKILL ({before_ready} before it was ready, {restored} after restoring a checkpoint); {} reports written twice or more",
        comparison.duplicates
    );
    assert!(last.terminate().success());
    assert!(steady.terminate().success());
}

#[test]
fn a_flipped_bit_in_the_newest_checkpoint_falls_back_to_the_previous_one() {
    // Checkpoints every 2 s, so that the test can tell which checkpoint holds what.
    let Some(setup) = Setup::new("2s") else {
        return;
    };
    let thirds: Vec<&[Event]> = setup.events.chunks(setup.events.len() / 3 + 1).collect();
    let mut steady = setup.worker(1);
    let mut victim = setup.worker(0);
    steady.wait_ready();
    victim.wait_ready();
    let task_dir = setup.task_dir(0, 0);
    // Checkpoint A holds the first third; the second third is produced right after it, and
    // the worker is killed right after the next checkpoint B, which holds (part of) it. So
    // falling back from B to A replays records that B had taken.
    setup.produce(thirds[0]);
    wait_consumed(&mut victim, setup.records_of(&[0, 2]));
    let a = wait_new_checkpoint(&task_dir, None);
    let a = wait_new_checkpoint(&task_dir, Some(&a));
    setup.produce(thirds[1]);
    wait_new_checkpoint(&task_dir, Some(&a));
    victim.kill();
    let b = quickstart::newest_checkpoint(&task_dir).unwrap();
    let store = CheckpointStore::new(setup.checkpoint_dir(0), 3);
    let newest_id = store.list(0).unwrap()[0].id;
    let taken = |id: u64| -> i64 {
        let checkpoint = store.read(0, id).unwrap().unwrap();
        checkpoint
            .meta
            .offsets
            .values()
            .flat_map(|o| o.values())
            .sum()
    };
    let (taken_a, taken_b) = (taken(newest_id - 1), taken(newest_id));
    assert!(
        taken_a < taken_b,
        "B took more than A: {taken_a} vs {taken_b}"
    );
    let mut bytes = std::fs::read(&b).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&b, bytes).unwrap();

    setup.produce(thirds[2]);
    let mut restarted = setup.worker(0);
    restarted.wait_ready();
    let log = restarted.log_text();
    assert!(
        restarted.logged(&format!("corrupt checkpoint skipped task=0 id={newest_id}")),
        "the corrupt checkpoint is logged; log:\n{log}"
    );
    assert!(
        restarted.logged(&format!("restored checkpoint task=0 id={}", newest_id - 1)),
        "the previous checkpoint is restored; log:\n{log}"
    );
    assert!(
        restarted.metric(CHECKPOINT_CORRUPT_TOTAL).unwrap() >= 1.0,
        "{CHECKPOINT_CORRUPT_TOTAL} counts it"
    );
    eprintln!(
        "task 0: checkpoint {newest_id} (offsets sum {taken_b}) corrupted, {} (offsets sum {taken_a}) restored",
        newest_id - 1
    );
    setup.check_reports();
    assert!(restarted.terminate().success());
    assert!(steady.terminate().success());
}

/// Makes the checkpoint write of the next ids of `task_dir` fail by putting a directory where
/// the write creates its temp file (`.ckpt-<id>.tmp-<pid>`, see `checkpoint/store.rs`). Unlike
/// `chmod`, this stops root too. Blocks three ids, in case a write of the first is under way.
fn block_checkpoints(task_dir: &Path, pid: u32) -> Vec<PathBuf> {
    let store_newest = quickstart::newest_checkpoint(task_dir)
        .and_then(|p| {
            p.file_stem()?
                .to_str()?
                .strip_prefix("ckpt-")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let mut blocked = Vec::new();
    for id in store_newest + 1..=store_newest + 3 {
        let path = task_dir.join(format!(".ckpt-{id}.tmp-{pid}"));
        match std::fs::create_dir(&path) {
            Ok(()) => blocked.push(path),
            // A write of this id is under way: it may succeed; the next ones are blocked.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => panic!("cannot block {}: {err}", path.display()),
        }
    }
    blocked
}

#[test]
fn an_unwritable_checkpoint_path_is_counted_and_logged_and_processing_goes_on() {
    let Some(setup) = Setup::new("500ms") else {
        return;
    };
    let (first, second) = setup.events.split_at(setup.events.len() / 2);
    let mut steady = setup.worker(1);
    let mut victim = setup.worker(0);
    steady.wait_ready();
    victim.wait_ready();
    setup.produce(first);
    for task in [0, 2] {
        wait_new_checkpoint(&setup.task_dir(0, task), None);
    }
    assert_eq!(victim.metric(CHECKPOINT_FAILURES_TOTAL), Some(0.0));

    let mut blocked = Vec::new();
    for task in [0, 2] {
        blocked.extend(block_checkpoints(&setup.task_dir(0, task), victim.id()));
    }
    let before: Vec<Vec<PathBuf>> = [0, 2]
        .iter()
        .map(|&t| quickstart::checkpoints(&setup.task_dir(0, t)))
        .collect();
    // Processing goes on while checkpoints fail: the second half is taken meanwhile.
    setup.produce(second);
    wait_consumed(&mut victim, setup.records_of(&[0, 2]));
    let mut failures = 0.0;
    wait_for(
        "tidemark_checkpoint_failures_total to count several failures",
        DEADLINE,
        || {
            failures = victim.metric(CHECKPOINT_FAILURES_TOTAL).unwrap_or(0.0);
            failures >= 4.0
        },
    );
    assert!(
        victim.logged("checkpoint failed"),
        "the failure is logged; log:\n{}",
        victim.log_text()
    );
    for (i, &t) in [0, 2].iter().enumerate() {
        // At most the one write that was under way when the path was blocked got through.
        let now = quickstart::checkpoints(&setup.task_dir(0, t));
        assert!(
            now.len() <= before[i].len() + 1,
            "task {t} checkpointed while blocked: {now:?}"
        );
    }
    eprintln!("{failures} checkpoint failures counted while the path was blocked");

    // Writable again: the next checkpoints succeed and hold everything taken.
    let unblocked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for path in &blocked {
        std::fs::remove_dir(path).unwrap();
    }
    let mut after = Vec::new();
    for t in [0, 2] {
        let task_dir = setup.task_dir(0, t);
        let newest = quickstart::newest_checkpoint(&task_dir);
        after.push(wait_new_checkpoint(&task_dir, newest.as_ref()));
    }
    wait_for(
        "a successful checkpoint after the path was freed",
        DEADLINE,
        || {
            victim
                .metric("tidemark_checkpoint_last_success_timestamp_seconds")
                .is_some_and(|t| t >= unblocked.floor())
        },
    );
    let settled = victim.metric(CHECKPOINT_FAILURES_TOTAL).unwrap();
    for t in [0, 2] {
        let task_dir = setup.task_dir(0, t);
        let newest = quickstart::newest_checkpoint(&task_dir);
        wait_new_checkpoint(&task_dir, newest.as_ref());
    }
    assert_eq!(
        victim.metric(CHECKPOINT_FAILURES_TOTAL).unwrap(),
        settled,
        "no failure once the path is writable"
    );

    // A crash now restarts from the checkpoints written after the outage: nothing is lost.
    victim.kill();
    let mut restarted = setup.worker(0);
    restarted.wait_ready();
    assert!(
        restarted.logged("restored checkpoint task=0")
            && restarted.logged("restored checkpoint task=2"),
        "log:\n{}",
        restarted.log_text()
    );
    setup.check_reports();
    eprintln!("checkpoints after the outage: {after:?}");
    assert!(restarted.terminate().success());
    assert!(steady.terminate().success());
}
