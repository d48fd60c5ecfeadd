//! The Kafka source of a worker: one consumer over the owned tasks of every Kafka source topic.
//!
//! This module owns consuming: manual assignment (no consumer-group rebalancing), starting each
//! (topic, partition) at a checkpoint's offset, batching records into bounded per-task buffers
//! with back-pressure and the co-partitioning check against broker metadata; its `progress`
//! half owns the offsets that a checkpoint stores, lag and the group's committed offsets. It does not own the checkpoint (it hands offsets out and takes them
//! back), nor the tasks that process the records.
//!
//! **Offsets are the engine's progress.** [`KafkaSource::offsets`] says, per source and
//! partition of a task, the next offset the task has *not* taken yet — not the consumer's fetch
//! position, which runs ahead by what is buffered. Those offsets go into the task's checkpoint
//! together with its state; on restart [`KafkaSource::assign`] starts there. Kafka's committed
//! offsets of the group are only informative ([`KafkaSource::commit`]) or, with exactly-once,
//! the transaction's outcome marker (see `docs/kafka.md`).
//!
//! **Back-pressure.** A task's buffer holds at most `buffer_records` records before its
//! partitions are paused, and resumes when its task has drained it to half (the hysteresis
//! avoids a pause/resume call per record). Records librdkafka had already fetched when the pause
//! took effect are still accepted, never dropped, so a buffer can overshoot by what librdkafka
//! prefetches for a partition, itself bounded by `queued.max.messages.kbytes` (set here). Memory
//! is therefore bounded by tasks × (`buffer_records` × record size + prefetch).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::kafka::assignment::{co_partitioned, AssignmentError};
use crate::kafka::config::KafkaSettings;

mod progress;

pub use progress::PartitionLag;

