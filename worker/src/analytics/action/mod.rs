//! Marketing actions (`action` analytics): a pattern's final matches become candidates, which
//! are decided per interval of event time — highest score first, with a per-user cooldown, a
//! budget and a holdout group — into action records, and whose conversions afterwards make an
//! uplift report (rules in `docs/actions.md`).
//!
//! - [`task`]: the task's state — the pattern (`crate::analytics::pattern`) evaluated for its
//!   final matches, and the users' conversions, resolved per candidate after the attribution
//!   window.
//! - [`decide`]: the decisions and the uplift tallies, fed candidates and outcomes in any
//!   order; the task runs it itself when it is the only task, the global stage otherwise
//!   ([`merge`]), so every candidate of an interval is decided together.
//! - [`uplift`]: the report's statistics.

pub mod decide;
pub mod merge;
pub mod task;
#[cfg(test)]
mod tests;
pub mod uplift;

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tidemark_api::{ActionAnalytic, AnalyticSpec};

use super::pattern::{compile_plan, PatternPlan};
use super::{Compiled, GlobalAnalytic, KindPlan, TaskAnalytic};
use crate::analytics::AnalyticPlan;
use crate::operators::{input_for, PlanError, SourcePlan, PARTITION_KEY};
use crate::window::accumulate::Input;
use crate::window::WindowKind;

/// A compiled action: plain data, shared by its task states and its global-stage state.
#[derive(Debug)]
pub struct ActionPlan {
    /// The pipeline's name (part of each action id and of the holdout hash).
    pub pipeline: String,
    /// The action analytic's name.
    pub name: String,
    /// The triggering pattern.
    pub pattern: Arc<PatternPlan>,
    /// `coupon`, `discount` or `message`.
    pub kind: &'static str,
    /// Parameter templates, by name.
    pub params: BTreeMap<String, String>,
    /// Reason template.
    pub reason: String,
    /// Validity after the decision, ms.
    pub validity: i64,
    /// Cooldown per user, ms (0: none).
    pub cooldown: i64,
    /// Most actions per budget interval, and the interval, ms.
    pub budget: Option<(u32, i64)>,
    /// Holdout share, 0..1.
    pub holdout: f64,
    /// Captured field that ranks candidates.
    pub score_by: Option<String>,
    /// Decision interval, ms.
    pub every: i64,
    /// Event types that convert.
    pub conversion_types: Vec<String>,
    /// Attribution window after a decision, ms.
    pub attribution: i64,
    /// Revenue field accessor per input.
    pub revenue: Vec<Option<Input>>,
    /// Report window, ms.
    pub report: i64,
    /// Allowed lateness (the pattern's), ms.
    pub lateness: i64,
}

impl ActionPlan {
    /// The end of the decision interval of a candidate at `t`.
    pub fn decision_end(&self, t: i64) -> i64 {
        (t.div_euclid(self.every) + 1) * self.every
    }

    /// The start of the report window of a candidate at `t`.
    pub fn report_start(&self, t: i64) -> i64 {
        t.div_euclid(self.report) * self.report
    }

    /// When the report window starting at `start` is complete: every decision in it made and
    /// every outcome resolved.
    pub fn report_due(&self, start: i64) -> i64 {
        start + self.report + self.attribution + self.lateness
    }

    /// Whether `user` is in the holdout group.
    pub fn in_holdout(&self, user: &str) -> bool {
        in_holdout(&self.pipeline, &self.name, self.holdout, user)
    }

