//! Purchase propensity (`propensity` analytics): online logistic regression (FTRL-proximal)
//! on a polynomial expansion of per-user features, predicting "a purchase within `horizon`"
//! at decision points, learned per model epoch (`crate::analytics::model`; rules in
//! `docs/propensity.md`).
//!
//! - this file: the plan (features, polynomial terms, FTRL parameters) and the task side —
//!   at each epoch end `E`, every user active in `[E - epoch, E)` is a **decision** (tag 0,
//!   epoch `E`: the features of the trailing window at `E`); the decision's features are kept
//!   until every event before `E + horizon` has arrived, then they become a **labelled
//!   example** (tag 1, epoch: the first epoch end at or after `E + horizon`; label: a
//!   purchase in `[E, E + horizon)`);
//! - [`ftrl`]: the learner — per epoch, test-then-train on the labelled examples, then a score
//!   per decision with the updated model, then the model version with its quality figures.

pub mod ftrl;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tidemark_api::PropensityAnalytic;

use super::model::features::{Aggregates, Features};
use super::model::{
    compiled, read_f64s, write_f64s, Learner, ModelKind, ModelPlan, Observation, Observer,
};
use super::Compiled;
use crate::event::Event;
use crate::operators::{PlanError, SourcePlan};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// Default trailing window of the aggregates: 24 hours.
pub const DEFAULT_WINDOW: i64 = 86_400_000;
/// Default degree of the polynomial expansion.
pub const DEFAULT_DEGREE: u32 = 2;
/// Default FTRL learning rate (alpha).
pub const DEFAULT_LEARNING_RATE: f64 = 0.1;
/// Default L2 regularisation.
pub const DEFAULT_L2: f64 = 1.0;
/// FTRL beta (the per-coordinate learning rate's smoothing).
pub const BETA: f64 = 1.0;
/// FTRL L1 regularisation.
pub const L1: f64 = 0.0;

/// Tag of a decision observation.
pub const DECISION: u8 = 0;
/// Tag of a labelled example observation.
pub const EXAMPLE: u8 = 1;

/// A compiled `propensity` analytic.
#[derive(Debug)]
pub struct PropensityPlan {
    /// Epochs and inputs.
    pub model: ModelPlan,
    /// The label's horizon after a decision point, ms.
    pub horizon: i64,
    /// Trailing window of the aggregates, ms (at least one epoch).
    pub window: i64,
    /// The features.
    pub features: Features,
    /// The polynomial terms: each a sorted multiset of feature indices (the bias is `[]`).
    pub terms: Vec<Vec<usize>>,
    /// The terms' names in results: `bias`, or the features' names joined by `*`.
    pub term_names: Vec<String>,
    /// FTRL learning rate alpha.
    pub alpha: f64,
    /// FTRL beta.
    pub beta: f64,
    /// FTRL L1 regularisation.
    pub l1: f64,
    /// FTRL L2 regularisation.
    pub l2: f64,
}

/// The bias, then every monomial of `d` features of degree 1 to `degree`, by degree, then
/// lexicographically (`[0], [1], [0,0], [0,1], [1,1]` for two features of degree 2).
pub fn terms(d: usize, degree: usize) -> Vec<Vec<usize>> {
    let mut all = vec![Vec::new()];
    let mut last: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..degree {
        let mut next = Vec::new();
        for t in &last {
            let from = t.last().copied().unwrap_or(0);
            for j in from..d {
                let mut u = t.clone();
                u.push(j);
                next.push(u);
            }
        }
        all.extend(next.iter().cloned());
        last = next;
    }
    all
}

