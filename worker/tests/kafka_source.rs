//! The Kafka source against librdkafka's mock cluster: static assignment, one input per task,
//! resuming at checkpoint offsets, bounded prefetch, records deleted before they were read, lag
//! and the co-partitioning check.
#![allow(clippy::unwrap_used)]

mod kafka_support;

use std::collections::BTreeMap;

use kafka_support::*;
use rdkafka::consumer::Consumer;
use tidemark_worker::kafka::{
    Assignment, KafkaSource, SourceError, SourceOffsets, SourceOptions, SourceTopic, TaskInput,
};

fn topics() -> Vec<SourceTopic> {
    vec![SourceTopic {
        name: "clicks".into(),
        index: 0,
        topic: "click_topic".into(),
    }]
}

fn connect(bootstrap: &str, options: SourceOptions) -> KafkaSource {
    KafkaSource::connect(&settings(bootstrap), "test", topics(), options).unwrap()
}

#[test]
fn two_workers_each_consume_exactly_the_partitions_of_their_tasks() {
    let cluster = cluster(&[("click_topic", 4)]);
    let bootstrap = cluster.bootstrap_servers();
    let producer = producer(&bootstrap);
    for p in 0..4 {
        produce(&producer, "click_topic", p, &values(&format!("p{p}"), 5));
    }
    // Both workers live at once, as in a StatefulSet of two pods.
    let mut workers: Vec<(Vec<u32>, KafkaSource, Vec<TaskInput>)> = (0..2)
        .map(|ordinal| {
            let mut source = connect(&bootstrap, SourceOptions::default());
            assert_eq!(source.partitions(), 4);
            let tasks = Assignment::new(ordinal, 2, 1)
                .unwrap()
                .tasks(source.partitions());
            let inputs = source.assign(&tasks, &BTreeMap::new()).unwrap();
            assert_eq!(
                inputs.iter().map(TaskInput::task).collect::<Vec<_>>(),
                tasks
            );
            (tasks, source, inputs)
        })
        .collect();
    for (tasks, source, inputs) in &mut workers {
        let taken = take_until(inputs, |r| r.len() >= 10);
        let mut seen: Vec<(u32, String)> = taken
            .iter()
            .map(|r| (r.task, String::from_utf8(r.payload.clone()).unwrap()))
            .collect();
        seen.sort();
        let expected: Vec<(u32, String)> = tasks
            .iter()
            .flat_map(|&t| values(&format!("p{t}"), 5).into_iter().map(move |v| (t, v)))
            .collect();
        assert_eq!(seen, expected, "tasks {tasks:?}");
        assert!(taken.iter().all(|r| r.source == 0));
        for (&task, input) in tasks.iter().zip(inputs.iter()) {
            assert_eq!(source.offsets(task)["clicks"][&(task as i32)], 5);
            assert_eq!(input.offsets(), source.offsets(task));
        }
    }
}

#[test]
fn a_source_assigned_at_checkpoint_offsets_resumes_exactly_there() {
    let cluster = cluster(&[("click_topic", 2)]);
    let bootstrap = cluster.bootstrap_servers();
    produce(&producer(&bootstrap), "click_topic", 1, &values("v", 10));

    let mut first = connect(&bootstrap, SourceOptions::default());
    let mut inputs = first.assign(&[1], &BTreeMap::new()).unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut taken = Vec::new();
    while taken.len() < 4 {
        assert!(std::time::Instant::now() < deadline);
        inputs[0].take(4 - taken.len(), &mut taken).unwrap();
    }
    let checkpoint: SourceOffsets = inputs[0].offsets();
    assert_eq!(checkpoint["clicks"][&1], 4);
    drop((inputs, first));

    let mut second = connect(&bootstrap, SourceOptions::default());
    let mut inputs = second
        .assign(&[1], &BTreeMap::from([(1, checkpoint)]))
        .unwrap();
    let rest = take_until(&mut inputs, |r| r.len() >= 6);
    let offsets: Vec<i64> = rest.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (4..10).collect::<Vec<_>>());
    assert_eq!(rest[0].payload, b"v-4");
    assert_eq!(second.offsets(1)["clicks"][&1], 10);
}

#[test]
fn a_task_that_polls_late_past_a_small_prefetch_bound_gets_every_record_once_in_order() {
    let cluster = cluster(&[("click_topic", 1)]);
    let bootstrap = cluster.bootstrap_servers();
    produce(&producer(&bootstrap), "click_topic", 0, &values("v", 40));
    let options = SourceOptions {
        prefetch_records: 8,
        prefetch_kbytes: 1,
        ..SourceOptions::default()
    };
    let mut source = connect(&bootstrap, options);
    let mut inputs = source.assign(&[0], &BTreeMap::new()).unwrap();
    // librdkafka fetches up to its bound (8 records) and stops; nothing is dropped meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(500));
    source.serve(std::time::Duration::from_millis(10)).unwrap();
    let taken = take_until(&mut inputs, |r| r.len() >= 40);
    let offsets: Vec<i64> = taken.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (0..40).collect::<Vec<_>>(),
        "no record lost or doubled"
    );
}

