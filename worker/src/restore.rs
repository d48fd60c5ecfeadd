//! Why a snapshot (a task's or the global stage's) cannot be restored: one error type shared by
//! the task (`crate::engine`), the global stage (`crate::global`) and the analytic kinds
//! (`crate::analytics`), so none of them has to import another for it.

use crate::window::codec::DecodeError;
use crate::window::Refused;

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The bytes are not a task snapshot of format 1.
    #[error("failed to decode task snapshot")]
    Decode(#[from] postcard::Error),
    /// The bytes are not a task snapshot of format 2.
    #[error("failed to decode task snapshot: {0}")]
    Corrupt(#[from] DecodeError),
    /// Written by a newer (or unknown) format.
    #[error("failed to restore snapshot of format {0}: this worker does not read that format")]
    Format(u16),
    /// The analytic's window kind, size or slide changed since the snapshot.
    #[error("failed to restore analytic {0:?}: its window differs from the snapshot's")]
    WindowKind(String),
    /// The analytic's aggregates changed since the snapshot.
    #[error("failed to restore analytic {0:?}: its aggregates differ from the snapshot's")]
    Layout(String),
}

impl RestoreError {
    pub(crate) fn refused(analytic: &str, refused: Refused) -> Self {
        match refused {
            Refused::Kind => RestoreError::WindowKind(analytic.to_owned()),
            Refused::Layout => RestoreError::Layout(analytic.to_owned()),
            Refused::Corrupt(err) => RestoreError::Corrupt(err),
        }
    }
}
