//! Rescaling moves task state between worker processes by snapshot hand-off (docs/design.md, delivery, checkpoints and recovery,
//! `docs/rescale.md`), against a Kafka that outlives them (`tidemark-mock-kafka`): workers
//! process part of the quickstart input under one assignment, stop at a final checkpoint
//! (SIGTERM), restart under the next assignment epoch as the operator's runtime file says, and
//! the gaining worker fetches each moved task's newest checkpoint from its earlier owner over
//! HTTP before it restores and processes the rest. The report topic must hold every report of
//! the oracle computed from the produced events (at-least-once comparison: distinct records by
//! key and revision equal the oracle; copies are counted).
//!
//! The processes play the pods of a StatefulSet; the test plays the operator and the StatefulSet
//! controller (runtime files per step, restarts from the highest ordinal down). Each worker gets
//! `--peer ORDINAL=URL` for its earlier owners instead of the headless Service's DNS names.
//!
//! The mock cluster writes no transaction markers (see `kafka_sink.rs`), so the exactly-once
//! runs prove the hand-off under that delivery's code path (fencing, commit marker, restore
//! point), not `read_committed` visibility.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_support::quickstart::{self, Event};
use kafka_support::worker::{http_get, WorkerProcess};
use kafka_support::*;
use tidemark_worker::metrics::{HANDOFF_BYTES_TOTAL, HANDOFF_TASKS_TOTAL};

const PARTITIONS: i32 = 4;

fn start_mock() -> (std::process::Child, String) {
    let topics: Vec<String> = quickstart::topics(PARTITIONS)
        .iter()
        .map(|(t, p)| format!("{t}:{p}"))
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    start_mock_binary(&topics)
}

/// The test directory: manifest, runtime files and one checkpoint volume per ordinal.
struct Setup {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    bootstrap: String,
    delivery: &'static str,
}

impl Setup {
    fn new(bootstrap: &str, delivery: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifest = quickstart::write_manifest(dir.path(), "500ms");
        Setup {
            dir,
            manifest,
            bootstrap: bootstrap.to_owned(),
            delivery,
        }
    }

