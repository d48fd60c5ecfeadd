//! The checkpoint store: one directory per task under a root, crash-safe writes, retention and
//! recovery of the newest valid checkpoint.
//!
//! It owns files and their life cycle. It does not own what the state means (the engine's
//! snapshot/restore), when to checkpoint (the worker loop), metrics or events (the caller gets a
//! report of everything it skipped and decides), or the network hand-off (`crate::http`).
//!
//! Layout: `<root>/task-<t>/ckpt-<id, 20 digits>.tdmk`; temporary files are
//! `<root>/task-<t>/.ckpt-<id>.tmp-<pid>` and are never read.
//!
//! Concurrency: one writer per task (a task is single-threaded); any number of readers. Files are
//! immutable once renamed into place, so a reader sees complete files or none.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::format::{self, Checkpoint, Corruption, Metadata};
use super::CheckpointError;
use crate::global::GLOBAL_STAGE;

/// Where checkpoints live on a worker pod's volume.
pub const DEFAULT_ROOT: &str = "/var/lib/tidemark/checkpoints";
/// Checkpoints kept per task.
pub const DEFAULT_RETAIN: usize = 3;

const FILE_PREFIX: &str = "ckpt-";
const FILE_SUFFIX: &str = ".tdmk";
const TEMP_PREFIX: &str = ".ckpt-";

/// A checkpoint file on disk, not yet validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// Checkpoint id from the file name.
    pub id: u64,
    /// Full path.
    pub path: PathBuf,
    /// Length in bytes.
    pub len: u64,
}

/// A newer checkpoint that recovery skipped because it failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Checkpoint id from the file name.
    pub id: u64,
    /// Full path (the file is left in place for inspection; retention ages it out).
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Corruption,
}

/// What recovery found for a task.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The newest valid checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Every newer checkpoint that was corrupt, newest first: each deserves a log line, a
    /// `tidemark_checkpoint_corrupt_total` increment and a Kubernetes event.
    pub skipped: Vec<Skipped>,
}

/// Every checkpoint of a task, validated.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Ids of valid checkpoints, newest first.
    pub valid: Vec<u64>,
    /// Corrupt ones, newest first.
    pub skipped: Vec<Skipped>,
}

/// What a successful write did.
#[derive(Debug)]
pub struct Written {
    /// The durable checkpoint file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Time from the first byte to the directory fsync.
    pub duration: Duration,
    /// Ids of older checkpoints deleted by retention.
    pub pruned: Vec<u64>,
    /// Retention failed after the checkpoint was durable: the checkpoint counts, the old files
    /// stay until a later write prunes them.
    pub prune_error: Option<CheckpointError>,
}

/// Durable per-task checkpoints under one root directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    root: PathBuf,
    retain: usize,
}

