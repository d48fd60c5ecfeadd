//! Online models — `segments`, `propensity` and `recommend` analytics: learned in epochs of
//! event time from every user, deterministic whatever the parallelism. Semantics are in
//! `docs/models.md`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// The user aggregates a model feature may name.
pub const USER_AGGREGATES: [&str; 7] = [
    "events",
    "views",
    "carts",
    "purchases",
    "revenue",
    "recency_hours",
    "active_hours",
];

/// What every model has: its input, its epochs and the event types it reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelInput {
    /// Sources whose events the model learns from (partitioned by user).
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,
    /// Length of a model epoch in event time (default `10m`): each epoch's observations are
    /// scored with the model of the epochs before it, then learned from, in one fixed order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Duration>,
    /// How long after an epoch's end late events still count; later ones are dead-lettered
    /// as `late`. Default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<Duration>,
    /// Event types that are purchases (default `[purchase]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_types: Option<Vec<String>>,
    /// The numeric field holding a purchase's value (default `price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<String>,
}

/// One feature of a user: a CEL expression over the user's aggregates of the trailing
/// horizon — `events`, `views`, `carts`, `purchases` (counts), `revenue` (sum),
/// `recency_hours` (hours since the last purchase; the horizon when none), `active_hours`
/// (hours since the first event in the horizon) — e.g. `log(1.0 + revenue)` or
/// `double(carts) / double(views + 1)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserFeature {
    /// Name of the feature in results.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub name: String,
    /// CEL expression giving a number.
    #[schemars(length(min = 1, max = 1024))]
    pub expr: String,
}

/// Customer segments: mini-batch k-means over per-user features, standardised online.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentsAnalytic {
    /// Sources, epochs and purchase fields.
    #[serde(flatten)]
    pub input: ModelInput,
    /// Number of segments.
    #[schemars(range(min = 2, max = 32))]
    pub k: u32,
    /// Seed of the k-means++ initialisation.
    #[serde(default)]
    pub seed: u64,
    /// Trailing horizon of the user aggregates (default `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<Duration>,
    /// Features (default RFM: `recency_hours`, `purchases`, `revenue`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub features: Vec<UserFeature>,
    /// Names of the segments by rank of one feature's centroid value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<SegmentLabels>,
}

/// Segment names by rank: the segment whose centroid has the highest `by` gets the first name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentLabels {
    /// The feature that ranks the segments, highest first.
    #[schemars(length(min = 1, max = 63))]
    pub by: String,
    /// One name per segment (`k` names).
    #[schemars(length(min = 2, max = 32))]
    pub names: Vec<String>,
}

/// Purchase propensity: online logistic regression (FTRL-proximal) on polynomial features,
/// predicting a purchase within `horizon` of each decision point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropensityAnalytic {
    /// Sources, epochs and purchase fields. A decision point is each epoch's end, for every
    /// user active in the epoch.
    #[serde(flatten)]
    pub input: ModelInput,
    /// The label: a purchase within this time after the decision point.
    pub horizon: Duration,
    /// Trailing window of the user aggregates (default `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// Degree of the polynomial expansion of the features (1 to 3; default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3))]
    pub degree: Option<u32>,
    /// Features (default: `log(1 + views)`, `log(1 + carts)`, `log(1 + purchases)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub features: Vec<UserFeature>,
    /// FTRL learning rate alpha (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// L2 regularisation (default 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2: Option<f64>,
}

/// Recommendations: item-item co-occurrence within users' sessions, decayed over time; per
/// user, when a session ends, the products co-occurring most with its views that the user
/// has not bought.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendAnalytic {
    /// Sources, epochs and purchase fields.
    #[serde(flatten)]
    pub input: ModelInput,
    /// Inactivity that ends a session (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_gap: Option<Duration>,
    /// Event types that count as interest in a product (default `[view, add_to_cart]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_types: Option<Vec<String>>,
    /// Half-life of co-occurrence weights in event time (default `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<Duration>,
    /// Products per recommendation list and per product's neighbour list (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub top_k: Option<u32>,
}
