//! The global stage (DESIGN.md §2): results of analytics keyed by something other than the key
//! the source topics are partitioned by (the user).
//!
//! Such an analytic sees each of its keys in every task. Each task therefore emits, when a
//! window closes in it, its **partial** of every key-window (the accumulator block, not the
//! finished values) to the pipeline's internal partials topic, followed by **progress** marks
//! of its watermark ([`record`]). One [`GlobalStage`], hosted by worker ordinal 0, reads the
//! whole topic, keeps each task's newest partial per key-window, and emits a key-window's result
//! when every task's watermark has passed the window's end: the merge of the tasks' blocks,
//! finished exactly as one task holding all events would finish it (join sides included).
//!
//! **Lateness.** A task emits a key-window again, with a higher task revision, when a late
//! event updates it within the allowed lateness. A revision holds all the task has seen of the
//! window, so the stage replaces that task's block and, if it already emitted the window, emits
//! it again with its own next revision. It drops a key-window once every task's watermark is
//! past its end plus the lateness; a partial of a dropped window can only be a replay of one it
//! already merged (a task replaying after an at-least-once restart) and is counted as late.
//! Replays of a window still held are recognised by their revision and ignored.
//!
//! **Idle tasks.** A task all of whose inputs are idle says so in its progress marks and holds
//! nobody back, as an idle input does within a task. If it receives events again, its partials
//! of windows the stage has already closed are late updates, as above.
//!
//! **Delivery.** Tasks write partials with their results: in their checkpoint's transaction
//! under exactly-once. The stage is a task of its own for the worker (`GLOBAL_STAGE`): it
//! checkpoints its state with the offsets of the partials topic it has read, and under
//! exactly-once writes its results in a transaction with those offsets. Session windows are
//! not merged: a session of the whole stream is not known from the tasks' sessions as each
//! closes, so an analytic with sessions must be keyed by the user (the plan refuses others).

pub mod record;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod top_tests;

use std::collections::{hash_map, BTreeMap};
use std::ops::Bound;

use rustc_hash::FxHashMap;

pub use record::{Partial, Progress, Record};

use crate::engine::RestoreError;
use crate::operators::top::{self, Item};
use crate::operators::{AnalyticPlan, Plan};
use crate::result::{Encoder, Output};
use crate::window::accumulate::{DistinctSets, Value};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::{Emission, WindowStats};

/// The task id of the global stage: its checkpoints (directory `global`), its producer's
/// `transactional.id` (`<pipeline>-global`) and its metrics (`task="global"`).
pub const GLOBAL_STAGE: u32 = u32::MAX;

/// The internal topic that carries the tasks' partials to the global stage.
pub fn partials_topic(pipeline: &str) -> String {
    format!("tidemark-{pipeline}-partials")
}

/// A task id as logs, metrics and names show it: its number, or `global`.
pub fn task_label(task: u32) -> String {
    if task == GLOBAL_STAGE {
        "global".to_owned()
    } else {
        task.to_string()
    }
}

/// Format of the stage's snapshot.
const SNAPSHOT_FORMAT: u8 = 1;

/// What the global stage counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalCounters {
    /// Partials merged.
    pub merged: u64,
    /// Partials at or below the task revision already held (replays).
    pub stale: u64,
    /// Partials of key-windows already dropped (replays, or a task back from idle too late).
    pub late: u64,
    /// Records that do not decode, or name an unknown analytic or task.
    pub malformed: u64,
    /// Results per analytic (plan order).
    pub results: Vec<u64>,
}

/// A task's progress as the stage knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TaskProgress {
    watermark: i64,
    idle: bool,
}

impl TaskProgress {
    /// Before the task's first progress mark: it holds the stage back.
    const START: Self = Self {
        watermark: i64::MIN,
        idle: false,
    };
}

/// Empty state for each global analytic of `plan`.
fn fresh_state(plan: &Plan) -> Vec<Option<Merged>> {
    plan.analytics
        .iter()
        .map(|a| {
            a.global.then(|| Merged {
                acc: Acc {
                    scratch: vec![0; a.layout.width],
                    ..Acc::default()
                },
                ..Merged::default()
            })
        })
        .collect()
}

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

/// The key-windows of one global analytic, by window end.
#[derive(Debug, Default)]
struct Merged {
    windows: BTreeMap<i64, FxHashMap<Box<str>, Entry>>,
    acc: Acc,
    /// Key-windows held in `windows`.
    entries: usize,
    /// Task blocks held in them.
    parts: usize,
}

/// The global stage of a pipeline: see the module documentation.
#[derive(Debug)]
pub struct GlobalStage {
    plan: Plan,
    /// Per analytic of the plan, its key-windows when it is global.
    merged: Vec<Option<Merged>>,
    tasks: Vec<TaskProgress>,
    watermark: i64,
    encoder: Encoder,
    counters: GlobalCounters,
}

