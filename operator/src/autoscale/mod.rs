//! Autoscale: how many workers a pipeline runs and under which assignment epoch. Pure.
//!
//! The Prometheus-driven autoscaler of DESIGN.md §6 is a later issue; it will plug in here and
//! decide `status.parallelism` (never the spec). Until then the parallelism in effect is
//! `spec.parallelism`, which `kubectl scale`, an HPA or KEDA set through the scale subresource.

use tidemark_api::{MarketingPipelineSpec, MarketingPipelineStatus};

/// Decision of the autoscaler seam for one reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Workers in effect (`status.parallelism`, StatefulSet replicas, `runtime.yaml`).
    pub parallelism: i32,
    /// Assignment epoch: raised whenever parallelism changes, so workers can tell an old task
    /// assignment from the new one. Starts at 1.
    pub assignment_epoch: i64,
    /// The parallelism in effect before, when it differs (a rescale is starting).
    pub rescaled_from: Option<i32>,
}

/// Why the autoscaler does not decide (reason of the `Autoscaling` condition).
pub const REASON_DISABLED: &str = "Disabled";
/// Autoscaling is asked for but this operator version has no autoscaler yet.
pub const REASON_NOT_IMPLEMENTED: &str = "NotImplemented";

/// Parallelism and epoch for `spec` given the last `status`. Idempotent: with the status this
/// reconcile writes, the next one decides the same.
pub fn plan(spec: &MarketingPipelineSpec, status: Option<&MarketingPipelineStatus>) -> Scale {
    let parallelism = spec.parallelism.max(1);
    let previous = status.and_then(|s| s.parallelism);
    let epoch = status.and_then(|s| s.assignment_epoch).unwrap_or(0);
    match previous {
        Some(p) if p == parallelism => Scale {
            parallelism,
            assignment_epoch: epoch.max(1),
            rescaled_from: None,
        },
        Some(p) => Scale {
            parallelism,
            assignment_epoch: epoch + 1,
            rescaled_from: Some(p),
        },
        None => Scale {
            parallelism,
            assignment_epoch: epoch.max(1),
            rescaled_from: None,
        },
    }
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

    fn status(parallelism: i32, epoch: i64) -> MarketingPipelineStatus {
        MarketingPipelineStatus {
            parallelism: Some(parallelism),
            assignment_epoch: Some(epoch),
            ..MarketingPipelineStatus::default()
        }
    }

    #[test]
    fn first_reconcile_starts_at_epoch_one_with_spec_parallelism() {
        let mut spec = pipeline(GENERATOR).spec;
        spec.parallelism = 3;
        assert_eq!(
            plan(&spec, None),
            Scale {
                parallelism: 3,
                assignment_epoch: 1,
                rescaled_from: None
            }
        );
    }

    #[test]
    fn a_parallelism_change_raises_the_epoch_once() {
        let mut spec = pipeline(GENERATOR).spec;
        spec.parallelism = 4;
        let scale = plan(&spec, Some(&status(2, 7)));
        assert_eq!(
            scale,
            Scale {
                parallelism: 4,
                assignment_epoch: 8,
                rescaled_from: Some(2)
            }
        );
        let again = plan(
            &spec,
            Some(&status(scale.parallelism, scale.assignment_epoch)),
        );
        assert_eq!(
            again,
            Scale {
                parallelism: 4,
                assignment_epoch: 8,
                rescaled_from: None
            }
        );
    }
}
