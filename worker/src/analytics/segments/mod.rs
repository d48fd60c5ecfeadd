//! Customer segments (`segments` analytics): mini-batch k-means over per-user features (RFM by
//! default), learned per model epoch (`crate::analytics::model`; rules in `docs/models.md`).
//!
//! - this file: the plan and the task side — each epoch, every user active in it becomes an
//!   observation of its features at the epoch's end;
//! - [`kmeans`]: the learner — online standardisation, seeded k-means++ on the first epoch
//!   with at least `k` distinct users, then per epoch: assign (results for users whose segment
//!   changed), update the centroids, emit the model version.

pub mod kmeans;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tidemark_api::SegmentsAnalytic;

use super::model::features::{Aggregates, Features};
use super::model::{compiled, write_f64s, Learner, ModelKind, ModelPlan, Observation, Observer};
use super::Compiled;
use crate::event::Event;
use crate::operators::{PlanError, SourcePlan};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// Default horizon of the RFM aggregates: 30 days.
const DEFAULT_HORIZON: i64 = 30 * 86_400_000;

/// A compiled `segments` analytic.
#[derive(Debug)]
pub struct SegmentsPlan {
    /// Epochs and inputs.
    pub model: ModelPlan,
    /// Number of segments.
    pub k: usize,
    /// Seed of the initialisation.
    pub seed: u64,
    /// Horizon of the aggregates, ms.
    pub horizon: i64,
    /// The features.
    pub features: Features,
    /// Label rule: the ranking feature's index and the names, highest first.
    pub labels: Option<(usize, Vec<String>)>,
}

/// Compiles a `segments` analytic at `path`.
pub fn compile(
    spec: &SegmentsAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let (model, inputs) = ModelPlan::compile(&spec.input, path, sources)?;
    let features = Features::compile(
        &spec.features,
        &["recency_hours", "purchases", "revenue"],
        false,
        path,
    )?;
    let reference = |at: &str, message: String| PlanError::Reference {
        path: format!("{path}.{at}"),
        message,
    };
    let k = spec.k as usize;
    if !(2..=32).contains(&k) {
        return Err(reference("k", "must be 2 to 32".into()));
    }
    let labels = match &spec.labels {
        None => None,
        Some(l) => {
            let by = features
                .names
                .iter()
                .position(|n| *n == l.by)
                .ok_or_else(|| reference("labels.by", format!("{:?} is not a feature", l.by)))?;
            if l.names.len() != k {
                return Err(reference(
                    "labels.names",
                    format!("needs one name per segment ({k})"),
                ));
            }
            Some((by, l.names.clone()))
        }
    };
    let plan = SegmentsPlan {
        k,
        seed: spec.seed,
        horizon: spec
            .horizon
            .as_ref()
            .map_or(DEFAULT_HORIZON, |h| h.millis_i64())
            .max(model.epoch),
        features,
        labels,
        model,
    };
    Ok(compiled(
        "segments",
        Arc::new(Segments(Arc::new(plan))),
        inputs,
    ))
}

/// The segments kind: its plan, shared by the observers and learners it makes.
#[derive(Debug)]
pub struct Segments(pub Arc<SegmentsPlan>);

impl ModelKind for Segments {
    fn observer(&self) -> Box<dyn Observer> {
        Box::new(SegmentsObserver {
            aggregates: Aggregates::new(self.0.horizon),
            plan: self.0.clone(),
            feature_errors: 0,
        })
    }

    fn learner(&self) -> Box<dyn Learner> {
        Box::new(kmeans::KMeans::new(self.0.clone()))
    }

    fn model(&self) -> &ModelPlan {
        &self.0.model
    }
}

/// The task side: users' aggregates, and their features at each epoch's end.
#[derive(Debug)]
struct SegmentsObserver {
    aggregates: Aggregates,
    plan: Arc<SegmentsPlan>,
    feature_errors: u64,
}

impl Observer for SegmentsObserver {
    fn add(&mut self, user: &str, input: usize, event: &Event<'_>) {
        self.aggregates.add(&self.plan.model, user, input, event);
    }

    fn due(&mut self, complete: i64, out: &mut Vec<Observation>) {
        let plan = &self.plan;
        let errors = &mut self.feature_errors;
        self.aggregates
            .take_complete(complete, |aggregates, end, user| {
                let x = plan.features.compute(&aggregates.values(user, end), errors);
                let mut w = Writer::default();
                write_f64s(&mut w, &x);
                out.push(Observation {
                    epoch: end,
                    user: user.into(),
                    time: end,
                    tag: 0,
                    payload: w.finish(),
                });
            });
    }

    fn write(&self, w: &mut Writer) {
        self.aggregates.write(w);
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.aggregates.read(r)
    }

    fn stats(&self) -> WindowStats {
        self.aggregates.stats()
    }
}
