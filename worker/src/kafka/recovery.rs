//! Which checkpoint a task restores after a crash, given the checkpoints on its volume and the
//! outcome marker of its last committed transaction.
//!
//! Pure decision logic: this module owns the rule that resolves "was the newest checkpoint's
//! transaction committed?" (DESIGN.md §4). It does not read checkpoints (the checkpoint store
//! lists the valid ids) or Kafka (`KafkaSource::committed_checkpoint` reads the marker).
//!
//! Why the rule is right, with exactly-once: checkpoint `c` is written after transaction `T_c`
//! is flushed and before it is committed, and `T_c` carries the task's offsets with the marker
//! `c` into the group's committed offsets, atomically with its results. So at most the newest
//! checkpoint can have an uncommitted transaction, and the committed marker `k` says exactly
//! which checkpoint's results are visible: restoring `k` and replaying from its offsets
//! re-produces, deterministically, exactly the results of the transactions after `k`, which
//! were aborted (by the broker's timeout or by the new producer's `init_transactions`).

/// Where a task starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestorePoint {
    /// No state: empty task, sources from the beginning.
    Fresh,
    /// Restore this checkpoint and seek to its offsets; checkpoints newer than it are
    /// discarded (their transactions did not commit).
    Checkpoint {
        /// The checkpoint id.
        id: u64,
        /// False when the choice could not be checked against a commit marker (no marker with
        /// exactly-once, e.g. the group's offsets expired): the restore is at-least-once and the
        /// worker should say so in a log line and a metric.
        exact: bool,
    },
}

/// Why no restore point is safe.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// Kafka says checkpoint `committed` was committed but it is not on the volume (the
    /// volume was replaced, or `checkpoint.retain` is 1 so it was deleted before the commit).
    #[error(
        "failed to choose a restore point: checkpoint {committed} was committed to Kafka but is \
         not on the volume (newest there: {newest:?}); exactly-once needs checkpoint.retain >= 2"
    )]
    CommittedMissing {
        /// The committed checkpoint id.
        committed: u64,
        /// The newest checkpoint on the volume.
        newest: Option<u64>,
    },
}

/// The first checkpoint id a task writes; ids grow by one per checkpoint.
pub const FIRST_CHECKPOINT: u64 = 1;

/// The restore point from the valid checkpoint ids on the volume and, with exactly-once, the
/// committed marker (`None` when the group holds no marker for the task). With
/// `exactly_once == false` the newest checkpoint wins.
pub fn restore_point(
    checkpoints: &[u64],
    committed: Option<u64>,
    exactly_once: bool,
) -> Result<RestorePoint, RecoveryError> {
    let newest = checkpoints.iter().copied().max();
    if !exactly_once {
        return Ok(
            newest.map_or(RestorePoint::Fresh, |id| RestorePoint::Checkpoint {
                id,
                exact: true,
            }),
        );
    }
    match (committed, newest) {
        (None, None) => Ok(RestorePoint::Fresh),
        // Only the first checkpoint exists and no transaction ever committed: the crash fell
        // between the first checkpoint and its commit.
        (None, Some(FIRST_CHECKPOINT)) => Ok(RestorePoint::Fresh),
        (None, Some(id)) => Ok(RestorePoint::Checkpoint { id, exact: false }),
        (Some(k), _) if checkpoints.contains(&k) => {
            Ok(RestorePoint::Checkpoint { id: k, exact: true })
        }
        (Some(committed), newest) => Err(RecoveryError::CommittedMissing { committed, newest }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_between_checkpoint_and_commit_restores_the_previous_checkpoint() {
        assert_eq!(
            restore_point(&[3, 4, 5], Some(4), true),
            Ok(RestorePoint::Checkpoint { id: 4, exact: true })
        );
    }

    #[test]
    fn a_crash_after_the_commit_restores_the_newest_checkpoint() {
        assert_eq!(
            restore_point(&[3, 4, 5], Some(5), true),
            Ok(RestorePoint::Checkpoint { id: 5, exact: true })
        );
    }

    #[test]
    fn a_first_checkpoint_whose_transaction_never_committed_is_discarded() {
        assert_eq!(restore_point(&[1], None, true), Ok(RestorePoint::Fresh));
        assert_eq!(restore_point(&[], None, true), Ok(RestorePoint::Fresh));
    }

    #[test]
    fn without_a_marker_the_newest_checkpoint_is_restored_inexactly() {
        assert_eq!(
            restore_point(&[6, 7], None, true),
            Ok(RestorePoint::Checkpoint {
                id: 7,
                exact: false
            })
        );
    }

    #[test]
    fn a_committed_checkpoint_missing_from_the_volume_is_an_error() {
        assert_eq!(
            restore_point(&[9], Some(8), true),
            Err(RecoveryError::CommittedMissing {
                committed: 8,
                newest: Some(9)
            })
        );
        assert!(restore_point(&[], Some(2), true).is_err());
    }

    #[test]
    fn at_least_once_restores_the_newest_checkpoint_whatever_kafka_says() {
        assert_eq!(
            restore_point(&[1, 2], Some(1), false),
            Ok(RestorePoint::Checkpoint { id: 2, exact: true })
        );
        assert_eq!(restore_point(&[], None, false), Ok(RestorePoint::Fresh));
    }
}
