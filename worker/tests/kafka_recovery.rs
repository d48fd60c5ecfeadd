//! The Kafka layer around a real task: a task that crashes after a checkpoint, restores it and
//! replays from its offsets writes every result of an uninterrupted run (at-least-once on the
//! mock cluster; exactly-once visibility needs a broker with transaction markers, see
//! `docs/kafka.md`).
#![allow(clippy::unwrap_used)]

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};

use kafka_support::*;
use tidemark_api::Delivery;
use tidemark_worker::engine::Task;
use tidemark_worker::kafka::{
    KafkaRecord, KafkaSource, SinkOptions, SinkRoutes, SourceOptions, SourceTopic, TaskInput,
    TaskSink,
};
use tidemark_worker::plan::Plan;
use tidemark_worker::result::Output;
use tidemark_worker::source::generator::Generator;

const PARTITIONS: i32 = 2;

fn plan() -> Plan {
    let text = include_str!("../../examples/quickstart.yaml");
    let pipeline = tidemark_api::parse_manifest(text).unwrap();
    Plan::compile("quickstart", &pipeline.spec).unwrap()
}

fn topics() -> Vec<SourceTopic> {
    ["clicks:click_topic", "purchases:purchase_topic"]
        .iter()
        .enumerate()
        .map(|(index, pair)| {
            let (name, topic) = pair.split_once(':').unwrap();
            SourceTopic {
                name: name.into(),
                index,
                topic: topic.into(),
            }
        })
        .collect()
}

/// Writes generated events keyed by user, co-partitioned; returns records per partition.
fn produce_events(bootstrap: &str) -> BTreeMap<i32, usize> {
    let spec = tidemark_api::GeneratorSpec {
        events: Some(3_000),
        users: 40,
        time_step: tidemark_api::Duration::from_millis(5_000),
        ..Default::default()
    };
    let mut generator = Generator::new(&spec);
    let mut batches: BTreeMap<(&str, i32), Vec<String>> = BTreeMap::new();
    let mut line = Vec::new();
    while let Some(kind) = generator.next_into(&mut line) {
        let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let user = event["user_id"].as_str().unwrap();
        let partition = (user.bytes().map(u32::from).sum::<u32>() % PARTITIONS as u32) as i32;
        let topic = if kind == "purchase" {
            "purchase_topic"
        } else {
            "click_topic"
        };
        batches
            .entry((topic, partition))
            .or_default()
            .push(String::from_utf8(std::mem::take(&mut line)).unwrap());
    }
    let producer = producer(bootstrap);
    let mut per_partition = BTreeMap::new();
    for ((topic, partition), values) in &batches {
        produce(&producer, topic, *partition, values);
        *per_partition.entry(*partition).or_default() += values.len();
    }
    per_partition
}

fn source(
    bootstrap: &str,
    task: u32,
    start: &BTreeMap<u32, tidemark_worker::kafka::SourceOffsets>,
) -> (KafkaSource, TaskInput) {
    let mut source = KafkaSource::connect(
        &settings(bootstrap),
        "quickstart",
        topics(),
        SourceOptions::default(),
    )
    .unwrap();
    let input = source.assign(&[task], start).unwrap().pop().unwrap();
    (source, input)
}

fn task_sink(bootstrap: &str, task: u32) -> TaskSink {
    let routes = SinkRoutes::new(vec![vec!["reports".into()]], None);
    let settings = settings(bootstrap);
    TaskSink::new(
        &settings,
        "quickstart",
        task,
        Delivery::AtLeastOnce,
        routes,
        SinkOptions::default(),
    )
    .unwrap()
}

/// Takes `n` records of the input's task.
fn take((_, input): &mut (KafkaSource, TaskInput), n: usize) -> Vec<KafkaRecord> {
    let mut taken = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    while taken.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "took {} of {n}",
            taken.len()
        );
        input.take(n - taken.len(), &mut taken).unwrap();
    }
    taken
}

