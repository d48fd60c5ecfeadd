//! The Kafka source of a worker: one consumer over the owned tasks of every Kafka source topic.
//!
//! This module owns consuming: manual assignment (no consumer-group rebalancing), starting each
//! (topic, partition) at a checkpoint's offset, handing each task its own input and the
//! co-partitioning check against broker metadata; its `progress` half owns lag and the group's
//! committed offsets. It does not own the checkpoint (it hands offsets out and takes them back),
//! nor the tasks that process the records.
//!
//! **One input per task.** [`KafkaSource::assign`] splits every assigned partition into its own
//! librdkafka queue and returns one [`TaskInput`] per task, holding the queues of the task's
//! partition of every source. A task's thread polls its input directly and processes each
//! record in place (no copy, no hand-off between threads); the worker's main thread only serves
//! the consumer's callbacks ([`KafkaSource::serve`]).
//!
//! **Offsets are the engine's progress.** [`TaskInput::offsets`] says, per source partition of
//! the task, the next offset the task has *not* taken yet — not the consumer's fetch position,
//! which runs ahead by what is prefetched. Those offsets go into the task's checkpoint together
//! with its state; on restart [`KafkaSource::assign`] starts there. Kafka's committed offsets of
//! the group are only informative ([`KafkaSource::commit`]) or, with exactly-once, the
//! transaction's outcome marker (see `docs/kafka.md`).
//!
//! **Back-pressure.** librdkafka prefetches into a partition's queue until it holds
//! `queued.min.messages` records or `queued.max.messages.kbytes` (per partition once split: set
//! here from [`SourceOptions`]) and then stops fetching that partition until the task has taken
//! from it. A slow task therefore slows its partitions only, nothing is dropped, and memory is
//! bounded by partitions × that prefetch.
//!
//! **Records deleted before they were read.** `auto.offset.reset` is `error`: when a task's next
//! offset is no longer in the log (retention deleted it, or the checkpoint is older than the
//! log), its input counts the records skipped ([`TaskInput::skipped`]), logs an error and goes on
//! from the start of the log — never silently.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tracing::warn;

use crate::global::GLOBAL_STAGE;
use crate::kafka::assignment::{co_partitioned, AssignmentError};
use crate::kafka::config::KafkaSettings;

mod input;
mod progress;

use input::SplitQueue;
pub use input::TaskInput;

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
    /// A partition's queue could not be split from the consumer's.
    #[error("failed to give topic {0:?} partition {1} its own queue")]
    Split(String, i32),
    /// The partials topic of the global stage could not be created.
    #[error("failed to create topic {0:?}: {1}")]
    CreateTopic(String, String),
    /// Seeking past records deleted from the log failed.
    #[error("failed to seek {0:?} partition {1} to the start of its log")]
    Seek(String, i32, #[source] KafkaError),
    /// A record reached the consumer's shared queue instead of its task's (a bug: every
    /// assigned partition has its own queue); the worker restarts from its checkpoints.
    #[error("a record of {0:?} partition {1} reached the shared queue")]
    Unsplit(String, i32),
}

/// The source name of the global stage's input in its checkpoints' offsets.
pub const GLOBAL_SOURCE: &str = "tidemark.partials";

/// Polls in a row that find no record before the shared queue counts as drained after an
/// assignment (a poll that serves another event also finds none).
const DRAIN_EMPTY_POLLS: u32 = 16;