#[test]
fn records_deleted_before_the_task_read_them_are_counted_and_reading_goes_on() {
    let cluster = cluster(&[("click_topic", 1)]);
    let bootstrap = cluster.bootstrap_servers();
    // The mock keeps at most 5 MB per partition: 60 records of 100 kB push the first out.
    let big: Vec<String> = (0..60)
        .map(|i| format!("{i:03}{}", "x".repeat(100_000)))
        .collect();
    produce(&producer(&bootstrap), "click_topic", 0, &big);
    let (first_kept, end) = reader(&bootstrap, "click_topic", 1)
        .fetch_watermarks("click_topic", 0, DEADLINE)
        .unwrap();
    assert_eq!(end, 60);
    assert!(first_kept > 0, "the mock dropped nothing");
    // A checkpoint that says "next: offset 0", older than the log.
    let start = BTreeMap::from([(
        0,
        SourceOffsets::from([("clicks".into(), BTreeMap::from([(0, 0)]))]),
    )]);
    let mut source = connect(&bootstrap, SourceOptions::default());
    let mut inputs = source.assign(&[0], &start).unwrap();
    let taken = take_until(&mut inputs, |r| r.len() as i64 >= 60 - first_kept);
    let offsets: Vec<i64> = taken.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (first_kept..60).collect::<Vec<_>>());
    assert_eq!(
        inputs[0].take_skipped(),
        vec![("clicks".to_owned(), first_kept as u64)]
    );
    assert_eq!(inputs[0].offsets()["clicks"][&0], 60);
}

#[test]
fn lag_counts_the_records_a_task_has_not_taken() {
    let cluster = cluster(&[("click_topic", 1)]);
    let bootstrap = cluster.bootstrap_servers();
    produce(&producer(&bootstrap), "click_topic", 0, &values("v", 10));
    let mut source = connect(&bootstrap, SourceOptions::default());
    let mut inputs = source.assign(&[0], &BTreeMap::new()).unwrap();
    assert_eq!(source.lag().unwrap()[0].lag, 10);
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut taken = Vec::new();
    while taken.len() < 3 {
        assert!(std::time::Instant::now() < deadline);
        inputs[0].take(3 - taken.len(), &mut taken).unwrap();
    }
    let lag = &source.lag().unwrap()[0];
    assert_eq!((lag.position, lag.high_watermark, lag.lag), (3, 10, 7));
    assert_eq!(lag.source, "clicks");
}

#[test]
fn sources_with_different_partition_counts_are_refused_naming_each_topic() {
    let cluster = cluster(&[("click_topic", 4), ("purchase_topic", 6)]);
    let mut topics = topics();
    topics.push(SourceTopic {
        name: "purchases".into(),
        index: 1,
        topic: "purchase_topic".into(),
    });
    let err = KafkaSource::connect(
        &settings(&cluster.bootstrap_servers()),
        "test",
        topics,
        SourceOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, SourceError::Assignment(_)));
    assert!(
        err.to_string()
            .ends_with("\"click_topic\" has 4 partitions, \"purchase_topic\" has 6 partitions"),
        "{err}"
    );
}

#[test]
fn the_checkpoint_marker_committed_with_a_tasks_offsets_is_read_back() {
    let cluster = cluster(&[("click_topic", 2)]);
    let bootstrap = cluster.bootstrap_servers();
    produce(&producer(&bootstrap), "click_topic", 1, &values("v", 3));
    let mut source = connect(&bootstrap, SourceOptions::default());
    let mut inputs = source.assign(&[1], &BTreeMap::new()).unwrap();
    assert_eq!(source.committed_checkpoint(1).unwrap(), None);
    take_until(&mut inputs, |r| r.len() >= 3);
    // The offsets of a checkpoint taken after two records, committed after the third.
    let at_checkpoint = BTreeMap::from([("clicks".to_owned(), BTreeMap::from([(1, 2)]))]);
    inputs[0].commit(&at_checkpoint, 42).unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    while source.committed_checkpoint(1).unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "commit never landed");
        source.serve(std::time::Duration::from_millis(50)).unwrap();
    }
    assert_eq!(source.committed_checkpoint(1).unwrap(), Some(42));
    assert_eq!(source.committed_offsets(1).unwrap(), at_checkpoint);
}
