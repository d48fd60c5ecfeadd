//! Conversion funnels (`funnel` analytics): per window of entry and breakdown value, how many
//! units (users, or sessions) entered at the first step and reached each later step within the
//! conversion window, with the rates, drop-offs and times to convert.
//!
//! - [`unit`]: the pure rules — which units a user's events make in a window, how far each got.
//! - [`tally`]: counts per window and breakdown value, and the result's values.
//! - [`state`]: the task's state — each user's recent events, evaluated when a window becomes
//!   final (its end plus the conversion window), revised by late events within lateness.
//! - [`merge`]: the global stage's state — the tasks' tallies summed per window and value.
//!
//! A funnel's results are keyed by the breakdown value, not by the user, so over several tasks
//! it always goes through the global stage; the events of a user (and so of its sessions) are
//! in one task because the sources are partitioned by user.

pub mod merge;
pub mod state;
pub mod tally;
#[cfg(test)]
mod tests;
pub mod unit;

use std::sync::Arc;

use tidemark_api::{Attribution, FunnelAnalytic, FunnelOrder, FunnelUnit, WindowKind as SpecKind};

use super::{Compiled, GlobalAnalytic, KindPlan, TaskAnalytic};
use crate::analytics::AnalyticPlan;
use crate::event::Event;
use crate::expr::Expr;
use crate::operators::{
    check_condition, field_of_inputs, inputs_named, PlanError, SourcePlan, PARTITION_KEY,
};
use crate::window::accumulate::Input;
use crate::window::WindowKind;
use unit::{Order, Rules, UnitKind};

/// A compiled funnel: plain data, shared by its task states (which compile the CEL conditions
/// for themselves) and its global-stage state.
#[derive(Debug)]
pub struct FunnelPlan {
    /// How units progress.
    pub rules: Rules,
    /// Step names, in order.
    pub step_names: Vec<String>,
    /// Event types per step (empty: any type).
    step_types: Vec<Vec<String>>,
    /// `when` condition per step, as text.
    step_when: Vec<Option<String>>,
    /// Extra field names per input (for the conditions).
    extra_names: Vec<Arc<[String]>>,
    /// Event types per exclusion.
    exclusion_types: Vec<Vec<String>>,
    /// Breakdown field accessor per input.
    breakdown: Option<Vec<Input>>,
    /// Session field accessor per input.
    session: Option<Vec<Input>>,
    /// Window size, slide and offset, ms.
    pub size: i64,
    /// Distance between window starts (the size for tumbling windows).
    pub slide: i64,
    /// Shift of window starts from the epoch.
    pub offset: i64,
    /// Allowed lateness after a window is final, ms.
    pub lateness: i64,
    /// Every event of the sources is stored, not only those of steps and exclusions: strict
    /// order and sessions by gap look at all of them.
    store_all: bool,
}

impl FunnelPlan {
    /// The end of the newest window containing `t`.
    pub fn last_end(&self, t: i64) -> i64 {
        (t - self.offset).div_euclid(self.slide) * self.slide + self.offset + self.size
    }