fn process(task: &mut Task, records: &[KafkaRecord], out: &mut Output) {
    for record in records {
        task.process(record.source, &record.payload, 0, out);
    }
}

/// Results without their wall-clock field, as (key, value) text.
fn comparable(output: &Output) -> BTreeSet<(String, String)> {
    output
        .results
        .iter()
        .map(|r| {
            let mut value: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            value.as_object_mut().unwrap().remove("emitted_at");
            (r.key.clone(), value.to_string())
        })
        .collect()
}

#[test]
fn a_task_restored_from_its_checkpoint_and_replayed_from_its_offsets_loses_no_result() {
    let cluster = cluster(&[
        ("click_topic", PARTITIONS),
        ("purchase_topic", PARTITIONS),
        ("reports", 1),
    ]);
    let bootstrap = cluster.bootstrap_servers();
    let counts = produce_events(&bootstrap);
    let task_id = 1;
    let total = counts[&(task_id as i32)];

    // The uninterrupted run.
    let mut expected = Output::default();
    let mut whole = Task::new(plan(), 0);
    let mut once = source(&bootstrap, task_id, &BTreeMap::new());
    process(&mut whole, &take(&mut once, total), &mut expected);
    whole.finish(0, &mut expected);
    drop(once);
    assert!(expected.results.len() > 20, "{}", expected.results.len());

    // A run that checkpoints, works on, and crashes before its next checkpoint.
    let mut written = Output::default();
    let mut task = Task::new(plan(), 0);
    let mut consumer = source(&bootstrap, task_id, &BTreeMap::new());
    let mut sink = task_sink(&bootstrap, task_id);
    let mut out = Output::default();
    process(&mut task, &take(&mut consumer, total / 3), &mut out);
    sink.write(&out, "now").unwrap();
    sink.prepare(1, &rdkafka::TopicPartitionList::new(), None)
        .unwrap();
    written.results.append(&mut out.results);
    let (snapshot, offsets) = (task.snapshot(), consumer.1.offsets());
    process(&mut task, &take(&mut consumer, total / 3), &mut out);
    sink.write(&out, "now").unwrap();
    written.results.append(&mut out.results);
    drop((task, consumer, sink));

    // The restart: restore the checkpoint, resume at its offsets, run to the end.
    let mut task = Task::new(plan(), 0);
    task.restore(&snapshot).unwrap();
    let done: usize = offsets
        .values()
        .flat_map(|p| p.values())
        .map(|&o| o as usize)
        .sum();
    let mut consumer = source(&bootstrap, task_id, &BTreeMap::from([(task_id, offsets)]));
    let mut sink = task_sink(&bootstrap, task_id);
    process(&mut task, &take(&mut consumer, total - done), &mut out);
    task.finish(0, &mut out);
    sink.write(&out, "now").unwrap();
    sink.prepare(2, &rdkafka::TopicPartitionList::new(), None)
        .unwrap();
    written.results.append(&mut out.results);

    assert_eq!(comparable(&written), comparable(&expected));
    // What reached Kafka: whatever the crash purged or delivered, the same set of results.
    let end = tidemark_worker::result::ResultRecord {
        analytic: 0,
        key: "end".into(),
        value: b"END".to_vec(),
    };
    let mut last = Output::default();
    last.results.push(end);
    sink.write(&last, "now").unwrap();
    sink.prepare(3, &rdkafka::TopicPartitionList::new(), None)
        .unwrap();
    let in_kafka = Output {
        results: read_until(&reader(&bootstrap, "reports", 1), "END")
            .iter()
            .map(|m| {
                let (key, value) = text(m);
                tidemark_worker::result::ResultRecord {
                    analytic: 0,
                    key,
                    value: value.into_bytes(),
                }
            })
            .collect(),
        dead_letters: Vec::new(),
        partials: Vec::new(),
    };
    assert_eq!(comparable(&in_kafka), comparable(&expected));
}
