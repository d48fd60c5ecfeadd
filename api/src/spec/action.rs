//! The `action` analytic: marketing actions (coupons, discounts, messages) decided from a
//! pattern's matches, exactly once, with a cooldown, a budget and a holdout group, and the
//! uplift they bring measured. Semantics are in `docs/actions.md`.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// An action on the matches of a pattern analytic: each final match is a candidate; per
/// decision interval the candidates are taken highest score first, and each gets the action
/// (`sent`), is kept back as a control (`holdout`), or is refused (`cooldown`, `budget`). The
/// analytic's results are the action records (outcomes `sent` and `holdout`) and, per report
/// window, an uplift report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionAnalytic {
    /// The `pattern` analytic whose matches trigger the action, by name.
    #[schemars(length(min = 1, max = 63))]
    pub trigger: String,
    /// What the action is.
    pub action: ActionType,
    /// Parameters of the action record, as templates: `{user}`, `{action_id}`, `{pattern}` and
    /// `{<captured field>}` are replaced; a value that is a number after replacement is written
    /// as a number (e.g. `percent_off: "10"`, `code: "CART-{action_id}"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Why the action was taken, as a template like `params` (default: the pattern's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the action is valid after its decision: the record's `expires_at`.
    pub validity: Duration,
    /// At most one action (or holdout) per user within this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
    /// At most `maxActions` actions per `per` of event time, over all partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<ActionBudget>,
    /// Share of candidates, in percent, kept back as a control group: chosen by a keyed hash of
    /// the user, so a user is always in the same group.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 90.0))]
    pub holdout_percent: f64,
    /// A captured numeric field of the match that ranks candidates, highest first (ties by
    /// user); without it candidates rank by user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_by: Option<String>,
    /// Candidates are decided in intervals of event time of this length (default `1m`); the
    /// budget's `per` and the report window are multiples of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_every: Option<Duration>,
    /// What counts as a conversion after a decision, for the uplift report.
    pub conversion: ActionConversion,
    /// Length of the uplift report's windows (by decision time; default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_window: Option<Duration>,
}

/// Kinds of actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ActionType {
    /// A coupon code.
    Coupon,
    /// A time-limited discount.
    Discount,
    /// A message (e-mail, push).
    Message,
}

impl ActionType {
    /// The name as records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Coupon => "coupon",
            ActionType::Discount => "discount",
            ActionType::Message => "message",
        }
    }
}

/// A budget of actions per interval of event time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionBudget {
    /// Most actions sent (and holdouts) per interval.
    #[schemars(range(min = 1))]
    pub max_actions: u32,
    /// The interval, aligned to the epoch (e.g. `1h`).
    pub per: Duration,
}

/// What converts after a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionConversion {
    /// Event types that are a conversion (e.g. `purchase`), among the pattern's sources.
    #[schemars(length(min = 1))]
    pub event_types: Vec<String>,
    /// How long after the decision a conversion counts (the attribution window).
    pub within: Duration,
    /// Numeric field summed as revenue (default `price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<String>,
}
