//! Snapshot hand-off on rescale (docs/design.md, delivery, checkpoints and recovery; the protocol is argued in `docs/rescale.md`).
//!
//! Owns, for one worker in one assignment epoch: which tasks it runs ([`HandoffPlan`]: `t mod N
//! == i`, and during a *release* step only the tasks it owned under every earlier assignment
//! too), which earlier owners may hold a moved task's state, asking them for their newest
//! checkpoint over HTTP (`GET /v1/tasks/{t}/snapshot` on the headless Service, retrying with
//! backoff while a peer is unreachable or still runs the task), choosing the newest by
//! **(assignment epoch, checkpoint id)**, and installing the winner — validated like any
//! checkpoint on the volume — into the local store before the worker restores the task. The
//! worker loop then restores from the local store exactly as after a crash
//! (`crate::kafka::restore_point`), so a crash after the hand-off never needs the peer again.
//!
//! It does not own the checkpoint format or store (`crate::checkpoint`), the restore-point rule,
//! the serving side (`crate::http`), or when a task stops (the worker loop releases its tasks
//! after their final checkpoint when it stops).
//!
//! Why (epoch, id): within an epoch a task has one owner, whose checkpoint ids increase; a task
//! that moves continues its id sequence at the new owner (the fetched checkpoint keeps its id
//! and the next one is one above it), and the new owner's checkpoints carry the newer epoch. The
//! epoch goes first because an id sequence can start over (a task restored empty starts at the
//! ids of the store it lands in), while a later epoch's owner always started from the newest
//! state of the earlier ones. Ties are copies of one checkpoint; the local one is kept.

pub mod auth;
pub mod client;
mod peers;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{info, warn};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::health::Health;
pub use peers::Peers;

/// Header carrying the id of the checkpoint a snapshot response holds.
pub const CHECKPOINT_ID_HEADER: &str = "x-tidemark-checkpoint-id";
/// Header carrying the assignment epoch of the checkpoint a snapshot response holds.
pub const EPOCH_HEADER: &str = "x-tidemark-epoch";

/// Where a worker reaches worker `{ordinal}` when the operator does not say: the StatefulSet pod
/// `{pipeline}-{ordinal}` behind the headless Service `{pipeline}-workers`.
pub const DEFAULT_PEER_URL: &str =
    "http://{pipeline}-{ordinal}.{pipeline}-workers.{namespace}.svc:9102";

/// Name of the file in a task's directory that records the epoch in which this worker acquired
/// the task (after which a restart in that epoch needs no peer).
const ACQUIRED_FILE: &str = "acquired-epoch";

/// First wait between rounds of asking unanswered peers; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One parallelism or several, oldest first (the runtime file's `previousParallelism`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Parallelisms {
    /// One earlier assignment.
    One(u32),
    /// Several: the settled one, then every assignment written since (interrupted rescales).
    Many(Vec<u32>),
}

impl Parallelisms {
    /// As a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(p) => vec![*p],
            Self::Many(ps) => ps.clone(),
        }
    }
}

/// Settings of the hand-off that are not in the runtime file (worker flags).
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    /// Peer URL template (`{ordinal}`, `{pipeline}`, `{namespace}`); replaces the runtime
    /// file's `peerUrl` and [`DEFAULT_PEER_URL`].
    pub url_template: Option<String>,
    /// Explicit base URLs of some ordinals, ahead of the template (tests on one host).
    pub peers: BTreeMap<u32, String>,
    /// Escape hatch: start moved tasks from the local volume only, without asking anyone.
    /// State that only an earlier owner holds is then lost for those tasks.
    pub skip: bool,
}

/// Why a hand-off failed (waiting for a peer is not a failure; it is retried until stopped).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The local store cannot be read or written.
    #[error("task {task}: hand-off")]
    Store {
        /// The task.
        task: u32,
        /// The error.
        #[source]
        source: CheckpointError,
    },
    /// The acquired-epoch record cannot be written.
    #[error("task {task}: failed to record the hand-off in {path}")]
    Record {
        /// The task.
        task: u32,
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `previousParallelism` holds a zero.
    #[error("previousParallelism must be at least 1, got {0:?}")]
    Parallelism(Vec<u32>),
}

/// A worker's tasks and their earlier owners under one assignment epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffPlan {
    ordinal: u32,
    workers: u32,
    epoch: u64,
    previous: Vec<u32>,
    release: bool,
    skip: bool,
}

