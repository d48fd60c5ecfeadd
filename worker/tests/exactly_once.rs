//! Exactly-once, proven with worker processes against a broker that writes transaction markers
//! and fences producers (noida-db, `kafka_support::noida`): the quickstart under
//! `--delivery exactlyOnce` with two workers over four partitions, ordinal 0 killed with SIGKILL
//! at random moments; a report keyed by category (the global stage on ordinal 0) likewise; a
//! transaction left open by a killed worker; a zombie worker paused while its replacement starts.
//!
//! Every test ends the same way: the workers stop, the report topic is read to its end by a
//! `read_committed` reader, which must hold every report of the oracle exactly once (lost and
//! doubled — by Kafka key and revision — counted and zero), and by a `read_uncommitted` reader,
//! whose extra records are those of aborted transactions (the kill tests assert there were some:
//! the broker really hid something).
//!
//! Without noida-db these tests print a skip message and pass, unless `TIDEMARK_REQUIRE_NOIDA=1`
//! (`.ci/test.sh` sets it), where they fail. The rescale is in `exactly_once_rescale.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_support::exactly_once::{judge, read_to_end, snapshot, Exactness};
use kafka_support::noida::Noida;
use kafka_support::quickstart::{self, Event, Expected};
use kafka_support::worker::{WorkerArgs, WorkerProcess};
use kafka_support::Random;
use tidemark_worker::metrics::{CHECKPOINT_CORRUPT_TOTAL, RECORDS_OUT_TOTAL, SINK_FENCED_TOTAL};

const PARTITIONS: i32 = 4;
const EVENTS: u64 = 12_000;
const REPORTS: &str = "marketing_report_topic";

/// A broker with the quickstart's topics, a temporary directory with the manifest, and the
/// events with their oracle.
struct Setup {
    noida: Noida,
    dir: tempfile::TempDir,
    manifest: PathBuf,
    events: Vec<Event>,
    expected: Expected,
}

impl Setup {
    /// The quickstart (keyed by user) with checkpoints every `interval`; `None` without noida.
    fn new(interval: &str, events: Vec<Event>) -> Option<Setup> {
        let noida = Noida::start(&quickstart::topics(PARTITIONS))?;
        let dir = tempfile::tempdir().unwrap();
        let manifest = quickstart::write_manifest(dir.path(), interval);
        let expected = quickstart::oracle(&events);
        Some(Setup {
            noida,
            dir,
            manifest,
            events,
            expected,
        })
    }

    /// The report keyed by category: over four partitions it runs in the global stage.
    fn by_category(interval: &str, events: Vec<Event>) -> Option<Setup> {
        let noida = Noida::start(&quickstart::topics(PARTITIONS))?;
        let dir = tempfile::tempdir().unwrap();
        let manifest = quickstart::write_manifest_keyed(dir.path(), interval, "category");
        let expected =
            quickstart::oracle_by(&events, |_, v| v["category"].as_str().unwrap().to_owned());
        Some(Setup {
            noida,
            dir,
            manifest,
            events,
            expected,
        })
    }

    fn checkpoint_dir(&self, ordinal: u32) -> PathBuf {
        self.dir.path().join(format!("worker-{ordinal}"))
    }

    fn task_dir(&self, ordinal: u32, task: &str) -> PathBuf {
        self.checkpoint_dir(ordinal).join(format!("task-{task}"))
    }

    /// Worker `ordinal` of two, exactly-once.
    fn worker(&self, ordinal: u32) -> WorkerProcess {
        self.worker_with(ordinal, &self.manifest)
    }

    /// Worker `ordinal` of two, exactly-once, running `manifest`.
    fn worker_with(&self, ordinal: u32, manifest: &Path) -> WorkerProcess {
        let dir = self.checkpoint_dir(ordinal);
        WorkerProcess::start(&WorkerArgs {
            manifest,
            bootstrap: &self.noida.bootstrap,
            ordinal,
            parallelism: 2,
            checkpoint_dir: &dir,
            delivery: "exactlyOnce",
        })
    }

    fn produce(&self, events: &[Event]) {
        quickstart::produce_all(&self.noida.bootstrap, events);
    }