impl GlobalStage {
    /// The stage of `plan` (compiled for `tasks` tasks, see `Plan::for_tasks`).
    pub fn new(plan: Plan, tasks: u32) -> Self {
        let merged = fresh_state(&plan);
        Self {
            encoder: Encoder::new(&plan.pipeline),
            counters: GlobalCounters {
                results: vec![0; plan.analytics.len()],
                ..GlobalCounters::default()
            },
            merged,
            plan,
            tasks: vec![TaskProgress::START; tasks as usize],
            watermark: i64::MIN,
        }
    }

    /// The compiled plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What the stage has counted so far.
    pub fn counters(&self) -> &GlobalCounters {
        &self.counters
    }

    /// The stage's watermark: the least watermark of the tasks that are not idle.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Whether every task's input has ended and every window is closed.
    pub fn finished(&self) -> bool {
        self.watermark == i64::MAX
    }

    /// Sets the wall-clock time written as `emitted_at` into results from now on.
    pub fn set_wall_clock(&mut self, now_ms: i64) {
        self.encoder.set_now(now_ms);
    }

    /// The `emitted_at` text in use.
    pub fn now_text(&self) -> &str {
        self.encoder.now_text()
    }

    /// Key-windows held (as `keys` and `windows`), and the bytes of their blocks. Kept as counts,
    /// so it costs nothing per call (the worker publishes it every turn).
    pub fn stats(&self) -> WindowStats {
        let mut stats = WindowStats::default();
        for (a, merged) in self.global() {
            stats.keys += merged.entries;
            stats.windows += merged.entries;
            stats.bytes += merged.parts * (a.layout.width * 8 + 16);
        }
        stats
    }

    fn global(&self) -> impl Iterator<Item = (&AnalyticPlan, &Merged)> {
        self.plan
            .analytics
            .iter()
            .zip(&self.merged)
            .filter_map(|(a, m)| Some((a, m.as_ref()?)))
    }

    /// Processes one record of the partials topic. A record that does not decode, or names an
    /// analytic or task this pipeline does not have, is counted as malformed and skipped.
    pub fn process(&mut self, raw: &[u8], out: &mut Output) {
        match Record::decode(raw) {
            Ok(Record::Partial(partial)) => self.partial(&partial, out),
            Ok(Record::Progress(progress)) => self.progress(progress, out),
            Err(err) => {
                self.counters.malformed += 1;
                tracing::warn!(error = %err, "a record of the partials topic does not decode; skipped");
            }
        }
    }

    fn partial(&mut self, p: &Partial<'_>, out: &mut Output) {
        let Some(a) = self
            .plan
            .analytics
            .iter()
            .position(|a| a.global && a.name == p.analytic)
            .filter(|_| (p.task as usize) < self.tasks.len())
        else {
            self.counters.malformed += 1;
            return;
        };
        let analytic = &self.plan.analytics[a];
        if p.end.saturating_add(analytic.lateness) <= self.watermark {
            self.counters.late += 1;
            return;
        }
        let Some(merged) = self.merged[a].as_mut() else {
            return;
        };
        let layout = &analytic.layout;
        let mut block = vec![0; layout.width].into_boxed_slice();
        let mut r = Reader::new(p.block);
        let read = layout
            .read_block(&mut r, &mut block, &mut merged.acc.distinct)
            .and_then(|()| r.finish());
        if read.is_err() {
            layout.release(&mut block, &mut merged.acc.distinct);
            self.counters.malformed += 1;
            return;
        }
        let entry = match merged.windows.entry(p.end).or_default().entry(p.key.into()) {
            hash_map::Entry::Occupied(held) => held.into_mut(),
            hash_map::Entry::Vacant(new) => {
                merged.entries += 1;
                new.insert(Entry {
                    start: p.start,
                    parts: Vec::new(),
                    fired: None,
                })
            }
        };
        match entry.parts.iter_mut().find(|part| part.task == p.task) {
            Some(part) if part.revision >= p.revision => {
                layout.release(&mut block, &mut merged.acc.distinct);
                self.counters.stale += 1;
                return;
            }
            Some(part) => {
                layout.release(&mut part.block, &mut merged.acc.distinct);
                part.block = block;
                part.revision = p.revision;
            }
            None => {
                merged.parts += 1;
                entry.parts.push(Part {
                    task: p.task,
                    revision: p.revision,
                    block,
                });
            }
        }
        self.counters.merged += 1;
        if p.end <= self.watermark {
            // Closed already (a late update, or a task back from idle): emit it again. A top-N
            // counts a key-window new since its window was ranked from 1 (`top::rank`).
            let previous = entry.fired.flatten();
            let first = u32::from(analytic.top_n.is_some());
            let revision = previous.map_or(first, |r| r + 1);
            let emitted = emit(
                a,
                analytic,
                &mut merged.acc,
                &mut self.encoder,
                &mut self.counters.results,
                p.key,
                p.end,
                entry,
                revision,
                out,
            );
            entry.fired = Some(if emitted { Some(revision) } else { previous });
            if let Some(held) = merged.windows.get(&p.end) {
                emit_top(
                    a,
                    analytic,
                    &mut merged.acc,
                    &mut self.encoder,
                    &mut self.counters.results,
                    p.end,
                    held,
                    out,
                );
            }
        }
    }

