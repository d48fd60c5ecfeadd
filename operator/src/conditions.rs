//! Conditions of `MarketingPipeline.status`: finding one by type, and setting one so that it
//! keeps its `lastTransitionTime` unless its `status` changes. Pure helpers over the API types,
//! shared by [`crate::status`] (which decides the conditions), [`crate::autoscale`] (which reads
//! its own previous `Autoscaling` condition) and [`crate::reconcile`] (which reads them to choose
//! events); which conditions and reasons to set is [`crate::status`]'s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tidemark_api::MarketingPipelineStatus;

/// Puts `condition` into `conditions`, keeping the old `lastTransitionTime` when its status is
/// unchanged, and keeping the order `Ready, Progressing, Degraded, Autoscaling` of first insertion.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

/// The condition of type `type_`, if set.
pub fn condition<'a>(
    status: Option<&'a MarketingPipelineStatus>,
    type_: &str,
) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}
