//! Analytic kinds behind one seam: what each kind of analytic computes in a task and, over
//! several tasks, in the global stage.
//!
//! A kind is compiled once from its spec into a [`KindPlan`]: a value that knows how to make
//! the kind's per-task state ([`TaskAnalytic`]) and its global-stage state ([`GlobalAnalytic`]).
//! The task (`crate::engine`) and the global stage (`crate::global`) only talk to these two
//! traits; they do not know which kinds exist. Results and partials of every kind leave through
//! one path, [`Emit`].
//!
//! Kinds and their files:
//!
//! | kind | task state | global state |
//! |---|---|---|
//! | `aggregate`, `join` | [`keyed`]: window state of `crate::window` | [`merge`]: accumulator blocks merged per key-window |
//! | `topN` | [`top_n`]: keyed windows, then a ranking per window | [`merge`], then the same ranking |
//! | `funnel` | [`funnel`]: per-user event runs, evaluated when a window is final | [`funnel`]: per-window step counts summed |
//! | `pattern` | [`pattern`]: per-user events, evaluated when a match's time passes | never global (keyed by the user) |
//! | `action` | [`action`]: a pattern's final matches and the users' conversions | [`action`]: decisions per interval, uplift reports |
//! | `segments`, `propensity`, `recommend` | [`model`]: observations of users per epoch | [`model`]: the model, learned per epoch ([`segments`], [`propensity`], [`recommend`]) |
//!
//! A new kind is its api type, one file (or folder) here, and one arm in [`compile`].

pub mod action;
pub mod emit;
pub mod funnel;
pub mod keyed;
pub mod merge;
pub mod model;
pub mod pattern;
pub mod plan;
pub mod propensity;
pub mod recommend;
pub mod segments;
pub mod top_n;

use std::fmt::Debug;
use std::sync::Arc;

use tidemark_api::AnalyticSpec;

pub use emit::Emit;
pub use plan::AnalyticPlan;

use crate::event::Event;
use crate::operators::{PlanError, SourcePlan};
use crate::partials::Partial;
use crate::restore::RestoreError;
use crate::window::codec::{Reader, Writer};
use crate::window::snapshot::WindowsSnapshot;
use crate::window::{Refused, WindowStats};

/// What one analytic kind contributes to a compiled plan: how to build its states, and the
/// rules of the kind that the task and the global stage need without knowing the kind.
pub trait KindPlan: Debug + Send + Sync {
    /// The kind's name as manifests spell it (`aggregate`, `topN`, ...).
    fn kind(&self) -> &'static str;

    /// Fresh per-task state of `analytic` (of this kind). `partials`: the task emits partials
    /// for the global stage instead of results (the analytic is global over several tasks).
    fn task_state(&self, analytic: &AnalyticPlan, partials: bool) -> Box<dyn TaskAnalytic>;

    /// Fresh global-stage state of `analytic`.
    fn global_state(&self, analytic: &AnalyticPlan) -> Box<dyn GlobalAnalytic>;

    /// Whether the analytic needs the global stage over several tasks whatever its key: a
    /// ranking needs every key of a window, a funnel's results are keyed by a breakdown.
    fn always_global(&self) -> bool {
        false
    }

    /// How long after a window's end its result becomes final (a funnel's conversion window):
    /// the global stage must hear of a task's watermark when it passes a window end plus this.
    fn finality_delay(&self) -> i64 {
        0
    }

    /// How far the kind's windows are shifted from the epoch alignment of `window` (ms).
    fn window_offset(&self) -> i64 {
        0
    }

    /// The [`top_n::TopNPlan`] of a ranking kind.
    fn top_n(&self) -> Option<&top_n::TopNPlan> {
        None
    }
}

/// A kind's state in one task: single-threaded, fed one event at a time.
///
/// Order of effects (the oracles assume it): [`TaskAnalytic::add`] sees the event at the
/// watermark before it; the task then moves the watermark and calls [`TaskAnalytic::advance`].
pub trait TaskAnalytic: Debug + Send {
    /// Adds `event` of the analytic's input `input` under `key` at watermark `wm`, emitting what
    /// it makes due (late updates); false means it is late past the allowed lateness.
    fn add(
        &mut self,
        key: &str,
        input: usize,
        event: &Event<'_>,
        wm: i64,
        out: &mut Emit<'_>,
    ) -> bool;

    /// Emits what is due at watermark `wm`.
    fn advance(&mut self, wm: i64, out: &mut Emit<'_>);

    /// A copy of the state, cheap on the task thread, encoded anywhere.
    fn capture(&self) -> Box<dyn AnalyticCapture>;

    /// Loads what the capture encoded into this fresh state.
    fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), Refused>;

    /// Loads state of snapshot format 1 (window kinds only; others refuse).
    fn restore_v1(&mut self, _snapshot: &WindowsSnapshot) -> Result<(), Refused> {
        Err(Refused::Kind)
    }

