//! Decisions of an action and its uplift tallies: fed candidates (final matches) and outcomes
//! (conversions after a candidate, known once its attribution window has passed) in any order,
//! and the watermark of every task that feeds it.
//!
//! A decision interval `[s, e)` is decided once the watermark reaches `e` plus the allowed
//! lateness: its candidates are taken by score (highest first), then user, then time; each is
//! refused by the cooldown (a decision for the user less than `cooldown` away), else by the
//! budget (the budget interval's count reached; holdouts count too, so both groups are drawn
//! from the same ranked candidates), else it is `holdout` when the user's keyed hash says so,
//! else `sent`. A report window is emitted once every decision in it is made and every
//! outcome resolved. Replays (a task restored from a checkpoint sends again) are recognised
//! and ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::uplift::Tally;
use super::ActionPlan;
use crate::analytics::{Emit, Merge};
use crate::window::codec::{DecodeError, Reader, Writer};

/// A final match of the pattern: a candidate for the action.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The user.
    pub user: Box<str>,
    /// The match's time: the decision's time.
    pub time: i64,
    /// The pattern's completion time.
    pub completion: i64,
    /// Its score (the `scoreBy` field; 0 without).
    pub score: f64,
    /// The captured fields (a JSON object).
    pub captured: Option<Box<str>>,
}

/// What a candidate's user did within the attribution window after it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Converted.
    pub converted: bool,
    /// Revenue.
    pub revenue: f64,
}

/// What became of a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// The action was sent.
    Sent,
    /// Kept back as a control.
    Holdout,
    /// Refused: a decision for the user less than the cooldown away.
    Cooldown,
    /// Refused: the budget interval was used up.
    Budget,
}

impl Group {
    /// The outcome's name in records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Sent => "sent",
            Group::Holdout => "holdout",
            Group::Cooldown => "cooldown",
            Group::Budget => "budget",
        }
    }

    fn from_u8(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            0 => Group::Sent,
            1 => Group::Holdout,
            2 => Group::Cooldown,
            3 => Group::Budget,
            _ => return Err(DecodeError("an unknown decision")),
        })
    }
}

/// One report window: its tally, the decided candidates awaiting an outcome, and the outcomes
/// awaiting a decision.
#[derive(Debug, Default)]
struct Report {
    tally: Tally,
    decided: BTreeMap<(Box<str>, i64), Group>,
    outcomes: BTreeMap<(Box<str>, i64), Outcome>,
}

/// The decisions and tallies of one action.
#[derive(Debug)]
pub struct Decider {
    plan: Arc<ActionPlan>,
    /// Every interval whose end plus lateness is at or below this is decided.
    decided_through: i64,
    /// Candidates by decision-interval end, by user and time.
    pending: BTreeMap<i64, BTreeMap<(Box<str>, i64), Candidate>>,
    /// Each user's decisions (sent or holdout) within the cooldown.
    recent: FxHashMap<Box<str>, Vec<i64>>,
    /// Decisions counted per budget interval start.
    used: BTreeMap<i64, u32>,
    /// Report windows by start.
    reports: BTreeMap<i64, Report>,
    /// Every report window due at or below this was emitted.
    reported_through: i64,
    /// Decisions made, by group (for metrics).
    pub counts: [u64; 4],
}

impl Decider {
    /// Empty decisions of `plan`.
    pub fn new(plan: Arc<ActionPlan>) -> Self {
        Self {
            plan,
            decided_through: i64::MIN,
            pending: BTreeMap::new(),
            recent: FxHashMap::default(),
            used: BTreeMap::new(),
            reports: BTreeMap::new(),
            reported_through: i64::MIN,
            counts: [0; 4],
        }
    }

