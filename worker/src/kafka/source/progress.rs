//! The progress side of the source: the offsets a checkpoint stores, lag for metrics, and
//! the group's committed offsets (informative, or the exactly-once outcome marker).
//!
//! Split from the consuming side (`super`) along what callers do with it: the task loop asks for
//! offsets at checkpoints, the metrics schedule for lag, recovery for the committed marker.

use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use std::sync::atomic::Ordering;

use rdkafka::{Offset, TopicPartitionList};

use rdkafka::consumer::BaseConsumer;

use super::{KafkaSource, SourceContext, SourceError, SourceOffsets, SourceTopic};
use crate::kafka::sink::{checkpoint_marker, parse_checkpoint_marker};

/// Lag of one owned partition: records after the task's position up to the end of the log
/// (for `read_committed`, the last stable offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// Source name.
    pub source: String,
    /// Partition (= task).
    pub partition: i32,
    /// Next offset the task will take.
    pub position: i64,
    /// End of the partition.
    pub high_watermark: i64,
    /// `high_watermark - position`, never negative.
    pub lag: i64,
}

impl KafkaSource {
    /// The offsets `task`'s input has taken: what [`super::TaskInput::offsets`] says.
    pub fn offsets(&self, task: u32) -> SourceOffsets {
        let mut offsets = SourceOffsets::new();
        for (i, source) in self.topics.iter().enumerate() {
            let next = self.position(i, task);
            if next >= 0 {
                offsets
                    .entry(source.name.clone())
                    .or_default()
                    .insert(task as i32, next);
            }
        }
        offsets
    }

    /// Next offset of source `i`'s partition of `task` not yet taken; -1: none taken, or not
    /// assigned.
    fn position(&self, i: usize, task: u32) -> i64 {
        self.positions
            .get(&(i, task))
            .map_or(-1, |p| p.load(Ordering::Relaxed))
    }

    /// Lag of every owned partition from the brokers' watermarks, asked now: exact, but it
    /// blocks up to `timeout` per partition. [`KafkaSource::known_lag`] costs nothing.
    pub fn lag(&self) -> Result<Vec<PartitionLag>, SourceError> {
        self.lags(|source, partition| {
            self.watermarks
                .fetch_watermarks(&source.topic, partition, self.options.timeout)
                .map(Some)
                .map_err(|e| SourceError::Watermarks(source.topic.clone(), partition, e))
        })
    }

    /// Lag of the owned partitions whose end librdkafka has reported in its statistics (every
    /// second, from fetch responses): no request, never blocks, up to a second old. A
    /// partition not reported yet is left out.
    pub fn known_lag(&self) -> Vec<PartitionLag> {
        let ends = self
            .consumer
            .context()
            .ends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.lags(|source, partition| Ok(ends.get(&(source.topic.clone(), partition)).copied()))
            .unwrap_or_default()
    }

    /// Lag of every owned partition whose (low, high) watermarks `ends` knows.
    fn lags(
        &self,
        mut ends: impl FnMut(&SourceTopic, i32) -> Result<Option<(i64, i64)>, SourceError>,
    ) -> Result<Vec<PartitionLag>, SourceError> {
        let mut lags = Vec::new();
        for task in self.tasks() {
            for (i, source) in self.topics.iter().enumerate() {
                let partition = task as i32;
                let Some((low, high)) = ends(source, partition)? else {
                    continue;
                };
                let position = Some(self.position(i, task))
                    .filter(|&p| p >= 0)
                    .unwrap_or(low);
                lags.push(PartitionLag {
                    source: source.name.clone(),
                    partition,
                    position,
                    high_watermark: high,
                    lag: (high - position).max(0),
                });
            }
        }
        Ok(lags)
    }

    /// Commits `task`'s offsets, marked with `checkpoint_id`: see [`commit_marked`].
    pub fn commit(&self, task: u32, checkpoint_id: u64) -> Result<(), SourceError> {
        let list = self.offset_list(&self.offsets(task))?;
        commit_marked(&self.consumer, list, checkpoint_id)
    }

    /// The checkpoint id marked on `task`'s committed offsets by its last committed
    /// transaction (`super::sink::checkpoint_marker`), `None` when the group holds none. The
    /// task's partitions are committed atomically, so the first marker found speaks for all.
    /// Blocks up to the timeout.
    pub fn committed_checkpoint(&self, task: u32) -> Result<Option<u64>, SourceError> {
        self.committed_marker(self.task_partitions(task))
    }

    /// The checkpoint marker on the group's committed offsets of `list`.
    pub(super) fn committed_marker(
        &self,
        list: TopicPartitionList,
    ) -> Result<Option<u64>, SourceError> {
        let committed = self
            .consumer
            .committed_offsets(list, self.options.timeout)
            .map_err(SourceError::Committed)?;
        Ok(committed
            .elements()
            .iter()
            .find_map(|e| parse_checkpoint_marker(e.metadata())))
    }

    /// The group's committed offsets of `task`'s partitions by source name (partitions without
    /// one are left out): the offsets of the checkpoint that the marker names. Blocks up to the
    /// timeout.
    pub fn committed_offsets(&self, task: u32) -> Result<SourceOffsets, SourceError> {
        self.committed_by_source(self.task_partitions(task), |topic| {
            let source = self.topics.iter().find(|s| s.topic == topic)?;
            Some(source.name.clone())
        })
    }

    fn committed_by_source(
        &self,
        list: TopicPartitionList,
        name: impl Fn(&str) -> Option<String>,
    ) -> Result<SourceOffsets, SourceError> {
        let committed = self
            .consumer
            .committed_offsets(list, self.options.timeout)
            .map_err(SourceError::Committed)?;
        let mut offsets = SourceOffsets::new();
        for e in committed.elements() {
            if let (Offset::Offset(offset), Some(source)) = (e.offset(), name(e.topic())) {
                offsets
                    .entry(source)
                    .or_default()
                    .insert(e.partition(), offset);
            }
        }
        Ok(offsets)
    }

    /// The group's identity for `send_offsets_to_transaction` (exactly-once sinks).
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// `offsets` as a partition list of this source's topics.
    pub fn offset_list(&self, offsets: &SourceOffsets) -> Result<TopicPartitionList, SourceError> {
        offset_list(&self.topics, offsets)
    }
}

/// `offsets` as a partition list of `topics`.
pub(super) fn offset_list(
    topics: &[SourceTopic],
    offsets: &SourceOffsets,
) -> Result<TopicPartitionList, SourceError> {
    let mut list = TopicPartitionList::new();
    for source in topics {
        for (&partition, &offset) in offsets.get(&source.name).into_iter().flatten() {
            list.add_partition_offset(&source.topic, partition, Offset::Offset(offset))
                .map_err(SourceError::Commit)?;
        }
    }
    Ok(list)
}

/// Commits the offsets of `list`, marked with `checkpoint_id` (the checkpoint that holds them),
/// to the group without waiting, for tools that show consumer-group lag. Only informative with
/// `atLeastOnce`: the checkpoint, not this commit, is where a restart resumes.
pub(super) fn commit_marked(
    consumer: &BaseConsumer<SourceContext>,
    list: TopicPartitionList,
    checkpoint_id: u64,
) -> Result<(), SourceError> {
    if list.count() == 0 {
        return Ok(());
    }
    let marker = checkpoint_marker(checkpoint_id);
    for element in list.elements() {
        if let Some(mut e) = list.find_partition(element.topic(), element.partition()) {
            e.set_metadata(&marker);
        }
    }
    consumer
        .commit(&list, CommitMode::Async)
        .map_err(SourceError::Commit)
}
