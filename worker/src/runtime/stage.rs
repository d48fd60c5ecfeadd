//! What an owned task runs: a task of the pipeline (one partition index of its inputs) or the
//! global stage (the whole partials topic), behind one face for the task loop and checkpoints.

use crate::engine::{Capture, RestoreError, Task};
use crate::global::GlobalStage;
use crate::metrics::{Metrics, TaskMetrics};
use crate::result::Output;

/// A pipeline task or the global stage.
#[derive(Debug)]
pub(super) enum Stage {
    /// A task of the pipeline.
    Task(Task),
    /// The global stage (worker ordinal 0 only).
    Global(GlobalStage),
}

/// A copy of a stage's state to encode off its thread.
pub(super) enum StageCapture {
    /// A task's flat copy.
    Task(Capture),
    /// The global stage's state, already encoded (it is small).
    Global(Vec<u8>),
}

impl StageCapture {
    /// The checkpoint's state bytes.
    pub(super) fn encode(self) -> Vec<u8> {
        match self {
            StageCapture::Task(capture) => capture.encode(),
            StageCapture::Global(bytes) => bytes,
        }
    }
}

impl Stage {
    /// Processes one record of source `source` (the global stage has one).
    pub(super) fn process(&mut self, source: usize, payload: &[u8], now: i64, out: &mut Output) {
        match self {
            Stage::Task(task) => task.process(source, payload, now, out),
            Stage::Global(stage) => stage.process(payload, out),
        }
    }

    /// Re-evaluates idle inputs (tasks; the global stage has no processing-time behaviour).
    pub(super) fn tick(&mut self, now: i64, out: &mut Output) {
        if let Stage::Task(task) = self {
            task.tick(now, out);
        }
    }

    /// On bounded input taken to its end: closes every window of a task and says whether it is
    /// done. The global stage is done once every task has said its input ended.
    pub(super) fn finish(&mut self, now: i64, out: &mut Output) -> bool {
        match self {
            Stage::Task(task) => {
                task.finish(now, out);
                true
            }
            Stage::Global(stage) => stage.finished(),
        }
    }

    /// A copy of the state for a checkpoint.
    pub(super) fn capture(&self) -> StageCapture {
        match self {
            Stage::Task(task) => StageCapture::Task(task.capture()),
            Stage::Global(stage) => StageCapture::Global(stage.snapshot()),
        }
    }

    /// Loads a checkpoint's state.
    pub(super) fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        match self {
            Stage::Task(task) => task.restore(bytes),
            Stage::Global(stage) => stage.restore(bytes),
        }
    }

    /// The watermark.
    pub(super) fn watermark(&self) -> i64 {
        match self {
            Stage::Task(task) => task.watermark(),
            Stage::Global(stage) => stage.watermark(),
        }
    }

    /// Sets the wall clock written into results.
    pub(super) fn set_wall_clock(&mut self, now_ms: i64) {
        match self {
            Stage::Task(task) => task.set_wall_clock(now_ms),
            Stage::Global(stage) => stage.set_wall_clock(now_ms),
        }
    }

    /// The `emitted_at` text in use.
    pub(super) fn now_text(&self) -> &str {
        match self {
            Stage::Task(task) => task.now_text(),
            Stage::Global(stage) => stage.now_text(),
        }
    }

    /// A metrics publisher for this stage as task `id`.
    pub(super) fn metrics(&self, metrics: &Metrics, id: u32) -> TaskMetrics {
        match self {
            Stage::Task(task) => TaskMetrics::for_task(metrics, id, task),
            Stage::Global(stage) => TaskMetrics::new(
                metrics,
                id,
                Vec::new(),
                stage
                    .plan()
                    .analytics
                    .iter()
                    .map(|a| a.name.clone())
                    .collect(),
            ),
        }
    }

    /// Publishes the stage's counters and gauges.
    pub(super) fn publish(&self, publisher: &mut TaskMetrics, metrics: &Metrics, now_ms: i64) {
        match self {
            Stage::Task(task) => publisher.publish_task(metrics, task, now_ms),
            Stage::Global(stage) => publisher.publish_global(metrics, stage, now_ms),
        }
    }
}
