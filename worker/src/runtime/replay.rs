//! Replaying a task past a corrupt committed checkpoint under exactly-once
//! (`crate::kafka::RestorePoint::Replay`): the task, restored from an older checkpoint (or
//! empty), takes its records up to the group's committed offsets and discards everything it
//! emits meanwhile — those results were committed with the corrupt checkpoint's transaction and
//! earlier ones — then runs as usual.
//!
//! It runs at start-up, before the worker is ready and before the task threads start, so no
//! checkpoint can be taken in the middle: a checkpoint of a half-replayed task would mark
//! offsets before the committed ones and a later restore would write their results again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::info;

use super::{now_ms, Owned, WorkerError};
use crate::global::task_label;
use crate::kafka::SourceOffsets;
use crate::result::Output;

/// How long the replay waits when the task's partitions have nothing fetched yet.
const WAIT: Duration = Duration::from_millis(10);

/// Takes `task`'s records up to its replay target, discarding their output, if it has one.
/// Returns false when `stop` was set before the target was reached: the worker must then end
/// without a final checkpoint of the task (the next start replays again).
pub(super) fn to_committed(task: &mut Owned, stop: &AtomicBool) -> Result<bool, WorkerError> {
    let Some(target) = task.replay_to.take() else {
        return Ok(true);
    };
    let Owned {
        id,
        task: stage,
        input,
        ..
    } = task;
    let Some(input) = input.as_mut() else {
        return Ok(true);
    };
    let started = Instant::now();
    let mut discarded = Output::default();
    let (mut records, mut results) = (0, 0);
    // One record at a time: a batch could run past the target in one partition, and what a
    // record past it emits must be written.
    while !reached(&input.offsets(), &target) {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        stage.set_wall_clock(now_ms());
        let n = input
            .poll(1, |source, _, payload| {
                stage.process(source, payload, 0, &mut discarded);
            })
            .map_err(|source| WorkerError::Input { task: *id, source })?;
        if n == 0 {
            std::thread::sleep(WAIT);
        }
        records += n;
        results += discarded.results.len();
        discarded.clear();
    }
    info!(
        task = %task_label(*id),
        records,
        results,
        seconds = started.elapsed().as_secs_f64(),
        "replayed up to the committed offsets without writing: their results were committed"
    );
    Ok(true)
}

/// Whether every partition of `target` has been taken up to its offset.
fn reached(taken: &SourceOffsets, target: &SourceOffsets) -> bool {
    target.iter().all(|(source, partitions)| {
        partitions.iter().all(|(partition, &offset)| {
            let next = taken
                .get(source)
                .and_then(|p| p.get(partition))
                .copied()
                .unwrap_or(0);
            next >= offset
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(&str, i32, i64)]) -> SourceOffsets {
        let mut map = SourceOffsets::new();
        for &(source, partition, offset) in pairs {
            map.entry(source.to_owned())
                .or_default()
                .insert(partition, offset);
        }
        map
    }

    #[test]
    fn the_target_is_reached_when_every_partition_is_taken_up_to_it() {
        let target = offsets(&[("clicks", 0, 10), ("purchases", 0, 3)]);
        assert!(!reached(&offsets(&[("clicks", 0, 10)]), &target));
        assert!(!reached(
            &offsets(&[("clicks", 0, 9), ("purchases", 0, 3)]),
            &target
        ));
        assert!(reached(
            &offsets(&[("clicks", 0, 10), ("purchases", 0, 4)]),
            &target
        ));
        assert!(reached(&offsets(&[]), &offsets(&[("clicks", 0, 0)])));
        assert!(reached(&offsets(&[]), &SourceOffsets::new()));
    }
}
