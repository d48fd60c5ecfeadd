//! The global stage's state of a keyed analytic (`aggregate`, `join`, `topN`): each task's
//! newest accumulator block per key-window, merged and finished when every task's watermark
//! has passed the window's end, exactly as one task holding all events would finish it (join
//! sides included). A top-N ranks each window's finished key-windows as a step after firing.
//!
//! The stage-level rules (lateness, replays, idle tasks, delivery) are the global stage's:
//! see `crate::global`.

use std::collections::{hash_map, BTreeMap};
use std::ops::Bound;

use rustc_hash::FxHashMap;

use super::keyed::KeyedPlan;
use super::top_n::{emit_ranking, Item, TopNPlan};
use super::{Emit, GlobalAnalytic, Merge};
use crate::partials::Partial;
use crate::restore::RestoreError;
use crate::window::accumulate::{DistinctSets, Value};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// One task's newest block of a key-window.
#[derive(Debug)]
struct Part {
    task: u32,
    revision: u32,
    block: Box<[u64]>,
}

/// A key-window of a global analytic.
#[derive(Debug)]
struct Entry {
    start: i64,
    parts: Vec<Part>,
    /// `None`: not emitted yet; `Some(None)`: closed without a result (a join side missing);
    /// `Some(Some(r))`: emitted with revision `r` last.
    fired: Option<Option<u32>>,
}

/// Scratch and side tables of one analytic's merges.
#[derive(Debug, Default)]
struct Acc {
    distinct: DistinctSets,
    scratch: Vec<u64>,
    values: Vec<Value>,
}

/// The key-windows of one keyed global analytic, by window end.
#[derive(Debug)]
pub struct KeyedMerge {
    plan: KeyedPlan,
    lateness: i64,
    top: Option<TopNPlan>,
    windows: BTreeMap<i64, FxHashMap<Box<str>, Entry>>,
    acc: Acc,
    /// Key-windows held in `windows`.
    entries: usize,
    /// Task blocks held in them.
    parts: usize,
}

impl KeyedMerge {
    /// Empty state of a keyed analytic with `plan` and `lateness`, ranked when `top` is set.
    pub fn new(plan: KeyedPlan, lateness: i64, top: Option<TopNPlan>) -> Self {
        let acc = Acc {
            scratch: vec![0; plan.layout.width],
            ..Acc::default()
        };
        Self {
            plan,
            lateness,
            top,
            windows: BTreeMap::new(),
            acc,
            entries: 0,
            parts: 0,
        }
    }
}

impl GlobalAnalytic for KeyedMerge {
    fn partial(&mut self, p: &Partial<'_>, wm: i64, out: &mut Emit<'_>) -> Merge {
        if p.end.saturating_add(self.lateness) <= wm {
            return Merge::Late;
        }
        let layout = &self.plan.layout;
        let mut block = vec![0; layout.width].into_boxed_slice();
        let mut r = Reader::new(p.block);
        let read = layout
            .read_block(&mut r, &mut block, &mut self.acc.distinct)
            .and_then(|()| r.finish());
        if read.is_err() {
            layout.release(&mut block, &mut self.acc.distinct);
            return Merge::Malformed;
        }
        let entry = match self.windows.entry(p.end).or_default().entry(p.key.into()) {
            hash_map::Entry::Occupied(held) => held.into_mut(),
            hash_map::Entry::Vacant(new) => {
                self.entries += 1;
                new.insert(Entry {
                    start: p.start,
                    parts: Vec::new(),
                    fired: None,
                })
            }
        };
        match entry.parts.iter_mut().find(|part| part.task == p.task) {
            Some(part) if part.revision >= p.revision => {
                layout.release(&mut block, &mut self.acc.distinct);
                return Merge::Stale;
            }
            Some(part) => {
                layout.release(&mut part.block, &mut self.acc.distinct);
                part.block = block;
                part.revision = p.revision;
            }
            None => {
                self.parts += 1;
                entry.parts.push(Part {
                    task: p.task,
                    revision: p.revision,
                    block,
                });
            }
        }
        if p.end <= wm {
            // Closed already (a late update, or a task back from idle): emit it again. A top-N
            // counts a key-window new since its window was ranked from 1 (`top_n::rank`).
            let previous = entry.fired.flatten();
            let first = u32::from(self.top.is_some());
            let revision = previous.map_or(first, |r| r + 1);
            let emitted = emit(
                &self.plan,
                self.top.is_some(),
                &mut self.acc,
                out,
                p.key,
                p.end,
                entry,
                revision,
            );
            entry.fired = Some(if emitted { Some(revision) } else { previous });
            if let (Some(top), Some(held)) = (&self.top, self.windows.get(&p.end)) {
                emit_top(&self.plan, top, &mut self.acc, out, p.end, held);
            }
        }
        Merge::Merged
    }

    fn advance(&mut self, old: i64, wm: i64, out: &mut Emit<'_>) {
        let range = (Bound::Excluded(old), Bound::Included(wm));
        for (&end, held) in self.windows.range_mut(range) {
            let mut due: Vec<(&Box<str>, &mut Entry)> =
                held.iter_mut().filter(|(_, e)| e.fired.is_none()).collect();
            due.sort_unstable_by(|x, y| x.0.cmp(y.0));
            for (key, entry) in due {
                let ranked = self.top.is_some();
                let emitted = emit(&self.plan, ranked, &mut self.acc, out, key, end, entry, 0);
                entry.fired = Some(emitted.then_some(0));
            }
            if let Some(top) = &self.top {
                emit_top(&self.plan, top, &mut self.acc, out, end, held);
            }
        }
        let cut = wm.saturating_sub(self.lateness);
        let kept = if cut == i64::MAX {
            BTreeMap::new()
        } else {
            self.windows.split_off(&(cut + 1))
        };
        for (_, dropped) in std::mem::replace(&mut self.windows, kept) {
            self.entries -= dropped.len();
            for (_, mut entry) in dropped {
                self.parts -= entry.parts.len();
                for part in &mut entry.parts {
                    self.plan
                        .layout
                        .release(&mut part.block, &mut self.acc.distinct);
                }
            }
        }
    }

