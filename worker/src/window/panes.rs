//! Tumbling and sliding windows over panes.
//!
//! Time is cut into panes of `gcd(size, slide)`; each event updates exactly one pane of its key,
//! so the cost per event does not depend on size/slide. A window's result merges its panes when
//! the watermark passes its end. Tumbling windows are the case of one pane per window.
//!
//! Per key, results are due in a chain: the key is scheduled at the first unfired window end that
//! contains one of its panes, and after each result at the next end, while the key holds panes. Panes are dropped once the last window containing them is past the allowed
//! lateness; events for such panes are late.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rustc_hash::{FxHashMap, FxHashSet};

use super::accumulate::{AccArena, AccLayout, DistinctSets, Value};
use super::codec::{DecodeError, Reader, Writer};
use super::keys::{KeyTable, KeysCapture, KeysSpare, NONE};
#[cfg(test)]
use super::snapshot::PaneKey;
use super::snapshot::{self as format, PaneSnapshot, ABSENT};
use super::{Emission, EmitFn, Refused, WindowStats};
use crate::event::Event;

/// Pane-based window state of one analytic in one task.
#[derive(Debug)]
pub struct PaneWindows {
    size: i64,
    slide: i64,
    pane: i64,
    /// Window starts lie at `offset + n * slide` (ms, `0 <= offset < slide`): the panes work
    /// in time shifted by `-offset`, and results are shifted back.
    offset: i64,
    lateness: i64,
    layout: AccLayout,
    /// Sources that must have events in a window for it to produce a result (joins).
    require: Vec<usize>,
    keys: KeyTable,
    /// Panes beyond the one each key stores inline: (key, pane index) → block.
    overflow: FxHashMap<(u32, i64), u32>,
    /// Live panes in all.
    live_panes: usize,
    /// Scheduled purges per key (lateness > 0 only); a key with some is not released.
    pending: FxHashMap<u32, u32>,
    arena: AccArena,
    distinct: DistinctSets,
    /// Window end → keys whose result is due then.
    fire: BTreeMap<i64, Vec<u32>>,
    /// Time → (key, window end) whose last panes are dropped then (lateness > 0 only).
    purge: BTreeMap<i64, Vec<(u32, i64)>>,
    /// Windows fired and still within lateness → last revision emitted (`None`: suppressed).
    fired: FxHashMap<(u32, i64), Option<u32>>,
    scratch: Vec<u64>,
    values: Vec<Value>,
    /// Buffers of the last capture, once it is dropped, for the next one.
    spare: Arc<Mutex<PaneSpare>>,
    /// Emit accumulator blocks (partials for the global stage) instead of values.
    partials: bool,
    /// The block of the partial being emitted.
    encoded: Writer,
    /// Revision of a key-window first emitted after its window fired: 0, or 1 for a top-N,
    /// whose ranking revision is the sum of its key-windows' (`crate::analytics::top_n`).
    first_late_revision: u32,
}

