//! Exactly-once across a rescale 2 → 1 → 3 with the snapshot hand-off, on a broker that writes
//! transaction markers and fences producers (noida-db, `kafka_support::noida`), with ordinal 0
//! killed with SIGKILL at random moments under every assignment.
//!
//! The processes play the pods of a StatefulSet and the test plays the operator (runtime files
//! per assignment epoch, restarts from the highest ordinal down, `--peer ORDINAL=URL` instead of
//! the headless Service), as in `kafka_rescale.rs`: 2 workers (epoch 1); 1 worker (epoch 2: it
//! fetches tasks 1 and 3 from the surplus worker 1, which keeps serving); 3 workers in two steps
//! (epoch 3 releases tasks 1 and 2 on worker 0, epoch 4 has workers 2 and 1 fetch them — worker
//! 1's volume still holds its epoch-1 checkpoints of tasks 1 and 3, older than worker 0's).
//! At the end a `read_committed` reader must see every report of the oracle exactly once, and a
//! `read_uncommitted` reader the aborted records that the kills left.
//!
//! Without noida-db the test prints a skip message and passes, unless `TIDEMARK_REQUIRE_NOIDA=1`.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_support::exactly_once::{judge, read_to_end, snapshot};
use kafka_support::noida::Noida;
use kafka_support::quickstart::{self, Event, Expected};
use kafka_support::worker::WorkerProcess;
use kafka_support::Random;
use tidemark_worker::metrics::{HANDOFF_TASKS_TOTAL, RECORDS_OUT_TOTAL};

const PARTITIONS: i32 = 4;
const REPORTS: &str = "marketing_report_topic";

/// The broker, the test directory (manifest, runtime files, one volume per ordinal) and the
/// events with their oracle.
struct Setup {
    noida: Noida,
    dir: tempfile::TempDir,
    manifest: PathBuf,
    expected: Expected,
}

