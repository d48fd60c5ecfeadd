//! What the worker loop tells the probes (`/healthz`, `/readyz`) and the hand-off: a heartbeat,
//! readiness with its reason, and the tasks running here. Shared by the loop (`crate::runtime`),
//! the HTTP routes (`crate::http`) and the hand-off (`crate::handoff`), which is why it is a
//! module of its own.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What the worker loop tells the probes: a heartbeat, readiness and the tasks it runs.
/// Shared between the loop and the server; every method is cheap and never blocks for long.
#[derive(Debug)]
pub struct Health {
    stale_after: Duration,
    beat: Mutex<Instant>,
    ready: Mutex<Result<(), String>>,
    running: Mutex<BTreeSet<u32>>,
}

impl Health {
    /// Healthy while the last heartbeat is at most `stale_after` old (the creation counts as
    /// the first beat); not ready ("starting") until [`Health::set_ready`].
    pub fn new(stale_after: Duration) -> Self {
        Self {
            stale_after,
            beat: Mutex::new(Instant::now()),
            ready: Mutex::new(Err("starting".to_owned())),
            running: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records that the worker loop is alive. Call it from the loop itself (not a side task),
    /// so a stuck loop turns `/healthz` red.
    pub fn beat(&self) {
        *lock(&self.beat) = Instant::now();
    }

    /// `Ok` while the heartbeat is fresh at `now`, else how old it is.
    pub fn liveness(&self, now: Instant) -> Result<(), Duration> {
        let age = now.saturating_duration_since(*lock(&self.beat));
        if age > self.stale_after {
            Err(age)
        } else {
            Ok(())
        }
    }

    /// The worker has restored its tasks and consumes.
    pub fn set_ready(&self) {
        *lock(&self.ready) = Ok(());
    }

    /// The worker does not serve traffic, with a reason shown by `/readyz`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *lock(&self.ready) = Err(reason.into());
    }

    /// Readiness and, when not ready, why.
    pub fn readiness(&self) -> Result<(), String> {
        lock(&self.ready).clone()
    }

    /// Marks `task` as running here: its snapshot is refused (409) because it still changes.
    pub fn claim(&self, task: u32) {
        lock(&self.running).insert(task);
    }

    /// Marks `task` as released after its final checkpoint: its snapshot may be served.
    pub fn release(&self, task: u32) {
        lock(&self.running).remove(&task);
    }

    /// Whether `task` runs here.
    pub fn is_running(&self, task: u32) -> bool {
        lock(&self.running).contains(&task)
    }
}

/// A poisoned lock only means a panic elsewhere while holding plain data; the data is still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