/// Buffers of a dropped [`PaneCapture`]. The next capture copies into them: memory that is
/// already mapped, so the copy costs no page faults (most of a capture's cost otherwise).
#[derive(Debug, Default)]
struct PaneSpare {
    keys: KeysSpare,
    blocks: Vec<Box<[u64]>>,
    sets: Vec<FxHashSet<u64>>,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl PaneWindows {
    /// Windows of `size` starting every `slide` (both > 0, slide ≤ size), results kept open
    /// for `lateness` after their end.
    pub fn new(
        size: i64,
        slide: i64,
        lateness: i64,
        layout: AccLayout,
        require: Vec<usize>,
    ) -> Self {
        let pane = gcd(size, slide);
        Self {
            size,
            slide,
            pane,
            offset: 0,
            lateness,
            arena: AccArena::new(layout.width),
            scratch: vec![0; layout.width],
            layout,
            require,
            keys: KeyTable::default(),
            overflow: FxHashMap::default(),
            live_panes: 0,
            pending: FxHashMap::default(),
            distinct: DistinctSets::default(),
            fire: BTreeMap::new(),
            purge: BTreeMap::new(),
            fired: FxHashMap::default(),
            values: Vec::new(),
            spare: Arc::default(),
            partials: false,
            encoded: Writer::default(),
            first_late_revision: 0,
        }
    }

    /// Starts windows at `offset` past the epoch alignment (a week from Monday, a day from a
    /// time zone's midnight). Set before the first event.
    pub fn set_offset(&mut self, offset: i64) {
        self.offset = offset;
    }

    /// `t` (an event time or a watermark) in the shifted time the panes work in; the
    /// watermark's "nothing yet" and "everything" stay what they are.
    fn shifted(&self, t: i64) -> i64 {
        if t == i64::MIN || t == i64::MAX {
            t
        } else {
            t - self.offset
        }
    }

    /// Emits accumulator blocks instead of values from now on (see `Windows::emit_partials`).
    pub fn emit_partials(&mut self) {
        self.partials = true;
    }

    /// Counts a key-window first emitted after its window fired from revision 1 (see
    /// `Windows::rank_revisions`).
    pub fn rank_revisions(&mut self) {
        self.first_late_revision = 1;
    }

    /// End of the first window containing pane `q`.
    fn first_end(&self, q: i64) -> i64 {
        let start = (q * self.pane + self.pane - self.size).div_euclid(self.slide)
            + i64::from((q * self.pane + self.pane - self.size).rem_euclid(self.slide) != 0);
        start * self.slide + self.size
    }

    /// End of the last window containing pane `q`.
    fn last_end(&self, q: i64) -> i64 {
        (q * self.pane).div_euclid(self.slide) * self.slide + self.size
    }

    /// Smallest window end after `time` (`i64::MIN` for no watermark yet).
    fn next_end_after(&self, time: i64) -> i64 {
        if time == i64::MIN {
            return i64::MIN;
        }
        ((time - self.size).div_euclid(self.slide) + 1) * self.slide + self.size
    }

    /// The block of pane `q` of key `k`, if it holds state.
    #[inline]
    fn pane(&self, k: u32, q: i64) -> Option<u32> {
        let entry = self.keys.get(k);
        if entry.slot == q {
            Some(entry.block)
        } else if self.overflow.is_empty() {
            None
        } else {
            self.overflow.get(&(k, q)).copied()
        }
    }

    fn insert_pane(&mut self, k: u32, q: i64) -> u32 {
        let block = self.arena.alloc(&self.layout);
        let entry = self.keys.get_mut(k);
        entry.live += 1;
        if entry.slot == NONE {
            entry.slot = q;
            entry.block = block;
        } else {
            self.overflow.insert((k, q), block);
        }
        self.live_panes += 1;
        block
    }

    fn remove_pane(&mut self, k: u32, q: i64) -> Option<u32> {
        let entry = self.keys.get_mut(k);
        let block = if entry.slot == q {
            entry.slot = NONE;
            entry.block
        } else {
            self.overflow.remove(&(k, q))?
        };
        entry.live -= 1;
        self.live_panes -= 1;
        Some(block)
    }

    fn release_if_idle(&mut self, k: u32) {
        if !self.pending.contains_key(&k) {
            self.keys.release_if_idle(k);
        }
    }

    /// Adds `event` of `source` under `key` given watermark `wm`. Returns false if the event is
    /// late for every window containing it (the caller dead-letters it); results of windows that
    /// already fired and are within lateness are emitted again with a higher revision.
    pub fn add(
        &mut self,
        key: &str,
        source: usize,
        event: &Event<'_>,
        wm: i64,
        out: EmitFn<'_>,
    ) -> bool {
        let (time, wm) = (self.shifted(event.time), self.shifted(wm));
        let q = time.div_euclid(self.pane);
        let last = self.last_end(q);
        if last.saturating_add(self.lateness) <= wm {
            return false;
        }
        let k = self.keys.intern(key);
        let block = match self.pane(k, q) {
            Some(block) => block,
            None => self.insert_pane(k, q),
        };
        self.layout
            .update(self.arena.get_mut(block), source, event, &mut self.distinct);
        let first = self.first_end(q);
        let unfired = first.max(self.next_end_after(wm));
        if unfired <= last {
            let entry = self.keys.get_mut(k);
            if entry.next_fire == NONE || unfired < entry.next_fire {
                entry.next_fire = unfired;
                self.fire.entry(unfired).or_default().push(k);
            }
        }
        if first <= wm {
            let mut end = first.max(wm.saturating_sub(self.lateness) + 1);
            end = first + (end - first + self.slide - 1).div_euclid(self.slide) * self.slide;
            while end <= wm.min(last) {
                self.refire(k, end, out);
                end += self.slide;
            }
        }
        true
    }

    /// Emits window `end` of key `k` again after a late update.
    fn refire(&mut self, k: u32, end: i64, out: EmitFn<'_>) {
        let previous = self.fired.get(&(k, end)).copied();
        if previous.is_none() {
            self.schedule_purge(k, end);
        }
        let revision = match previous {
            Some(Some(rev)) => Some(rev + 1),
            _ => Some(self.first_late_revision),
        };
        let emitted = self.emit(k, end, revision.unwrap_or(0), out);
        let record = if emitted {
            revision
        } else {
            previous.flatten()
        };
        self.fired.insert((k, end), record);
    }

    fn schedule_purge(&mut self, k: u32, end: i64) {
        *self.pending.entry(k).or_default() += 1;
        self.purge
            .entry(end + self.lateness)
            .or_default()
            .push((k, end));
    }

    /// Merges the panes of window `end` of key `k` and emits it if it passes the join
    /// requirement. Returns whether it emitted.
    fn emit(&mut self, k: u32, end: i64, revision: u32, out: EmitFn<'_>) -> bool {
        let start = end - self.size;
        let block = if self.size == self.pane {
            match self.pane(k, start.div_euclid(self.pane)) {
                Some(block) => self.arena.get(block),
                None => return false,
            }
        } else {
            self.layout.init(&mut self.scratch);
            let mut any = false;
            for q in start.div_euclid(self.pane)..end.div_euclid(self.pane) {
                if let Some(block) = self.pane(k, q) {
                    self.layout
                        .merge(&mut self.scratch, self.arena.get(block), &mut self.distinct);
                    any = true;
                }
            }
            if !any {
                return false;
            }
            &self.scratch[..]
        };
        if self
            .require
            .iter()
            .any(|&s| self.layout.side_count(block, s) == Some(0))
        {
            if self.size != self.pane {
                self.layout.release(&mut self.scratch, &mut self.distinct);
            }
            return false;
        }
        if self.partials {
            self.encoded.clear();
            self.layout
                .write_block(block, &self.distinct, &mut self.encoded);
            out(&Emission {
                key: self.keys.name(k),
                start: start + self.offset,
                end: end + self.offset,
                revision,
                values: &[],
                partial: Some(self.encoded.as_bytes()),
            });
        } else {
            self.layout.finish(block, &self.distinct, &mut self.values);
            out(&Emission {
                key: self.keys.name(k),
                start: start + self.offset,
                end: end + self.offset,
                revision,
                values: &self.values,
                partial: None,
            });
        }
        if self.size != self.pane {
            self.layout.release(&mut self.scratch, &mut self.distinct);
        }
        true
    }

    /// Emits every result due at watermark `wm` and drops state past the allowed lateness, in
    /// time order (a purge at `t` happens before results due after `t`, which ends the chains of
    /// keys whose last panes it drops).
    pub fn advance(&mut self, wm: i64, out: EmitFn<'_>) {
        let wm = self.shifted(wm);
        loop {
            let fire = self
                .fire
                .first_key_value()
                .map(|(t, _)| *t)
                .filter(|t| *t <= wm);
            let purge = self
                .purge
                .first_key_value()
                .map(|(t, _)| *t)
                .filter(|t| *t <= wm);
            match (fire, purge) {
                (Some(f), p) if p.is_none_or(|p| f < p) => {
                    let keys = self.fire.remove(&f).unwrap_or_default();
                    for k in keys {
                        self.fire_key(k, f, out);
                    }
                }
                (_, Some(p)) => {
                    for (k, end) in self.purge.remove(&p).unwrap_or_default() {
                        self.purge_key(k, end);
                    }
                }
                (None, None) => break,
                (Some(_), None) => unreachable!("handled by the first arm"),
            }
        }
    }

    /// Emits again, with their last revision, the key-windows of window `end` that fired and
    /// are still held (within the allowed lateness; none without lateness): what a top-N
    /// re-ranks after a late update. Changes nothing in the state.
    pub fn fired_window(&mut self, end: i64, out: EmitFn<'_>) {
        let end = self.shifted(end);
        let Some(scheduled) = self.purge.get(&(end + self.lateness)) else {
            return;
        };
        let fired: Vec<(u32, u32)> = scheduled
            .iter()
            .filter(|(_, e)| *e == end)
            .filter_map(|&(k, _)| Some((k, self.fired.get(&(k, end)).copied().flatten()?)))
            .collect();
        for (k, revision) in fired {
            self.emit(k, end, revision, out);
        }
    }

    fn purge_key(&mut self, k: u32, end: i64) {
        self.fired.remove(&(k, end));
        self.drop_last_panes(k, end);
        if let std::collections::hash_map::Entry::Occupied(mut pending) = self.pending.entry(k) {
            *pending.get_mut() -= 1;
            if *pending.get() == 0 {
                pending.remove();
            }
        }
        self.release_if_idle(k);
    }

    fn fire_key(&mut self, k: u32, end: i64, out: EmitFn<'_>) {
        if self.keys.get(k).next_fire != end {
            return; // superseded by an earlier registration that already covered this end
        }
        let emitted = self.emit(k, end, 0, out);
        if self.lateness == 0 {
            self.drop_last_panes(k, end);
        } else {
            self.fired.insert((k, end), emitted.then_some(0));
            self.schedule_purge(k, end);
        }
        // Panes still held belong to later windows (or, with lateness, to fired windows not yet
        // purged, in which case the chain walks a few empty windows until they are).
        let next = end + self.slide;
        let entry = self.keys.get_mut(k);
        if entry.live > 0 {
            entry.next_fire = next;
            self.fire.entry(next).or_default().push(k);
        } else {
            entry.next_fire = NONE;
        }
        self.release_if_idle(k);
    }

    /// Drops the panes of key `k` whose last window ends at `end`.
    fn drop_last_panes(&mut self, k: u32, end: i64) {
        let start = end - self.size;
        for q in start.div_euclid(self.pane)..(start + self.slide).div_euclid(self.pane) {
            if let Some(block) = self.remove_pane(k, q) {
                self.layout
                    .release(self.arena.get_mut(block), &mut self.distinct);
                self.arena.free(block);
            }
        }
    }

    /// A copy of the state for a snapshot, taken between events: flat copies of the tables
    /// (see [`PaneCapture`]).
    pub fn capture(&self) -> PaneCapture {
        // Buffers the state no longer needs (it shrank) are freed here.
        let mut spare = std::mem::take(&mut *super::lock(&self.spare));
        PaneCapture {
            offset: self.offset,
            size: self.size,
            slide: self.slide,
            layout: self.layout.clone(),
            keys: self.keys.capture(&mut spare.keys),
            overflow: self.overflow.clone(),
            arena: self.arena.copy_into(&mut spare.blocks),
            distinct: self.distinct.copy_into(spare.sets),
            fire: self.fire.clone(),
            purge: self.purge.clone(),
            fired: self.fired.clone(),
            spare: Arc::clone(&self.spare),
        }
    }

    /// Loads state written by [`PaneCapture::encode`] (after its kind byte) into this (empty)
    /// state.
    pub fn restore_from(&mut self, r: &mut Reader<'_>, offset: i64) -> Result<(), Refused> {
        if offset != self.offset || r.i64()? != self.size || r.i64()? != self.slide {
            return Err(Refused::Kind);
        }
        if !format::read_layout(r, &self.layout)? {
            return Err(Refused::Layout);
        }
        let (keys, ids) = format::read_keys(r)?;
        self.keys = keys;
        let next_fire = r.column(ids.len())?;
        let n = r.len_prefix()?;
        let positions = r.column(n)?;
        let panes = r.column(n)?;
        let blocks = format::read_blocks(r, &self.layout, n)?;
        for (i, (&p, &q)) in positions.iter().zip(&panes).enumerate() {
            if i > 0 && (positions[i - 1], panes[i - 1]) >= (p, q) {
                return Err(DecodeError("panes are not in key and time order").into());
            }
            let k = format::id_at(&ids, p)?;
            let block = self.insert_pane(k, q);
            blocks.place(i, self.arena.get_mut(block), &mut self.distinct);
        }
        for (&k, &t) in ids.iter().zip(&next_fire) {
            self.keys.get_mut(k).next_fire = t;
        }
        for (t, due) in format::read_groups::<1>(r)? {
            let list = self.fire.entry(t).or_default();
            list.reserve(due.len());
            for [p] in due {
                list.push(format::id_at(&ids, p)?);
            }
        }
        for (t, due) in format::read_groups::<2>(r)? {
            for [p, end] in due {
                let k = format::id_at(&ids, p)?;
                *self.pending.entry(k).or_default() += 1;
                self.purge.entry(t).or_default().push((k, end));
            }
        }
        let n = r.len_prefix()?;
        let positions = r.column(n)?;
        let ends = r.column(n)?;
        let revisions = r.column(n)?;
        for ((&p, &end), &rev) in positions.iter().zip(&ends).zip(&revisions) {
            let rev = match rev {
                -1 => None,
                rev => Some(u32::try_from(rev).map_err(|_| DecodeError("bad revision"))?),
            };
            self.fired.insert((format::id_at(&ids, p)?, end), rev);
        }
        Ok(())
    }

    /// A logical copy of the state in snapshot format 1.
    #[cfg(test)]
    pub fn snapshot(&self) -> PaneSnapshot {
        let mut position: FxHashMap<u32, u32> = FxHashMap::default();
        let mut keys = Vec::with_capacity(self.keys.len());
        for (id, entry) in self.keys.iter() {
            position.insert(id, keys.len() as u32);
            let mut key = PaneKey {
                name: self.keys.name(id).to_string(),
                next_fire: entry.next_fire,
                panes: Vec::new(),
            };
            if entry.slot != NONE {
                key.panes.push((
                    entry.slot,
                    self.layout
                        .export(self.arena.get(entry.block), &self.distinct),
                ));
            }
            keys.push(key);
        }
        for (&(k, q), &block) in &self.overflow {
            if let Some(&p) = position.get(&k) {
                keys[p as usize]
                    .panes
                    .push((q, self.layout.export(self.arena.get(block), &self.distinct)));
            }
        }
        for key in &mut keys {
            key.panes.sort_by_key(|(q, _)| *q);
        }
        let map = |ids: &[u32]| {
            ids.iter()
                .filter_map(|id| position.get(id).copied())
                .collect::<Vec<u32>>()
        };
        let mut fired: Vec<(u32, i64, Option<u32>)> = self
            .fired
            .iter()
            .filter_map(|(&(k, end), &rev)| position.get(&k).map(|&p| (p, end, rev)))
            .collect();
        fired.sort_unstable();
        PaneSnapshot {
            keys,
            fire: self.fire.iter().map(|(&t, ids)| (t, map(ids))).collect(),
            purge: self
                .purge
                .iter()
                .map(|(&t, due)| {
                    (
                        t,
                        due.iter()
                            .filter_map(|(k, end)| position.get(k).map(|&p| (p, *end)))
                            .collect(),
                    )
                })
                .collect(),
            fired,
        }
    }

    /// Loads a format-1 `snapshot` into this (empty) state.
    pub fn restore(&mut self, snapshot: &PaneSnapshot) -> Result<(), Refused> {
        if self.offset != 0 {
            // Format 1 knew no offsets: its windows were aligned to the epoch.
            return Err(Refused::Kind);
        }
        let mut ids = Vec::with_capacity(snapshot.keys.len());
        for key in &snapshot.keys {
            let (k, new) = self.keys.intern_new(&key.name);
            if !new {
                return Err(DecodeError("a key appears twice").into());
            }
            ids.push(k);
            for (q, block) in &key.panes {
                if self.pane(k, *q).is_some() {
                    return Err(DecodeError("a pane appears twice").into());
                }
                let index = self.insert_pane(k, *q);
                if !self
                    .layout
                    .import(self.arena.get_mut(index), block, &mut self.distinct)
                {
                    return Err(Refused::Layout);
                }
            }
            self.keys.get_mut(k).next_fire = key.next_fire;
        }
        let id = |p: &u32| ids.get(*p as usize).copied();
        for (t, positions) in &snapshot.fire {
            self.fire
                .entry(*t)
                .or_default()
                .extend(positions.iter().filter_map(id));
        }
        for (t, due) in &snapshot.purge {
            for (p, end) in due {
                if let Some(k) = id(p) {
                    *self.pending.entry(k).or_default() += 1;
                    self.purge.entry(*t).or_default().push((k, *end));
                }
            }
        }
        for (p, end, rev) in &snapshot.fired {
            if let Some(k) = id(p) {
                self.fired.insert((k, *end), *rev);
            }
        }
        Ok(())
    }

    /// Sizes of the state.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            keys: self.keys.len(),
            windows: self.live_panes,
            bytes: self.keys.bytes()
                + self.overflow.capacity() * (std::mem::size_of::<((u32, i64), u32)>() + 1)
                + self.pending.capacity() * 9
                + self.arena.bytes()
                + self
                    .fire
                    .values()
                    .map(|v| v.capacity() * 4 + 32)
                    .sum::<usize>()
                + self
                    .purge
                    .values()
                    .map(|v| v.capacity() * 16 + 32)
                    .sum::<usize>()
                + self.fired.capacity() * (std::mem::size_of::<((u32, i64), Option<u32>)>() + 1),
        }
    }
}