impl Setup {
    /// Writes the runtime file of an epoch, as the operator's ConfigMap holds it.
    fn runtime(&self, epoch: u64, text: &str) -> PathBuf {
        let path = self.dir.path().join(format!("runtime-{epoch}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts worker `ordinal` under `runtime` with its volume and `peers`.
    fn worker(&self, ordinal: u32, runtime: &PathBuf, peers: &[(u32, String)]) -> WorkerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        command
            .args(["run", "-q", "-f"])
            .arg(&self.manifest)
            .args(["--bootstrap-servers", &self.noida.bootstrap])
            .args(["--ordinal", &ordinal.to_string()])
            .arg("--runtime")
            .arg(runtime)
            .arg("--checkpoint-dir")
            .arg(self.dir.path().join(format!("worker-{ordinal}")))
            .args(["--delivery", "exactlyOnce"])
            .args(["--http-addr", "127.0.0.1:0"]);
        for (peer, url) in peers {
            command.args(["--peer", &format!("{peer}={url}")]);
        }
        WorkerProcess::spawn(command)
    }

    /// Produces `events` in ten chunks, 300 ms apart, on a thread of its own.
    fn produce_slowly(&self, events: Vec<Event>) -> std::thread::JoinHandle<()> {
        let pause = Duration::from_millis(300);
        quickstart::produce_in_chunks(&self.noida.bootstrap, events, 10, pause)
    }

    /// Kills worker 0 (started by `start`) `kills` times while `producing` runs: the first
    /// within 100 ms of its start, the others at a random moment within 500 ms after it wrote
    /// its first report (or after 5 s without one); returns the last worker 0, ready.
    fn kill_ordinal_0(
        &self,
        kills: u32,
        random: &mut Random,
        producing: std::thread::JoinHandle<()>,
        start: impl Fn() -> WorkerProcess,
    ) -> WorkerProcess {
        for kill in 0..kills {
            let mut victim = start();
            if kill > 0 {
                // Once it has written reports (into a transaction that commits with its next
                // checkpoint, 500 ms at most), so that kills leave aborted ones.
                victim.wait_metric(RECORDS_OUT_TOTAL, 1.0, Duration::from_secs(5));
            }
            let within = if kill == 0 { 100 } else { 500 };
            std::thread::sleep(Duration::from_millis(random.below(within)));
            victim.kill();
        }
        producing.join().unwrap();
        let mut last = start();
        last.wait_ready();
        last
    }
}

fn url(worker: &mut WorkerProcess) -> String {
    format!("http://{}", worker.addr())
}

#[test]
fn a_rescale_two_to_one_to_three_with_kills_writes_every_report_exactly_once() {
    let Some(noida) = Noida::start(&quickstart::topics(PARTITIONS)) else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let manifest = quickstart::write_manifest(dir.path(), "500ms");
    // 5 s of event time per event: windows close all through every phase.
    let events = quickstart::events_every(9_000, 5_000, PARTITIONS);
    let expected = quickstart::oracle(&events);
    let setup = Setup {
        noida,
        dir,
        manifest,
        expected,
    };
    let (real, flush): (Vec<Event>, Vec<Event>) =
        events.into_iter().partition(|e| e.partition.is_none());
    let parts: Vec<Vec<Event>> = real
        .chunks(real.len() / 3 + 1)
        .map(<[Event]>::to_vec)
        .collect();
    let mut random = Random::new();
    let mut kills = 0;

    // Epoch 1: two workers; ordinal 0 killed four times while the first third arrives.
    let epoch1 = setup.runtime(1, "parallelism: 2\nassignmentEpoch: 1\n");
    let mut w1 = setup.worker(1, &epoch1, &[]);
    w1.wait_ready();
    let producing = setup.produce_slowly(parts[0].clone());
    let w0 = setup.kill_ordinal_0(4, &mut random, producing, || setup.worker(0, &epoch1, &[]));
    kills += 4;
    assert!(w0.terminate().success());
    assert!(w1.terminate().success(), "SIGTERM: a final checkpoint");

    // Epoch 2: one worker. Worker 1 owns nothing and serves its checkpoints; worker 0 fetches
    // tasks 1 and 3 from it, and is killed three times while the second third arrives.
    let epoch2 = setup.runtime(
        2,
        "parallelism: 1\nassignmentEpoch: 2\npreviousParallelism: [2]\n",
    );
    let mut w1 = setup.worker(1, &epoch2, &[]);
    w1.wait_ready();
    let peers = [(1, url(&mut w1))];
    let producing = setup.produce_slowly(parts[1].clone());
    let mut w0 = setup.kill_ordinal_0(3, &mut random, producing, || {
        setup.worker(0, &epoch2, &peers)
    });
    kills += 3;
    for task in [1, 3] {
        assert!(
            w0.logged(&format!("restored checkpoint task={task}")),
            "{}",
            w0.log_text()
        );
    }
    let handed: f64 = w0.metric(HANDOFF_TASKS_TOTAL).unwrap_or(0.0);
    eprintln!("epoch 2: worker 0 restored tasks 1 and 3 ({handed} fetched by its last run)");

    // Epoch 3 (release): worker 0 keeps tasks 0 and 3 and serves 1 and 2; workers 1 and 2 run
    // nothing yet.
    let release = setup.runtime(
        3,
        "parallelism: 3\nassignmentEpoch: 3\npreviousParallelism: [1]\nrelease: true\n",
    );
    assert!(w0.terminate().success());
    assert!(w1.terminate().success());
    let mut w0 = setup.worker(0, &release, &[]);
    w0.wait_ready();
    assert!(w0.logged("release=true tasks=[0, 3]"), "{}", w0.log_text());
    // Epoch 4 (acquire), rolled from the highest ordinal down.
    let acquire = setup.runtime(
        4,
        "parallelism: 3\nassignmentEpoch: 4\npreviousParallelism: [1]\n",
    );
    let from_0 = [(0, url(&mut w0))];
    let mut w2 = setup.worker(2, &acquire, &from_0);
    w2.wait_ready();
    let mut w1 = setup.worker(1, &acquire, &from_0);
    w1.wait_ready();
    for (worker, task) in [(&w1, 1), (&w2, 2)] {
        assert!(
            worker.logged(&format!("restored checkpoint task={task}")),
            "{}",
            worker.log_text()
        );
    }
    assert!(w0.terminate().success());
    let peers = [(1, url(&mut w1)), (2, url(&mut w2))];
    let mut rest = parts[2].clone();
    rest.extend(flush);
    let producing = setup.produce_slowly(rest);
    let w0 = setup.kill_ordinal_0(3, &mut random, producing, || {
        setup.worker(0, &acquire, &peers)
    });
    kills += 3;

    // Every report once, read by fresh readers until complete.
    let bootstrap = &setup.noida.bootstrap;
    let deadline = Instant::now() + Duration::from_secs(90);
    while snapshot(bootstrap, REPORTS, 1, "read_committed").len() < setup.expected.len()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    for worker in [w0, w1, w2] {
        let log = worker.log_text();
        assert!(worker.terminate().success(), "log:\n{log}");
    }
    let wait = Duration::from_secs(60);
    let committed = read_to_end(bootstrap, REPORTS, 1, "read_committed", wait);
    let uncommitted = read_to_end(bootstrap, REPORTS, 1, "read_uncommitted", wait);
    let exactness = judge(&committed, &uncommitted, &setup.expected);
    eprintln!(
        "rescale 2 → 1 → 3 with ordinal 0 killed {kills} times: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (exactness.lost, exactness.doubled, exactness.wrong),
        (0, 0, 0),
        "lost, doubled, wrong: {exactness:?}"
    );
    assert!(exactness.aborted > 0, "{exactness:?}");
}
