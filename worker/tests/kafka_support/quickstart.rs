//! The quickstart pipeline (`examples/quickstart.yaml`) over Kafka for worker-process tests:
//! generated click and purchase events, an answer computed independently from them (the
//! oracle), reading the report topic and comparing it with the oracle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;
use tidemark_api::GeneratorSpec;
use tidemark_worker::source::generator::Generator;

/// One hour in milliseconds.
pub const HOUR: i64 = 3_600_000;

/// The quickstart's topics with `partitions` source partitions.
pub fn topics(partitions: i32) -> [(&'static str, i32); 4] {
    [
        ("click_topic", partitions),
        ("purchase_topic", partitions),
        ("marketing_report_topic", 1),
        ("tidemark_dead_letter", 1),
    ]
}

/// An event to produce: topic, key, JSON value, and a partition for the flush events (the
/// others go where the key hashes).
#[derive(Clone, Debug)]
pub struct Event {
    /// `click_topic` or `purchase_topic`.
    pub topic: &'static str,
    /// The user.
    pub key: String,
    /// The JSON event.
    pub value: String,
    /// Set for the far-future flush events only.
    pub partition: Option<i32>,
}

/// (user, window start) → (clicks, purchases, revenue).
pub type Expected = HashMap<(String, String), (u64, u64, f64)>;

/// Writes the quickstart manifest, at-least-once with checkpoints every `interval` (e.g.
/// `500ms`), to `dir/pipeline.yaml`; the bootstrap servers come from the worker's flag.
pub fn write_manifest(dir: &Path, interval: &str) -> PathBuf {
    let text = include_str!("../../../examples/quickstart.yaml")
        .replace("delivery: exactlyOnce", "delivery: atLeastOnce")
        .replace("interval: 10s", &format!("interval: {interval}"));
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Like [`write_manifest`] with the report keyed by `key_by` (so that over several partitions
/// it runs in the global stage) and an idle timeout of an hour (no task is ever idle, so
/// every result closes once, revision 0).
pub fn write_manifest_keyed(dir: &Path, interval: &str, key_by: &str) -> PathBuf {
    let path = write_manifest(dir, interval);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("keyBy: user", &format!("keyBy: {key_by}"))
        .replace(
            "maxOutOfOrderness: 10s",
            "maxOutOfOrderness: 10s\n    idleTimeout: 1h",
        );
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` generated events of 300 users, half a second of event time apart; then one far-future
/// event per partition of each source topic, so that every real window closes.
pub fn events(n: u64, partitions: i32) -> Vec<Event> {
    events_every(n, 500, partitions)
}

/// Like [`events`] with `step_ms` of event time between events (more windows close during a
/// run when it is larger).
pub fn events_every(n: u64, step_ms: u64, partitions: i32) -> Vec<Event> {
    let spec = GeneratorSpec {
        events: Some(n),
        users: 300,
        time_step: tidemark_api::Duration::from_millis(step_ms),
        ..GeneratorSpec::default()
    };
    let mut generator = Generator::new(&spec);
    let mut line = Vec::new();
    let mut out = Vec::new();
    let mut last = 0;
    while let Some(kind) = generator.next_into(&mut line) {
        let value = String::from_utf8(std::mem::take(&mut line)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        last = last.max(v["ts"].as_i64().unwrap());
        let topic = if kind == "purchase" {
            "purchase_topic"
        } else {
            "click_topic"
        };
        out.push(Event {
            topic,
            key: v["user_id"].as_str().unwrap().to_owned(),
            value,
            partition: None,
        });
    }
    out.extend(flush_events(last + 3 * HOUR, partitions));
    out
}

/// One event at `ts` per partition of each source topic, of user `flush`.
pub fn flush_events(ts: i64, partitions: i32) -> Vec<Event> {
    let mut out = Vec::new();
    for p in 0..partitions {
        for (topic, kind) in [("click_topic", "click"), ("purchase_topic", "purchase")] {
            out.push(Event {
                topic,
                key: "flush".into(),
                value: format!(r#"{{"type":"{kind}","user_id":"flush","price":1,"ts":{ts}}}"#),
                partition: Some(p),
            });
        }
    }
    out
}

/// Produces `events` in order and waits until every one is acknowledged.
pub fn produce_all(bootstrap: &str, events: &[Event]) {
    let producer = super::producer(bootstrap);
    for e in events {
        let mut record = BaseRecord::to(e.topic)
            .key(e.key.as_str())
            .payload(e.value.as_str());
        if let Some(p) = e.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((err, back)) => {
                    assert!(
                        err.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "produce failed: {err}"
                    );
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(super::DEADLINE).unwrap();
}

/// Produces `events` in `chunks` chunks, `pause` apart, on a thread of its own: input that
/// keeps arriving while a test kills or rescales workers.
pub fn produce_in_chunks(
    bootstrap: &str,
    events: Vec<Event>,
    chunks: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let bootstrap = bootstrap.to_owned();
    std::thread::spawn(move || {
        for chunk in events.chunks(events.len() / chunks + 1) {
            produce_all(&bootstrap, chunk);
            std::thread::sleep(pause);
        }
    })
}

/// The reports the quickstart must write for `events` (the flush events open windows that
/// never close, so they have none).
pub fn oracle(events: &[Event]) -> Expected {
    oracle_by(events, |e, _| e.key.clone())
}

/// The reports of the quickstart keyed by what `key` reads from each event (not the flush
/// events).
pub fn oracle_by(events: &[Event], key: impl Fn(&Event, &serde_json::Value) -> String) -> Expected {
    let mut reports = Expected::new();
    for e in events {
        if e.partition.is_some() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&e.value).unwrap();
        let start = v["ts"].as_i64().unwrap().div_euclid(HOUR) * HOUR;
        let window = tidemark_worker::result::rfc3339(start);
        let entry = reports.entry((key(e, &v), window)).or_default();
        if e.topic == "purchase_topic" {
            entry.1 += 1;
            entry.2 += v["price"].as_f64().unwrap();
        } else {
            entry.0 += 1;
        }
    }
    reports
}

/// A report read from Kafka: its Kafka key and JSON value.
pub type Report = (String, serde_json::Value);

/// Reads reports until every expected (user, window) has arrived, then `quiet` more to see
/// late duplicates; fails after `wait`.
pub fn read_reports(
    consumer: &BaseConsumer,
    expected: &Expected,
    quiet: Duration,
    wait: Duration,
) -> Vec<Report> {
    let deadline = Instant::now() + wait;
    let mut reports = Vec::new();
    let mut seen = HashSet::new();
    let mut quiet_until: Option<Instant> = None;
    while quiet_until.is_none_or(|t| Instant::now() < t) {
        if Instant::now() > deadline {
            let missing: Vec<_> = expected
                .keys()
                .filter(|id| !seen.contains(*id))
                .take(5)
                .collect();
            panic!(
                "only {} of {} reports arrived within {wait:?}; missing e.g. {missing:?}",
                seen.len(),
                expected.len()
            );
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            seen.insert(report_id(&value));
            reports.push((key, value));
        }
        if quiet_until.is_none() && expected.keys().all(|id| seen.contains(id)) {
            quiet_until = Some(Instant::now() + quiet);
        }
    }
    reports
}

fn report_id(r: &serde_json::Value) -> (String, String) {
    (
        r["key"].as_str().unwrap_or_default().to_owned(),
        r["window"]["start"].as_str().unwrap_or_default().to_owned(),
    )
}

/// How the report topic compares with the oracle under at-least-once.
#[derive(Debug)]
pub struct Comparison {
    /// Records read.
    pub records: usize,
    /// Distinct (Kafka key, revision).
    pub distinct: usize,
    /// Records beyond the first of their (key, revision): written again after a restart.
    pub duplicates: usize,
}

/// At-least-once comparison: the distinct records by Kafka key and revision are exactly the
/// oracle's reports (same users, windows and values); copies of one (key, revision) are
/// identical but for `emitted_at`. Duplicates are allowed and counted.
pub fn check_at_least_once(reports: &[Report], expected: &Expected) -> Comparison {
    let mut distinct: BTreeMap<(String, u64), serde_json::Value> = BTreeMap::new();
    let mut duplicates = 0;
    for (key, r) in reports {
        let id = report_id(r);
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("a report the oracle does not have: {key} {r}"));
        assert_eq!(
            (
                r["clicks"].as_u64().unwrap(),
                r["purchases"].as_u64().unwrap()
            ),
            (want.0, want.1),
            "{key} {r}"
        );
        assert!(
            (r["revenue"].as_f64().unwrap() - want.2).abs() < 1e-6,
            "{key} {r}"
        );
        let revision = r["revision"].as_u64().unwrap();
        let mut value = r.clone();
        value.as_object_mut().unwrap().remove("emitted_at");
        match distinct.get(&(key.clone(), revision)) {
            Some(first) => {
                assert_eq!(first, &value, "copies of {key} revision {revision} differ");
                duplicates += 1;
            }
            None => {
                distinct.insert((key.clone(), revision), value);
            }
        }
    }
    let reported: HashSet<(String, String)> = distinct.values().map(report_id).collect();
    let wanted: HashSet<(String, String)> = expected.keys().cloned().collect();
    assert_eq!(
        reported.len(),
        distinct.len(),
        "one record (one revision) per user and window"
    );
    assert!(
        reported == wanted,
        "reported {} users×windows, the oracle {}; missing e.g. {:?}",
        reported.len(),
        wanted.len(),
        wanted.difference(&reported).take(5).collect::<Vec<_>>()
    );
    Comparison {
        records: reports.len(),
        distinct: distinct.len(),
        duplicates,
    }
}

/// Checkpoint files (`*.tdmk`) of `task_dir`, oldest first.
pub fn checkpoints(task_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(task_dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "tdmk"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The newest checkpoint file of `task_dir`.
pub fn newest_checkpoint(task_dir: &Path) -> Option<PathBuf> {
    checkpoints(task_dir).pop()
}
