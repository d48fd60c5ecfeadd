//! Logical snapshots of window state, for checkpoints and state hand-off.
//!
//! A snapshot lists keys by name with their panes or sessions and accumulator slots; timers refer
//! to keys by their position in that list. It holds no table layout, key ids or arena indices,
//! so a restored state is rebuilt from scratch and the format does not change when the in-memory
//! layout does. Distinct-count sets are stored by their members.

use serde::{Deserialize, Serialize};

/// Accumulator block: slots, and the members of each distinct-count set in slot order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockSnapshot {
    /// Slots, with distinct-count slots zeroed.
    pub slots: Vec<u64>,
    /// Members of the distinct-count sets, one list per distinct-count aggregate.
    pub sets: Vec<Vec<u64>>,
}

/// One key of pane windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaneKey {
    /// The key.
    pub name: String,
    /// Window end of the next due result, or `i64::MIN`.
    pub next_fire: i64,
    /// Panes by index.
    pub panes: Vec<(i64, BlockSnapshot)>,
}

/// State of tumbling or sliding windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaneSnapshot {
    /// Live keys.
    pub keys: Vec<PaneKey>,
    /// Window end → positions in `keys` due then.
    pub fire: Vec<(i64, Vec<u32>)>,
    /// Time → (key position, window end) purged then.
    pub purge: Vec<(i64, Vec<(u32, i64)>)>,
    /// (key position, window end) → last revision emitted, for fired windows within lateness.
    pub fired: Vec<(u32, i64, Option<u32>)>,
}

/// One session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// Start, inclusive.
    pub start: i64,
    /// End, exclusive.
    pub end: i64,
    /// Revision of the last emission.
    pub revision: Option<u32>,
    /// Whether it fired.
    pub fired: bool,
    /// Accumulators.
    pub block: BlockSnapshot,
}

/// State of session windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionsSnapshot {
    /// Keys with their sessions.
    pub keys: Vec<(String, Vec<SessionSnapshot>)>,
    /// Time → positions in `keys` to look at then.
    pub timers: Vec<(i64, Vec<u32>)>,
}

/// State of one analytic's windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WindowsSnapshot {
    /// Tumbling or sliding.
    Panes(PaneSnapshot),
    /// Sessions.
    Sessions(SessionsSnapshot),
}