/// A copy of [`PaneWindows`] state for a snapshot. Taking it copies the tables as they are —
/// key entries, accumulator chunks, hash maps of `Copy` entries, timer lists — with a few large
/// memory copies; [`PaneCapture::encode`] then does the work per key, on any thread. Dropped,
/// it leaves its buffers to the next capture.
#[derive(Debug)]
pub struct PaneCapture {
    offset: i64,
    size: i64,
    slide: i64,
    layout: AccLayout,
    keys: KeysCapture,
    overflow: FxHashMap<(u32, i64), u32>,
    arena: AccArena,
    distinct: DistinctSets,
    fire: BTreeMap<i64, Vec<u32>>,
    purge: BTreeMap<i64, Vec<(u32, i64)>>,
    fired: FxHashMap<(u32, i64), Option<u32>>,
    spare: Arc<Mutex<PaneSpare>>,
}

impl Drop for PaneCapture {
    fn drop(&mut self) {
        let spare = PaneSpare {
            keys: std::mem::take(&mut self.keys).into_spare(),
            blocks: std::mem::replace(&mut self.arena, AccArena::new(1)).into_chunks(),
            sets: std::mem::take(&mut self.distinct).into_sets(),
        };
        *super::lock(&self.spare) = spare;
    }
}

impl PaneCapture {
    /// Writes the state in snapshot format 2 (see [`super::snapshot`]): window parameters,
    /// layout, keys and their next result, panes in key and time order with their blocks, the
    /// fire and purge lists in their order, and the fired windows.
    pub fn encode(&mut self, w: &mut Writer) {
        if self.offset == 0 {
            w.u8(format::PANES);
        } else {
            w.u8(format::PANES_OFFSET);
            w.i64(self.offset);
        }
        w.i64(self.size);
        w.i64(self.slide);
        format::write_layout(w, &self.layout);
        let position = format::write_keys(w, &self.keys);
        let pos = |id: u32| {
            position
                .get(id as usize)
                .copied()
                .filter(|&p| p != ABSENT)
                .map(i64::from)
        };
        let next_fire: Vec<i64> = self.keys.iter().map(|(_, _, e)| e.next_fire).collect();
        w.column(&next_fire);
        let mut overflow: Vec<(i64, i64, u32)> = self
            .overflow
            .iter()
            .filter_map(|(&(k, q), &block)| pos(k).map(|p| (p, q, block)))
            .collect();
        overflow.sort_unstable();
        let mut overflow = overflow.into_iter().peekable();
        let (mut positions, mut panes, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
        let mut of_key = Vec::new();
        for (p, (_, _, entry)) in self.keys.iter().enumerate() {
            let p = p as i64;
            of_key.clear();
            if entry.slot != NONE {
                of_key.push((entry.slot, entry.block));
            }
            while let Some((_, q, block)) = overflow.next_if(|&(other, _, _)| other == p) {
                of_key.push((q, block));
            }
            of_key.sort_unstable();
            for &(q, block) in &of_key {
                positions.push(p);
                panes.push(q);
                blocks.push(block);
            }
        }
        w.len_prefix(blocks.len());
        w.column(&positions);
        w.column(&panes);
        format::write_blocks(w, &self.layout, &self.arena, &self.distinct, &blocks);
        let fire: Vec<(i64, Vec<[i64; 1]>)> = self
            .fire
            .iter()
            .map(|(&t, ids)| (t, ids.iter().filter_map(|&k| pos(k)).map(|p| [p]).collect()))
            .collect();
        format::write_groups(w, &fire);
        let purge: Vec<(i64, Vec<[i64; 2]>)> = self
            .purge
            .iter()
            .map(|(&t, due)| {
                let due = due
                    .iter()
                    .filter_map(|&(k, end)| pos(k).map(|p| [p, end]))
                    .collect();
                (t, due)
            })
            .collect();
        format::write_groups(w, &purge);
        let mut fired: Vec<(i64, i64, i64)> = self
            .fired
            .iter()
            .filter_map(|(&(k, end), &rev)| pos(k).map(|p| (p, end, rev.map_or(-1, i64::from))))
            .collect();
        fired.sort_unstable();
        w.len_prefix(fired.len());
        w.column(&fired.iter().map(|f| f.0).collect::<Vec<_>>());
        w.column(&fired.iter().map(|f| f.1).collect::<Vec<_>>());
        w.column(&fired.iter().map(|f| f.2).collect::<Vec<_>>());
    }
}