    fn progress(&mut self, p: Progress, out: &mut Output) {
        let Some(task) = self.tasks.get_mut(p.task as usize) else {
            self.counters.malformed += 1;
            return;
        };
        task.watermark = task.watermark.max(p.watermark);
        task.idle = p.idle;
        let least = self
            .tasks
            .iter()
            .filter(|t| !t.idle)
            .map(|t| t.watermark)
            .min();
        if let Some(wm) = least.filter(|&wm| wm > self.watermark) {
            self.advance(wm, out);
        }
    }

    /// Emits every key-window whose end the stage's watermark passes on its way to `wm`, then
    /// drops those past the allowed lateness.
    fn advance(&mut self, wm: i64, out: &mut Output) {
        let old = std::mem::replace(&mut self.watermark, wm);
        for (a, merged) in self.merged.iter_mut().enumerate() {
            let Some(merged) = merged else { continue };
            let analytic = &self.plan.analytics[a];
            let Merged {
                windows,
                acc,
                entries,
                parts,
            } = merged;
            for (&end, held) in windows.range_mut((Bound::Excluded(old), Bound::Included(wm))) {
                let mut due: Vec<(&Box<str>, &mut Entry)> =
                    held.iter_mut().filter(|(_, e)| e.fired.is_none()).collect();
                due.sort_unstable_by(|x, y| x.0.cmp(y.0));
                for (key, entry) in due {
                    let emitted = emit(
                        a,
                        analytic,
                        acc,
                        &mut self.encoder,
                        &mut self.counters.results,
                        key,
                        end,
                        entry,
                        0,
                        out,
                    );
                    entry.fired = Some(emitted.then_some(0));
                }
                emit_top(
                    a,
                    analytic,
                    acc,
                    &mut self.encoder,
                    &mut self.counters.results,
                    end,
                    held,
                    out,
                );
            }
            let cut = wm.saturating_sub(analytic.lateness);
            let kept = if cut == i64::MAX {
                BTreeMap::new()
            } else {
                windows.split_off(&(cut + 1))
            };
            for (_, dropped) in std::mem::replace(windows, kept) {
                *entries -= dropped.len();
                for (_, mut entry) in dropped {
                    *parts -= entry.parts.len();
                    for part in &mut entry.parts {
                        analytic.layout.release(&mut part.block, &mut acc.distinct);
                    }
                }
            }
        }
    }

    /// The stage's state as bytes: task progress, the stage's watermark and every key-window
    /// held with each task's block. Small (one block per task and key-window of the global
    /// analytics), so it is taken whole on the stage's thread.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(SNAPSHOT_FORMAT);
        w.i64(self.watermark);
        w.len_prefix(self.tasks.len());
        for t in &self.tasks {
            w.i64(t.watermark);
            w.u8(u8::from(t.idle));
        }
        let global: Vec<_> = self.global().collect();
        w.len_prefix(global.len());
        for (analytic, merged) in global {
            w.str(&analytic.name);
            w.section(|w| write_analytic(analytic, merged, w));
        }
        w.finish()
    }

    /// Loads a [`GlobalStage::snapshot`] into this new stage. Analytics are matched by name:
    /// ones no longer global are dropped, new ones start empty. Fails, leaving the stage
    /// unchanged, on bytes that do not decode or an analytic whose aggregates changed.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let mut merged = fresh_state(&self.plan);
        let mut tasks = vec![TaskProgress::START; self.tasks.len()];
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != SNAPSHOT_FORMAT {
            return Err(RestoreError::Format(u16::from(format)));
        }
        let watermark = r.i64()?;
        for t in 0..r.len_prefix()? {
            let watermark = r.i64()?;
            let idle = r.u8()? != 0;
            // A pipeline with more tasks now starts them from scratch; fewer drops the rest.
            if let Some(task) = tasks.get_mut(t) {
                *task = TaskProgress { watermark, idle };
            }
        }
        for _ in 0..r.len_prefix()? {
            let name = r.str()?;
            let mut section = r.section()?;
            // An analytic that is no longer global (or is gone) is skipped whole.
            let found = self
                .plan
                .analytics
                .iter()
                .zip(&mut merged)
                .find_map(|(a, m)| Some((a, m.as_mut()?)).filter(|(a, _)| a.name == name));
            if let Some((analytic, state)) = found {
                read_analytic(&mut section, analytic, state)?;
                section.finish()?;
            }
        }
        r.finish()?;
        self.merged = merged;
        self.tasks = tasks;
        self.watermark = watermark;
        Ok(())
    }
}