/// The global stage's input: the partials topic, whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalInput {
    /// The partials topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: u32,
    /// Next offset to read per partition (from the stage's checkpoint); absent: the beginning.
    pub start: BTreeMap<i32, i64>,
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
    /// Records librdkafka prefetches per partition at most (`queued.min.messages`).
    pub prefetch_records: usize,
    /// Kilobytes librdkafka prefetches per partition at most (`queued.max.messages.kbytes`).
    pub prefetch_kbytes: usize,
    /// Bound of every metadata, watermark and commit call.
    pub timeout: Duration,
    /// Longest a broker holds a fetch without data (`fetch.wait.max.ms`). Kafka answers as
    /// soon as data arrives; librdkafka's mock cluster waits the whole time, so the embedded
    /// default shortens it.
    pub fetch_wait: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            prefetch_records: 20_000,
            prefetch_kbytes: 4 * 1024,
            timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(500),
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
    /// Its partition (the task's, but for the global stage's input).
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record's value (empty for a null value).
    pub payload: Vec<u8>,
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
    consumer: Arc<BaseConsumer<SourceContext>>,
    /// A second client for watermark queries: on the consumer's own connections they would
    /// wait behind its long-polling fetches.
    watermarks: Arc<BaseConsumer>,
    topics: Arc<[SourceTopic]>,
    partitions: u32,
    options: SourceOptions,
    /// Next offset not yet taken per (position in `topics`, task) of the assigned tasks, kept by
    /// their inputs; -1: from the start of the log.
    positions: BTreeMap<(usize, u32), Arc<AtomicI64>>,
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
        let consumer: BaseConsumer<SourceContext> = settings
            .client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "error")
            .set("queued.min.messages", options.prefetch_records.to_string())
            .set(
                "queued.max.messages.kbytes",
                options.prefetch_kbytes.to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                options.fetch_wait.as_millis().to_string(),
            )
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
        Ok(Self {
            consumer: Arc::new(consumer),
            watermarks: Arc::new(watermarks),
            topics: topics.into(),
            partitions,
            options,
            positions: BTreeMap::new(),
        })
    }

    /// The partition count of the source topics: the pipeline's number of tasks.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Starts consuming `tasks`, each at its checkpoint's offsets (`start[task]`; a source
    /// partition without an offset starts at the beginning of the log), and returns each
    /// task's input. Replaces an earlier assignment; inputs of an earlier one stop receiving.
    pub fn assign(
        &mut self,
        tasks: &[u32],
        start: &BTreeMap<u32, SourceOffsets>,
    ) -> Result<Vec<TaskInput>, SourceError> {
        Ok(self.assign_with_global(tasks, start, None)?.0)
    }

    /// Like [`KafkaSource::assign`], and with `global`, also every partition of the partials
    /// topic as the input of the global stage (task `GLOBAL_STAGE`, one source named
    /// [`GLOBAL_SOURCE`]).
    pub fn assign_with_global(
        &mut self,
        tasks: &[u32],
        start: &BTreeMap<u32, SourceOffsets>,
        global: Option<&GlobalInput>,
    ) -> Result<(Vec<TaskInput>, Option<TaskInput>), SourceError> {
        let mut list = TopicPartitionList::new();
        if let Some(global) = global {
            for partition in 0..global.partitions as i32 {
                let at = global
                    .start
                    .get(&partition)
                    .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                list.add_partition_offset(&global.topic, partition, at)
                    .map_err(|e| SourceError::Partitions("assign", e))?;
            }
        }
        self.positions.clear();
        for &task in tasks {
            for (i, source) in self.topics.iter().enumerate() {
                let partition = task as i32;
                let offset = start
                    .get(&task)
                    .and_then(|offsets| offsets.get(&source.name))
                    .and_then(|partitions| partitions.get(&partition))
                    .copied();
                let start_at = offset.map_or(Offset::Beginning, Offset::Offset);
                self.positions
                    .insert((i, task), Arc::new(AtomicI64::new(offset.unwrap_or(-1))));
                list.add_partition_offset(&source.topic, partition, start_at)
                    .map_err(|e| SourceError::Partitions("assign", e))?;
            }
        }
        self.consumer
            .assign(&list)
            .map_err(|e| SourceError::Partitions("assign", e))?;
        // Records fetched before a partition's queue is split off went to the shared queue;
        // everything fetched after goes to the split queue. So the shared queue holds, per
        // partition, a prefix of what follows in its own queue: hand it to the task first.
        let mut inputs: BTreeMap<u32, TaskInput> = BTreeMap::new();
        for &task in tasks {
            let mut queues = Vec::with_capacity(self.topics.len());
            for (i, source) in self.topics.iter().enumerate() {
                let partition = task as i32;
                let queue = self
                    .consumer
                    .split_partition_queue(&source.topic, partition)
                    .ok_or_else(|| SourceError::Split(source.topic.clone(), partition))?;
                queues.push(SplitQueue {
                    topic: i,
                    partition,
                    queue,
                    position: self.positions[&(i, task)].clone(),
                });
            }
            inputs.insert(task, self.input(task, self.topics.clone(), queues));
        }
        let mut global_input = match global {
            Some(global) => {
                let topics: Arc<[SourceTopic]> = Arc::from([SourceTopic {
                    name: GLOBAL_SOURCE.to_owned(),
                    index: 0,
                    topic: global.topic.clone(),
                }]);
                let mut queues = Vec::with_capacity(global.partitions as usize);
                for partition in 0..global.partitions as i32 {
                    let queue = self
                        .consumer
                        .split_partition_queue(&global.topic, partition)
                        .ok_or_else(|| SourceError::Split(global.topic.clone(), partition))?;
                    let at = global.start.get(&partition).copied().unwrap_or(-1);
                    queues.push(SplitQueue {
                        topic: 0,
                        partition,
                        queue,
                        position: Arc::new(AtomicI64::new(at)),
                    });
                }
                Some(self.input(GLOBAL_STAGE, topics, queues))
            }
            None => None,
        };
        // `poll` also answers `None` when it served an event that is not a record (an offset
        // commit's result, say) while records wait behind it: stopping at the first `None` left
        // records in the shared queue, which `serve` then found (`SourceError::Unsplit`, seen in
        // the exactly-once crash test). The queue is drained once several polls in a row find
        // no record.
        let mut empty_polls = 0;
        while empty_polls < DRAIN_EMPTY_POLLS {
            let Some(result) = self.consumer.poll(Duration::ZERO) else {
                empty_polls += 1;
                continue;
            };
            empty_polls = 0;
            let message = result.map_err(SourceError::Consume)?;
            let partition = message.partition();
            let (input, source) = match self.topics.iter().position(|t| t.topic == message.topic())
            {
                Some(i) => (inputs.get_mut(&(partition as u32)), self.topics[i].index),
                None if global.is_some_and(|g| g.topic == message.topic()) => {
                    (global_input.as_mut(), 0)
                }
                None => continue,
            };
            if let Some(input) = input {
                input.prefix.push_back(KafkaRecord {
                    task: input.task,
                    source,
                    partition,
                    offset: message.offset(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                });
            }
        }
        Ok((inputs.into_values().collect(), global_input))
    }

    fn input(&self, task: u32, topics: Arc<[SourceTopic]>, queues: Vec<SplitQueue>) -> TaskInput {
        TaskInput {
            task,
            topics,
            queues,
            prefix: VecDeque::new(),
            consumer: self.consumer.clone(),
            watermarks: self.watermarks.clone(),
            timeout: self.options.timeout,
            turn: 0,
            skipped: Vec::new(),
            waker: None,
        }
    }

    /// The checkpoint id marked on the global stage's committed offsets of the partials
    /// `topic` (`partitions` partitions): see [`KafkaSource::committed_checkpoint`].
    pub fn committed_global_checkpoint(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<Option<u64>, SourceError> {
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            list.add_partition(topic, partition);
        }
        self.committed_marker(list)
    }

    /// The assigned tasks, ascending.
    pub fn tasks(&self) -> Vec<u32> {
        let mut tasks: Vec<u32> = self.positions.keys().map(|&(_, t)| t).collect();
        tasks.dedup();
        tasks
    }

    /// Serves the consumer's callbacks (statistics, errors, commit results) for up to
    /// `timeout`; call it regularly from one thread while tasks poll their inputs. Transient
    /// errors are logged (librdkafka retries them); a record here is
    /// [`SourceError::Unsplit`].
    pub fn serve(&self, timeout: Duration) -> Result<(), SourceError> {
        let mut wait = timeout;
        while let Some(result) = self.consumer.poll(wait) {
            wait = Duration::ZERO;
            match result {
                Ok(message) => {
                    return Err(SourceError::Unsplit(
                        message.topic().to_owned(),
                        message.partition(),
                    ))
                }
                Err(err) => warn!(error = %err, "Kafka consumer error (retried by librdkafka)"),
            }
        }
        Ok(())
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
