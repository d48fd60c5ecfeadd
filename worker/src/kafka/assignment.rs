//! Static task assignment (docs/design.md, execution model): which tasks a worker owns, and the co-partitioning
//! check over the pipeline's Kafka source topics.
//!
//! Pure functions over plain data: this module owns the rule `t mod N == i`, the parsing of a
//! StatefulSet pod name into its ordinal and the partition-count check. It does not fetch
//! metadata (see `source::partition_counts`) and knows nothing of epochs' hand-off protocol; the
//! epoch is carried along so that checkpoints and logs can name it.

use std::fmt;

/// Why a worker cannot work out its tasks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// The worker count is zero.
    #[error("failed to assign tasks: ordinal {ordinal} of a worker count of {workers}")]
    Ordinal {
        /// The worker's ordinal.
        ordinal: u32,
        /// The worker count.
        workers: u32,
    },
    /// The pod name does not end in `-<ordinal>`.
    #[error("failed to parse a worker ordinal from pod name {0:?}: expected NAME-ORDINAL")]
    PodName(String),
    /// The pipeline has no Kafka source topic.
    #[error("failed to check co-partitioning: the pipeline has no Kafka source")]
    NoTopics,
    /// The source topics differ in partition count.
    #[error(
        "failed to check co-partitioning: all Kafka sources of a pipeline need the same \
         partition count, but {}", Listing(.0)
    )]
    NotCoPartitioned(Vec<(String, u32)>),
    /// A topic has no partitions (it does not exist or metadata is incomplete).
    #[error("failed to check co-partitioning: topic {0:?} has no partitions (does it exist?)")]
    NoPartitions(String),
}

/// Shows topics as `"clicks" has 4 partitions, "purchases" has 6 partitions`.
struct Listing<'a>(&'a [(String, u32)]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (topic, count)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let noun = if *count == 1 {
                "partition"
            } else {
                "partitions"
            };
            write!(f, "{topic:?} has {count} {noun}")?;
        }
        Ok(())
    }
}

/// A worker's place among the pipeline's workers under one assignment epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    ordinal: u32,
    workers: u32,
    epoch: u64,
}

impl Assignment {
    /// Worker `ordinal` of `workers` under assignment `epoch`. An ordinal not below `workers`
    /// is a surplus worker (a pod a scale-down will remove once its tasks moved): it owns no
    /// task. Fails only when `workers` is zero.
    pub fn new(ordinal: u32, workers: u32, epoch: u64) -> Result<Self, AssignmentError> {
        if workers == 0 {
            return Err(AssignmentError::Ordinal { ordinal, workers });
        }
        Ok(Self {
            ordinal,
            workers,
            epoch,
        })
    }

    /// The worker's ordinal.
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    /// The number of workers.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// The assignment epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this worker owns task `task`.
    pub fn owns(&self, task: u32) -> bool {
        task % self.workers == self.ordinal
    }

    /// The tasks this worker owns among `partitions` tasks, ascending. Empty when there are
    /// more workers than partitions, or the ordinal is not below the worker count.
    pub fn tasks(&self, partitions: u32) -> Vec<u32> {
        if self.ordinal >= self.workers {
            return Vec::new();
        }
        (self.ordinal..partitions)
            .step_by(self.workers as usize)
            .collect()
    }
}

/// The ordinal of a StatefulSet pod from its name `NAME-<ordinal>` (the `HOSTNAME` of the pod).
pub fn ordinal_from_pod_name(name: &str) -> Result<u32, AssignmentError> {
    name.rsplit_once('-')
        .filter(|(prefix, _)| !prefix.is_empty())
        .and_then(|(_, digits)| {
            let canonical = digits == "0" || !digits.starts_with('0');
            canonical.then(|| digits.parse::<u32>().ok()).flatten()
        })
        .ok_or_else(|| AssignmentError::PodName(name.to_owned()))
}

/// The common partition count of the source topics given as `(topic, partitions)`, i.e. the
/// number of tasks. Fails when there is no topic, a topic has no partitions, or counts differ;
/// the mismatch error lists every topic with its count.
pub fn co_partitioned(topics: &[(String, u32)]) -> Result<u32, AssignmentError> {
    let (_, first) = topics.first().ok_or(AssignmentError::NoTopics)?;
    if let Some((topic, _)) = topics.iter().find(|(_, count)| *count == 0) {
        return Err(AssignmentError::NoPartitions(topic.clone()));
    }
    if topics.iter().any(|(_, count)| count != first) {
        return Err(AssignmentError::NotCoPartitioned(topics.to_vec()));
    }
    Ok(*first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_is_owned_by_exactly_one_worker() {
        for workers in 1..=5 {
            let assignments: Vec<Assignment> = (0..workers)
                .map(|i| Assignment::new(i, workers, 1).unwrap())
                .collect();
            for task in 0..12 {
                let owners = assignments.iter().filter(|a| a.owns(task)).count();
                assert_eq!(owners, 1, "task {task} of {workers} workers");
            }
            let mut all: Vec<u32> = assignments.iter().flat_map(|a| a.tasks(12)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..12).collect::<Vec<_>>());
        }
    }

    #[test]
    fn worker_one_of_two_owns_the_odd_tasks() {
        let a = Assignment::new(1, 2, 7).unwrap();
        assert_eq!(a.tasks(8), vec![1, 3, 5, 7]);
        assert_eq!(a.epoch(), 7);
        assert!(a.owns(5) && !a.owns(4));
    }

    #[test]
    fn a_surplus_worker_owns_no_task() {
        assert!(Assignment::new(5, 6, 0).unwrap().tasks(4).is_empty());
    }

    #[test]
    fn an_ordinal_not_below_the_worker_count_owns_nothing_and_zero_workers_are_refused() {
        let surplus = Assignment::new(2, 2, 3).unwrap();
        assert!(surplus.tasks(8).is_empty());
        assert!((0..8).all(|t| !surplus.owns(t)));
        assert_eq!(
            Assignment::new(0, 0, 0),
            Err(AssignmentError::Ordinal {
                ordinal: 0,
                workers: 0
            })
        );
    }

    #[test]
    fn the_ordinal_is_the_last_dash_separated_number_of_the_pod_name() {
        assert_eq!(ordinal_from_pod_name("quickstart-worker-0"), Ok(0));
        assert_eq!(ordinal_from_pod_name("my-pipeline-12"), Ok(12));
        for bad in ["worker", "worker-", "-3", "worker-x", "worker-01"] {
            assert_eq!(
                ordinal_from_pod_name(bad),
                Err(AssignmentError::PodName(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn co_partitioned_topics_give_the_task_count() {
        let topics = vec![("clicks".to_owned(), 4), ("purchases".to_owned(), 4)];
        assert_eq!(co_partitioned(&topics), Ok(4));
    }

    #[test]
    fn a_partition_count_mismatch_names_every_topic_and_its_count() {
        let topics = vec![("clicks".to_owned(), 4), ("purchases".to_owned(), 6)];
        let err = co_partitioned(&topics).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to check co-partitioning: all Kafka sources of a pipeline need the same \
             partition count, but \"clicks\" has 4 partitions, \"purchases\" has 6 partitions"
        );
        assert_eq!(co_partitioned(&[]), Err(AssignmentError::NoTopics));
        assert_eq!(
            co_partitioned(&[("ghost".to_owned(), 0)]),
            Err(AssignmentError::NoPartitions("ghost".into()))
        );
    }
}
