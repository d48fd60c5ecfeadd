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

use rustc_hash::FxHashMap;

use super::accumulate::{AccArena, AccLayout, DistinctSets, Value};
use super::keys::{KeyTable, NONE};
use super::snapshot::{PaneKey, PaneSnapshot};
use super::{Emission, EmitFn, WindowStats};
use crate::event::Event;

/// Pane-based window state of one analytic in one task.
#[derive(Debug)]
pub struct PaneWindows {
    size: i64,
    slide: i64,
    pane: i64,
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
        }
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
        let q = event.time.div_euclid(self.pane);
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
            _ => Some(0),
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
        self.layout.finish(block, &self.distinct, &mut self.values);
        out(&Emission {
            key: &self.keys.get(k).name,
            start,
            end,
            revision,
            values: &self.values,
        });
        if self.size != self.pane {
            self.layout.release(&mut self.scratch, &mut self.distinct);
        }
        true
    }

    /// Emits every result due at watermark `wm` and drops state past the allowed lateness, in
    /// time order (a purge at `t` happens before results due after `t`, which ends the chains of
    /// keys whose last panes it drops).
    pub fn advance(&mut self, wm: i64, out: EmitFn<'_>) {
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

    /// A logical copy of the state (see [`super::snapshot`]).
    pub fn snapshot(&self) -> PaneSnapshot {
        let mut position: FxHashMap<u32, u32> = FxHashMap::default();
        let mut keys = Vec::with_capacity(self.keys.len());
        for (id, entry) in self.keys.iter() {
            position.insert(id, keys.len() as u32);
            let mut key = PaneKey {
                name: entry.name.to_string(),
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

    /// Loads `snapshot` into this (empty) state.
    pub fn restore(&mut self, snapshot: &PaneSnapshot) {
        let mut ids = Vec::with_capacity(snapshot.keys.len());
        for key in &snapshot.keys {
            let k = self.keys.intern(&key.name);
            ids.push(k);
            for (q, block) in &key.panes {
                let index = self.insert_pane(k, *q);
                self.layout
                    .import(self.arena.get_mut(index), block, &mut self.distinct);
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