    /// The deterministic id of the action for `user`'s candidate at `t`.
    pub fn action_id(&self, user: &str, t: i64) -> String {
        let digest = Sha256::new()
            .chain_update(self.pipeline.as_bytes())
            .chain_update([0])
            .chain_update(self.name.as_bytes())
            .chain_update([0])
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(t.to_be_bytes())
            .finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether `user` is in the holdout group of action `action` of pipeline `pipeline` with
/// holdout share `share` (0..1): a SHA-256 of the three, read as a number, below the share of
/// its range. The same user is always in the same group.
pub fn in_holdout(pipeline: &str, action: &str, share: f64, user: &str) -> bool {
    if share <= 0.0 {
        return false;
    }
    let digest = Sha256::new()
        .chain_update(pipeline.as_bytes())
        .chain_update([0])
        .chain_update(action.as_bytes())
        .chain_update(b"\0holdout\0")
        .chain_update(user.as_bytes())
        .finalize();
    let x = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (x as f64) < share * 18_446_744_073_709_551_616.0
}

/// The action kind: its plan, shared.
#[derive(Debug)]
struct ActionKind(Arc<ActionPlan>);

impl KindPlan for ActionKind {
    fn kind(&self) -> &'static str {
        "action"
    }

    fn task_state(&self, _analytic: &AnalyticPlan, partials: bool) -> Box<dyn TaskAnalytic> {
        Box::new(task::ActionState::new(self.0.clone(), partials))
    }

    fn global_state(&self, _analytic: &AnalyticPlan) -> Box<dyn GlobalAnalytic> {
        Box::new(merge::ActionMerge::new(self.0.clone()))
    }

    fn always_global(&self) -> bool {
        true
    }
}

/// Compiles an `action` analytic named `name` of pipeline `pipeline`; `all` are the
/// pipeline's analytics (the trigger is one of them).
pub fn compile(
    pipeline: &str,
    name: &str,
    spec: &ActionAnalytic,
    path: &str,
    all: &[AnalyticSpec],
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let path = format!("{path}.action");
    let reference = |at: String, message: String| PlanError::Reference { path: at, message };
    let (index, trigger) = all
        .iter()
        .enumerate()
        .find_map(|(i, a)| (a.name == spec.trigger).then_some((i, a.pattern.as_ref()?)))
        .ok_or_else(|| {
            reference(
                format!("{path}.trigger"),
                format!("no pattern analytic named {:?}", spec.trigger),
            )
        })?;
    let pattern = compile_plan(
        &spec.trigger,
        trigger,
        &format!("spec.analytics[{index}].pattern"),
        sources,
    )?;
    let every = spec
        .decide_every
        .as_ref()
        .map_or(60_000, |d| d.millis_i64());
    let multiple = |ms: i64, at: &str| {
        if ms <= 0 || every <= 0 || ms % every != 0 {
            Err(reference(
                format!("{path}.{at}"),
                "must be a positive multiple of decideEvery".into(),
            ))
        } else {
            Ok(ms)
        }
    };
    let budget = match &spec.budget {
        Some(b) => Some((b.max_actions, multiple(b.per.millis_i64(), "budget.per")?)),
        None => None,
    };
    let report = multiple(
        spec.report_window
            .as_ref()
            .map_or(3_600_000, |d| d.millis_i64()),
        "reportWindow",
    )?;
    if let Some(score) = &spec.score_by {
        if !pattern.capture.iter().any(|(n, _)| n == score) {
            return Err(reference(
                format!("{path}.scoreBy"),
                format!("{score:?} is not a captured field of the pattern"),
            ));
        }
    }
    let revenue_field = spec.conversion.revenue.as_deref().unwrap_or("price");
    let revenue = trigger
        .sources
        .iter()
        .map(|s| {
            let source = sources.iter().find(|p| &p.name == s);
            source.and_then(|p| input_for(revenue_field, &p.extra_names))
        })
        .collect();
    let lateness = pattern.lateness;
    let plan = ActionPlan {
        pipeline: pipeline.to_owned(),
        name: name.to_owned(),
        pattern: Arc::new(pattern),
        kind: spec.action.as_str(),
        params: spec.params.clone(),
        reason: spec.reason.clone().unwrap_or_else(|| spec.trigger.clone()),
        validity: spec.validity.millis_i64(),
        cooldown: spec.cooldown.as_ref().map_or(0, |c| c.millis_i64()),
        budget,
        holdout: (spec.holdout_percent / 100.0).clamp(0.0, 0.9),
        score_by: spec.score_by.clone(),
        every,
        conversion_types: spec.conversion.event_types.clone(),
        attribution: spec.conversion.within.millis_i64().max(1),
        revenue,
        report,
        lateness,
    };
    Ok(Compiled {
        kind: Arc::new(ActionKind(Arc::new(plan))),
        inputs: trigger.sources.clone(),
        key_by: PARTITION_KEY.to_owned(),
        filter: None,
        window: WindowKind::Tumbling { size: every },
        lateness,
    })
}