    /// Writes the runtime file of an epoch, as the operator's ConfigMap holds it.
    fn runtime(&self, epoch: u64, text: &str) -> PathBuf {
        let path = self.dir.path().join(format!("runtime-{epoch}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn volume(&self, ordinal: u32) -> PathBuf {
        self.dir.path().join(format!("worker-{ordinal}"))
    }

    /// Starts worker `ordinal` with `runtime`, its volume, `peers` and an HTTP address.
    fn worker(
        &self,
        ordinal: u32,
        runtime: &Path,
        peers: &[(u32, String)],
        http: &str,
    ) -> WorkerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        command
            .args(["run", "-q", "-f"])
            .arg(&self.manifest)
            .args(["--bootstrap-servers", &self.bootstrap])
            .args(["--ordinal", &ordinal.to_string()])
            .arg("--runtime")
            .arg(runtime)
            .arg("--checkpoint-dir")
            .arg(self.volume(ordinal))
            .args(["--delivery", self.delivery])
            .args(["--http-addr", http]);
        for (peer, url) in peers {
            command.args(["--peer", &format!("{peer}={url}")]);
        }
        WorkerProcess::spawn(command)
    }
}

fn url(worker: &mut WorkerProcess) -> String {
    format!("http://{}", worker.addr())
}

/// Waits until the workers together have taken `n` records from the sources.
fn wait_taken(workers: &mut [&mut WorkerProcess], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let taken: f64 = workers
            .iter_mut()
            .map(|w| w.metric("tidemark_records_in_total").unwrap_or(0.0))
            .sum();
        if taken >= n as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers took {taken} of {n} records"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Status code of `GET /v1/tasks/{task}/snapshot` on `worker` (the body is binary), asked as a
/// peer of the same pipeline (with its bearer token).
fn snapshot_status(worker: &mut WorkerProcess, task: u32) -> u16 {
    snapshot_status_as(worker, task, Some(kafka_support::worker::TOKEN))
}

/// Like [`snapshot_status`], with `token` (or none) as the bearer token.
fn snapshot_status_as(worker: &mut WorkerProcess, task: u32, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let addr = worker.addr();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /v1/tasks/{task}/snapshot HTTP/1.1\r\nHost: w\r\n{authorization}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn acquired_epoch(volume: &Path, task: u32) -> Option<u64> {
    std::fs::read_to_string(volume.join(format!("task-{task}/acquired-epoch")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn read_and_check(bootstrap: &str, expected: &quickstart::Expected) -> quickstart::Comparison {
    let reader = reader(bootstrap, "marketing_report_topic", 1);
    let reports = quickstart::read_reports(
        &reader,
        expected,
        Duration::from_secs(2),
        Duration::from_secs(120),
    );
    quickstart::check_at_least_once(&reports, expected)
}

fn halves(events: &[Event]) -> (Vec<Event>, Vec<Event>) {
    // The flush events close every window: they belong to the end.
    let (real, flush): (Vec<Event>, Vec<Event>) =
        events.iter().cloned().partition(|e| e.partition.is_none());
    let (first, second) = real.split_at(real.len() / 2);
    let mut second = second.to_vec();
    second.extend(flush);
    (first.to_vec(), second)
}

/// 2 → 1: worker 1 restarts owning nothing and serves; worker 0 restarts owning every task,
/// waits (not ready, saying why) while worker 1 is down, then fetches tasks 1 and 3 from it,
/// restores them and processes the rest.
fn scale_down_two_to_one(delivery: &'static str) {
    let (mock, bootstrap) = start_mock();
    let setup = Setup::new(&bootstrap, delivery);
    // 2 s of event time per event: hours close during the first half, so its reports are out
    // before the rescale and a moved task that restarted from scratch would write them again.
    let events = quickstart::events_every(12_000, 2_000, PARTITIONS);
    let expected = quickstart::oracle(&events);
    let (first, second) = halves(&events);

    let epoch1 = setup.runtime(1, "parallelism: 2\nassignmentEpoch: 1\n");
    let mut w0 = setup.worker(0, &epoch1, &[], "127.0.0.1:0");
    let mut w1 = setup.worker(1, &epoch1, &[], "127.0.0.1:0");
    w0.wait_ready();
    w1.wait_ready();
    quickstart::produce_all(&bootstrap, &first);
    wait_taken(&mut [&mut w0, &mut w1], first.len());
    // Under exactly-once, reports emitted while a checkpoint is in flight are held until it
    // completes: wait for them rather than read the counter once.
    let w1_reported = w1.wait_metric("tidemark_records_out_total", 1.0, Duration::from_secs(30));
    assert!(
        w1_reported.is_some(),
        "worker 1 wrote reports of tasks 1 and 3 before the rescale; log:\n{}",
        w1.log_text()
    );
    assert!(w0.terminate().success());
    assert!(w1.terminate().success(), "SIGTERM: final checkpoint");
    for task in [1, 3] {
        assert!(
            quickstart::newest_checkpoint(&setup.volume(1).join(format!("task-{task}"))).is_some(),
            "worker 1 checkpointed task {task}"
        );
        assert!(
            quickstart::newest_checkpoint(&setup.volume(0).join(format!("task-{task}"))).is_none()
        );
    }

    // Epoch 2, one worker. Worker 0 starts first, while worker 1 is still down: it must wait.
    let epoch2 = setup.runtime(
        2,
        "parallelism: 1\nassignmentEpoch: 2\npreviousParallelism: [2]\n\
         peerUrl: \"http://127.0.0.1:9/unused-{ordinal}\"\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer1 = format!("http://127.0.0.1:{port}");
    let mut w0 = setup.worker(0, &epoch2, &[(1, peer1)], "127.0.0.1:0");
    let addr0 = w0.addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        if let Some((503, body)) = http_get(addr0, "/readyz") {
            if body.contains("waiting for the state of task 1 from worker 1") {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "worker 0 does not say it waits; log:\n{}",
            w0.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(reason.contains("connect"), "{reason}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        http_get(addr0, "/readyz").map(|(code, _)| code),
        Some(503),
        "no moved task starts from scratch while its earlier owner may hold state"
    );
    assert_eq!(http_get(addr0, "/healthz").map(|(code, _)| code), Some(200));

    // Worker 1 comes back owning nothing: it keeps running and serves its checkpoints.
    let mut w1 = setup.worker(1, &epoch2, &[], &format!("127.0.0.1:{port}"));
    w1.wait_ready();
    assert!(w1.logged("this worker owns no task"), "{}", w1.log_text());
    w0.wait_ready();
    for task in [1, 3] {
        assert!(
            w0.logged(&format!("task={task} peer=1")),
            "worker 0 heard worker 1 about task {task}; log:\n{}",
            w0.log_text()
        );
        assert_eq!(acquired_epoch(&setup.volume(0), task), Some(2));
    }
    assert!(w0.logged("checkpoint handed off from an earlier owner"));
    assert_eq!(
        w0.metric(HANDOFF_TASKS_TOTAL),
        Some(2.0),
        "two tasks taken over from a peer"
    );
    assert!(w0.metric(HANDOFF_BYTES_TOTAL).is_some_and(|b| b > 0.0));
    for task in [1, 3] {
        assert!(
            w0.logged(&format!("restored checkpoint task={task}")),
            "{}",
            w0.log_text()
        );
    }
    assert_eq!(
        snapshot_status(&mut w1, 1),
        200,
        "the surplus worker serves"
    );
    assert_eq!(snapshot_status(&mut w1, 0), 404, "it never had task 0");
    assert_eq!(
        snapshot_status_as(&mut w1, 1, None),
        401,
        "a caller without the pipeline's token gets nothing"
    );
    assert_eq!(snapshot_status_as(&mut w1, 1, Some("guess")), 401);
    assert_eq!(
        snapshot_status(&mut w0, 1),
        409,
        "task 1 runs on worker 0 now"
    );

    quickstart::produce_all(&bootstrap, &second);
    let comparison = read_and_check(&bootstrap, &expected);
    eprintln!("2 → 1 ({delivery}): {comparison:?}");
    assert_eq!(
        comparison.duplicates, 0,
        "a clean hand-off doubles nothing: the moved tasks resume at their final checkpoint's \
         offsets (a start from scratch would write their first half's reports again)"
    );
    // Still serving after the new owner processed: the operator removes it, not itself.
    assert!(!w1.exited());
    assert!(w0.terminate().success());
    assert!(w1.terminate().success());
    drop(mock);
}

#[test]
fn scaling_down_two_workers_to_one_hands_tasks_over_and_loses_no_report() {
    scale_down_two_to_one("atLeastOnce");
}

#[test]
fn scaling_down_two_workers_to_one_under_exactly_once_loses_no_report() {
    scale_down_two_to_one("exactlyOnce");
}

/// 1 → 2: a release step (worker 0 keeps tasks 0 and 2, stops 1 and 3 and serves them; the new
/// worker 1 runs nothing), then the acquire step rolled from the highest ordinal down: worker 1
/// fetches tasks 1 and 3 from worker 0, then worker 0 restarts keeping its own.
fn scale_up_one_to_two(delivery: &'static str) {
    let (mock, bootstrap) = start_mock();
    let setup = Setup::new(&bootstrap, delivery);
    // 2 s of event time per event: hours close during the first half, so its reports are out
    // before the rescale and a moved task that restarted from scratch would write them again.
    let events = quickstart::events_every(12_000, 2_000, PARTITIONS);
    let expected = quickstart::oracle(&events);
    let (first, second) = halves(&events);

    let epoch1 = setup.runtime(1, "parallelism: 1\nassignmentEpoch: 1\n");
    let mut w0 = setup.worker(0, &epoch1, &[], "127.0.0.1:0");
    w0.wait_ready();
    quickstart::produce_all(&bootstrap, &first);
    wait_taken(&mut [&mut w0], first.len());
    assert!(w0.terminate().success());

    let release = setup.runtime(
        2,
        "parallelism: 2\nassignmentEpoch: 2\npreviousParallelism: [1]\nrelease: true\n",
    );
    let mut w0 = setup.worker(0, &release, &[], "127.0.0.1:0");
    let mut w1 = setup.worker(1, &release, &[], "127.0.0.1:0");
    w0.wait_ready();
    w1.wait_ready();
    assert!(w0.logged("release=true tasks=[0, 2]"), "{}", w0.log_text());
    assert!(w1.logged("withheld=[1, 3]"), "{}", w1.log_text());
    assert_eq!(
        snapshot_status(&mut w0, 1),
        200,
        "released tasks are served"
    );
    assert_eq!(snapshot_status(&mut w0, 0), 409, "kept tasks run");

    let acquire = setup.runtime(
        3,
        "parallelism: 2\nassignmentEpoch: 3\npreviousParallelism: [1]\n",
    );
    assert!(w1.terminate().success());
    let mut w1 = setup.worker(1, &acquire, &[(0, url(&mut w0))], "127.0.0.1:0");
    w1.wait_ready();
    for task in [1, 3] {
        assert!(
            w1.logged(&format!("restored checkpoint task={task}")),
            "{}",
            w1.log_text()
        );
        assert_eq!(acquired_epoch(&setup.volume(1), task), Some(3));
        assert!(
            quickstart::newest_checkpoint(&setup.volume(1).join(format!("task-{task}"))).is_some()
        );
    }
    assert!(w0.terminate().success());
    let mut w0 = setup.worker(0, &acquire, &[(1, url(&mut w1))], "127.0.0.1:0");
    w0.wait_ready();
    assert!(
        !w0.logged("an earlier owner"),
        "tasks 0 and 2 never moved: nobody is asked; log:\n{}",
        w0.log_text()
    );

    quickstart::produce_all(&bootstrap, &second);
    let comparison = read_and_check(&bootstrap, &expected);
    eprintln!("1 → 2 ({delivery}): {comparison:?}");
    assert_eq!(
        comparison.duplicates, 0,
        "a clean hand-off doubles nothing: the moved tasks resume at their final checkpoint's \
         offsets (a start from scratch would write their first half's reports again)"
    );
    assert!(w0.terminate().success());
    assert!(w1.terminate().success());
    drop(mock);
}

#[test]
fn scaling_up_one_worker_to_two_releases_then_hands_tasks_over_and_loses_no_report() {
    scale_up_one_to_two("atLeastOnce");
}

#[test]
fn scaling_up_one_worker_to_two_under_exactly_once_loses_no_report() {
    scale_up_one_to_two("exactlyOnce");
}