    /// Produces the events in 20 chunks, 400 ms apart, on a thread of its own.
    fn produce_slowly(&self) -> std::thread::JoinHandle<()> {
        let (events, pause) = (self.events.clone(), Duration::from_millis(400));
        quickstart::produce_in_chunks(&self.noida.bootstrap, events, 20, pause)
    }

    /// Waits until a `read_committed` reader has every report of the oracle, stops `workers`
    /// (SIGTERM: a final checkpoint and commit), then reads the report topic to its end under
    /// both isolation levels and judges it.
    fn finish(&self, workers: Vec<WorkerProcess>) -> Exactness {
        let bootstrap = &self.noida.bootstrap;
        if !self.all_reports_within(Duration::from_secs(90)) {
            // Judged below all the same; this says whether the missing reports were written
            // and hidden (an open transaction) or never written.
            let committed = snapshot(bootstrap, REPORTS, 1, "read_committed");
            let uncommitted = snapshot(bootstrap, REPORTS, 1, "read_uncommitted");
            eprintln!(
                "not every report arrived: read_committed sees {} records (up to offset {:?}), \
                 read_uncommitted {} (up to {:?})",
                committed.len(),
                committed.last().map(|r| r.offset),
                uncommitted.len(),
                uncommitted.last().map(|r| r.offset)
            );
            for worker in &workers {
                let log = worker.log();
                let tail = &log[log.len().saturating_sub(30)..];
                eprintln!("worker log (end):\n{}", tail.join("\n"));
            }
        }
        for worker in workers {
            let log = worker.log_text();
            assert!(worker.terminate().success(), "SIGTERM ends it; log:\n{log}");
        }
        let wait = Duration::from_secs(60);
        let committed = read_to_end(&self.noida.bootstrap, REPORTS, 1, "read_committed", wait);
        let uncommitted = read_to_end(&self.noida.bootstrap, REPORTS, 1, "read_uncommitted", wait);
        judge(&committed, &uncommitted, &self.expected)
    }
}