impl HandoffPlan {
    /// Worker `ordinal` of `workers` in `epoch`; `previous` are the parallelisms since the last
    /// settled assignment (empty: no rescale); `release`: the operator's release step, where a
    /// worker runs only the tasks it owned under every one of them and serves the rest.
    pub fn new(
        ordinal: u32,
        workers: u32,
        epoch: u64,
        previous: Vec<u32>,
        release: bool,
        skip: bool,
    ) -> Result<Self, HandoffError> {
        if previous.contains(&0) {
            return Err(HandoffError::Parallelism(previous));
        }
        Ok(Self {
            ordinal,
            workers: workers.max(1),
            epoch,
            previous,
            release,
            skip,
        })
    }

    /// The assignment epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this is a release step.
    pub fn is_release(&self) -> bool {
        self.release
    }

    /// Whether this worker owns nothing (its ordinal is not below the worker count: a surplus
    /// worker during a scale-down, which only serves its checkpoints).
    pub fn is_surplus(&self) -> bool {
        self.ordinal >= self.workers
    }

    /// The tasks this worker runs among `partitions`, ascending.
    pub fn tasks(&self, partitions: u32) -> Vec<u32> {
        if self.is_surplus() {
            return Vec::new();
        }
        (self.ordinal..partitions)
            .step_by(self.workers as usize)
            .filter(|t| !self.release || self.previous.iter().all(|p| t % p == self.ordinal))
            .collect()
    }

    /// The tasks this worker owns under the new assignment but does not run yet (release step).
    pub fn withheld(&self, partitions: u32) -> Vec<u32> {
        if !self.release || self.is_surplus() {
            return Vec::new();
        }
        let running = self.tasks(partitions);
        (self.ordinal..partitions)
            .step_by(self.workers as usize)
            .filter(|t| !running.contains(t))
            .collect()
    }

    /// The earlier owners of `task` other than this worker, ascending: the workers that may
    /// hold newer state of it than the local volume. Empty when the task did not move.
    pub fn previous_owners(&self, task: u32) -> Vec<u32> {
        if self.release {
            return Vec::new();
        }
        let mut owners: Vec<u32> = self
            .previous
            .iter()
            .map(|p| task % p)
            .filter(|o| *o != self.ordinal)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        owners
    }
}

/// A peer's answer for one task.
#[derive(Debug)]
enum Answer {
    /// Its newest valid checkpoint (or the one asked for), validated here.
    Checkpoint(Checkpoint),
    /// It holds no checkpoint of the task (or not the one asked for).
    Nothing,
    /// Not an answer yet: unreachable, still running the task, failing or sent bad bytes.
    Retry(String),
}

/// Asks worker `ordinal` for task `task`'s newest checkpoint (or checkpoint `id`).
fn ask(peers: &Peers, ordinal: u32, task: u32, id: Option<u64>) -> Answer {
    let base = peers.url(ordinal);
    let path = match id {
        Some(id) => format!("/v1/tasks/{task}/snapshot?id={id}"),
        None => format!("/v1/tasks/{task}/snapshot"),
    };
    let response = match client::get_with(&base, &path, peers.authorization()) {
        Ok(response) => response,
        Err(err) => return Answer::Retry(error_chain(&err)),
    };
    match response.status {
        200 => {}
        404 => return Answer::Nothing,
        409 => return Answer::Retry(format!("{base} still runs task {task}")),
        401 => {
            return Answer::Retry(format!(
                "{base} refused the hand-off token (401): is {} mounted?",
                auth::TOKEN_FILE_ENV
            ))
        }
        status => {
            return Answer::Retry(format!("{base} answered {status}: {}", response.text()));
        }
    }
    let header_id = response.header(CHECKPOINT_ID_HEADER).map(str::to_owned);
    let checkpoint = match Checkpoint::decode(response.body) {
        Ok(c) => c,
        Err(problem) => {
            return Answer::Retry(format!("{base} sent an invalid checkpoint: {problem}"));
        }
    };
    let meta = &checkpoint.meta;
    let id_matches = id.is_none_or(|id| id == meta.checkpoint_id)
        && header_id.is_none_or(|h| h == meta.checkpoint_id.to_string());
    if meta.task != task || !id_matches {
        return Answer::Retry(format!(
            "{base} sent checkpoint {} of task {} for task {task}",
            meta.checkpoint_id, meta.task
        ));
    }
    Answer::Checkpoint(checkpoint)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What a worker waits with: readiness to report into and the stop flag.
#[derive(Clone, Copy)]
pub struct Wait<'a> {
    /// `/readyz` says why the worker waits; `/healthz` keeps beating (it is alive).
    pub health: &'a Health,
    /// Set on SIGTERM: stop waiting.
    pub stop: &'a AtomicBool,
}

