//! Autoscale: how many workers a pipeline should run. Pure.
//!
//! The Prometheus-driven autoscaler of DESIGN.md §6 is a later issue; it will plug in here and
//! decide `status.parallelism` (never the spec). Until then the parallelism in effect is
//! `spec.parallelism`, which `kubectl scale`, an HPA or KEDA set through the scale subresource.

use tidemark_api::MarketingPipelineSpec;

/// Why the autoscaler does not decide (reason of the `Autoscaling` condition).
pub const REASON_DISABLED: &str = "Disabled";
/// Autoscaling is asked for but this operator version has no autoscaler yet.
pub const REASON_NOT_IMPLEMENTED: &str = "NotImplemented";

/// The number of workers the pipeline should run. How the workers get there (assignment
/// epochs, moving task state) is `crate::rescale`'s business.
pub fn desired(spec: &MarketingPipelineSpec) -> i32 {
    spec.parallelism.max(1)
}

/// Reason and message of the `Autoscaling` condition.
pub fn condition(spec: &MarketingPipelineSpec) -> (&'static str, String) {
    match &spec.autoscaling {
        Some(a) if a.enabled => (
            REASON_NOT_IMPLEMENTED,
            "this operator version does not autoscale yet; spec.parallelism is in effect".into(),
        ),
        _ => (REASON_DISABLED, "spec.parallelism is in effect".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{pipeline, GENERATOR};

    #[test]
    fn spec_parallelism_is_desired_and_at_least_one() {
        let mut spec = pipeline(GENERATOR).spec;
        spec.parallelism = 3;
        assert_eq!(desired(&spec), 3);
        spec.parallelism = 0;
        assert_eq!(desired(&spec), 1);
        assert_eq!(condition(&spec).0, REASON_DISABLED);
    }
}
