//! The `pattern` analytic: per-user intent patterns (a sequence of steps within a time bound,
//! optionally not followed by something), evaluated in event time against the watermark.
//! Semantics are in `docs/patterns.md`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// An intent pattern over a user's events: steps in order within `within`, optionally not
/// followed by `notFollowedBy` events. Each match is one result keyed by the user, emitted once
/// the watermark passes its time (the last step's time, or with `notFollowedBy` the end of the
/// quiet period after it); late events within `allowedLateness` revise or retract it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.within) || (self.steps.size() == 1 && self.steps.all(s, !has(s.times) || s.times == 1))"
).message("a pattern of more than one step or occurrence needs within"))]
pub struct PatternAnalytic {
    /// Sources whose events the pattern reads (keyed by the user, so a user's events are in
    /// one partition).
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,
    /// The steps, in order (1 to 8): each matches events by type, by a CEL condition over
    /// `event`, or both, and may need several occurrences.
    #[schemars(length(min = 1, max = 8))]
    pub steps: Vec<PatternStep>,
    /// Longest time from the first step's first occurrence to the last step's last: the
    /// `followedBy ... within` bound. Also the quiet period of patterns without
    /// `notFollowedBy`: a completion less than `within` after the user's previous completion
    /// is not a new match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
    /// Absence: a completion matches only when no such event follows within this time; a
    /// later completion within that time replaces it (the match waits until the user is quiet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_followed_by: Option<PatternAbsence>,
    /// Fields of the last step's event copied into each match (e.g. `product`, `price`), for
    /// the actions it triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub capture: Vec<String>,
    /// How long after a match's time late events still revise or retract it; later events go
    /// to the dead-letter output (`late`).
    #[serde(default = "zero")]
    pub allowed_lateness: Duration,
}

/// One step of a pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.eventTypes) || has(self.when)")
    .message("a step needs eventTypes, when, or both"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.sameValue) || (has(self.times) && self.times > 1)")
    .message("sameValue needs times above 1"))]
pub struct PatternStep {
    /// Name of the step in results.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub name: String,
    /// Event types that match the step (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// CEL condition over `event` that a matching event must also satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Occurrences the step needs (default 1), e.g. 3 views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub times: Option<u32>,
    /// Event field whose value the step's occurrences share (e.g. `category`: 3 views of one
    /// category).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_value: Option<String>,
}

/// Events whose absence completes a pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.eventTypes) || has(self.when)")
    .message("notFollowedBy needs eventTypes, when, or both"))]
pub struct PatternAbsence {
    /// Event types that cancel the match (e.g. `purchase`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// CEL condition over `event` a cancelling event must also satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How long after the last step no such event may occur (e.g. `30m`).
    pub within: Duration,
}

fn zero() -> Duration {
    Duration::from_millis(0)
}