impl Wait<'_> {
    /// Sleeps `pause` in short steps, beating `/healthz`; false when stopped.
    fn sleep(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        loop {
            self.health.beat();
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// Where a task's state comes from, once every earlier owner has answered.
#[derive(Debug)]
pub enum Prepared {
    /// The task did not move: the local volume only.
    NotMoved,
    /// Already acquired in this epoch (recorded, or the task checkpointed here in this epoch).
    Acquired,
    /// `--skip-handoff`: the local volume only, whatever the earlier owners hold.
    Skipped,
    /// Every earlier owner answered and none holds a newer checkpoint than the local volume.
    LocalNewest,
    /// Worker `ordinal` holds the newest checkpoint.
    Remote {
        /// The peer.
        ordinal: u32,
        /// Its newest checkpoint, validated.
        checkpoint: Checkpoint,
    },
}

/// Orders checkpoints for the hand-off: epoch first, then id.
pub fn newer(a: (u64, u64), b: (u64, u64)) -> bool {
    a > b
}

/// Hears every earlier owner of `task` (waiting and retrying while any is unreachable, still
/// runs the task or fails) and says where its newest state is. `Ok(None)` when stopped while
/// waiting. Reads the local store; writes nothing.
pub fn prepare(
    store: &CheckpointStore,
    task: u32,
    plan: &HandoffPlan,
    peers: &Peers,
    wait: Wait<'_>,
) -> Result<Option<Prepared>, HandoffError> {
    let owners = plan.previous_owners(task);
    if owners.is_empty() {
        return Ok(Some(Prepared::NotMoved));
    }
    if plan.skip {
        warn!(
            task,
            ?owners,
            "hand-off skipped (--skip-handoff): the task starts from this volume only; state \
             held only by its earlier owners is not used"
        );
        return Ok(Some(Prepared::Skipped));
    }
    let store_err = |source| HandoffError::Store { task, source };
    if acquired_epoch(store, task) >= Some(plan.epoch) {
        return Ok(Some(Prepared::Acquired));
    }
    let local = store
        .latest_valid(task)
        .map_err(store_err)?
        .checkpoint
        .map(|c| (c.meta.epoch, c.meta.checkpoint_id));
    if local.is_some_and(|(epoch, _)| epoch >= plan.epoch) {
        return Ok(Some(Prepared::Acquired));
    }
    let started = Instant::now();
    let mut best: Option<(u32, Checkpoint)> = None;
    let mut pending = owners.clone();
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut problems = Vec::new();
        pending.retain(|&ordinal| match ask(peers, ordinal, task, None) {
            Answer::Checkpoint(checkpoint) => {
                let key = (checkpoint.meta.epoch, checkpoint.meta.checkpoint_id);
                info!(
                    task,
                    peer = ordinal,
                    epoch = key.0,
                    id = key.1,
                    "an earlier owner holds a checkpoint"
                );
                let better = best
                    .as_ref()
                    .is_none_or(|(_, b)| newer(key, (b.meta.epoch, b.meta.checkpoint_id)));
                if better {
                    best = Some((ordinal, checkpoint));
                }
                false
            }
            Answer::Nothing => {
                info!(task, peer = ordinal, "an earlier owner holds no checkpoint");
                false
            }
            Answer::Retry(problem) => {
                problems.push(problem);
                true
            }
        });
        if pending.is_empty() {
            break;
        }
        let reason = format!(
            "waiting for the state of task {task} from worker{} {} (attempt {attempt}, {:.0} s): {}",
            if pending.len() > 1 { "s" } else { "" },
            pending
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64(),
            problems.join("; ")
        );
        if attempt == 1 || attempt.is_multiple_of(10) {
            warn!(task, "{reason}");
        }
        wait.health.set_not_ready(reason);
        if !wait.sleep(backoff) {
            return Ok(None);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    wait.health.set_not_ready("restoring checkpoints");
    Ok(Some(match best {
        Some((ordinal, checkpoint))
            if local.is_none_or(|l| {
                newer((checkpoint.meta.epoch, checkpoint.meta.checkpoint_id), l)
            }) =>
        {
            Prepared::Remote {
                ordinal,
                checkpoint,
            }
        }
        _ => Prepared::LocalNewest,
    }))
}

/// Installs what [`prepare`] found: a remote winner is written into the local store (and,
/// under exactly-once, the committed checkpoint `committed` too when it is older than the winner
/// and not on the volume — asked from the same peer), then the acquisition is recorded so a
/// restart in this epoch needs no peer. Call it after the task's producer fenced earlier ones
/// and `committed` was read. `Ok(None)` when stopped while waiting.
pub fn install(
    store: &CheckpointStore,
    task: u32,
    plan: &HandoffPlan,
    peers: &Peers,
    prepared: Prepared,
    committed: Option<u64>,
    wait: Wait<'_>,
) -> Result<Option<()>, HandoffError> {
    let store_err = |source| HandoffError::Store { task, source };
    let (ordinal, winner) = match prepared {
        Prepared::NotMoved | Prepared::Acquired => return Ok(Some(())),
        Prepared::Skipped | Prepared::LocalNewest => {
            record_acquired(store, task, plan.epoch)?;
            return Ok(Some(()));
        }
        Prepared::Remote {
            ordinal,
            checkpoint,
        } => (ordinal, checkpoint),
    };
    let mut writes = Vec::new();
    if let Some(k) = committed.filter(|k| *k < winner.meta.checkpoint_id) {
        let local = matches!(store.read(task, k), Ok(Some(_)));
        if !local {
            let mut backoff = FIRST_BACKOFF;
            loop {
                match ask(peers, ordinal, task, Some(k)) {
                    Answer::Checkpoint(c) => {
                        writes.push(c);
                        break;
                    }
                    // Restore-point selection reports it (the committed checkpoint is missing).
                    Answer::Nothing => break,
                    Answer::Retry(problem) => {
                        wait.health.set_not_ready(format!(
                            "waiting for committed checkpoint {k} of task {task} from worker \
                             {ordinal}: {problem}"
                        ));
                        if !wait.sleep(backoff) {
                            return Ok(None);
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }
    writes.push(winner);
    let lowest = writes
        .iter()
        .map(|c| c.meta.checkpoint_id)
        .min()
        .unwrap_or(0);
    // Local files at or above the lowest id to write hold an older epoch's state (they lost
    // the comparison) and would block the monotonic write: they go.
    for file in store.list(task).map_err(store_err)? {
        if file.id >= lowest {
            warn!(task, id = file.id, path = %file.path.display(),
                "removing a local checkpoint superseded by an earlier owner's newer one");
            fs::remove_file(&file.path).map_err(|source| {
                store_err(CheckpointError::Remove {
                    path: file.path.clone(),
                    source,
                })
            })?;
        }
    }
    for checkpoint in &writes {
        let written = store
            .write(&checkpoint.meta, checkpoint.state())
            .map_err(store_err)?;
        info!(
            task,
            peer = ordinal,
            epoch = checkpoint.meta.epoch,
            id = checkpoint.meta.checkpoint_id,
            bytes = written.bytes,
            "checkpoint handed off from an earlier owner written to this volume"
        );
    }
    record_acquired(store, task, plan.epoch)?;
    Ok(Some(()))
}

/// The epoch in which this worker last acquired `task`, if recorded.
pub fn acquired_epoch(store: &CheckpointStore, task: u32) -> Option<u64> {
    fs::read_to_string(store.task_dir(task).join(ACQUIRED_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records durably that this worker acquired `task` in `epoch` (temp file, fsync, rename,
/// directory fsync).
fn record_acquired(store: &CheckpointStore, task: u32, epoch: u64) -> Result<(), HandoffError> {
    let dir = store.task_dir(task);
    let path = dir.join(ACQUIRED_FILE);
    let err = |source| HandoffError::Record {
        task,
        path: path.display().to_string(),
        source,
    };
    fs::create_dir_all(&dir).map_err(err)?;
    // The `.ckpt-` prefix makes the store's temp-file cleaning remove a leftover.
    let temp = dir.join(format!(".ckpt-acquired.tmp-{}", std::process::id()));
    let mut file = fs::File::create(&temp).map_err(err)?;
    writeln!(file, "{epoch}").map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&temp, &path).map_err(err)?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests;
