//! The global stage (docs/design.md, execution model): results of analytics keyed by something other than the key
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

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod top_tests;

pub use crate::partials::{Partial, Progress, Record};

use crate::analytics::{Emit, GlobalAnalytic, Merge};
use crate::plan::Plan;
use crate::restore::RestoreError;
use crate::result::{Encoder, Output};
use crate::window::codec::{Reader, Writer};
use crate::window::WindowStats;

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

/// Empty state for each global analytic of `plan`, made by its kind (`crate::analytics`).
fn fresh_state(plan: &Plan) -> Vec<Option<Box<dyn GlobalAnalytic>>> {
    plan.analytics
        .iter()
        .map(|a| a.global.then(|| a.kind.global_state(a)))
        .collect()
}

/// The global stage of a pipeline: see the module documentation.
#[derive(Debug)]
pub struct GlobalStage {
    plan: Plan,
    /// Per analytic of the plan, its kind's stage state when it is global.
    merged: Vec<Option<Box<dyn GlobalAnalytic>>>,
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
        for merged in self.merged.iter().flatten() {
            let s = merged.stats();
            stats.keys += s.keys;
            stats.windows += s.windows;
            stats.bytes += s.bytes;
        }
        stats
    }

    /// Decisions of each analytic by outcome (global actions; zeros for the rest).
    pub fn decisions(&self) -> Vec<[u64; 4]> {
        self.merged
            .iter()
            .map(|m| m.as_ref().map_or([0; 4], |m| m.decisions()))
            .collect()
    }

    /// Gauges of each analytic's model by measure (models learned in the stage; empty for
    /// the rest).
    pub fn model_gauges(&self) -> Vec<Vec<(String, f64)>> {
        self.merged
            .iter()
            .map(|m| m.as_ref().map(|m| m.model_gauges()).unwrap_or_default())
            .collect()
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
        let Some(merged) = self.merged[a].as_mut() else {
            return;
        };
        let mut unused = 0;
        let name = &self.plan.analytics[a].name;
        let mut emit = stage_emit(
            a,
            name,
            &mut self.encoder,
            &mut self.counters,
            &mut unused,
            out,
        );
        match merged.partial(p, self.watermark, &mut emit) {
            Merge::Merged => self.counters.merged += 1,
            Merge::Stale => self.counters.stale += 1,
            Merge::Late => self.counters.late += 1,
            Merge::Malformed => self.counters.malformed += 1,
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

    /// Emits every window that the stage's watermark makes final on its way to `wm`, then
    /// drops those past the allowed lateness.
    fn advance(&mut self, wm: i64, out: &mut Output) {
        let old = std::mem::replace(&mut self.watermark, wm);
        for (a, merged) in self.merged.iter_mut().enumerate() {
            let Some(merged) = merged else { continue };
            let mut unused = 0;
            let name = &self.plan.analytics[a].name;
            let mut emit = stage_emit(
                a,
                name,
                &mut self.encoder,
                &mut self.counters,
                &mut unused,
                out,
            );
            merged.advance(old, wm, &mut emit);
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
        let global: Vec<_> = self
            .plan
            .analytics
            .iter()
            .zip(&self.merged)
            .filter_map(|(a, m)| Some((a, m.as_ref()?)))
            .collect();
        w.len_prefix(global.len());
        for (analytic, merged) in global {
            w.str(&analytic.name);
            w.section(|w| merged.write(w));
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
                state.read(&mut section).map_err(|err| match err {
                    RestoreError::Layout(_) => RestoreError::Layout(analytic.name.clone()),
                    other => other,
                })?;
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

/// Where the stage emits analytic `a`'s results (a stage emits no partials: `unused` counts
/// none).
fn stage_emit<'a>(
    a: usize,
    name: &'a str,
    encoder: &'a mut Encoder,
    counters: &'a mut GlobalCounters,
    unused: &'a mut u64,
    out: &'a mut Output,
) -> Emit<'a> {
    Emit {
        analytic: a,
        name,
        task: GLOBAL_STAGE,
        encoder,
        results: &mut counters.results[a],
        partials: unused,
        out,
    }
}