/// Writes one global analytic's key-windows: the layout's signature, then each key-window
/// (end, key, start, fired state) with every task's block.
fn write_analytic(analytic: &AnalyticPlan, merged: &Merged, w: &mut Writer) {
    let signature = analytic.layout.signature();
    w.len_prefix(signature.len());
    for s in signature {
        w.i64(s);
    }
    w.len_prefix(merged.windows.values().map(FxHashMap::len).sum());
    for (&end, entries) in &merged.windows {
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
                analytic
                    .layout
                    .write_block(&part.block, &merged.acc.distinct, w);
            }
        }
    }
}

/// Reads what [`write_analytic`] wrote into `merged`, the state of `analytic`.
fn read_analytic(
    r: &mut Reader<'_>,
    analytic: &AnalyticPlan,
    merged: &mut Merged,
) -> Result<(), RestoreError> {
    let n = r.len_prefix()?;
    let signature = (0..n).map(|_| r.i64()).collect::<Result<Vec<_>, _>>()?;
    if analytic.layout.signature() != signature {
        return Err(RestoreError::Layout(analytic.name.clone()));
    }
    let layout = &analytic.layout;
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
            layout.read_block(r, &mut block, &mut merged.acc.distinct)?;
            entry.parts.push(Part {
                task,
                revision,
                block,
            });
        }
        merged.entries += 1;
        merged.parts += entry.parts.len();
        let held = merged.windows.entry(end).or_default();
        if held.insert(key.into(), entry).is_some() {
            return Err(DecodeError("a key-window appears twice").into());
        }
    }
    Ok(())
}

/// Merges `entry`'s blocks into `acc.values`, finished, if they pass the join requirement;
/// whether they did.
fn finish_entry(analytic: &AnalyticPlan, acc: &mut Acc, entry: &Entry) -> bool {
    let layout = &analytic.layout;
    layout.init(&mut acc.scratch);
    for part in &entry.parts {
        layout.merge(&mut acc.scratch, &part.block, &mut acc.distinct);
    }
    let passes = !analytic
        .require
        .iter()
        .any(|&s| layout.side_count(&acc.scratch, s) == Some(0));
    if passes {
        layout.finish(&acc.scratch, &acc.distinct, &mut acc.values);
    }
    layout.release(&mut acc.scratch, &mut acc.distinct);
    passes
}

/// Emits the top-N result of window `end` of top-N analytic `a` from the key-windows `held`
/// that fired (all of the window's key-windows the stage holds): see `crate::operators::top`.
#[allow(clippy::too_many_arguments)]
fn emit_top(
    a: usize,
    analytic: &AnalyticPlan,
    acc: &mut Acc,
    encoder: &mut Encoder,
    results: &mut [u64],
    end: i64,
    held: &FxHashMap<Box<str>, Entry>,
    out: &mut Output,
) {
    let Some(top) = &analytic.top_n else { return };
    let mut items = Vec::with_capacity(held.len());
    let mut start = None;
    for (key, entry) in held {
        let Some(Some(revision)) = entry.fired else {
            continue;
        };
        if finish_entry(analytic, acc, entry) {
            start = Some(entry.start);
            items.push(Item {
                key: key.to_string(),
                revision,
                value: acc.values[top.rank],
            });
        }
    }
    let Some(start) = start else { return };
    let revision = top::rank(&mut items, top.n);
    results[a] += 1;
    out.results.push(encoder.encode_top(
        a,
        &analytic.name,
        &top.rank_name,
        start,
        end,
        &items,
        revision,
    ));
}

/// Merges `entry`'s blocks and emits the result with `revision` if it passes the join
/// requirement (a top-N's key-windows are ranked by [`emit_top`] instead); whether it passed.
#[allow(clippy::too_many_arguments)]
fn emit(
    a: usize,
    analytic: &AnalyticPlan,
    acc: &mut Acc,
    encoder: &mut Encoder,
    results: &mut [u64],
    key: &str,
    end: i64,
    entry: &Entry,
    revision: u32,
    out: &mut Output,
) -> bool {
    let passes = finish_entry(analytic, acc, entry);
    if passes && analytic.top_n.is_none() {
        results[a] += 1;
        out.results.push(encoder.encode(
            a,
            &analytic.name,
            &analytic.value_names,
            &Emission {
                key,
                start: entry.start,
                end,
                revision,
                values: &acc.values,
                partial: None,
            },
        ));
    }
    passes
}
