//! The `recommend` analytic (to be written).

use tidemark_api::RecommendAnalytic;

use super::Compiled;
use crate::operators::{PlanError, SourcePlan};

/// Compiles a `recommend` analytic at `path`.
pub fn compile(
    _spec: &RecommendAnalytic,
    path: &str,
    _sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    Err(PlanError::Reference {
        path: path.to_owned(),
        message: "not built yet".into(),
    })
}
