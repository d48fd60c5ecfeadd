//! Logical snapshots of window state, for checkpoints and state hand-off.
//!
//! A snapshot lists keys by name with their panes or sessions and accumulator slots; timers refer
//! to keys by their position in that list. It holds no table layout, key ids or arena indices,
//! so a restored state is rebuilt from scratch and the format does not change when the in-memory
//! layout does. Distinct-count sets are stored by their members.
//!
//! **Format 2** (written now) stores that content in columns ([`super::codec`]): the keys' names,
//! then one column per field of the keys, panes or sessions, and of the timers. It is written
//! from a capture ([`super::WindowsCapture`]), a flat copy of the tables taken on the task thread,
//! so the encoding can run on another thread. **Format 1** (the types below, postcard) is still
//! restored, so checkpoints written before the change remain usable.

use serde::{Deserialize, Serialize};

use super::accumulate::{AccArena, AccLayout, DistinctSets};
use super::codec::{DecodeError, Decoded, Reader, Writer};
use super::keys::{KeyTable, KeysCapture};

/// Section kind of pane windows in format 2.
pub const PANES: u8 = 0;
/// Section kind of session windows in format 2.
pub const SESSIONS: u8 = 1;
/// Section kind of pane windows shifted by an offset (its milliseconds follow the kind byte).
pub const PANES_OFFSET: u8 = 2;

/// Position of an id that is not in a snapshot.
pub const ABSENT: u32 = u32::MAX;

/// Writes the names of the keys of `keys` in id order and returns each id's position in the
/// snapshot ([`ABSENT`] for released ids).
pub fn write_keys(w: &mut Writer, keys: &KeysCapture) -> Vec<u32> {
    let mut position = vec![ABSENT; keys.ids()];
    let mut lengths = Vec::with_capacity(keys.len());
    let mut total = 0;
    for (n, (id, name, _)) in keys.iter().enumerate() {
        position[id as usize] = n as u32;
        lengths.push(name.len() as i64);
        total += name.len();
    }
    w.len_prefix(lengths.len());
    w.column(&lengths);
    w.len_prefix(total);
    for (_, name, _) in keys.iter() {
        w.raw(name);
    }
    position
}

/// Reads keys written by [`write_keys`] into a new table; returns it and the ids by position.
pub fn read_keys(r: &mut Reader<'_>) -> Decoded<(KeyTable, Vec<u32>)> {
    let n = r.len_prefix()?;
    let lengths = r.column_bounded(n, r.remaining() as u64)?;
    let total = r.len_prefix()?;
    if sum(&lengths) != Some(total as u64) {
        return Err(DecodeError("key names do not add up"));
    }
    let names =
        std::str::from_utf8(r.raw(total)?).map_err(|_| DecodeError("a key is not UTF-8"))?;
    let mut keys = KeyTable::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut at = 0;
    for len in lengths {
        let end = at + len as usize;
        let name = names
            .get(at..end)
            .ok_or(DecodeError("a key is not UTF-8"))?;
        let (id, new) = keys.intern_new(name);
        if !new {
            return Err(DecodeError("a key appears twice"));
        }
        ids.push(id);
        at = end;
    }
    Ok((keys, ids))
}

/// Writes what `layout` looks like, so that a restore can refuse another layout.
pub fn write_layout(w: &mut Writer, layout: &AccLayout) {
    let signature = layout.signature();
    w.len_prefix(signature.len());
    w.column(&signature);
}

/// Whether the layout written by [`write_layout`] is `layout`.
pub fn read_layout(r: &mut Reader<'_>, layout: &AccLayout) -> Decoded<bool> {
    let n = r.len_prefix()?;
    Ok(r.column(n)? == layout.signature())
}

/// Writes the accumulator blocks `blocks` of `arena`: one column per slot, then per
/// distinct-count aggregate the set sizes and their members (ascending).
pub fn write_blocks(
    w: &mut Writer,
    layout: &AccLayout,
    arena: &AccArena,
    distinct: &DistinctSets,
    blocks: &[u32],
) {
    let distinct_slots = layout.distinct_slots();
    let mut column = Vec::with_capacity(blocks.len());
    for slot in 0..layout.width {
        column.clear();
        if distinct_slots.contains(&slot) {
            column.resize(blocks.len(), 0);
        } else {
            column.extend(blocks.iter().map(|&b| arena.get(b)[slot] as i64));
        }
        w.column(&column);
    }
    let mut members = Vec::new();
    for &slot in &distinct_slots {
        column.clear();
        members.clear();
        for &b in blocks {
            let at = members.len();
            distinct.members_sorted(arena.get(b)[slot], &mut members);
            column.push((members.len() - at) as i64);
        }
        w.column(&column);
        let members: Vec<i64> = members.iter().map(|&m| m as i64).collect();
        w.len_prefix(members.len());
        w.column(&members);
    }
}

