//! Online models (`segments`, `propensity`, `recommend`): what they share — the **model
//! epoch** (design in `docs/models.md`).
//!
//! Models are learned from every user, but a task sees only its partition's users. Each task
//! turns its users' events into **observations** ([`Observer`]): a user's features at an
//! epoch's end, a label once its horizon has passed, a finished session. An observation is
//! keyed by its epoch (the epoch end it belongs to), the user, a time and a tag. Observations
//! go to one [`driver::Driver`] — the task's own when it is the only task, the global stage's
//! otherwise (as partials) — which holds them until the watermark of every task has passed the
//! epoch's end plus the allowed lateness, then hands the epoch's observations, in one fixed order,
//! to the kind's [`Learner`]: it scores them with the model of the epochs before, emits the
//! results, learns from them, and emits the new model version. The result depends only on the
//! set of observations, never on how many tasks made them or in which order they arrived: the
//! same input gives byte-identical models and scores at any parallelism, across restores.
//!
//! - [`driver`]: the epochs' observations and when an epoch is complete.
//! - [`state`]: the task state and the global-stage state around a driver.
//! - [`features`]: users' aggregates over a trailing horizon and the features computed from
//!   them (built-in or CEL), shared by segments and propensity.

pub mod driver;
pub mod features;
pub mod state;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt::Debug;

use tidemark_api::ModelInput;

use crate::event::Event;
use crate::operators::{field_of_inputs, inputs_named, PlanError, SourcePlan};
use crate::window::accumulate::Input;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

use super::Emit;

/// Default epoch length: 10 minutes.
pub const DEFAULT_EPOCH: i64 = 600_000;

/// What every model's plan has: its inputs' fields and its epochs.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    /// Epoch length, ms.
    pub epoch: i64,
    /// Allowed lateness, ms.
    pub lateness: i64,
    /// Event types that are purchases.
    pub purchase_types: Vec<String>,
    /// Revenue field accessor per input.
    pub revenue: Vec<Input>,
    /// Product field accessor per input.
    pub product: Vec<Input>,
}

impl ModelPlan {
    /// Compiles the common part of a model at `path`; returns it with its input names.
    pub fn compile(
        input: &ModelInput,
        path: &str,
        sources: &[SourcePlan],
    ) -> Result<(Self, Vec<String>), PlanError> {
        let inputs = inputs_named(&input.sources, path, sources)?;
        let revenue_field = input.revenue.as_deref().unwrap_or("price");
        let revenue = field_of_inputs(&inputs, revenue_field, &format!("{path}.revenue"))?;
        let product = field_of_inputs(&inputs, "product", path)?;
        let epoch = input
            .epoch
            .as_ref()
            .map_or(DEFAULT_EPOCH, |e| e.millis_i64());
        if epoch <= 0 {
            return Err(PlanError::Reference {
                path: format!("{path}.epoch"),
                message: "must be positive".into(),
            });
        }
        let plan = Self {
            epoch,
            lateness: input
                .allowed_lateness
                .as_ref()
                .map_or(0, |d| d.millis_i64()),
            purchase_types: input
                .purchase_types
                .clone()
                .unwrap_or_else(|| vec!["purchase".to_owned()]),
            revenue,
            product,
        };
        Ok((plan, input.sources.clone()))
    }

    /// The end of the epoch holding `t`: epochs are `[end - epoch, end)`, aligned to the Unix
    /// epoch.
    pub fn epoch_end(&self, t: i64) -> i64 {
        (t.div_euclid(self.epoch) + 1) * self.epoch
    }

    /// The first epoch end at or after `t`.
    pub fn epoch_end_at_or_after(&self, t: i64) -> i64 {
        self.epoch_end(t - 1)
    }

    /// Whether `event` is a purchase, and its value.
    pub fn purchase(&self, input: usize, event: &Event<'_>) -> Option<f64> {
        let ty = event.event_type.as_deref()?.as_bytes();
        self.purchase_types
            .iter()
            .any(|p| features::same(p.as_bytes(), ty))
            .then(|| self.revenue[input].read(event).as_f64().unwrap_or(0.0))
    }
}

