//! Event-time windows: per-key state of one analytic in one task, results as windows close.
//!
//! This module owns window assignment, accumulation, firing and lateness. It does not know about
//! sources, watermarks of partitions or output encoding: the caller gives each event with the
//! task's current watermark and calls [`Windows::advance`] whenever the watermark moves.

pub mod accumulate;
pub mod codec;
pub mod keys;
pub mod panes;
pub mod session;
pub mod slab;
pub mod snapshot;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard, PoisonError};

use accumulate::{AccLayout, Value};
use codec::{DecodeError, Reader, Writer};
use panes::{PaneCapture, PaneWindows};
use session::{SessionCapture, SessionWindows};

use crate::event::Event;

/// One result of a window.
#[derive(Debug)]
pub struct Emission<'a> {
    /// The key.
    pub key: &'a str,
    /// Window start, epoch ms (inclusive).
    pub start: i64,
    /// Window end, epoch ms (exclusive).
    pub end: i64,
    /// 0 for the first result of this key-window, then 1, 2, ... for late updates.
    pub revision: u32,
    /// Aggregates then ratios, in the analytic's order (empty for a partial).
    pub values: &'a [Value],
    /// For windows that emit partials ([`Windows::emit_partials`]): the key-window's
    /// accumulator block in the encoding of [`AccLayout::write_block`], instead of values.
    pub partial: Option<&'a [u8]>,
}

/// Receiver of results.
pub type EmitFn<'o> = &'o mut dyn FnMut(&Emission<'_>);

/// How much state a window operator holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Live keys.
    pub keys: usize,
    /// Live key-windows (panes or sessions).
    pub windows: usize,
    /// Bytes of state (tables, arenas, timers).
    pub bytes: usize,
}

/// Kinds of windows with their parameters, all in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Non-overlapping windows of `size`.
    Tumbling {
        /// Window length.
        size: i64,
    },
    /// Windows of `size` every `slide`.
    Sliding {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// Sessions closed by `gap`.
    Session {
        /// Inactivity that closes a session.
        gap: i64,
    },
}

/// Window state of one analytic in one task.
#[derive(Debug)]
pub enum Windows {
    /// Tumbling or sliding windows.
    Panes(PaneWindows),
    /// Session windows.
    Sessions(SessionWindows),
}

impl Windows {
    /// State for `kind` windows with `lateness`, accumulating with `layout`; a window produces
    /// a result only if each source in `require` has events in it.
    pub fn new(kind: WindowKind, lateness: i64, layout: AccLayout, require: Vec<usize>) -> Self {
        match kind {
            WindowKind::Tumbling { size } => {
                Windows::Panes(PaneWindows::new(size, size, lateness, layout, require))
            }
            WindowKind::Sliding { size, slide } => {
                Windows::Panes(PaneWindows::new(size, slide, lateness, layout, require))
            }
            WindowKind::Session { gap } => {
                Windows::Sessions(SessionWindows::new(gap, lateness, layout, require))
            }
        }
    }

    /// Adds an event under `key` at watermark `wm`; false means late past lateness.
    #[inline]
    pub fn add(
        &mut self,
        key: &str,
        source: usize,
        event: &Event<'_>,
        wm: i64,
        out: EmitFn<'_>,
    ) -> bool {
        match self {
            Windows::Panes(w) => w.add(key, source, event, wm, out),
            Windows::Sessions(w) => w.add(key, source, event, wm, out),
        }
    }

    /// Emits each window's accumulator block ([`Emission::partial`]) instead of its values:
    /// this task's share of a key-window that the global stage merges with the other tasks'
    /// (docs/design.md, execution model). Only tumbling and sliding windows emit partials: a session of the whole
    /// stream is not a union of the tasks' sessions known when each closes. False for sessions.
    pub fn emit_partials(&mut self) -> bool {
        self.panes().map(PaneWindows::emit_partials).is_some()
    }

    /// Starts windows `offset` ms past the epoch alignment (before the first event); false for
    /// sessions, which take no offset.
    pub fn set_offset(&mut self, offset: i64) -> bool {
        self.panes().map(|w| w.set_offset(offset)).is_some()
    }

    fn panes(&mut self) -> Option<&mut PaneWindows> {
        match self {
            Windows::Panes(w) => Some(w),
            Windows::Sessions(_) => None,
        }
    }

