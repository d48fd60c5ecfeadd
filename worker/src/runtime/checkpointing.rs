//! Checkpoints of a task thread's tasks that do not stall them.
//!
//! On the task thread a checkpoint only captures the task's state (a flat copy, see
//! `Task::capture`) and its offsets, and makes the sink ready (`prepare`: flush, and under
//! exactly-once add the offsets with the checkpoint marker to the open transaction). That is the
//! pause, measured in `tidemark_checkpoint_pause_seconds`. Encoding the copy and writing it
//! durably run on a thread of their own while the task goes on. Under exactly-once the results
//! the task emits meanwhile are held back, because the open transaction must hold exactly the
//! results of the captured state: once the write is durable the transaction commits, the next one
//! begins and the held results go into it. If the write fails, the failure is counted and logged,
//! the held results go into the still-open transaction and the next checkpoint retries (as
//! before: nothing lost, nothing doubled). Under at-least-once nothing is held.

use std::thread::JoinHandle;
use std::time::Instant;

use tracing::warn;

use super::{now_ms, Owned, Shared, WorkerError};
use crate::checkpoint::{CheckpointError, Metadata, Written};
use crate::result::Output;

/// A checkpoint whose state is being encoded and written on another thread.
pub(super) struct InFlight {
    id: u64,
    /// The offsets it holds, for the informative commit.
    offsets: crate::kafka::SourceOffsets,
    write: JoinHandle<Result<Written, CheckpointError>>,
}

/// Starts a checkpoint of `task` unless one is in flight: the pause on the task thread is the
/// capture and `prepare`; encoding and the durable write go to a thread of their own.
pub(super) fn begin(task: &mut Owned, shared: &Shared) -> Result<(), WorkerError> {
    if task.in_flight.is_some() {
        return Ok(());
    }
    let Some(input) = &task.input else {
        return Ok(());
    };
    let paused = Instant::now();
    let id = task.next_checkpoint;
    let offsets = input.offsets();
    let capture = task.task.capture();
    let list = input
        .offset_list(&offsets)
        .map_err(|source| WorkerError::Input {
            task: task.id,
            source,
        })?;
    task.sink
        .prepare(id, &list, shared.group.as_ref())
        .map_err(|source| WorkerError::Sink {
            task: task.id,
            source,
        })?;
    let meta = Metadata {
        task: task.id,
        checkpoint_id: id,
        epoch: shared.epoch,
        offsets: offsets.clone(),
        watermark: task.task.watermark(),
        created_at_ms: now_ms(),
    };
    shared.metrics.checkpoint_paused(paused.elapsed());
    let store = shared.store.clone();
    let write = std::thread::Builder::new()
        .name(format!("checkpoint-{}", task.id))
        .spawn(move || store.write(&meta, &capture.encode()))
        .map_err(|e| WorkerError::Thread(e.to_string()))?;
    task.in_flight = Some(InFlight { id, offsets, write });
    Ok(())
}

/// Completes `task`'s checkpoint in flight once its write has finished (with `wait`, waits for
/// it): commits, or counts the failure; then releases the results held meanwhile.
pub(super) fn complete(task: &mut Owned, shared: &Shared, wait: bool) -> Result<(), WorkerError> {
    let Some(in_flight) = task.in_flight.take_if(|f| wait || f.write.is_finished()) else {
        return Ok(());
    };
    let outcome = in_flight.write.join().map_err(|_| {
        WorkerError::Thread(format!(
            "the checkpoint writer of task {} panicked",
            task.id
        ))
    })?;
    let metrics = &shared.metrics;
    match outcome {
        Ok(written) => {
            metrics.checkpoint_succeeded(written.duration, written.bytes, now_ms() as f64 / 1000.0);
            task.sink.commit().map_err(|source| WorkerError::Sink {
                task: task.id,
                source,
            })?;
            if let Some(input) = &task.input {
                if let Err(err) = input.commit(&in_flight.offsets, in_flight.id) {
                    warn!(task = task.id, error = %err, "informative offset commit failed");
                }
            }
            task.next_checkpoint = in_flight.id + 1;
        }
        Err(err) => {
            metrics.checkpoint_failed();
            warn!(task = task.id, error = %err, "checkpoint failed; processing goes on and the next one retries");
            // A write can fail after its file was renamed into place (the directory fsync):
            // the next checkpoint must take a higher id or every later write is refused as not
            // monotonic. Its offsets join the same open transaction, marked with that id.
            if let Ok(next) = shared.store.next_id(task.id) {
                task.next_checkpoint = next.max(in_flight.id);
            }
        }
    }
    let mut held = std::mem::take(&mut task.held);
    super::write(task, &mut held, metrics)
}

/// A checkpoint of `task` taken to its end before returning (the final one at a stop).
pub(super) fn now(task: &mut Owned, shared: &Shared) -> Result<(), WorkerError> {
    complete(task, shared, true)?;
    begin(task, shared)?;
    complete(task, shared, true)
}

/// Results a task emits while its exactly-once checkpoint is in flight: held, not written.
pub(super) fn hold(task: &mut Owned, out: &mut Output) -> bool {
    if task.in_flight.is_none() || !task.exactly_once {
        return false;
    }
    task.held.append(out);
    true
}
