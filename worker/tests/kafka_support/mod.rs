//! Helpers shared by the Kafka tests: a mock cluster with topics, a plain producer, a
//! `read_committed` reader, and polling with a deadline instead of sleeps; real brokers
//! ([`tansu`]; [`noida`], with transactions), worker processes ([`worker`]), the quickstart
//! with its oracle ([`quickstart`]) and the exactly-once judgement of a topic ([`exactly_once`]).
#![allow(dead_code)]

pub mod exactly_once;
pub mod noida;
pub mod quickstart;
pub mod reference;
pub mod tansu;
pub mod worker;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tidemark_worker::kafka::{KafkaRecord, KafkaSettings, TaskInput};

/// How long a test waits for Kafka before failing; generous for a loaded 2-core machine, and
/// only reached when something is wrong.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A mock cluster of one broker with `topics` (name, partitions) created.
pub fn cluster(topics: &[(&str, i32)]) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for (topic, partitions) in topics {
        cluster.create_topic(topic, *partitions, 1).unwrap();
    }
    cluster
}

/// Starts `tidemark-mock-kafka` with `topics` (`NAME:PARTITIONS`); returns the process (it stops
/// when its standard input closes) and its bootstrap servers.
pub fn start_mock_binary(topics: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark-mock-kafka"));
    for topic in topics {
        command.args(["--topic", topic]);
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let bootstrap = line.trim().strip_prefix("bootstrap=").unwrap().to_owned();
    (child, bootstrap)
}

/// A plain idempotent producer.
pub fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap()
}

/// Writes `values` to `topic`'s `partition` and waits until they are acknowledged.
pub fn produce(producer: &BaseProducer, topic: &str, partition: i32, values: &[String]) {
    for value in values {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key("k")
                    .payload(value.as_bytes()),
            )
            .unwrap();
    }
    producer.flush(DEADLINE).unwrap();
}

/// `n` values `"<prefix>-<i>"`.
pub fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Takes every task's records from `inputs` until `done` holds for what was taken.
pub fn take_until(
    inputs: &mut [TaskInput],
    mut done: impl FnMut(&[KafkaRecord]) -> bool,
) -> Vec<KafkaRecord> {
    let deadline = Instant::now() + DEADLINE;
    let mut taken = Vec::new();
    while !done(&taken) {
        assert!(
            Instant::now() < deadline,
            "took only {} records",
            taken.len()
        );
        let mut n = 0;
        for input in inputs.iter_mut() {
            n += input.take(usize::MAX, &mut taken).unwrap();
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    taken
}

/// A `read_committed` reader of every partition of `topic` from the beginning.
pub fn reader(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    consumer
}

/// Reads messages until one has value `sentinel`; returns those before it.
pub fn read_until(consumer: &BaseConsumer, sentinel: &str) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + DEADLINE;
    let mut messages = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no sentinel after {} messages",
            messages.len()
        );
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.unwrap().detach();
        if message.payload() == Some(sentinel.as_bytes()) {
            return messages;
        }
        messages.push(message);
    }
}

/// The value of header `key` of `message` as text.
pub fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

/// Plain settings for `bootstrap`.
pub fn settings(bootstrap: &str) -> KafkaSettings {
    KafkaSettings::bootstrap(bootstrap)
}

/// Reads `n` messages (or fails at the deadline).
pub fn read_n(consumer: &BaseConsumer, n: usize) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + DEADLINE;
    let mut messages = Vec::new();
    while messages.len() < n {
        assert!(
            Instant::now() < deadline,
            "read only {} messages",
            messages.len()
        );
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            messages.push(result.unwrap().detach());
        }
    }
    messages
}

/// Key and value of `message` as text.
pub fn text(message: &OwnedMessage) -> (String, String) {
    let key = message
        .key()
        .map(|k| String::from_utf8(k.to_vec()).unwrap());
    let value = message
        .payload()
        .map(|v| String::from_utf8(v.to_vec()).unwrap());
    (key.unwrap_or_default(), value.unwrap_or_default())
}

/// A small deterministic pseudo-random sequence (xorshift64*), seeded from
/// `TIDEMARK_TEST_SEED` or the clock, so that a failing run can be repeated.
pub struct Random(u64);

impl Random {
    /// A sequence from `TIDEMARK_TEST_SEED`, else from the clock; prints the seed.
    pub fn new() -> Random {
        let seed = std::env::var("TIDEMARK_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random schedule seed: TIDEMARK_TEST_SEED={seed}");
        Random(seed.max(1))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