    /// Takes a candidate.
    pub fn candidate(&mut self, c: Candidate) -> Merge {
        let end = self.plan.decision_end(c.time);
        if end.saturating_add(self.plan.lateness) <= self.decided_through {
            return Merge::Stale;
        }
        let window = self.pending.entry(end).or_default();
        match window.entry((c.user.clone(), c.time)) {
            std::collections::btree_map::Entry::Occupied(_) => Merge::Stale,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(c);
                Merge::Merged
            }
        }
    }

    /// Takes the outcome of `user`'s candidate at `time`.
    pub fn outcome(&mut self, user: &str, time: i64, outcome: Outcome) -> Merge {
        let start = self.plan.report_start(time);
        if self.plan.report_due(start) <= self.reported_through {
            return Merge::Stale;
        }
        let report = self.reports.entry(start).or_default();
        let key = (Box::<str>::from(user), time);
        match report.decided.remove(&key) {
            Some(group) => {
                count_outcome(&mut report.tally, group, outcome);
                Merge::Merged
            }
            None if report.outcomes.contains_key(&key) => Merge::Stale,
            None => {
                report.outcomes.insert(key, outcome);
                Merge::Merged
            }
        }
    }

    /// Decides every interval complete at watermark `wm`, emits the action records, then every
    /// report window complete.
    pub fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        let lateness = self.plan.lateness;
        let mut decided = false;
        while let Some((&end, _)) = self.pending.first_key_value() {
            if end.saturating_add(lateness) > wm {
                break;
            }
            let (_, window) = self.pending.pop_first().expect("a first interval");
            self.decide(window.into_values().collect(), out);
            decided = true;
        }
        self.decided_through = self.decided_through.max(wm);
        let plan = self.plan.clone();
        while let Some((&start, _)) = self.reports.first_key_value() {
            if plan.report_due(start) > wm {
                break;
            }
            let (_, report) = self.reports.pop_first().expect("a first report");
            out.result_with(None, start, start + plan.report, 0, |v| {
                report.tally.write_values(v)
            });
        }
        self.reported_through = self.reported_through.max(wm);
        if !decided {
            return;
        }
        // Forget what no decision can look at again.
        let horizon = wm
            .saturating_sub(lateness)
            .saturating_sub(plan.every)
            .saturating_sub(plan.cooldown);
        self.recent.retain(|_, times| {
            times.retain(|t| *t >= horizon);
            !times.is_empty()
        });
        if let Some((_, per)) = plan.budget {
            let first = wm.saturating_sub(lateness).saturating_sub(per);
            self.used = self
                .used
                .split_off(&first.div_euclid(per).saturating_mul(per));
        }
    }

    /// Decides the candidates of one interval.
    fn decide(&mut self, mut candidates: Vec<Candidate>, out: &mut Emit<'_>) {
        let plan = self.plan.clone();
        candidates.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.user.cmp(&b.user))
                .then(a.time.cmp(&b.time))
        });
        for c in candidates {
            let times = self.recent.get(&c.user);
            let cooled = plan.cooldown > 0
                && times.is_some_and(|ts| ts.iter().any(|t| (c.time - t).abs() < plan.cooldown));
            let group = if cooled {
                Group::Cooldown
            } else {
                let over = plan.budget.is_some_and(|(max, per)| {
                    let used = self.used.entry(c.time.div_euclid(per) * per).or_insert(0);
                    if *used >= max {
                        true
                    } else {
                        *used += 1;
                        false
                    }
                });
                if over {
                    Group::Budget
                } else {
                    self.recent.entry(c.user.clone()).or_default().push(c.time);
                    if plan.in_holdout(&c.user) {
                        Group::Holdout
                    } else {
                        Group::Sent
                    }
                }
            };
            self.counts[group as usize] += 1;
            if matches!(group, Group::Sent | Group::Holdout) {
                super::task::write_record(&plan, &c, group, out);
            }
            let report = self.reports.entry(plan.report_start(c.time)).or_default();
            report.tally.candidates += 1;
            match group {
                Group::Sent => report.tally.sent += 1,
                Group::Holdout => report.tally.holdout += 1,
                Group::Cooldown => report.tally.cooldown += 1,
                Group::Budget => report.tally.budget += 1,
            }
            let key = (c.user, c.time);
            match report.outcomes.remove(&key) {
                Some(outcome) => count_outcome(&mut report.tally, group, outcome),
                None => {
                    report.decided.insert(key, group);
                }
            }
        }
    }

    /// Candidates waiting for a decision and report windows open.
    pub fn sizes(&self) -> (usize, usize) {
        let waiting = self.pending.values().map(BTreeMap::len).sum::<usize>()
            + self
                .reports
                .values()
                .map(|r| r.decided.len() + r.outcomes.len())
                .sum::<usize>();
        (waiting, self.reports.len())
    }

    /// Appends the state; equal states encode equally.
    pub fn write(&self, w: &mut Writer) {
        w.i64(self.decided_through);
        w.i64(self.reported_through);
        for n in self.counts {
            w.u64(n);
        }
        w.len_prefix(self.pending.len());
        for (end, window) in &self.pending {
            w.i64(*end);
            w.len_prefix(window.len());
            for c in window.values() {
                w.str(&c.user);
                w.i64(c.time);
                w.i64(c.completion);
                w.u64(c.score.to_bits());
                crate::analytics::pattern::state::write_opt(w, c.captured.as_deref());
            }
        }
        let recent: BTreeSet<(&Box<str>, &Vec<i64>)> = self.recent.iter().collect();
        w.len_prefix(recent.len());
        for (user, times) in recent {
            w.str(user);
            w.len_prefix(times.len());
            for t in times {
                w.i64(*t);
            }
        }
        w.len_prefix(self.used.len());
        for (start, n) in &self.used {
            w.i64(*start);
            w.u64(u64::from(*n));
        }
        w.len_prefix(self.reports.len());
        for (start, report) in &self.reports {
            w.i64(*start);
            report.tally.write(w);
            w.len_prefix(report.decided.len());
            for ((user, t), group) in &report.decided {
                w.str(user);
                w.i64(*t);
                w.u8(*group as u8);
            }
            w.len_prefix(report.outcomes.len());
            for ((user, t), o) in &report.outcomes {
                w.str(user);
                w.i64(*t);
                w.u8(u8::from(o.converted));
                w.u64(o.revenue.to_bits());
            }
        }
    }

    /// Reads what [`Decider::write`] wrote into this fresh state.
    pub fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.decided_through = r.i64()?;
        self.reported_through = r.i64()?;
        for n in &mut self.counts {
            *n = r.u64()?;
        }
        for _ in 0..r.len_prefix()? {
            let end = r.i64()?;
            let window = self.pending.entry(end).or_default();
            for _ in 0..r.len_prefix()? {
                let user: Box<str> = r.str()?.into();
                let time = r.i64()?;
                let c = Candidate {
                    user: user.clone(),
                    time,
                    completion: r.i64()?,
                    score: f64::from_bits(r.u64()?),
                    captured: crate::analytics::pattern::state::read_opt(r)?,
                };
                window.insert((user, time), c);
            }
        }
        for _ in 0..r.len_prefix()? {
            let user: Box<str> = r.str()?.into();
            let times = (0..r.len_prefix()?)
                .map(|_| r.i64())
                .collect::<Result<_, _>>()?;
            self.recent.insert(user, times);
        }
        for _ in 0..r.len_prefix()? {
            let start = r.i64()?;
            let n = u32::try_from(r.u64()?).map_err(|_| DecodeError("a count beyond u32"))?;
            self.used.insert(start, n);
        }
        for _ in 0..r.len_prefix()? {
            let start = r.i64()?;
            let mut report = Report {
                tally: Tally::read(r)?,
                ..Report::default()
            };
            for _ in 0..r.len_prefix()? {
                let user: Box<str> = r.str()?.into();
                let t = r.i64()?;
                report.decided.insert((user, t), Group::from_u8(r.u8()?)?);
            }
            for _ in 0..r.len_prefix()? {
                let user: Box<str> = r.str()?.into();
                let t = r.i64()?;
                let converted = r.u8()? != 0;
                let revenue = f64::from_bits(r.u64()?);
                report
                    .outcomes
                    .insert((user, t), Outcome { converted, revenue });
            }
            self.reports.insert(start, report);
        }
        Ok(())
    }
}

/// Counts `outcome` of a candidate decided `group`.
fn count_outcome(tally: &mut Tally, group: Group, outcome: Outcome) {
    match group {
        Group::Sent if outcome.converted => {
            tally.converted_sent += 1;
            tally.revenue_sent += outcome.revenue;
        }
        Group::Sent => tally.revenue_sent += outcome.revenue,
        Group::Holdout if outcome.converted => {
            tally.converted_holdout += 1;
            tally.revenue_holdout += outcome.revenue;
        }
        Group::Holdout => tally.revenue_holdout += outcome.revenue,
        Group::Cooldown | Group::Budget => {}
    }
}
