//! A funnel's state in the global stage: each task's newest tally per window and breakdown
//! value, summed and emitted when every task's watermark has passed the window's end plus the
//! conversion window; a task's later tally (a late event within lateness) replaces its earlier
//! one and, once the window was emitted, emits it again with the next revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::tally::Tally;
use super::FunnelPlan;
use crate::analytics::{Emit, GlobalAnalytic, Merge};
use crate::partials::Partial;
use crate::restore::RestoreError;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// One breakdown value of a window: each task's newest tally, and the last revision emitted.
#[derive(Debug, Default)]
struct Value {
    parts: Vec<(u32, u32, Tally)>,
    fired: Option<u32>,
}

/// A window's values by name.
#[derive(Debug, Default)]
struct Window {
    start: i64,
    values: BTreeMap<Box<str>, Value>,
}

/// A funnel's global-stage state.
#[derive(Debug)]
pub struct FunnelMerge {
    plan: Arc<FunnelPlan>,
    windows: BTreeMap<i64, Window>,
    parts: usize,
}

impl FunnelMerge {
    /// Empty state of `plan`.
    pub fn new(plan: Arc<FunnelPlan>) -> Self {
        Self {
            plan,
            windows: BTreeMap::new(),
            parts: 0,
        }
    }
}

/// Emits `value` of window `[start, end)` as the sum of its tasks' tallies with `revision`.
fn emit(
    plan: &FunnelPlan,
    out: &mut Emit<'_>,
    key: &str,
    start: i64,
    end: i64,
    value: &Value,
    revision: u32,
) {
    let mut sum = Tally::new(plan.rules.steps);
    for (_, _, tally) in &value.parts {
        sum.merge(tally);
    }
    out.result_with(Some(key), start, end, revision, |v| {
        sum.write_values(&plan.step_names, v)
    });
}

impl GlobalAnalytic for FunnelMerge {
    fn partial(&mut self, p: &Partial<'_>, wm: i64, out: &mut Emit<'_>) -> Merge {
        let done = self.plan.final_at(p.end);
        if done.saturating_add(self.plan.lateness) <= wm {
            return Merge::Late;
        }
        let mut r = Reader::new(p.block);
        let Ok(tally) = Tally::read(&mut r, self.plan.rules.steps) else {
            return Merge::Malformed;
        };
        if r.finish().is_err() {
            return Merge::Malformed;
        }
        let window = self.windows.entry(p.end).or_insert_with(|| Window {
            start: p.start,
            ..Window::default()
        });
        let value = window.values.entry(p.key.into()).or_default();
        match value.parts.iter_mut().find(|(task, _, _)| *task == p.task) {
            Some((_, revision, _)) if *revision >= p.revision => return Merge::Stale,
            Some(part) => *part = (p.task, p.revision, tally),
            None => {
                self.parts += 1;
                value.parts.push((p.task, p.revision, tally));
            }
        }
        if done <= wm {
            let revision = value.fired.map_or(0, |r| r + 1);
            value.fired = Some(revision);
            emit(&self.plan, out, p.key, window.start, p.end, value, revision);
        }
        Merge::Merged
    }

    fn advance(&mut self, old: i64, wm: i64, out: &mut Emit<'_>) {
        let plan = &self.plan;
        for (&end, window) in &mut self.windows {
            let done = plan.final_at(end);
            if done <= old {
                continue;
            }
            if done > wm {
                break;
            }
            for (key, value) in &mut window.values {
                if value.fired.is_none() {
                    value.fired = Some(0);
                    emit(plan, out, key, window.start, end, value, 0);
                }
            }
        }
        let parts = &mut self.parts;
        self.windows.retain(|&end, window| {
            let keep = plan.final_at(end).saturating_add(plan.lateness) > wm;
            if !keep {
                *parts -= window.values.values().map(|v| v.parts.len()).sum::<usize>();
            }
            keep
        });
    }

    fn write(&self, w: &mut Writer) {
        w.len_prefix(self.windows.len());
        for (end, window) in &self.windows {
            w.i64(*end);
            w.i64(window.start);
            w.len_prefix(window.values.len());
            for (key, value) in &window.values {
                w.str(key);
                match value.fired {
                    None => w.u8(0),
                    Some(r) => {
                        w.u8(1);
                        w.u64(u64::from(r));
                    }
                }
                w.len_prefix(value.parts.len());
                for (task, revision, tally) in &value.parts {
                    w.u64(u64::from(*task));
                    w.u64(u64::from(*revision));
                    tally.write(w);
                }
            }
        }
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), RestoreError> {
        let steps = self.plan.rules.steps;
        let narrow = |v: u64| u32::try_from(v).map_err(|_| DecodeError("a number beyond u32"));
        for _ in 0..r.len_prefix()? {
            let end = r.i64()?;
            let mut window = Window {
                start: r.i64()?,
                ..Window::default()
            };
            for _ in 0..r.len_prefix()? {
                let key: Box<str> = r.str()?.into();
                let fired = match r.u8()? {
                    0 => None,
                    1 => Some(narrow(r.u64()?)?),
                    _ => return Err(DecodeError("an unknown fired state").into()),
                };
                let mut value = Value {
                    parts: Vec::new(),
                    fired,
                };
                for _ in 0..r.len_prefix()? {
                    let task = narrow(r.u64()?)?;
                    let revision = narrow(r.u64()?)?;
                    value.parts.push((task, revision, Tally::read(r, steps)?));
                }
                self.parts += value.parts.len();
                window.values.insert(key, value);
            }
            self.windows.insert(end, window);
        }
        Ok(())
    }

    fn stats(&self) -> WindowStats {
        let values: usize = self.windows.values().map(|w| w.values.len()).sum();
        WindowStats {
            keys: values,
            windows: self.windows.len(),
            bytes: self.parts * (16 + 24 * self.plan.rules.steps),
        }
    }
}
