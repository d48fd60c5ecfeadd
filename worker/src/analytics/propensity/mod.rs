//! The `propensity` analytic (to be written).

use tidemark_api::PropensityAnalytic;

use super::Compiled;
use crate::operators::{PlanError, SourcePlan};

/// Compiles a `propensity` analytic at `path`.
pub fn compile(
    _spec: &PropensityAnalytic,
    path: &str,
    _sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    Err(PlanError::Reference {
        path: path.to_owned(),
        message: "not built yet".into(),
    })
}