    /// The windows `(start, end)` an event at `t` can count in: those containing it (as an
    /// entry) and those whose entries it can follow within the conversion window.
    pub fn windows_touched(&self, t: i64) -> impl Iterator<Item = (i64, i64)> + '_ {
        let reach = t - self.rules.conversion - self.size;
        let first = (reach - self.offset).div_euclid(self.slide) + 1;
        let last = (t - self.offset).div_euclid(self.slide);
        (first..=last).map(move |k| {
            let start = k * self.slide + self.offset;
            (start, start + self.size)
        })
    }

    /// Whether an event at `t` is late past lateness at watermark `wm`: every window it can
    /// count in was dropped.
    pub fn is_late(&self, t: i64, wm: i64) -> bool {
        self.final_at(self.last_end(t))
            .saturating_add(self.lateness)
            <= wm
    }

    /// When the window ending at `end` becomes final.
    pub fn final_at(&self, end: i64) -> i64 {
        end.saturating_add(self.rules.conversion)
    }

    /// The steps (bit k) and exclusions (bit x) `event` of input `input` matches, with the
    /// compiled `when` conditions of that input.
    pub fn classify(
        &self,
        input: usize,
        event: &Event<'_>,
        when: &[Vec<Option<Expr>>],
    ) -> (u16, u16) {
        let typed = |types: &[String]| {
            types.is_empty()
                || event
                    .event_type
                    .as_deref()
                    .is_some_and(|t| types.iter().any(|x| x == t))
        };
        let mut steps = 0u16;
        for (k, types) in self.step_types.iter().enumerate() {
            if typed(types)
                && when[input][k]
                    .as_ref()
                    .is_none_or(|w| w.matches(event).unwrap_or(false))
            {
                steps |= 1 << k;
            }
        }
        let mut excluded = 0u16;
        for (x, types) in self.exclusion_types.iter().enumerate() {
            if event
                .event_type
                .as_deref()
                .is_some_and(|t| types.iter().any(|y| y == t))
            {
                excluded |= 1 << x;
            }
        }
        (steps, excluded)
    }

    /// Whether an event with these masks needs storing.
    pub fn stores(&self, steps: u16, excluded: u16) -> bool {
        self.store_all || steps != 0 || excluded != 0
    }

    /// The breakdown value of `event` of input `input` into `buf` (`all` without a breakdown,
    /// `(none)` when the field is missing).
    pub fn breakdown_value<'b>(
        &self,
        input: usize,
        event: &Event<'_>,
        buf: &'b mut String,
    ) -> &'b str {
        buf.clear();
        match &self.breakdown {
            None => buf.push_str("all"),
            Some(fields) => {
                if !fields[input].read(event).write_key(buf) {
                    buf.push_str("(none)");
                }
            }
        }
        buf
    }

    /// The session id of `event` of input `input`: a stable 64-bit hash of the session field's
    /// value (0 without sessions by field).
    pub fn session_of(&self, input: usize, event: &Event<'_>, buf: &mut String) -> u64 {
        let Some(fields) = &self.session else {
            return 0;
        };
        buf.clear();
        fields[input].read(event).write_key(buf);
        let bytes = buf.as_bytes();
        (u64::from(crc32c::crc32c(bytes)) << 32)
            | u64::from(crc32c::crc32c_append(0x9e37_79b9, bytes))
    }

    /// The `when` conditions compiled for a task state, per input and step.
    pub fn compile_conditions(&self) -> Vec<Vec<Option<Expr>>> {
        self.extra_names
            .iter()
            .map(|names| {
                self.step_when
                    .iter()
                    .map(|w| {
                        w.as_ref().map(|text| {
                            Expr::compile(text, names.clone())
                                .expect("the condition compiled when the plan was compiled")
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// The funnel kind: its plan, shared.
#[derive(Debug)]
struct FunnelKind(Arc<FunnelPlan>);

impl KindPlan for FunnelKind {
    fn kind(&self) -> &'static str {
        "funnel"
    }

    fn task_state(&self, _analytic: &AnalyticPlan, partials: bool) -> Box<dyn TaskAnalytic> {
        Box::new(state::FunnelState::new(self.0.clone(), partials))
    }

    fn global_state(&self, _analytic: &AnalyticPlan) -> Box<dyn GlobalAnalytic> {
        Box::new(merge::FunnelMerge::new(self.0.clone()))
    }

    fn always_global(&self) -> bool {
        true
    }

    fn finality_delay(&self) -> i64 {
        self.0.rules.conversion
    }

    fn window_offset(&self) -> i64 {
        self.0.offset
    }
}

/// Compiles a `funnel` analytic.
pub fn compile(
    spec: &FunnelAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let path = format!("{path}.funnel");
    let reference = |at: String, message: String| PlanError::Reference { path: at, message };
    let inputs = inputs_named(&spec.sources, &path, sources)?;
    if !(2..=16).contains(&spec.steps.len()) {
        return Err(reference(
            format!("{path}.steps"),
            "a funnel has 2 to 16 steps".into(),
        ));
    }
    let step = |name: &str, at: String| {
        spec.steps
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| reference(at, format!("unknown step {name:?}")))
    };
    let mut exclusions = Vec::new();
    for (x, ex) in spec.exclusions.iter().enumerate() {
        let at = format!("{path}.exclusions[{x}].between");
        let [a, b] = ex.between.as_slice() else {
            return Err(reference(at, "names two steps".into()));
        };
        let (a, b) = (step(a, at.clone())?, step(b, at.clone())?);
        if a >= b {
            return Err(reference(
                at,
                "the first step must come before the second".into(),
            ));
        }
        exclusions.push((a, b));
    }
    for (k, s) in spec.steps.iter().enumerate() {
        if let Some(text) = &s.when {
            check_condition(&inputs, text, &format!("{path}.steps[{k}].when"))?;
        }
    }
    let field = |name: &str, at: String| field_of_inputs(&inputs, name, &at);
    let breakdown = match &spec.breakdown {
        Some(b) => Some(field(&b.field, format!("{path}.breakdown.field"))?),
        None => None,
    };
    let (unit, session) = match (spec.unit, &spec.session) {
        (FunnelUnit::User, _) => (UnitKind::User, None),
        (FunnelUnit::Session, Some(s)) => match (&s.field, &s.gap) {
            (Some(f), None) => (
                UnitKind::SessionField,
                Some(field(f, format!("{path}.session.field"))?),
            ),
            (None, Some(gap)) if gap.millis_i64() > 0 => {
                (UnitKind::SessionGap(gap.millis_i64()), None)
            }
            _ => {
                return Err(reference(
                    format!("{path}.session"),
                    "exactly one of field or a positive gap".into(),
                ))
            }
        },
        (FunnelUnit::Session, None) => {
            return Err(reference(
                format!("{path}.session"),
                "a session funnel needs session".into(),
            ))
        }
    };
    let positive = |d: &Option<tidemark_api::Duration>, name: &str| {
        d.as_ref()
            .map(|d| d.millis_i64())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| reference(format!("{path}.window.{name}"), "missing".into()))
    };
    let size = positive(&spec.window.size, "size")?;
    let slide = match spec.window.kind {
        SpecKind::Tumbling => size,
        SpecKind::Sliding => positive(&spec.window.slide, "slide")?,
        SpecKind::Session => {
            return Err(reference(
                format!("{path}.window.type"),
                "a funnel needs tumbling or sliding windows".into(),
            ))
        }
    };
    let offset = spec.window.offset.as_ref().map_or(0, |o| o.millis_i64());
    let order = match spec.order {
        FunnelOrder::Ordered => Order::Ordered,
        FunnelOrder::Strict => Order::Strict,
        FunnelOrder::Any => Order::Any,
    };
    let plan = FunnelPlan {
        rules: Rules {
            steps: spec.steps.len(),
            order,
            conversion: spec.conversion_window.millis_i64(),
            exclusions,
            last_touch: spec
                .breakdown
                .as_ref()
                .is_some_and(|b| b.attribution == Attribution::LastTouch),
            unit,
        },
        step_names: spec.steps.iter().map(|s| s.name.clone()).collect(),
        step_types: spec.steps.iter().map(|s| s.event_types.clone()).collect(),
        step_when: spec.steps.iter().map(|s| s.when.clone()).collect(),
        extra_names: inputs.iter().map(|s| s.extra_names.clone()).collect(),
        exclusion_types: spec
            .exclusions
            .iter()
            .map(|x| x.event_types.clone())
            .collect(),
        breakdown,
        session,
        size,
        slide,
        offset: offset.rem_euclid(slide),
        lateness: spec.allowed_lateness.millis_i64(),
        store_all: order == Order::Strict || matches!(unit, UnitKind::SessionGap(_)),
    };
    Ok(Compiled {
        kind: Arc::new(FunnelKind(Arc::new(plan))),
        inputs: spec.sources.clone(),
        key_by: PARTITION_KEY.to_owned(),
        filter: None,
        window: if slide == size {
            WindowKind::Tumbling { size }
        } else {
            WindowKind::Sliding { size, slide }
        },
        lateness: spec.allowed_lateness.millis_i64(),
    })
}