    /// The layout's signature, then each key-window (end, key, start, fired state) with every
    /// task's block.
    fn write(&self, w: &mut Writer) {
        let signature = self.plan.layout.signature();
        w.len_prefix(signature.len());
        for s in signature {
            w.i64(s);
        }
        w.len_prefix(self.windows.values().map(FxHashMap::len).sum());
        for (&end, entries) in &self.windows {
            let mut keys: Vec<&Box<str>> = entries.keys().collect();
            keys.sort_unstable();
            for key in keys {
                let entry = &entries[key];
                w.i64(end);
                w.str(key);
                w.i64(entry.start);
                match entry.fired {
                    None => w.u8(0),
                    Some(None) => w.u8(1),
                    Some(Some(r)) => {
                        w.u8(2);
                        w.u64(u64::from(r));
                    }
                }
                w.len_prefix(entry.parts.len());
                for part in &entry.parts {
                    w.u64(u64::from(part.task));
                    w.u64(u64::from(part.revision));
                    self.plan
                        .layout
                        .write_block(&part.block, &self.acc.distinct, w);
                }
            }
        }
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), RestoreError> {
        let n = r.len_prefix()?;
        let signature = (0..n).map(|_| r.i64()).collect::<Result<Vec<_>, _>>()?;
        if self.plan.layout.signature() != signature {
            return Err(RestoreError::Layout(String::new()));
        }
        let layout = &self.plan.layout;
        for _ in 0..r.len_prefix()? {
            let end = r.i64()?;
            let key = r.str()?;
            let start = r.i64()?;
            let fired = match r.u8()? {
                0 => None,
                1 => Some(None),
                2 => Some(Some(
                    u32::try_from(r.u64()?).map_err(|_| DecodeError("a revision beyond u32"))?,
                )),
                _ => return Err(DecodeError("an unknown fired state").into()),
            };
            let mut entry = Entry {
                start,
                parts: Vec::new(),
                fired,
            };
            for _ in 0..r.len_prefix()? {
                let task = u32::try_from(r.u64()?).map_err(|_| DecodeError("a task beyond u32"))?;
                let revision =
                    u32::try_from(r.u64()?).map_err(|_| DecodeError("a revision beyond u32"))?;
                let mut block = vec![0; layout.width].into_boxed_slice();
                layout.read_block(r, &mut block, &mut self.acc.distinct)?;
                entry.parts.push(Part {
                    task,
                    revision,
                    block,
                });
            }
            self.entries += 1;
            self.parts += entry.parts.len();
            let held = self.windows.entry(end).or_default();
            if held.insert(key.into(), entry).is_some() {
                return Err(DecodeError("a key-window appears twice").into());
            }
        }
        Ok(())
    }

    fn stats(&self) -> WindowStats {
        WindowStats {
            keys: self.entries,
            windows: self.entries,
            bytes: self.parts * (self.plan.layout.width * 8 + 16),
        }
    }
}

/// Merges `entry`'s blocks into `acc.values`, finished, if they pass the join requirement;
/// whether they did.
fn finish_entry(plan: &KeyedPlan, acc: &mut Acc, entry: &Entry) -> bool {
    let layout = &plan.layout;
    layout.init(&mut acc.scratch);
    for part in &entry.parts {
        layout.merge(&mut acc.scratch, &part.block, &mut acc.distinct);
    }
    let passes = !plan
        .require
        .iter()
        .any(|&s| layout.side_count(&acc.scratch, s) == Some(0));
    if passes {
        layout.finish(&acc.scratch, &acc.distinct, &mut acc.values);
    }
    layout.release(&mut acc.scratch, &mut acc.distinct);
    passes
}

/// Emits the top-N result of window `end` from the key-windows `held` that fired (all of the
/// window's key-windows the stage holds).
fn emit_top(
    plan: &KeyedPlan,
    top: &TopNPlan,
    acc: &mut Acc,
    out: &mut Emit<'_>,
    end: i64,
    held: &FxHashMap<Box<str>, Entry>,
) {
    let mut items = Vec::with_capacity(held.len());
    let mut start = None;
    for (key, entry) in held {
        let Some(Some(revision)) = entry.fired else {
            continue;
        };
        if finish_entry(plan, acc, entry) {
            start = Some(entry.start);
            items.push(Item {
                key: key.to_string(),
                revision,
                value: acc.values[top.rank],
            });
        }
    }
    if let Some(start) = start {
        emit_ranking(out, top, start, end, items);
    }
}

/// Merges `entry`'s blocks and emits the result with `revision` if it passes the join
/// requirement (a ranked analytic's key-windows are ranked by [`emit_top`] instead); whether
/// it passed.
#[allow(clippy::too_many_arguments)]
fn emit(
    plan: &KeyedPlan,
    ranked: bool,
    acc: &mut Acc,
    out: &mut Emit<'_>,
    key: &str,
    end: i64,
    entry: &Entry,
    revision: u32,
) -> bool {
    let passes = finish_entry(plan, acc, entry);
    if passes && !ranked {
        out.values(
            key,
            entry.start,
            end,
            revision,
            &plan.value_names,
            &acc.values,
        );
    }
    passes
}