/// Blocks read by [`read_blocks`], to be placed into an arena one by one.
#[derive(Debug)]
pub struct Blocks {
    /// Column per slot.
    slots: Vec<Vec<i64>>,
    /// Per distinct-count aggregate: its slot, and each block's members.
    sets: Vec<(usize, Vec<std::ops::Range<usize>>, Vec<u64>)>,
}

/// Reads `n` blocks of `layout` written by [`write_blocks`].
pub fn read_blocks(r: &mut Reader<'_>, layout: &AccLayout, n: usize) -> Decoded<Blocks> {
    let mut slots = Vec::with_capacity(layout.width);
    for _ in 0..layout.width {
        slots.push(r.column(n)?);
    }
    let mut sets = Vec::new();
    for slot in layout.distinct_slots() {
        let sizes = r.column_bounded(n, r.remaining() as u64)?;
        let total = r.len_prefix()?;
        if sum(&sizes) != Some(total as u64) {
            return Err(DecodeError("distinct-count members do not add up"));
        }
        let members = r.column_u64(total)?;
        let mut ranges = Vec::with_capacity(n);
        let mut at = 0;
        for size in sizes {
            let range = at..at + size as usize;
            if members[range.clone()].windows(2).any(|m| m[0] >= m[1]) {
                return Err(DecodeError("distinct-count members are not ascending"));
            }
            at = range.end;
            ranges.push(range);
        }
        sets.push((slot, ranges, members));
    }
    Ok(Blocks { slots, sets })
}

impl Blocks {
    /// Writes block `i` into `block`, recreating its distinct-count sets in `distinct`.
    pub fn place(&self, i: usize, block: &mut [u64], distinct: &mut DistinctSets) {
        for (slot, column) in block.iter_mut().zip(&self.slots) {
            *slot = column[i] as u64;
        }
        for (slot, ranges, members) in &self.sets {
            distinct.fill(&mut block[*slot], &members[ranges[i].clone()]);
        }
    }
}

/// Writes a list of timer entries grouped by time: times, group sizes, then `entries` (one
/// column per field).
pub fn write_groups<const N: usize>(w: &mut Writer, groups: &[(i64, Vec<[i64; N]>)]) {
    let times: Vec<i64> = groups.iter().map(|(t, _)| *t).collect();
    let sizes: Vec<i64> = groups.iter().map(|(_, g)| g.len() as i64).collect();
    w.len_prefix(groups.len());
    w.column(&times);
    w.column(&sizes);
    let total = sizes.iter().sum::<i64>() as usize;
    w.len_prefix(total);
    for field in 0..N {
        let column: Vec<i64> = groups
            .iter()
            .flat_map(|(_, g)| g.iter().map(move |e| e[field]))
            .collect();
        w.column(&column);
    }
}

/// Reads groups written by [`write_groups`].
pub fn read_groups<const N: usize>(r: &mut Reader<'_>) -> Decoded<Vec<(i64, Vec<[i64; N]>)>> {
    let n = r.len_prefix()?;
    let times = r.column(n)?;
    let sizes = r.column_bounded(n, r.remaining() as u64)?;
    let total = r.len_prefix()?;
    if sum(&sizes) != Some(total as u64) {
        return Err(DecodeError("timer entries do not add up"));
    }
    let mut columns = Vec::with_capacity(N);
    for _ in 0..N {
        columns.push(r.column(total)?);
    }
    let mut at = 0;
    Ok(times
        .into_iter()
        .zip(sizes)
        .map(|(t, size)| {
            let group = (at..at + size as usize)
                .map(|i| std::array::from_fn(|field| columns[field][i]))
                .collect();
            at += size as usize;
            (t, group)
        })
        .collect())
}

fn sum(values: &[u64]) -> Option<u64> {
    values.iter().try_fold(0u64, |a, &b| a.checked_add(b))
}

/// The id of the key at `position` of a snapshot.
pub fn id_at(ids: &[u32], position: i64) -> Decoded<u32> {
    usize::try_from(position)
        .ok()
        .and_then(|p| ids.get(p).copied())
        .ok_or(DecodeError("a key position is out of range"))
}

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