impl CheckpointStore {
    /// A store under `root` keeping `retain` checkpoints per task (at least 1). Touches nothing:
    /// directories are created by the first write, so a missing volume is a write error the
    /// caller can retry, not a start-up failure.
    pub fn new(root: impl Into<PathBuf>, retain: usize) -> Self {
        Self {
            root: root.into(),
            retain: retain.max(1),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of task `task` (`global` for the global stage).
    pub fn task_dir(&self, task: u32) -> PathBuf {
        if task == GLOBAL_STAGE {
            self.root.join("global")
        } else {
            self.root.join(format!("task-{task}"))
        }
    }

    /// Writes a checkpoint of `meta.task` durably, then prunes to the newest `retain`.
    ///
    /// Guarantees: when this returns `Ok`, the file is complete on disk and survives a crash
    /// (temp file written and fsynced, renamed, directory fsynced); older checkpoints are deleted
    /// only after that. On `Err` nothing older was touched and the temp file is removed (a crash
    /// may leave it; it is ignored by readers and removed by the next write or [`Self::clean_temp`]).
    ///
    /// Errors: `meta.checkpoint_id` not above every id on disk ([`CheckpointError::NotMonotonic`];
    /// use [`Self::next_id`]), or any I/O failure (unwritable or full volume). Not idempotent: a
    /// second call with the same id is refused.
    pub fn write(&self, meta: &Metadata, state: &[u8]) -> Result<Written, CheckpointError> {
        let started = Instant::now();
        let dir = self.task_dir(meta.task);
        fs::create_dir_all(&dir).map_err(|source| CheckpointError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        if let Some(newest) = self.list(meta.task)?.first() {
            if newest.id >= meta.checkpoint_id {
                return Err(CheckpointError::NotMonotonic {
                    task: meta.task,
                    id: meta.checkpoint_id,
                    newest: newest.id,
                });
            }
        }
        let encoded = format::encode(meta, state).map_err(CheckpointError::Encode)?;
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}.tmp-{}",
            meta.checkpoint_id,
            std::process::id()
        ));
        let path = dir.join(file_name(meta.checkpoint_id));
        let written = write_synced(&temp, &[&encoded.header, &encoded.meta, state]);
        if let Err(source) = written {
            let _ = fs::remove_file(&temp);
            return Err(CheckpointError::Write { path: temp, source });
        }
        if let Err(source) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(CheckpointError::Rename { path, source });
        }
        sync_dir(&dir)?;
        let duration = started.elapsed();
        let (pruned, prune_error) = match self.prune(meta.task) {
            Ok(pruned) => (pruned, None),
            Err(err) => (Vec::new(), Some(err)),
        };
        Ok(Written {
            path,
            bytes: encoded.file_len(state),
            duration,
            pruned,
            prune_error,
        })
    }

    /// The id to use for the next checkpoint of `task`: one above every id on disk, valid or
    /// not, so a corrupt newest file is never overwritten and stays inspectable.
    pub fn next_id(&self, task: u32) -> Result<u64, CheckpointError> {
        Ok(self.list(task)?.first().map_or(1, |f| f.id + 1))
    }

    /// Checkpoint files of `task`, newest first, without validating them. A task without a
    /// directory has none. Temp files are not listed.
    pub fn list(&self, task: u32) -> Result<Vec<StoredFile>, CheckpointError> {
        let dir = self.task_dir(task);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CheckpointError::List { path: dir, source }),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CheckpointError::List {
                path: dir.clone(),
                source,
            })?;
            let Some(id) = entry.file_name().to_str().and_then(parse_file_name) else {
                continue;
            };
            // A file pruned between read_dir and metadata is simply gone.
            let Ok(meta) = entry.metadata() else { continue };
            files.push(StoredFile {
                id,
                path: entry.path(),
                len: meta.len(),
            });
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.id));
        Ok(files)
    }

    /// Tasks that have a directory under the root, ascending.
    pub fn tasks(&self) -> Result<Vec<u32>, CheckpointError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CheckpointError::List {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut tasks: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| match e.file_name().to_str()? {
                "global" => Some(GLOBAL_STAGE),
                name => name.strip_prefix("task-")?.parse().ok(),
            })
            .collect();
        tasks.sort_unstable();
        Ok(tasks)
    }

    /// The newest checkpoint of `task` that passes every check, and a report of each newer one
    /// that did not. Read-only, safe to call while the task's writer runs.
    ///
    /// Errors: only when the directory cannot be listed or a file cannot be read for a reason
    /// other than having been pruned meanwhile; corrupt files are reported, not errors.
    pub fn latest_valid(&self, task: u32) -> Result<Recovery, CheckpointError> {
        // A concurrent write can prune every file of an older listing; the newest file is never
        // pruned, so listing again finds it.
        for _ in 0..3 {
            let mut recovery = Recovery::default();
            let mut vanished = false;
            for file in self.list(task)? {
                let bytes = match fs::read(&file.path) {
                    Ok(bytes) => bytes,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        vanished = true;
                        continue;
                    }
                    Err(source) => {
                        return Err(CheckpointError::Read {
                            path: file.path,
                            source,
                        })
                    }
                };
                match Checkpoint::decode(bytes).and_then(|c| check_task(c, task)) {
                    Ok(checkpoint) => {
                        recovery.checkpoint = Some(checkpoint);
                        return Ok(recovery);
                    }
                    Err(problem) => recovery.skipped.push(Skipped {
                        id: file.id,
                        path: file.path,
                        problem,
                    }),
                }
            }
            if !vanished {
                return Ok(recovery);
            }
        }
        Err(CheckpointError::Unstable { task })
    }

    /// Checkpoint `id` of `task`, validated; `Ok(None)` when there is no such file.
    ///
    /// For a restore point chosen by id (exactly-once recovery restores the checkpoint whose
    /// transaction Kafka committed, which need not be the newest). Errors: the file cannot be
    /// read, or it is corrupt ([`CheckpointError::Corrupt`], which the caller reports like a
    /// [`Skipped`]).
    pub fn read(&self, task: u32, id: u64) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.task_dir(task).join(file_name(id));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        match Checkpoint::decode(bytes).and_then(|c| check_task(c, task)) {
            Ok(checkpoint) => Ok(Some(checkpoint)),
            Err(problem) => Err(CheckpointError::Corrupt { path, problem }),
        }
    }

    /// Validates every checkpoint of `task`: the ids of the valid ones (newest first) and a
    /// report of each corrupt one. Reads every file in full (retain × state size). Read-only.
    pub fn scan(&self, task: u32) -> Result<Scan, CheckpointError> {
        let mut scan = Scan::default();
        for file in self.list(task)? {
            let bytes = match fs::read(&file.path) {
                Ok(bytes) => bytes,
                // Pruned by a concurrent write since the listing.
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CheckpointError::Read {
                        path: file.path,
                        source,
                    })
                }
            };
            match Checkpoint::decode(bytes).and_then(|c| check_task(c, task)) {
                Ok(_) => scan.valid.push(file.id),
                Err(problem) => scan.skipped.push(Skipped {
                    id: file.id,
                    path: file.path,
                    problem,
                }),
            }
        }
        Ok(scan)
    }

    /// Removes temp files of `task` left by a crashed write; returns how many. Call it before
    /// the task's writer starts (a temp file of a running write would be removed too).
    pub fn clean_temp(&self, task: u32) -> Result<usize, CheckpointError> {
        let dir = self.task_dir(task);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(CheckpointError::List { path: dir, source }),
        };
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
            if is_temp {
                let path = entry.path();
                fs::remove_file(&path)
                    .map_err(|source| CheckpointError::Remove { path, source })?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes all but the newest `retain` checkpoints of `task`, and stale temp files (the
    /// only writer is the caller, which has finished its write).
    fn prune(&self, task: u32) -> Result<Vec<u64>, CheckpointError> {
        self.clean_temp(task)?;
        let mut pruned = Vec::new();
        for file in self.list(task)?.into_iter().skip(self.retain) {
            match fs::remove_file(&file.path) {
                Ok(()) => pruned.push(file.id),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CheckpointError::Remove {
                        path: file.path,
                        source,
                    })
                }
            }
        }
        if !pruned.is_empty() {
            sync_dir(&self.task_dir(task))?;
        }
        Ok(pruned)
    }
}

/// A valid checkpoint of another task is as unusable here as a corrupt one.
fn check_task(checkpoint: Checkpoint, task: u32) -> Result<Checkpoint, Corruption> {
    if checkpoint.meta.task == task {
        Ok(checkpoint)
    } else {
        Err(Corruption::WrongTask {
            expected: task,
            found: checkpoint.meta.task,
        })
    }
}

fn file_name(id: u64) -> String {
    format!("{FILE_PREFIX}{id:020}{FILE_SUFFIX}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix(FILE_PREFIX)?
        .strip_suffix(FILE_SUFFIX)?
        .parse()
        .ok()
}

fn write_synced(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut file = File::create(path)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CheckpointError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_like_ids_and_parse_back() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_file_name(".ckpt-3.tmp-1"), None);
        assert_eq!(parse_file_name("ckpt-x.tdmk"), None);
    }
}
