//! The PodDisruptionBudget: voluntary disruptions (node drains) take at most one worker at a
//! time, so only one worker's tasks are restoring at once. Built only with two or more workers:
//! a budget over a single pod protects nothing and would only slow drains down.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Context;
use crate::names::workload_name;

/// The budget over the worker pods.
pub fn pod_disruption_budget(context: &Context) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: context.metadata(workload_name(&context.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(context.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::build::desired;
    use crate::build::fixtures::{params, pipeline, QUICKSTART};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn budget_allows_one_worker_down_and_exists_only_with_several_workers() {
        let p = pipeline(QUICKSTART);
        let pdb = desired(&p, &params(2))
            .expect("build")
            .pod_disruption_budget
            .expect("pdb");
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert!(desired(&p, &params(1))
            .expect("build")
            .pod_disruption_budget
            .is_none());
    }
}
