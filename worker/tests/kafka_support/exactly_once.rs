//! Reading a topic to its end under both isolation levels and judging it as exactly-once: the
//! `read_committed` view must hold every oracle report once (counted: lost, doubled by Kafka
//! key and revision, unexpected), and the `read_uncommitted` view shows the records of aborted
//! transactions (the offsets it has that the committed view lacks).
//!
//! Meant for a broker that writes transaction markers (`super::noida`): on one that does not,
//! the two views are equal and nothing is ever counted as aborted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::quickstart::Expected;

/// One record as read: where it was and what it held.
#[derive(Clone, Debug)]
pub struct Read {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The Kafka key as text.
    pub key: String,
    /// The value as text.
    pub value: String,
}

/// Every record of `topic` (all `partitions`) from the beginning to the end of the log, as a
/// consumer with `isolation.level = isolation` sees it. The end is where every partition
/// reported EOF at a high watermark that did not move for a second (writers have stopped);
/// fails after `wait`.
pub fn read_to_end(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    wait: Duration,
) -> Vec<Read> {
    read(
        bootstrap,
        topic,
        partitions,
        isolation,
        Duration::from_secs(1),
        wait,
    )
}

/// What a consumer with `isolation.level = isolation` sees of `topic` (all `partitions`) now:
/// the records up to the first EOF on every partition — for `read_committed` the last stable
/// offset, before the first transaction still open.
pub fn snapshot(bootstrap: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<Read> {
    read(
        bootstrap,
        topic,
        partitions,
        isolation,
        Duration::ZERO,
        super::DEADLINE,
    )
}

fn read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    settle: Duration,
    wait: Duration,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + wait;
    let mut records = Vec::new();
    let mut at_eof: BTreeSet<i32> = BTreeSet::new();
    let mut settled_since: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{topic} ({isolation}) not read to its end within {wait:?}: {} records, EOF on {at_eof:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                at_eof.remove(&message.partition());
                settled_since = None;
                records.push(Read {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                    value: String::from_utf8_lossy(message.payload().unwrap_or_default())
                        .into_owned(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_eof.insert(p);
            }
            Some(Err(err)) => panic!("reading {topic} ({isolation}): {err}"),
            None => {}
        }
        if at_eof.len() == partitions as usize {
            let since = *settled_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= settle {
                return records;
            }
        }
    }
}

/// How the committed view of the report topic compares with the oracle, and what the
/// uncommitted view adds.
#[derive(Debug, Default)]
pub struct Exactness {
    /// Records in the `read_committed` view.
    pub committed: usize,
    /// Oracle reports with no record.
    pub lost: usize,
    /// Records beyond the first of their (Kafka key, revision).
    pub doubled: usize,
    /// Records the oracle does not have, or whose values differ from it.
    pub wrong: usize,
    /// Records of aborted transactions: offsets in the `read_uncommitted` view that the
    /// committed view does not have.
    pub aborted: usize,
}

/// Judges the quickstart's report topic: `committed` and `uncommitted` are its two views.
/// Prints the counts and up to five examples of each kind of fault.
pub fn judge(committed: &[Read], uncommitted: &[Read], expected: &Expected) -> Exactness {
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    let mut reported: HashSet<(String, String)> = HashSet::new();
    let mut faults: Vec<String> = Vec::new();
    let mut out = Exactness {
        committed: committed.len(),
        ..Exactness::default()
    };
    for record in committed {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&record.value) else {
            out.wrong += 1;
            faults.push(format!("not JSON: {record:?}"));
            continue;
        };
        let revision = value["revision"].as_u64().unwrap_or(u64::MAX);
        let copies = seen.entry((record.key.clone(), revision)).or_default();
        *copies += 1;
        if *copies > 1 {
            out.doubled += 1;
            faults.push(format!("doubled: {} revision {revision}", record.key));
        }
        let id = (
            value["key"].as_str().unwrap_or_default().to_owned(),
            value["window"]["start"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let fits = expected.get(&id).is_some_and(|want| {
            value["clicks"].as_u64() == Some(want.0)
                && value["purchases"].as_u64() == Some(want.1)
                && value["revenue"]
                    .as_f64()
                    .is_some_and(|r| (r - want.2).abs() < 1e-6)
        });
        if !fits {
            out.wrong += 1;
            faults.push(format!("not the oracle's: {} {}", record.key, record.value));
        }
        reported.insert(id);
    }
    let written: HashSet<(String, String)> = uncommitted
        .iter()
        .filter_map(|r| {
            let value: serde_json::Value = serde_json::from_str(&r.value).ok()?;
            Some((
                value["key"].as_str()?.to_owned(),
                value["window"]["start"].as_str()?.to_owned(),
            ))
        })
        .collect();
    for id in expected.keys().filter(|id| !reported.contains(*id)) {
        out.lost += 1;
        if out.lost <= 5 {
            let how = if written.contains(id) {
                "written in an aborted transaction only"
            } else {
                "never written"
            };
            faults.push(format!("lost: {id:?} ({how})"));
        }
    }
    let visible: BTreeSet<(i32, i64)> = committed.iter().map(|r| (r.partition, r.offset)).collect();
    out.aborted = uncommitted
        .iter()
        .filter(|r| !visible.contains(&(r.partition, r.offset)))
        .count();
    eprintln!(
        "report topic: {} committed records for the oracle's {} reports: {} lost, {} doubled, \
         {} wrong; read_uncommitted saw {} records, {} of them aborted",
        out.committed,
        expected.len(),
        out.lost,
        out.doubled,
        out.wrong,
        uncommitted.len(),
        out.aborted
    );
    for fault in faults.iter().take(15) {
        eprintln!("  {fault}");
    }
    out
}
