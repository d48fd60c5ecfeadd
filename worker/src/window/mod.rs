//! Event-time windows: per-key state of one analytic in one task, results as windows close.
//!
//! This module owns window assignment, accumulation, firing and lateness. It does not know about
//! sources, watermarks of partitions or output encoding: the caller gives each event with the
//! task's current watermark and calls [`Windows::advance`] whenever the watermark moves.

pub mod accumulate;
pub mod keys;
pub mod panes;
pub mod session;
pub mod slab;
pub mod snapshot;
#[cfg(test)]
mod tests;

use accumulate::{AccLayout, Value};
use panes::PaneWindows;
use session::SessionWindows;

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
    /// Aggregates then ratios, in the analytic's order.
    pub values: &'a [Value],
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

    /// Emits what is due at watermark `wm`.
    pub fn advance(&mut self, wm: i64, out: EmitFn<'_>) {
        match self {
            Windows::Panes(w) => w.advance(wm, out),
            Windows::Sessions(w) => w.advance(wm, out),
        }
    }

    /// Sizes of the state.
    pub fn stats(&self) -> WindowStats {
        match self {
            Windows::Panes(w) => w.stats(),
            Windows::Sessions(w) => w.stats(),
        }
    }

    /// A logical copy of the state.
    pub fn snapshot(&self) -> snapshot::WindowsSnapshot {
        match self {
            Windows::Panes(w) => snapshot::WindowsSnapshot::Panes(w.snapshot()),
            Windows::Sessions(w) => snapshot::WindowsSnapshot::Sessions(w.snapshot()),
        }
    }

    /// Replaces the (empty) state by `snapshot`; false if the snapshot is of another window kind.
    pub fn restore(&mut self, snapshot: &snapshot::WindowsSnapshot) -> bool {
        match (self, snapshot) {
            (Windows::Panes(w), snapshot::WindowsSnapshot::Panes(s)) => w.restore(s),
            (Windows::Sessions(w), snapshot::WindowsSnapshot::Sessions(s)) => w.restore(s),
            _ => return false,
        }
        true
    }
}