/// Compiles the plan of a `propensity` analytic at `path`; returns it with its input names.
pub fn plan(
    spec: &PropensityAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<(PropensityPlan, Vec<String>), PlanError> {
    let (model, inputs) = ModelPlan::compile(&spec.input, path, sources)?;
    let features = Features::compile(&spec.features, &["views", "carts", "purchases"], true, path)?;
    let reference = |at: &str, message: &str| PlanError::Reference {
        path: format!("{path}.{at}"),
        message: message.into(),
    };
    let horizon = spec.horizon.millis_i64();
    if horizon <= 0 {
        return Err(reference("horizon", "must be positive"));
    }
    let degree = spec.degree.unwrap_or(DEFAULT_DEGREE);
    if !(1..=3).contains(&degree) {
        return Err(reference("degree", "must be 1 to 3"));
    }
    let alpha = spec.learning_rate.unwrap_or(DEFAULT_LEARNING_RATE);
    if !(alpha > 0.0 && alpha.is_finite()) {
        return Err(reference("learningRate", "must be positive"));
    }
    let l2 = spec.l2.unwrap_or(DEFAULT_L2);
    if !(l2 >= 0.0 && l2.is_finite()) {
        return Err(reference("l2", "must not be negative"));
    }
    let terms = terms(features.names.len(), degree as usize);
    let term_names = terms
        .iter()
        .map(|t| match t.is_empty() {
            true => "bias".to_owned(),
            false => t
                .iter()
                .map(|j| features.names[*j].as_str())
                .collect::<Vec<_>>()
                .join("*"),
        })
        .collect();
    let window = spec
        .window
        .as_ref()
        .map_or(DEFAULT_WINDOW, |w| w.millis_i64())
        .max(model.epoch);
    let plan = PropensityPlan {
        horizon,
        window,
        features,
        terms,
        term_names,
        alpha,
        beta: BETA,
        l1: L1,
        l2,
        model,
    };
    Ok((plan, inputs))
}

/// Compiles a `propensity` analytic at `path`.
pub fn compile(
    spec: &PropensityAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let (plan, inputs) = plan(spec, path, sources)?;
    Ok(compiled(
        "propensity",
        Arc::new(Propensity(Arc::new(plan))),
        inputs,
    ))
}

/// The propensity kind: its plan, shared by the observers and learners it makes.
#[derive(Debug)]
pub struct Propensity(pub Arc<PropensityPlan>);

impl ModelKind for Propensity {
    fn observer(&self) -> Box<dyn Observer> {
        Box::new(PropensityObserver::new(self.0.clone()))
    }

    fn learner(&self) -> Box<dyn Learner> {
        Box::new(ftrl::Ftrl::new(self.0.clone()))
    }

    fn model(&self) -> &ModelPlan {
        &self.0.model
    }
}

/// Encodes a decision's payload: its features.
pub fn decision_payload(x: &[f64]) -> Vec<u8> {
    let mut w = Writer::default();
    write_f64s(&mut w, x);
    w.finish()
}

/// Encodes a labelled example's payload: the label (0 or 1), then the features.
pub fn example_payload(label: bool, x: &[f64]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(u8::from(label));
    write_f64s(&mut w, x);
    w.finish()
}

/// Decodes a labelled example's payload.
pub fn read_example(payload: &[u8]) -> Result<(bool, Vec<f64>), DecodeError> {
    let mut r = Reader::new(payload);
    let label = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError("a label that is not 0 or 1")),
    };
    Ok((label, read_f64s(&mut r)?))
}

/// A decision awaiting its label: the user and its features.
type Decision = (Box<str>, Vec<f64>);

/// The task side: see the module documentation.
#[derive(Debug)]
pub struct PropensityObserver {
    plan: Arc<PropensityPlan>,
    aggregates: Aggregates,
    /// Decisions awaiting their label, by decision point, in no order.
    pending: BTreeMap<i64, Vec<Decision>>,
    /// Decisions awaiting their label, and their users' name bytes (for `stats`).
    waiting: usize,
    waiting_bytes: usize,
    /// Each user's purchase times still in reach of a decision's horizon, sorted, distinct.
    purchases: FxHashMap<Box<str>, Vec<i64>>,
    /// Users to look at when their first purchase time leaves every horizon; at least one
    /// entry at or before each user's true expiry.
    expiry: BTreeMap<i64, Vec<Box<str>>>,
    /// Purchase times held, and the bytes of their users' names (for `stats`).
    times: usize,
    name_bytes: usize,
    /// Features that failed to compute (counted as 0).
    pub feature_errors: u64,
}

impl PropensityObserver {
    /// A fresh observer of `plan`.
    pub fn new(plan: Arc<PropensityPlan>) -> Self {
        Self {
            aggregates: Aggregates::new(plan.window),
            plan,
            pending: BTreeMap::new(),
            waiting: 0,
            waiting_bytes: 0,
            purchases: FxHashMap::default(),
            expiry: BTreeMap::new(),
            times: 0,
            name_bytes: 0,
            feature_errors: 0,
        }
    }

    /// Whether `user` has a purchase in `[from, to)`.
    fn bought(&self, user: &str, from: i64, to: i64) -> bool {
        self.purchases.get(user).is_some_and(|times| {
            let at = times.partition_point(|t| *t < from);
            times.get(at).is_some_and(|t| *t < to)
        })
    }

    /// Forgets the purchases no decision can need once every event before `complete` has
    /// arrived: a purchase at `t` counts for decisions in `(t - horizon, t]`, all of them
    /// labelled once `complete >= t + horizon`.
    fn expire(&mut self, complete: i64) {
        let horizon = self.plan.horizon;
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() > complete {
                break;
            }
            for user in entry.remove() {
                let Some(times) = self.purchases.get_mut(&user) else {
                    continue;
                };
                let cut = times.partition_point(|t| t.saturating_add(horizon) <= complete);
                times.drain(..cut);
                self.times -= cut;
                match times.first() {
                    None => {
                        self.purchases.remove(&user);
                        self.name_bytes -= user.len();
                    }
                    Some(first) => {
                        if cut > 0 {
                            let at = first.saturating_add(horizon);
                            self.expiry.entry(at).or_default().push(user);
                        }
                    }
                }
            }
        }
    }
}