/// One observation of a user, for the learner of the epoch ending at `epoch`.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The end of the epoch it belongs to.
    pub epoch: i64,
    /// The user (or another key the kind chooses).
    pub user: Box<str>,
    /// Its time (a decision point, a session's end).
    pub time: i64,
    /// What it is, by the kind's own tags.
    pub tag: u8,
    /// The kind's encoding of it.
    pub payload: Vec<u8>,
}

/// A model kind's task side: turns a task's events into observations.
pub trait Observer: Debug + Send {
    /// Takes `user`'s event of input `input` (never late).
    fn add(&mut self, user: &str, input: usize, event: &Event<'_>);

    /// Every event before `complete` has arrived: pushes the observations that makes known.
    /// `i64::MAX` means the input has ended.
    fn due(&mut self, complete: i64, out: &mut Vec<Observation>);

    /// Appends the state.
    fn write(&self, w: &mut Writer);

    /// Loads what [`Observer::write`] wrote into this fresh state.
    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError>;

    /// Sizes of the state.
    fn stats(&self) -> WindowStats;
}

/// A model kind's learner: the model, fed one complete epoch at a time.
pub trait Learner: Debug + Send {
    /// Scores the observations of the epoch ending at `end` (in the driver's order: by a fixed hash of the user, then user, time and tag) with
    /// the model learned so far, emits the results, learns from them and emits the new model.
    fn epoch(&mut self, end: i64, observations: &[Observation], out: &mut Emit<'_>);

    /// Appends the model.
    fn write(&self, w: &mut Writer);

    /// Loads what [`Learner::write`] wrote into this fresh learner.
    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError>;

    /// Sizes of the model.
    fn stats(&self) -> WindowStats;

    /// The model's quality and size as gauges, by measure (`log_loss`, `auc`, `size_<segment>`,
    /// ...), for `tidemark_model`.
    fn gauges(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// What a model kind supplies to the shared states: fresh observers and learners.
pub trait ModelKind: Debug + Send + Sync {
    /// A fresh observer.
    fn observer(&self) -> Box<dyn Observer>;
    /// A fresh learner.
    fn learner(&self) -> Box<dyn Learner>;
    /// The common plan.
    fn model(&self) -> &ModelPlan;
}

/// Writes `values` as a length and the floats' bits.
pub fn write_f64s(w: &mut Writer, values: &[f64]) {
    w.len_prefix(values.len());
    for v in values {
        w.u64(v.to_bits());
    }
}

/// Reads what [`write_f64s`] wrote.
pub fn read_f64s(r: &mut Reader<'_>) -> Result<Vec<f64>, DecodeError> {
    (0..r.len_prefix()?)
        .map(|_| Ok(f64::from_bits(r.u64()?)))
        .collect()
}

/// Writes a float as JSON (non-finite as 0): the shortest text that reads back as the same
/// float (`ryu`, as serde_json writes floats; e.g. `0.25`, `311.78552819`, `1e-7`).
pub fn write_json_f64(v: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        v.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else {
        v.push(b'0');
    }
}

/// The analytic of model kind `kind` (named `name` in manifests) reading `inputs`: keyed by
/// the user, one tumbling window per epoch (so tasks report their progress at epoch ends).
pub fn compiled(
    name: &'static str,
    kind: std::sync::Arc<dyn ModelKind>,
    inputs: Vec<String>,
) -> super::Compiled {
    let plan = kind.model();
    let (epoch, lateness) = (plan.epoch, plan.lateness);
    super::Compiled {
        kind: std::sync::Arc::new(state::ModelKindPlan { name, kind }),
        inputs,
        key_by: crate::operators::PARTITION_KEY.to_owned(),
        filter: None,
        window: crate::window::WindowKind::Tumbling { size: epoch },
        lateness,
    }
}
