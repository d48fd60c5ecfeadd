//! What a worker does once a task's producer was fenced (exactly-once): a newer producer with
//! the task's `transactional.id` exists, so another worker runs the task — this one is a zombie
//! (paused, partitioned, or left running after its tasks moved) and everything it writes is
//! refused by the brokers.
//!
//! It does not retry and does not exit at once: its task threads have stopped (the fenced task
//! without a checkpoint, whose write would only add a file its successor ignores), and it steps
//! back — `/readyz` says why, `tidemark_sink_fenced_total{task}` counts it, one error line
//! names the task — until it is stopped. `/healthz` turns stale meanwhile (no task thread
//! beats), so a kubelet restarts it, and the restart reads the current assignment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::error;

use crate::global::task_label;
use crate::http::Health;
use crate::metrics::Metrics;

/// How often a stepped-back worker looks for its stop signal.
const POLL: Duration = Duration::from_millis(100);

/// Counts and reports that `task` was fenced, marks the worker not ready, and waits for `stop`.
pub(super) fn step_back(task: u32, stop: &AtomicBool, health: &Health, metrics: &Metrics) {
    metrics.sink_fenced(task);
    let task = task_label(task);
    error!(
        %task,
        "fenced: a newer producer took this task's transactional id over, so another worker runs \
         it; this worker stopped its tasks and steps back (not ready) until it is stopped"
    );
    health.set_not_ready(format!("fenced: another worker runs task {task}"));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
    }
}
