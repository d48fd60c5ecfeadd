//! Durable per-task checkpoints on the worker pod's volume (docs/design.md, delivery, checkpoints and recovery).
//!
//! Owns the file format ([`format`]) and the store ([`store`]): crash-safe writes, retention,
//! recovery of the newest valid checkpoint with a report of every corrupt newer one, and raw
//! bytes for the snapshot hand-off. Does not own the meaning of the state bytes (the engine's
//! snapshot/restore), the checkpoint schedule, Kafka offsets' commit, metrics or Kubernetes
//! events: callers act on what the store reports. See `docs/checkpoints.md`.

use std::path::PathBuf;

pub mod format;
pub mod store;

pub use format::{Checkpoint, Corruption, Metadata};
pub use store::{CheckpointStore, Recovery, Scan, Skipped, StoredFile, Written};

/// Failed to write, list or read checkpoints. Every variant is retryable by the caller: the
/// store keeps nothing in memory, so the next call starts from what is on disk.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The task directory (or the root) could not be created: a missing, read-only or foreign
    /// volume.
    #[error("failed to create checkpoint directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or fsyncing the temp file failed (full or read-only volume).
    #[error("failed to write checkpoint file {path}")]
    Write {
        /// The temp file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Renaming the temp file into place failed.
    #[error("failed to rename checkpoint into {path}")]
    Rename {
        /// The final path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Fsyncing the directory failed: the rename may not survive a crash.
    #[error("failed to sync checkpoint directory {path}")]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Listing a directory failed.
    #[error("failed to list checkpoint directory {path}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a checkpoint file failed (not corruption: the read itself).
    #[error("failed to read checkpoint file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Deleting an old checkpoint or temp file failed.
    #[error("failed to remove checkpoint file {path}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata could not be encoded.
    #[error("failed to encode checkpoint metadata")]
    Encode(#[source] serde_json::Error),
    /// The checkpoint id is not above the newest on disk.
    #[error("failed to write checkpoint {id} of task {task}: newest on disk is {newest}")]
    NotMonotonic {
        /// The task.
        task: u32,
        /// The refused id.
        id: u64,
        /// The newest id on disk.
        newest: u64,
    },
    /// A checkpoint asked for by id failed validation.
    #[error("failed to validate checkpoint {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: Corruption,
    },
    /// Files kept vanishing under a reader (pruned by a fast writer) three listings in a row.
    #[error("failed to find a stable checkpoint of task {task}")]
    Unstable {
        /// The task.
        task: u32,
    },
}
