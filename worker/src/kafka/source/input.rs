//! The input of one task: its partition of every source topic, each in its own librdkafka
//! queue, polled on the task's thread; the offsets it has taken; records deleted from the log
//! before it read them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::error;

use super::{KafkaRecord, SourceContext, SourceError, SourceOffsets, SourceTopic};

/// One source partition of a task, split from the consumer's shared queue.
pub(super) struct SplitQueue {
    /// Position of its source in the source's topics.
    pub(super) topic: usize,
    /// Its partition: the task's, or for the global stage one of the partials topic's.
    pub(super) partition: i32,
    pub(super) queue: PartitionQueue<SourceContext>,
    /// Next offset not yet taken; -1: from the start of the log. Shared with the source for lag.
    pub(super) position: Arc<AtomicI64>,
}

/// What one task reads: see the module documentation of `super`.
pub struct TaskInput {
    pub(super) task: u32,
    pub(super) topics: Arc<[SourceTopic]>,
    pub(super) queues: Vec<SplitQueue>,
    /// Records that reached the shared queue before the split, in order: taken first.
    pub(super) prefix: VecDeque<KafkaRecord>,
    pub(super) consumer: Arc<rdkafka::consumer::BaseConsumer<SourceContext>>,
    pub(super) watermarks: Arc<BaseConsumer>,
    pub(super) timeout: Duration,
    /// Which queue is polled first next time, so that no source starves another.
    pub(super) turn: usize,
    /// Records deleted from the log before they were read, per source name, since last taken.
    pub(super) skipped: Vec<(String, u64)>,
    /// Called when a queue receives records after being empty.
    pub(super) waker: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl TaskInput {
    /// The task (its partition index).
    pub fn task(&self) -> u32 {
        self.task
    }

    /// Hands up to `max` available records to `f(source, offset, payload)` — `source` is the
    /// source's index among the pipeline's sources — in offset order per partition, without
    /// copying and without waiting. Returns how many.
    pub fn poll(
        &mut self,
        max: usize,
        mut f: impl FnMut(usize, i64, &[u8]),
    ) -> Result<usize, SourceError> {
        let mut n = 0;
        while n < max {
            let Some(record) = self.prefix.pop_front() else {
                break;
            };
            f(record.source, record.offset, &record.payload);
            if let Some(q) = self.queues.iter().find(|q| {
                self.topics[q.topic].index == record.source && q.partition == record.partition
            }) {
                q.position.store(record.offset + 1, Ordering::Relaxed);
            }
            n += 1;
        }
        let k = self.queues.len();
        for step in 0..k {
            let at = (self.turn + step) % k;
            let mut deleted = false;
            {
                let q = &self.queues[at];
                let index = self.topics[q.topic].index;
                while n < max {
                    match q.queue.poll(Duration::ZERO) {
                        None => break,
                        Some(Ok(message)) => {
                            let offset = message.offset();
                            f(index, offset, message.payload().unwrap_or_default());
                            q.position.store(offset + 1, Ordering::Relaxed);
                            n += 1;
                        }
                        Some(Err(KafkaError::MessageConsumption(
                            RDKafkaErrorCode::AutoOffsetReset,
                        ))) => {
                            deleted = true;
                            break;
                        }
                        Some(Err(err)) => return Err(SourceError::Consume(err)),
                    }
                }
            }
            if deleted {
                self.skip_deleted(at)?;
            }
        }
        self.turn = self.turn.wrapping_add(1);
        Ok(n)
    }

    /// Like [`TaskInput::poll`], copying the records into `out` (for a task's input: each
    /// record's partition is the task's).
    pub fn take(&mut self, max: usize, out: &mut Vec<KafkaRecord>) -> Result<usize, SourceError> {
        let task = self.task;
        self.poll(max, |source, offset, payload| {
            out.push(KafkaRecord {
                task,
                source,
                partition: task as i32,
                offset,
                payload: payload.to_vec(),
            });
        })
    }

    /// The offsets to checkpoint with the task's state: the next offset not yet taken per
    /// source partition. Partitions still at the beginning of their log are left out.
    pub fn offsets(&self) -> SourceOffsets {
        let mut offsets = SourceOffsets::new();
        for q in &self.queues {
            let next = q.position.load(Ordering::Relaxed);
            if next >= 0 {
                offsets
                    .entry(self.topics[q.topic].name.clone())
                    .or_default()
                    .insert(q.partition, next);
            }
        }
        offsets
    }

    /// Whether the task has taken every record of its partitions up to their current end
    /// (asks the brokers: blocks up to the timeout per partition).
    pub fn caught_up(&self) -> Result<bool, SourceError> {
        if !self.prefix.is_empty() {
            return Ok(false);
        }
        for q in &self.queues {
            let topic = &self.topics[q.topic].topic;
            let partition = q.partition;
            let (low, high) = self
                .watermarks
                .fetch_watermarks(topic, partition, self.timeout)
                .map_err(|e| SourceError::Watermarks(topic.clone(), partition, e))?;
            let position = q.position.load(Ordering::Relaxed);
            if (if position < 0 { low } else { position }) < high {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `offsets` as a partition list (for the exactly-once sink's transaction).
    pub fn offset_list(&self, offsets: &SourceOffsets) -> Result<TopicPartitionList, SourceError> {
        super::progress::offset_list(&self.topics, offsets)
    }

    /// Commits `offsets` — those of checkpoint `checkpoint_id`, not the ones taken since —
    /// marked with its id, to the group without waiting (informative; see
    /// `KafkaSource::commit`). Under exactly-once the checkpoint's transaction committed the
    /// same offsets and marker already; committing later offsets under the marker would make
    /// the group's offsets disagree with the checkpoint it names.
    pub fn commit(&self, offsets: &SourceOffsets, checkpoint_id: u64) -> Result<(), SourceError> {
        let list = self.offset_list(offsets)?;
        super::progress::commit_marked(&self.consumer, list, checkpoint_id)
    }

    /// Calls `wake` whenever one of the task's partition queues receives records after being
    /// empty (a task thread unparks itself with it).
    pub fn wake_on_records(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
        for q in &mut self.queues {
            let wake = wake.clone();
            q.queue.set_nonempty_callback(move || wake());
        }
        self.waker = Some(wake);
    }

    /// Records deleted from the log before the task read them, per source, since the last call.
    pub fn take_skipped(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.skipped)
    }

    /// The next offset of queue `at` is no longer in the log: count what was deleted, say so,
    /// and go on from the start of the log.
    fn skip_deleted(&mut self, at: usize) -> Result<(), SourceError> {
        let q = &self.queues[at];
        let source = &self.topics[q.topic];
        let partition = q.partition;
        let (low, _) = self
            .watermarks
            .fetch_watermarks(&source.topic, partition, self.timeout)
            .map_err(|e| SourceError::Watermarks(source.topic.clone(), partition, e))?;
        let from = q.position.load(Ordering::Relaxed).max(0);
        let skipped = u64::try_from(low - from).unwrap_or(0);
        error!(
            task = self.task,
            source = %source.name,
            from,
            to = low,
            skipped,
            "records were deleted from the log before this task read them; going on from the start of the log"
        );
        // The partition stopped at the error and refuses a seek: assign it again at `low`
        // and split its queue off again (a new assignment is not forwarded to the old queue).
        let seek_error = |e| SourceError::Seek(source.topic.clone(), partition, e);
        let mut list = TopicPartitionList::new();
        list.add_partition(&source.topic, partition);
        self.consumer
            .incremental_unassign(&list)
            .map_err(seek_error)?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&source.topic, partition, Offset::Offset(low))
            .map_err(seek_error)?;
        self.consumer
            .incremental_assign(&list)
            .map_err(seek_error)?;
        let mut queue = self
            .consumer
            .split_partition_queue(&source.topic, partition)
            .ok_or_else(|| SourceError::Split(source.topic.clone(), partition))?;
        if let Some(wake) = &self.waker {
            let wake = wake.clone();
            queue.set_nonempty_callback(move || wake());
        }
        let q = &mut self.queues[at];
        q.queue = queue;
        q.position.store(low, Ordering::Relaxed);
        self.skipped.push((source.name.clone(), skipped));
        Ok(())
    }
}
