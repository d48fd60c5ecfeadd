//! `tidemark-mock-kafka`: a Kafka over TCP that outlives the clients of a test, as the crash
//! tests need (worker processes are killed while it keeps the log).
#![allow(clippy::unwrap_used)]

mod kafka_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use kafka_support::*;
use tidemark_worker::kafka::{KafkaSource, SourceOptions, SourceTopic};

#[test]
fn the_mock_kafka_binary_serves_its_topics_over_tcp_until_stdin_closes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark-mock-kafka"))
        .args([
            "--brokers",
            "2",
            "--topic",
            "click_topic:4",
            "--topic",
            "reports:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bootstrap = line.trim().strip_prefix("bootstrap=").unwrap().to_owned();
    assert_eq!(bootstrap.split(',').count(), 2, "{bootstrap}");

    // A first client writes and goes away; the log stays with the binary.
    let producer = producer(&bootstrap);
    produce(&producer, "click_topic", 3, &values("v", 3));
    drop(producer);

    let topics = vec![SourceTopic {
        name: "clicks".into(),
        index: 0,
        topic: "click_topic".into(),
    }];
    let mut source =
        KafkaSource::connect(&settings(&bootstrap), "t", topics, SourceOptions::default()).unwrap();
    assert_eq!(source.partitions(), 4);
    let mut inputs = source.assign(&[3], &BTreeMap::new()).unwrap();
    let taken = take_until(&mut inputs, |r| r.len() >= 3);
    assert_eq!(taken[2].payload, b"v-2");
    drop((inputs, source));

    drop(child.stdin.take());
    let (exited, exit) = mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait().unwrap()));
    let status = exit
        .recv_timeout(DEADLINE)
        .expect("the mock kept running after stdin closed");
    assert!(status.success(), "{status}");
}

#[test]
fn the_mock_kafka_binary_refuses_a_topic_without_partitions() {
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark-mock-kafka"))
        .args(["--topic", "clicks"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("expected NAME:PARTITIONS"), "{stderr}");
}
