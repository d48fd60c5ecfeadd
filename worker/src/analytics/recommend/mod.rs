//! Recommendations (`recommend` analytics): item-item co-occurrence within users' sessions,
//! decayed over event time, learned per model epoch (`crate::analytics::model`; rules in
//! `docs/recommendations.md`).
//!
//! - this file: the plan, the kind, and the observation of a session (its payload codec);
//! - [`observer`]: the task side — users' open sessions (cut by inactivity, exact under
//!   out-of-order input) and bought products; each ended session becomes an observation;
//! - [`cooccur`]: the learner — per epoch, recommendations for the epoch's sessions from the
//!   model before it, then the sessions' pairs and products learned, then the changed
//!   products' neighbour lists.

pub mod cooccur;
pub mod observer;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tidemark_api::RecommendAnalytic;

use super::model::{compiled, Learner, ModelKind, ModelPlan, Observer};
use super::Compiled;
use crate::operators::{PlanError, SourcePlan};
use crate::window::codec::{DecodeError, Reader, Writer};

/// Default session gap: 30 minutes.
pub const DEFAULT_GAP: i64 = 30 * 60_000;
/// Default half-life of the weights: 7 days.
pub const DEFAULT_HALF_LIFE: i64 = 7 * 86_400_000;
/// Default length of the lists.
pub const DEFAULT_TOP_K: usize = 10;
/// Products kept per session: the first ones by first interest.
pub const SESSION_PRODUCTS: usize = 50;
/// Bought products kept per user: the most recently bought.
pub const BOUGHT_PRODUCTS: usize = 100;
/// How long a purchase keeps its product out of the user's recommendations: 30 days.
pub const BOUGHT_HORIZON: i64 = 30 * 86_400_000;
/// The session's products (its last ones) that recommendations are scored from.
pub const RECENT: usize = 5;
/// Each of those contributes its best `CANDIDATES · topK` neighbours as candidates.
pub const CANDIDATES: usize = 2;
/// Weights that have decayed below this are pruned (at the first epoch of each half-life).
pub const PRUNE_BELOW: f64 = 0.05;

/// A compiled `recommend` analytic.
#[derive(Debug)]
pub struct RecommendPlan {
    /// Epochs and inputs.
    pub model: ModelPlan,
    /// Inactivity that ends a session, ms.
    pub gap: i64,
    /// Event types that are interest in a product.
    pub view_types: Vec<String>,
    /// Half-life of the weights, ms (infinite: no decay, as the exactness tests use).
    pub half_life: f64,
    /// Length of recommendation and neighbour lists.
    pub top_k: usize,
}

/// Compiles a `recommend` analytic at `path`.
pub fn compile(
    spec: &RecommendAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let (plan, inputs) = compile_plan(spec, path, sources)?;
    Ok(compiled(
        "recommend",
        Arc::new(Recommend(Arc::new(plan))),
        inputs,
    ))
}

/// The plan of a `recommend` analytic at `path`, with its input names.
pub fn compile_plan(
    spec: &RecommendAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<(RecommendPlan, Vec<String>), PlanError> {
    let (model, inputs) = ModelPlan::compile(&spec.input, path, sources)?;
    let reference = |at: &str, message: &str| PlanError::Reference {
        path: format!("{path}.{at}"),
        message: message.to_owned(),
    };
    let gap = spec
        .session_gap
        .as_ref()
        .map_or(DEFAULT_GAP, |g| g.millis_i64());
    if gap <= 0 {
        return Err(reference("sessionGap", "must be positive"));
    }
    let half_life = spec
        .half_life
        .as_ref()
        .map_or(DEFAULT_HALF_LIFE, |h| h.millis_i64());
    if half_life <= 0 {
        return Err(reference("halfLife", "must be positive"));
    }
    let view_types = spec
        .view_types
        .clone()
        .unwrap_or_else(|| vec!["view".to_owned(), "add_to_cart".to_owned()]);
    if view_types.is_empty() {
        return Err(reference("viewTypes", "must name at least one type"));
    }
    let top_k = spec.top_k.map_or(DEFAULT_TOP_K, |k| k as usize);
    if !(1..=100).contains(&top_k) {
        return Err(reference("topK", "must be 1 to 100"));
    }
    let plan = RecommendPlan {
        model,
        gap,
        view_types,
        half_life: half_life as f64,
        top_k,
    };
    Ok((plan, inputs))
}

/// The recommend kind: its plan, shared by the observers and learners it makes.
#[derive(Debug)]
pub struct Recommend(pub Arc<RecommendPlan>);

impl ModelKind for Recommend {
    fn observer(&self) -> Box<dyn Observer> {
        Box::new(observer::Sessions::new(self.0.clone()))
    }

    fn learner(&self) -> Box<dyn Learner> {
        Box::new(cooccur::CoOccurrence::new(self.0.clone()))
    }

    fn model(&self) -> &ModelPlan {
        &self.0.model
    }
}

/// Tag of a session's observation.
pub const SESSION: u8 = 0;

/// An ended session as its observation carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// Its distinct products of interest, in order of first interest (at most
    /// [`SESSION_PRODUCTS`]).
    pub products: Vec<Box<str>>,
    /// The user's bought products at its end, sorted (at most [`BOUGHT_PRODUCTS`]).
    pub bought: Vec<Box<str>>,
}

impl Session {
    /// The observation payload.
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_from(&self.products, &self.bought)
    }

    /// What [`Session::encode`] writes for a session of `products` and `bought`, without
    /// making the session.
    pub fn encode_from<P: AsRef<str>, B: AsRef<str>>(products: &[P], bought: &[B]) -> Vec<u8> {
        let mut w = Writer::default();
        w.len_prefix(products.len());
        for p in products {
            w.str(p.as_ref());
        }
        w.len_prefix(bought.len());
        for p in bought {
            w.str(p.as_ref());
        }
        w.finish()
    }

    /// Reads what [`Session::encode`] wrote.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let mut list = || -> Result<Vec<Box<str>>, DecodeError> {
            (0..r.len_prefix()?).map(|_| Ok(r.str()?.into())).collect()
        };
        let products = list()?;
        let bought = list()?;
        if products.len() > SESSION_PRODUCTS || bought.len() > BOUGHT_PRODUCTS {
            return Err(DecodeError("a session of too many products"));
        }
        Ok(Self { products, bought })
    }
}