    /// Counts a key-window first emitted after its window fired (a late event of a new key)
    /// from revision 1 instead of 0: the key-windows of a top-N analytic, whose ranking's
    /// revision is the sum of theirs (`crate::analytics::top_n`). False for sessions,
    /// which a top-N does not use.
    pub fn rank_revisions(&mut self) -> bool {
        match self {
            Windows::Panes(w) => {
                w.rank_revisions();
                true
            }
            Windows::Sessions(_) => false,
        }
    }

    /// Emits what is due at watermark `wm`.
    pub fn advance(&mut self, wm: i64, out: EmitFn<'_>) {
        match self {
            Windows::Panes(w) => w.advance(wm, out),
            Windows::Sessions(w) => w.advance(wm, out),
        }
    }

    /// Emits again the key-windows of window `end` that fired and are still held, with their
    /// last revisions (see [`PaneWindows::fired_window`]); nothing for sessions.
    pub fn fired_window(&mut self, end: i64, out: EmitFn<'_>) {
        if let Windows::Panes(w) = self {
            w.fired_window(end, out);
        }
    }

    /// Sizes of the state.
    pub fn stats(&self) -> WindowStats {
        match self {
            Windows::Panes(w) => w.stats(),
            Windows::Sessions(w) => w.stats(),
        }
    }

    /// A copy of the state for a snapshot, cheap enough to take on the task thread between
    /// events (flat copies of the tables, no work per key); encode it anywhere.
    pub fn capture(&self) -> WindowsCapture {
        match self {
            Windows::Panes(w) => WindowsCapture::Panes(w.capture()),
            Windows::Sessions(w) => WindowsCapture::Sessions(w.capture()),
        }
    }

    /// Loads state written by [`WindowsCapture::encode`] into this (empty) state.
    pub fn restore_from(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        match (self, r.u8()?) {
            (Windows::Panes(w), snapshot::PANES) => w.restore_from(r, 0)?,
            (Windows::Panes(w), snapshot::PANES_OFFSET) => {
                let offset = r.i64()?;
                w.restore_from(r, offset)?;
            }
            (Windows::Sessions(w), snapshot::SESSIONS) => w.restore_from(r)?,
            (_, snapshot::PANES | snapshot::PANES_OFFSET | snapshot::SESSIONS) => {
                return Err(Refused::Kind)
            }
            _ => return Err(DecodeError("unknown window kind").into()),
        }
        r.finish()?;
        Ok(())
    }

    /// A logical copy of the state in snapshot format 1.
    #[cfg(test)]
    pub fn snapshot(&self) -> snapshot::WindowsSnapshot {
        match self {
            Windows::Panes(w) => snapshot::WindowsSnapshot::Panes(w.snapshot()),
            Windows::Sessions(w) => snapshot::WindowsSnapshot::Sessions(w.snapshot()),
        }
    }

    /// Replaces the (empty) state by a format-1 `snapshot`.
    pub fn restore(&mut self, snapshot: &snapshot::WindowsSnapshot) -> Result<(), Refused> {
        match (self, snapshot) {
            (Windows::Panes(w), snapshot::WindowsSnapshot::Panes(s)) => w.restore(s),
            (Windows::Sessions(w), snapshot::WindowsSnapshot::Sessions(s)) => w.restore(s),
            _ => Err(Refused::Kind),
        }
    }
}

/// Why a snapshot's window state was not restored.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The window kind or its size and slide differ from the snapshot's.
    #[error("the window differs from the snapshot's")]
    Kind,
    /// The aggregates' slot layout differs from the snapshot's.
    #[error("the aggregates differ from the snapshot's")]
    Layout,
    /// The bytes are not a valid snapshot.
    #[error("corrupt window state: {0}")]
    Corrupt(#[from] DecodeError),
}

/// A copy of one analytic's window state taken by [`Windows::capture`]: `Send + 'static`,
/// independent of the task, which goes on processing.
#[derive(Debug)]
pub enum WindowsCapture {
    /// Tumbling or sliding.
    Panes(PaneCapture),
    /// Sessions.
    Sessions(SessionCapture),
}

impl WindowsCapture {
    /// Appends the state in snapshot format 2; [`Windows::restore_from`] reads it.
    pub fn encode(&mut self, w: &mut Writer) {
        match self {
            WindowsCapture::Panes(c) => c.encode(w),
            WindowsCapture::Sessions(c) => c.encode(w),
        }
    }
}

/// Locks the buffers a dropped capture left for the next one; a panic elsewhere while they were
/// locked leaves nothing inconsistent in them (they are only reused as memory).
fn lock<T>(spare: &Mutex<T>) -> MutexGuard<'_, T> {
    spare.lock().unwrap_or_else(PoisonError::into_inner)
}
