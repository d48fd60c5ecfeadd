//! Throughput of one worker process, Kafka → engine → Kafka, on the quickstart (a measurement, not
//! an assertion of speed: ignored by default, run with
//! `cargo test --release -p tidemark-worker --test kafka_throughput -- --ignored --nocapture`).
//!
//! 500 k generated events (100 k users) are produced into `tidemark-mock-kafka` first; then one
//! worker (`TIDEMARK_THREADS` task threads, default 1; `TIDEMARK_DELIVERY`, default
//! `atLeastOnce`) is started and timed from its start until
//! `tidemark_records_in_total` reaches the event count on its `/metrics`. With
//! `TIDEMARK_KEY_BY=category` (or `product`) the report is keyed by that field, so the 32 tasks
//! send partials to the global stage, which runs in the same worker (`docs/global.md`). The worker's CPU time
//! (user + system, from `/proc`) gives events per CPU-second: the per-core figure, which does
//! not count the mock broker sharing the machine. The mock keeps at most
//! 5 MB per partition (librdkafka's `rd_kafka_mock_partition` retention), so the topics have 32
//! partitions to hold the 50 MB of events.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod kafka_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_support::worker::{http_get, metric_sum};
use kafka_support::*;
use rdkafka::producer::{BaseRecord, Producer};
use tidemark_api::GeneratorSpec;
use tidemark_worker::source::generator::Generator;

const EVENTS: u64 = 500_000;

/// User + system CPU seconds of process `pid` so far (`/proc/PID/stat`, clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
#[ignore = "a measurement; run explicitly in release mode"]
fn one_worker_throughput_from_kafka_to_kafka() {
    let (mut mock, bootstrap) = start_mock_binary(&[
        "click_topic:32",
        "purchase_topic:32",
        "marketing_report_topic:1",
        "tidemark_dead_letter:1",
    ]);

    let started = Instant::now();
    let producer = producer(&bootstrap);
    let spec = GeneratorSpec {
        events: Some(EVENTS),
        users: 100_000,
        ..GeneratorSpec::default()
    };
    let mut generator = Generator::new(&spec);
    let mut value = Vec::new();
    while let Some(kind) = generator.next_into(&mut value) {
        let topic = if kind == "purchase" {
            "purchase_topic"
        } else {
            "click_topic"
        };
        let user = {
            let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
            v["user_id"].as_str().unwrap().to_owned()
        };
        loop {
            match producer.send(BaseRecord::to(topic).key(&user).payload(&value)) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
        value.clear();
    }
    producer.flush(DEADLINE).unwrap();
    eprintln!(
        "produced {EVENTS} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = include_str!("../../examples/quickstart.yaml")
        .replace(
            "bootstrapServers: kafka:9092",
            &format!("bootstrapServers: \"{bootstrap}\""),
        )
        .replace(
            "keyBy: user",
            &format!(
                "keyBy: {}",
                std::env::var("TIDEMARK_KEY_BY").unwrap_or_else(|_| "user".into())
            ),
        )
        .replace(
            "delivery: exactlyOnce",
            &format!(
                "delivery: {}",
                std::env::var("TIDEMARK_DELIVERY").unwrap_or_else(|_| "atLeastOnce".into())
            ),
        );
    std::fs::write(dir.path().join("p.yaml"), manifest).unwrap();
    let addr = "127.0.0.1:19102";
    let threads = std::env::var("TIDEMARK_THREADS").unwrap_or_else(|_| "1".into());
    let started = Instant::now();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .current_dir(dir.path())
        .args([
            "run",
            "-q",
            "-f",
            "p.yaml",
            "--ordinal",
            "0",
            "--parallelism",
            "1",
            "--checkpoint-dir",
            "ck",
        ])
        .args(["--http-addr", addr, "--threads", &threads])
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the count stops moving for 3 s: the mock's retention may have dropped records of
    // the hottest partitions before the worker started, which the printout shows.
    let mut last = (0.0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let consumed = http_get(addr.parse().unwrap(), "/metrics")
            .and_then(|(_, body)| metric_sum(&body, "tidemark_records_in_total"))
            .unwrap_or(0.0);
        if consumed > last.0 {
            last = (consumed, Instant::now());
        }
        if consumed >= EVENTS as f64 || last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let secs = last.1.duration_since(started).as_secs_f64();
    let cpu = cpu_seconds(worker.id());
    eprintln!(
        "one worker (32 tasks, {threads} task threads) consumed, processed and produced {} of {EVENTS} events in {secs:.2} s including start-up: {:.0} events/s; worker CPU {cpu:.2} s: {:.0} events per CPU-second",
        last.0,
        last.0 / secs,
        last.0 / cpu
    );
    worker.kill().unwrap();
    let _ = worker.wait();
    drop(mock.stdin.take());
    let _ = mock.wait();
}