impl Setup {
    /// Whether a `read_committed` reader gets every report of the oracle within `wait`. Each
    /// look is a new reader from the beginning: on noida-db a reader that was polling while
    /// transactions were aborted was seen to miss committed records (`docs/kafka.md`).
    fn all_reports_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let now = snapshot(&self.noida.bootstrap, REPORTS, 1, "read_committed");
            let ids: std::collections::HashSet<(String, String)> = now
                .iter()
                .filter_map(|r| {
                    let value: serde_json::Value = serde_json::from_str(&r.value).ok()?;
                    Some((
                        value["key"].as_str()?.to_owned(),
                        value["window"]["start"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            if self.expected.keys().all(|id| ids.contains(id)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Asserts that nothing was lost, doubled or wrong.
fn assert_exact(exactness: &Exactness) {
    assert_eq!(
        (exactness.lost, exactness.doubled, exactness.wrong),
        (0, 0, 0),
        "lost, doubled, wrong: {exactness:?}"
    );
}

/// Kills `worker` with SIGKILL after a random moment: every third kill within 400 ms of its
/// first reports, otherwise one time in four within 100 ms of its start (start-up, restore,
/// init_transactions), else within 2.5 s (a running loop at any point of its checkpoint
/// cycle). Returns whether it was ready when killed.
fn kill_at_random(worker: WorkerProcess, random: &mut Random, kills: u32) -> bool {
    let mut worker = worker;
    let within = if kills % 3 == 2 {
        // Every third kill once the worker has written reports (into a transaction that
        // commits with its next checkpoint, 500 ms at most), so that the kills leave aborted
        // ones for the read_uncommitted reader to see: purely random moments sometimes left
        // none (seed 1796310018583201067).
        worker.wait_metric(RECORDS_OUT_TOTAL, 1.0, Duration::from_secs(5));
        400
    } else if kills.is_multiple_of(4) {
        100
    } else {
        2_500
    };
    std::thread::sleep(Duration::from_millis(random.below(within)));
    let ready = worker.get("/readyz").is_some_and(|(code, _)| code == 200);
    worker.kill();
    ready
}

/// Flips one bit in the middle of `file`.
fn flip(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(file, bytes).unwrap();
}

/// The checkpoint id in a file name `ckpt-<id>.tdmk`.
fn checkpoint_id(path: &Path) -> u64 {
    let stem = path.file_stem().unwrap().to_str().unwrap();
    stem.strip_prefix("ckpt-").unwrap().parse().unwrap()
}

/// The checkpoint id marked on the committed offsets of `task` in the workers' group, and the
/// offsets, as (source topic, offset).
fn committed_marker(bootstrap: &str, task: i32) -> Option<(u64, Vec<(String, i64)>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tidemark-quickstart")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition("click_topic", task);
    list.add_partition("purchase_topic", task);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    let element = committed.find_partition("click_topic", task)?;
    let id = element
        .metadata()
        .strip_prefix("tidemark-checkpoint=")?
        .parse()
        .ok()?;
    let offsets = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.topic().to_owned(), o)),
            _ => None,
        })
        .collect();
    Some((id, offsets))
}

/// Sends `signal` (`STOP`, `CONT`, …) to process `pid` with `kill(1)`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn a_worker_killed_at_random_moments_under_exactly_once_writes_every_report_exactly_once() {
    // Events 5 s apart: 16 hours of event time, so windows close all through the run and kills
    // land while transactions hold reports.
    let events = quickstart::events_every(EVENTS, 5_000, PARTITIONS);
    let Some(setup) = Setup::new("500ms", events) else {
        return;
    };
    let started = Instant::now();
    let mut random = Random::new();
    let mut steady = setup.worker(1);
    steady.wait_ready();
    let producing = setup.produce_slowly();
    let (mut kills, mut ready_at_kill) = (0, 0);
    while kills < 12 {
        let victim = setup.worker(0);
        ready_at_kill += u32::from(kill_at_random(victim, &mut random, kills));
        kills += 1;
    }
    producing.join().unwrap();
    // The group's committed offsets, written by the transaction of the checkpoint its marker
    // names (and again by the informative commit after it), are that checkpoint's offsets.
    let (committed, offsets) =
        committed_marker(&setup.noida.bootstrap, 0).expect("a committed checkpoint");
    let store = tidemark_worker::checkpoint::CheckpointStore::new(setup.checkpoint_dir(0), 3);
    let checkpoint = store
        .read(0, committed)
        .unwrap()
        .expect("the committed checkpoint");
    let mut in_checkpoint: Vec<(String, i64)> = checkpoint
        .meta
        .offsets
        .iter()
        .flat_map(|(source, partitions)| {
            let topic = if source == "clicks" {
                "click_topic"
            } else {
                "purchase_topic"
            };
            partitions.values().map(move |&o| (topic.to_owned(), o))
        })
        .collect();
    in_checkpoint.sort();
    let mut offsets = offsets;
    offsets.sort();
    assert_eq!(
        offsets, in_checkpoint,
        "the group's committed offsets are those of checkpoint {committed}"
    );
    // The last restart finds a flipped bit in the newest checkpoint of task 0.
    let task_dir = setup.task_dir(0, "0");
    let newest = quickstart::newest_checkpoint(&task_dir).unwrap();
    let intact = std::fs::read(&newest).unwrap();
    flip(&newest);
    let id = checkpoint_id(&newest);
    let mut last = setup.worker(0);
    let log = if id == committed {
        // The committed checkpoint itself: its transaction's results are visible, so falling
        // back to the one before it would write them again. The worker refuses to start and
        // says why (a known limit: docs/checkpoints.md); the volume is repaired by hand.
        assert!(!last.wait_ready_or_exit(), "{}", last.log_text());
        let log = last.log_text();
        assert!(
            log.contains(&format!("corrupt checkpoint skipped task=0 id={id}"))
                && log.contains(&format!(
                    "checkpoint {id} was committed to Kafka but is not on the volume"
                )),
            "log:\n{log}"
        );
        std::fs::write(&newest, &intact).unwrap();
        last = setup.worker(0);
        last.wait_ready();
        eprintln!("the flipped checkpoint {id} was the committed one: the worker refused to start");
        log
    } else {
        // Newer than the committed one (a kill between a checkpoint and its commit): skipped,
        // the committed one restored.
        last.wait_ready();
        let log = last.log_text();
        assert!(
            last.logged(&format!("corrupt checkpoint skipped task=0 id={id}")),
            "log:\n{log}"
        );
        assert!(last.metric(CHECKPOINT_CORRUPT_TOTAL).unwrap() >= 1.0);
        eprintln!("the flipped checkpoint {id} was newer than the committed {committed}");
        log
    };
    assert!(
        last.logged(&format!("restored checkpoint task=0 id={committed}")),
        "the last restart restores the committed checkpoint {committed}; log:\n{log}\n{}",
        last.log_text()
    );
    let exactness = setup.finish(vec![last, steady]);
    eprintln!(
        "ordinal 0 killed {kills} times with SIGKILL ({ready_at_kill} when ready); checkpoint \
         {id} of task 0 corrupted before the last restart; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_exact(&exactness);
    assert!(
        exactness.aborted > 0,
        "the kills left aborted transactions with reports: {exactness:?}"
    );
}

/// The global stage on ordinal 0 merges the tasks' partials (sent through the partials topic in
/// the tasks' transactions) into reports keyed by category; ordinal 0, stage and all, is killed
/// at random moments.
#[test]
#[ignore = "fails on noida-db 0.2.3 by its fault: every fetch after an abort marker is told the \
            aborted transaction again, so the stage's consumer drops all later partials of \
            ordinal 0's tasks and never closes a window (exact without kills); proven in \
            exactly_once_broker.rs — see docs/kafka.md"]
fn a_global_analytic_whose_stage_is_killed_at_random_moments_writes_every_report_exactly_once() {
    let events = quickstart::events_every(EVENTS, 5_000, PARTITIONS);
    let Some(setup) = Setup::by_category("500ms", events) else {
        return;
    };
    assert!(setup.expected.len() > 8, "{}", setup.expected.len());
    let started = Instant::now();
    let mut random = Random::new();
    let mut steady = setup.worker(1);
    steady.wait_ready();
    let producing = setup.produce_slowly();
    let mut kills = 0;
    while kills < 10 {
        let victim = setup.worker(0);
        kill_at_random(victim, &mut random, kills);
        kills += 1;
    }
    producing.join().unwrap();
    let mut last = setup.worker(0);
    last.wait_ready();
    let exactness = setup.finish(vec![last, steady]);
    eprintln!(
        "ordinal 0 (global stage) killed {kills} times; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_exact(&exactness);
    assert!(exactness.aborted > 0, "{exactness:?}");
}

/// A worker killed with its transaction open (its checkpoint interval is 10 s, so everything it
/// wrote is in it) holds the last stable offset of the report topic: the other worker's later
/// committed reports stay invisible to `read_committed` readers until the replacement's
/// `init_transactions` aborts the open transaction (the broker never times it out).
#[test]
fn a_transaction_left_open_by_a_killed_worker_stops_hiding_reports_once_its_replacement_starts() {
    let events = quickstart::events_every(EVENTS, 5_000, PARTITIONS);
    let Some(setup) = Setup::new("500ms", events) else {
        return;
    };
    let slow_dir = setup.dir.path().join("slow");
    std::fs::create_dir(&slow_dir).unwrap();
    let slow = quickstart::write_manifest(&slow_dir, "10s");
    let (first, second) = setup.events.split_at(setup.events.len() / 2);
    let mut steady = setup.worker(1);
    let mut victim = setup.worker_with(0, &slow);
    steady.wait_ready();
    victim.wait_ready();
    setup.produce(first);
    let wrote = victim.wait_metric(RECORDS_OUT_TOTAL, 1.0, Duration::from_secs(30));
    assert!(wrote.is_some(), "log:\n{}", victim.log_text());
    victim.kill();
    let bootstrap = &setup.noida.bootstrap;
    // The steady worker goes on with a part of the second half, committing every 500 ms: what
    // it wrote before `seen` is committed two seconds later.
    let (more, rest) = second.split_at(second.len() / 2);
    setup.produce(more);
    std::thread::sleep(Duration::from_secs(3));
    let seen = snapshot(bootstrap, REPORTS, 1, "read_uncommitted");
    std::thread::sleep(Duration::from_secs(2));
    let visible = snapshot(bootstrap, REPORTS, 1, "read_committed");
    let end = seen.iter().map(|r| r.offset).max().unwrap();
    let visible_end = visible.iter().map(|r| r.offset).max().unwrap_or(-1);
    assert!(
        visible_end < end,
        "read_committed stops before the open transaction: sees up to {visible_end}, the log \
         holds {end}"
    );
    setup.produce(rest);
    let restarted = Instant::now();
    let mut replacement = setup.worker(0);
    let caught_up = loop {
        let now = snapshot(bootstrap, REPORTS, 1, "read_committed");
        if now.iter().any(|r| r.offset >= end) {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "read_committed still stuck at {visible_end} 30 s after the replacement started; \
             log:\n{}",
            replacement.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let ready = replacement.wait_ready();
    let exactness = setup.finish(vec![replacement, steady]);
    // Records of `seen` written by the steady worker: committed long before, hidden meanwhile.
    let finally: std::collections::BTreeSet<i64> = read_to_end(
        bootstrap,
        REPORTS,
        1,
        "read_committed",
        Duration::from_secs(30),
    )
    .iter()
    .map(|r| r.offset)
    .collect();
    let hidden = seen
        .iter()
        .filter(|r| r.offset > visible_end && finally.contains(&r.offset))
        .count();
    eprintln!(
        "read_committed blocked at offset {visible_end} (log end {end}) while the killed \
         worker's transaction was open, hiding {hidden} committed reports; caught up {} ms \
         after the replacement started (ready after {} ms)",
        caught_up.as_millis(),
        ready.as_millis()
    );
    assert!(
        hidden > 0,
        "committed reports were hidden behind the open transaction"
    );
    assert_exact(&exactness);
    assert!(exactness.aborted > 0, "{exactness:?}");
}

/// A zombie: ordinal 0 is paused (SIGSTOP) while its replacement starts on the same volume and
/// takes its tasks over (fencing its producers), then resumed (SIGCONT) with records to
/// process: its writes are refused, it says so and steps back, and the output stays exact.
#[test]
fn a_paused_worker_resumed_after_its_replacement_started_is_fenced_and_the_output_stays_exact() {
    let events = quickstart::events_every(EVENTS, 5_000, PARTITIONS);
    let Some(setup) = Setup::new("500ms", events) else {
        return;
    };
    let thirds: Vec<&[Event]> = setup.events.chunks(setup.events.len() / 3 + 1).collect();
    let mut steady = setup.worker(1);
    let mut zombie = setup.worker(0);
    steady.wait_ready();
    zombie.wait_ready();
    setup.produce(thirds[0]);
    assert!(zombie
        .wait_metric(RECORDS_OUT_TOTAL, 1.0, Duration::from_secs(30))
        .is_some());
    signal(zombie.id(), "STOP");
    let mut replacement = setup.worker(0);
    replacement.wait_ready();
    setup.produce(thirds[1]);
    signal(zombie.id(), "CONT");
    // The zombie's consumer still reads its partitions: it processes the second third and
    // tries to write and commit it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !zombie.logged("fenced") {
        assert!(
            Instant::now() < deadline,
            "the zombie does not say it was fenced; log:\n{}",
            zombie.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        zombie.logged("steps back"),
        "the zombie says what it does; log:\n{}",
        zombie.log_text()
    );
    // Counted per fenced task: one or both of the zombie's two tasks, depending on which of
    // them had records to write before it stepped back.
    let fenced = zombie.wait_metric(SINK_FENCED_TOTAL, 1.0, Duration::from_secs(10));
    assert!(
        fenced.is_some_and(|n| (1.0..=2.0).contains(&n)),
        "{SINK_FENCED_TOTAL} counts the fenced tasks (1 or 2): {fenced:?}"
    );
    let readiness = zombie.get("/readyz").unwrap();
    assert_eq!(readiness.0, 503, "{readiness:?}");
    assert!(readiness.1.contains("fenced"), "{readiness:?}");
    setup.produce(thirds[2]);
    let exactness = setup.finish(vec![replacement, steady]);
    assert!(
        zombie.get("/readyz").is_some_and(|(code, _)| code == 503),
        "the zombie stays stepped back"
    );
    let status = zombie.terminate();
    eprintln!("the zombie stopped on SIGTERM with {status}");
    assert_exact(&exactness);
}