/// Next offset to read per source name and partition: the checkpoint's `offsets`.
pub type SourceOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// Why the source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer could not be created (bad settings).
    #[error("failed to create the Kafka consumer")]
    Create(#[source] KafkaError),
    /// Topic metadata could not be fetched in time.
    #[error("failed to fetch metadata of topic {0:?}")]
    Metadata(String, #[source] KafkaError),
    /// The topics are not co-partitioned.
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
    /// Assigning, pausing or resuming partitions failed.
    #[error("failed to {0} partitions")]
    Partitions(&'static str, #[source] KafkaError),
    /// The consumer reported an error while polling (librdkafka retries transient ones itself;
    /// the caller logs and keeps polling unless it persists).
    #[error("failed to consume")]
    Consume(#[source] KafkaError),
    /// Watermarks could not be fetched in time.
    #[error("failed to fetch watermarks of {0:?} partition {1}")]
    Watermarks(String, i32, #[source] KafkaError),
    /// The group's committed offsets could not be read in time.
    #[error("failed to read committed offsets")]
    Committed(#[source] KafkaError),
    /// The informative offset commit failed.
    #[error("failed to commit offsets")]
    Commit(#[source] KafkaError),
}

/// One Kafka source of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTopic {
    /// The source's name in the manifest (checkpoint offsets are keyed by it).
    pub name: String,
    /// Its index among the pipeline's sources (`Task::process`'s `source`).
    pub index: usize,
    /// The topic.
    pub topic: String,
}

/// Tuning of the source; [`SourceOptions::default`] suits a worker.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Records buffered per task before its partitions are paused.
    pub buffer_records: usize,
    /// Records taken from librdkafka per [`KafkaSource::poll`] at most.
    pub poll_batch: usize,
    /// Bound of every metadata, watermark and commit call.
    pub timeout: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            buffer_records: 10_000,
            poll_batch: 4_096,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A record of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The task: the record's partition.
    pub task: u32,
    /// Index of its source among the pipeline's sources.
    pub source: usize,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record's value (empty for a null value).
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
struct TaskBuffer {
    records: VecDeque<KafkaRecord>,
    paused: bool,
}

/// How often librdkafka reports the ends of the assigned partitions (for [`KafkaSource::known_lag`]).
const STATISTICS_INTERVAL_MS: u32 = 1_000;

/// The consumer's context: keeps the end of each assigned partition from librdkafka's
/// statistics, which it learns from fetch responses, so lag costs no request.
#[derive(Default)]
pub struct SourceContext {
    /// Low watermark and last stable offset (the end for `read_committed`) per (topic,
    /// partition).
    ends: Mutex<HashMap<(String, i32), (i64, i64)>>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        for (name, topic) in statistics.topics {
            for (&partition, p) in &topic.partitions {
                // Partition -1 is librdkafka's internal UA partition; -1001 means unknown.
                if partition >= 0 && p.ls_offset >= 0 {
                    ends.insert((name.clone(), partition), (p.lo_offset.max(0), p.ls_offset));
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {}

/// The worker's consumer over its tasks.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    /// A second client for watermark queries: on the consumer's own connections they would
    /// wait behind its long-polling fetches.
    watermarks: BaseConsumer,
    topics: Vec<SourceTopic>,
    by_topic: HashMap<String, usize>,
    partitions: u32,
    options: SourceOptions,
    buffers: BTreeMap<u32, TaskBuffer>,
    /// Next offset not yet taken, per (position in `topics`, task); absent: from the beginning.
    next: HashMap<(usize, u32), i64>,
}

impl KafkaSource {
    /// Connects to Kafka and checks that `topics` are co-partitioned; assigns nothing yet.
    /// `group_id` names the group whose committed offsets are informative (no member ever
    /// joins it: assignment is manual). Blocks for at most `options.timeout` per topic.
    pub fn connect(
        settings: &KafkaSettings,
        group_id: &str,
        topics: Vec<SourceTopic>,
        options: SourceOptions,
    ) -> Result<Self, SourceError> {
        let queued_kbytes = 16 * 1024;
        let consumer: BaseConsumer<SourceContext> = settings
            .client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", queued_kbytes.to_string())
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string())
            .create_with_context(SourceContext::default())
            .map_err(SourceError::Create)?;
        let watermarks: BaseConsumer = settings
            .client_config()
            .set("isolation.level", "read_committed")
            .create()
            .map_err(SourceError::Create)?;
        let counts = partition_counts(&consumer, &topics, options.timeout)?;
        let partitions = co_partitioned(&counts)?;
        let by_topic = topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.topic.clone(), i))
            .collect();
        Ok(Self {
            consumer,
            watermarks,
            topics,
            by_topic,
            partitions,
            options,
            buffers: BTreeMap::new(),
            next: HashMap::new(),
        })
    }

    /// The partition count of the source topics: the pipeline's number of tasks.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Starts consuming `tasks`, each at its checkpoint's offsets (`start[task]`); a source
    /// partition without an offset starts at the beginning of the log. Replaces an earlier
    /// assignment and drops what was buffered for it.
    pub fn assign(
        &mut self,
        tasks: &[u32],
        start: &BTreeMap<u32, SourceOffsets>,
    ) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        self.buffers.clear();
        self.next.clear();
        for &task in tasks {
            self.buffers.insert(task, TaskBuffer::default());
            for (i, source) in self.topics.iter().enumerate() {
                let partition = task as i32;
                let offset = start
                    .get(&task)
                    .and_then(|offsets| offsets.get(&source.name))
                    .and_then(|partitions| partitions.get(&partition))
                    .copied();
                let start_at = match offset {
                    Some(offset) => {
                        self.next.insert((i, task), offset);
                        Offset::Offset(offset)
                    }
                    None => Offset::Beginning,
                };
                list.add_partition_offset(&source.topic, partition, start_at)
                    .map_err(|e| SourceError::Partitions("assign", e))?;
            }
        }
        self.consumer
            .assign(&list)
            .map_err(|e| SourceError::Partitions("assign", e))
    }

    /// The assigned tasks, ascending.
    pub fn tasks(&self) -> Vec<u32> {
        self.buffers.keys().copied().collect()
    }

    /// Waits up to `timeout` for records and moves up to `poll_batch` of them into their tasks'
    /// buffers, pausing tasks whose buffer is full. Returns how many records were buffered.
    pub fn poll(&mut self, timeout: Duration) -> Result<usize, SourceError> {
        let mut buffered = 0;
        let mut wait = timeout;
        while buffered < self.options.poll_batch {
            let Some(result) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = result.map_err(SourceError::Consume)?;
            let Some(&source) = self.by_topic.get(message.topic()) else {
                continue;
            };
            let task = message.partition() as u32;
            let Some(buffer) = self.buffers.get_mut(&task) else {
                continue;
            };
            buffer.records.push_back(KafkaRecord {
                task,
                source: self.topics[source].index,
                offset: message.offset(),
                payload: message.payload().unwrap_or_default().to_vec(),
            });
            buffered += 1;
            if buffer.records.len() >= self.options.buffer_records && !buffer.paused {
                // Marked only once paused, so a failed pause is retried by the next record.
                self.consumer
                    .pause(&partitions_of(&self.topics, task))
                    .map_err(|e| SourceError::Partitions("pause", e))?;
                buffer.paused = true;
            }
        }
        Ok(buffered)
    }

    /// Moves up to `max` buffered records of `task` into `out`, in offset order per partition,
    /// and advances the task's offsets past them. Resumes the task once its buffer is half empty.
    pub fn take(
        &mut self,
        task: u32,
        max: usize,
        out: &mut Vec<KafkaRecord>,
    ) -> Result<usize, SourceError> {
        let Some(buffer) = self.buffers.get_mut(&task) else {
            return Ok(0);
        };
        let n = max.min(buffer.records.len());
        for record in buffer.records.drain(..n) {
            let i = self
                .topics
                .iter()
                .position(|t| t.index == record.source)
                .expect("buffered records come from a known source");
            self.next.insert((i, task), record.offset + 1);
            out.push(record);
        }
        if buffer.paused && buffer.records.len() <= self.options.buffer_records / 2 {
            self.consumer
                .resume(&partitions_of(&self.topics, task))
                .map_err(|e| SourceError::Partitions("resume", e))?;
            buffer.paused = false;
        }
        Ok(n)
    }

    /// Records buffered for `task`.
    pub fn buffered(&self, task: u32) -> usize {
        self.buffers.get(&task).map_or(0, |b| b.records.len())
    }

    /// Whether `task`'s partitions are paused because its buffer is full.
    pub fn is_paused(&self, task: u32) -> bool {
        self.buffers.get(&task).is_some_and(|b| b.paused)
    }

    fn task_partitions(&self, task: u32) -> TopicPartitionList {
        partitions_of(&self.topics, task)
    }
}

/// The partitions of `task`: its partition index in every source topic.
fn partitions_of(topics: &[SourceTopic], task: u32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for source in topics {
        list.add_partition(&source.topic, task as i32);
    }
    list
}

/// The partition count of each source topic, from broker metadata (0 for an unknown topic).
fn partition_counts(
    consumer: &BaseConsumer<SourceContext>,
    topics: &[SourceTopic],
    timeout: Duration,
) -> Result<Vec<(String, u32)>, SourceError> {
    topics
        .iter()
        .map(|source| {
            let metadata = consumer
                .fetch_metadata(Some(&source.topic), timeout)
                .map_err(|e| SourceError::Metadata(source.topic.clone(), e))?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == source.topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len() as u32);
            Ok((source.topic.clone(), count))
        })
        .collect()
}