    /// The state in snapshot format 1, for tests of the format-1 reader.
    #[cfg(test)]
    fn snapshot_v1(&self) -> Option<WindowsSnapshot> {
        None
    }

    /// Sizes of the state.
    fn stats(&self) -> WindowStats;

    /// Decisions made so far by outcome — sent, holdout, cooldown, budget — for an action that
    /// decides in its task (zeros for every other kind).
    fn decisions(&self) -> [u64; 4] {
        [0; 4]
    }

    /// Gauges of a model learned in this task, by measure (empty for every other kind).
    fn model_gauges(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// A [`TaskAnalytic::capture`]: independent of the task, encoded on any thread.
pub trait AnalyticCapture: Debug + Send {
    /// Appends the state; [`TaskAnalytic::restore`] reads it.
    fn encode(&mut self, w: &mut Writer);
}

/// A capture already encoded on the task thread (kinds whose state is cheap to encode there).
#[derive(Debug)]
pub struct Encoded(pub Vec<u8>);

impl AnalyticCapture for Encoded {
    fn encode(&mut self, w: &mut Writer) {
        w.raw(&self.0);
    }
}

/// What became of a partial at the global stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Merged (and emitted again when its window had closed).
    Merged,
    /// At or below the revision already held from its task: a replay.
    Stale,
    /// Of a window already dropped.
    Late,
    /// Its block does not decode.
    Malformed,
}

/// A kind's state in the global stage: the tasks' partials of a global analytic.
pub trait GlobalAnalytic: Debug + Send {
    /// Takes task `p.task`'s partial at stage watermark `wm`, emitting again a window that had
    /// closed.
    fn partial(&mut self, p: &Partial<'_>, wm: i64, out: &mut Emit<'_>) -> Merge;

    /// The stage's watermark moved from `old` to `wm`: emits every window that became final,
    /// drops those past the allowed lateness.
    fn advance(&mut self, old: i64, wm: i64, out: &mut Emit<'_>);

    /// Appends the state for a stage snapshot.
    fn write(&self, w: &mut Writer);

    /// Loads what [`GlobalAnalytic::write`] wrote into this fresh state.
    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), RestoreError>;

    /// Sizes of the state.
    fn stats(&self) -> WindowStats;

    /// Decisions made so far by outcome — sent, holdout, cooldown, budget — for an action
    /// (zeros for every other kind).
    fn decisions(&self) -> [u64; 4] {
        [0; 4]
    }

    /// Gauges of a model learned in the stage, by measure (empty for every other kind).
    fn model_gauges(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// Compiles the kind of `all[a]` (`path`) of pipeline `pipeline`: the one place that lists
/// the kinds. Returns the kind, the names of its input sources and its filter text.
pub fn compile(
    pipeline: &str,
    all: &[AnalyticSpec],
    a: usize,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let spec = &all[a];
    let set = [
        spec.aggregate.is_some(),
        spec.join.is_some(),
        spec.top_n.is_some(),
        spec.funnel.is_some(),
        spec.pattern.is_some(),
        spec.action.is_some(),
        spec.segments.is_some(),
        spec.propensity.is_some(),
        spec.recommend.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(PlanError::Reference {
            path: path.to_owned(),
            message: "exactly one of aggregate, join, topN, funnel, pattern, action, segments, \
                propensity or recommend must be set"
                .into(),
        });
    }
    if let Some(agg) = &spec.aggregate {
        keyed::compile_aggregate(agg, path, sources)
    } else if let Some(join) = &spec.join {
        keyed::compile_join(join, path, sources)
    } else if let Some(top) = &spec.top_n {
        top_n::compile(top, path, sources)
    } else if let Some(f) = &spec.funnel {
        funnel::compile(f, path, sources)
    } else if let Some(p) = &spec.pattern {
        pattern::compile(&spec.name, p, path, sources)
    } else if let Some(s) = &spec.segments {
        segments::compile(s, &format!("{path}.segments"), sources)
    } else if let Some(m) = &spec.propensity {
        propensity::compile(m, &format!("{path}.propensity"), sources)
    } else if let Some(r) = &spec.recommend {
        recommend::compile(r, &format!("{path}.recommend"), sources)
    } else {
        let action = spec.action.as_ref().expect("one kind is set");
        action::compile(pipeline, &spec.name, action, path, all, sources)
    }
}

/// A compiled kind with what every analytic has: inputs, key, window, lateness, filter.
#[derive(Debug)]
pub struct Compiled {
    /// The kind.
    pub kind: Arc<dyn KindPlan>,
    /// Names of the input sources, in input order.
    pub inputs: Vec<String>,
    /// Key field.
    pub key_by: String,
    /// Filter text (CEL), if any, checked against the first input's fields.
    pub filter: Option<(String, String)>,
    /// Window.
    pub window: crate::window::WindowKind,
    /// Allowed lateness, ms.
    pub lateness: i64,
}