impl Observer for PropensityObserver {
    fn add(&mut self, user: &str, input: usize, event: &Event<'_>) {
        self.aggregates.add(&self.plan.model, user, input, event);
        if self.plan.model.purchase(input, event).is_none() {
            return;
        }
        let t = event.time;
        let times = match self.purchases.get_mut(user) {
            Some(times) => times,
            None => {
                self.name_bytes += user.len();
                self.purchases.entry(user.into()).or_default()
            }
        };
        let at = times.partition_point(|x| *x < t);
        if times.get(at) == Some(&t) {
            return;
        }
        times.insert(at, t);
        self.times += 1;
        if at == 0 {
            let due = t.saturating_add(self.plan.horizon);
            self.expiry.entry(due).or_default().push(user.into());
        }
    }

    fn due(&mut self, complete: i64, out: &mut Vec<Observation>) {
        let plan = self.plan.clone();
        let (errors, pending) = (&mut self.feature_errors, &mut self.pending);
        let (waiting, waiting_bytes) = (&mut self.waiting, &mut self.waiting_bytes);
        self.aggregates
            .take_complete(complete, |aggregates, end, user| {
                let x = plan.features.compute(&aggregates.values(user, end), errors);
                let user: Box<str> = user.into();
                out.push(Observation {
                    epoch: end,
                    user: user.clone(),
                    time: end,
                    tag: DECISION,
                    payload: decision_payload(&x),
                });
                *waiting += 1;
                *waiting_bytes += user.len();
                pending.entry(end).or_default().push((user, x));
            });
        while let Some(entry) = self.pending.first_entry() {
            let end = *entry.key();
            let labelled = end.saturating_add(plan.horizon);
            if labelled > complete {
                break;
            }
            for (user, x) in entry.remove() {
                self.waiting -= 1;
                self.waiting_bytes -= user.len();
                let label = self.bought(&user, end, labelled);
                out.push(Observation {
                    epoch: plan.model.epoch_end_at_or_after(labelled),
                    user,
                    time: end,
                    tag: EXAMPLE,
                    payload: example_payload(label, &x),
                });
            }
        }
        self.expire(complete);
    }

    fn write(&self, w: &mut Writer) {
        self.aggregates.write(w);
        w.len_prefix(self.waiting);
        for (end, decisions) in &self.pending {
            let mut sorted: Vec<&Decision> = decisions.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (user, x) in sorted {
                w.i64(*end);
                w.str(user);
                write_f64s(w, x);
            }
        }
        let mut users: Vec<(&Box<str>, &Vec<i64>)> = self.purchases.iter().collect();
        users.sort_unstable_by_key(|(u, _)| *u);
        w.len_prefix(users.len());
        for (user, times) in users {
            w.str(user);
            w.len_prefix(times.len());
            for t in times {
                w.i64(*t);
            }
        }
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.aggregates.read(r)?;
        for _ in 0..r.len_prefix()? {
            let end = r.i64()?;
            let user: Box<str> = r.str()?.into();
            let x = read_f64s(r)?;
            self.waiting += 1;
            self.waiting_bytes += user.len();
            self.pending.entry(end).or_default().push((user, x));
        }
        for _ in 0..r.len_prefix()? {
            let user: Box<str> = r.str()?.into();
            let times = (0..r.len_prefix()?)
                .map(|_| r.i64())
                .collect::<Result<Vec<i64>, _>>()?;
            if times.windows(2).any(|p| p[0] >= p[1]) {
                return Err(DecodeError("purchase times out of order"));
            }
            if let Some(first) = times.first() {
                let due = first.saturating_add(self.plan.horizon);
                self.expiry.entry(due).or_default().push(user.clone());
                self.times += times.len();
                self.name_bytes += user.len();
                self.purchases.insert(user, times);
            }
        }
        Ok(())
    }

    fn stats(&self) -> WindowStats {
        let a = self.aggregates.stats();
        let d = self.plan.features.names.len();
        let pending = self.waiting * (64 + 8 * d) + self.waiting_bytes;
        let purchases = self.purchases.len() * 72
            + 2 * self.name_bytes
            + self.times * 8
            + self.expiry.len() * 48;
        WindowStats {
            keys: a.keys,
            windows: a.windows + self.waiting,
            bytes: a.bytes + pending + purchases,
        }
    }
}
