//! The `funnel` analytic: conversion funnels as product-analytics users know them, streaming,
//! exact and revised on late data. Semantics are in `docs/analytics.md`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::spec::WindowSpec;
use crate::Duration;

/// A conversion funnel over the events of `sources`: a unit (a user, or one of its sessions)
/// enters a window's funnel at its first event of step 1 in that window, and reaches step `k`
/// when steps 2..k follow in the chosen `order` within `conversionWindow` of the entry. One
/// result per window and breakdown value, final once the watermark passes the window's end
/// plus the conversion window; late events within `allowedLateness` revise it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.unit != 'session' || has(self.session)")
    .message("a session funnel needs session (field or gap)"))]
#[x_kube(validation = kube::core::Rule::new("self.window.type != 'session'")
    .message("a funnel needs tumbling or sliding windows (its sessions are set by unit and session)"))]
pub struct FunnelAnalytic {
    /// Sources whose events enter the funnel (all of a user's events must be in one partition:
    /// the sources are keyed by the user).
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,
    /// What converts: a `user`, or each `session` of a user.
    #[serde(default)]
    pub unit: FunnelUnit,
    /// How events are cut into sessions, for `unit: session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<FunnelSession>,
    /// The steps in funnel order (2 to 16); each matches events by type, by a CEL condition
    /// over `event`, or both.
    #[schemars(length(min = 2, max = 16))]
    pub steps: Vec<FunnelStep>,
    /// How later steps must follow the entry.
    #[serde(default)]
    pub order: FunnelOrder,
    /// Hard limit from a unit's entry to any later step it reaches.
    pub conversion_window: Duration,
    /// Splits results by an event field (e.g. `channel`); without it every result has key `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<FunnelBreakdown>,
    /// Events that disqualify a unit between two steps: a unit with such an event after it
    /// reached the first named step and before the second cannot reach the second or later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub exclusions: Vec<FunnelExclusion>,
    /// The window of a unit's entry (tumbling or sliding; `offset` shifts it, e.g. weeks from
    /// Monday).
    pub window: WindowSpec,
    /// How long after a window's result is final late events still revise it (emitted again
    /// with a higher `revision`); later events go to the dead-letter output (`late`).
    #[serde(default = "zero")]
    pub allowed_lateness: Duration,
}

/// The unit that converts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum FunnelUnit {
    /// A user (the partition key): one unit per user and window.
    #[default]
    User,
    /// A session of a user: one unit per session and window.
    Session,
}

/// How a user's events are cut into sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.field) != has(self.gap)")
    .message("exactly one of field or gap must be set"))]
pub struct FunnelSession {
    /// Event field holding the session id (e.g. `session_id`): events with the same value form
    /// a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Inactivity that ends a session: two consecutive events of a user further apart than
    /// this are in different sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Duration>,
}

/// One step of a funnel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.eventTypes) || has(self.when)")
    .message("a step needs eventTypes, when, or both"))]
pub struct FunnelStep {
    /// Name of the step in results.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub name: String,
    /// Event types that match the step (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// CEL condition over `event` that a matching event must also satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// How later steps follow the entry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum FunnelOrder {
    /// Each step after the previous one; other events in between are allowed.
    #[default]
    Ordered,
    /// Each step as the unit's very next event after the previous step.
    Strict,
    /// Steps in any order after the entry; step k is reached once steps 1..k all occurred.
    Any,
}

/// The dimension that splits a funnel's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunnelBreakdown {
    /// Event field (e.g. `channel`, `campaign`); a missing value counts as `(none)`.
    #[schemars(length(min = 1))]
    pub field: String,
    /// Which event of a unit gives its value.
    #[serde(default)]
    pub attribution: Attribution,
}

/// Which event of a unit gives its breakdown value.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Attribution {
    /// The entry event (step 1).
    #[default]
    FirstTouch,
    /// The event of the furthest step the unit reached.
    LastTouch,
}

/// Events that disqualify a unit between two steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunnelExclusion {
    /// Event types that disqualify.
    #[schemars(length(min = 1))]
    pub event_types: Vec<String>,
    /// The two steps (by name, the first before the second) between which they disqualify.
    #[schemars(length(min = 2, max = 2))]
    pub between: Vec<String>,
}

fn zero() -> Duration {
    Duration::from_millis(0)
}
