//! Analytics: what the pipeline computes over its sources, per key and event-time window.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// One computation whose results go to the sinks. Exactly one of `aggregate`, `join`, `topN`,
/// `funnel`, `pattern`, `action`, `segments`, `propensity` or `recommend` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.aggregate), has(self.join), has(self.topN), has(self.funnel), has(self.pattern), has(self.action), has(self.segments), has(self.propensity), has(self.recommend)].filter(x, x).size() == 1"
).message("exactly one of aggregate, join, topN, funnel, pattern, action, segments, propensity or recommend must be set"))]
pub struct AnalyticSpec {
    /// Name of the analytic; the first part of each result's Kafka key.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([a-z0-9_-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Keyed, windowed aggregation of one or more sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateAnalytic>,
    /// Windowed join of two sources per key (co-group): each side aggregated per key and window,
    /// the two combined into one result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinAnalytic>,
    /// The `limit` keys with the highest value per window (hot products): one result per window
    /// with the ranked list, over every partition of the input.
    #[serde(default, rename = "topN", skip_serializing_if = "Option::is_none")]
    pub top_n: Option<TopNAnalytic>,
    /// A conversion funnel: how many users (or sessions) that enter at the first step reach
    /// each later step within the conversion window, per window and breakdown value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funnel: Option<crate::spec::funnel::FunnelAnalytic>,
    /// An intent pattern per user (e.g. an abandoned cart: `add_to_cart` not followed by
    /// `purchase` within 30 minutes): one result per match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<crate::spec::pattern::PatternAnalytic>,
    /// A marketing action (coupon, discount, message) on a pattern's matches, with cooldown,
    /// budget, holdout and an uplift report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<crate::spec::action::ActionAnalytic>,
    /// Customer segments: online k-means over per-user features (RFM by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<crate::spec::model::SegmentsAnalytic>,
    /// Purchase propensity: online logistic regression predicting a purchase within a horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propensity: Option<crate::spec::model::PropensityAnalytic>,
    /// Recommendations: item-item co-occurrence within sessions, top-K per user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommend: Option<crate::spec::model::RecommendAnalytic>,
}

/// A top-N ranking: the events of `sources` (optionally filtered) aggregated per `keyBy` and
/// window as an `aggregate` analytic does, then, per window, the `limit` keys with the highest
/// `rankBy` value (ties by key, ascending) as one result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.aggregates.exists(a, a.name == self.rankBy) || (has(self.ratios) && self.ratios.exists(r, r.name == self.rankBy))"
).message("rankBy must name one of the aggregates or ratios"))]
#[x_kube(validation = kube::core::Rule::new("self.window.type != 'session'")
    .message("topN needs tumbling or sliding windows"))]
pub struct TopNAnalytic {
    /// Sources, filter, key (e.g. `product`), window (tumbling or sliding), lateness and the
    /// values computed per key and window, as an `aggregate` analytic has them; one of the
    /// values is ranked.
    #[serde(flatten)]
    pub aggregate: AggregateAnalytic,
    /// The aggregate or ratio that ranks the keys, highest first.
    #[schemars(length(min = 1, max = 63))]
    pub rank_by: String,
    /// How many keys each window's result lists (fewer when fewer keys had events): the N of
    /// top-N. (Not `n`: YAML 1.1 parsers, kubectl's among them, read a bare `n` as `false`.)
    #[schemars(range(min = 1, max = 1000))]
    pub limit: u32,
}

/// A keyed, windowed aggregation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregateAnalytic {
    /// Sources whose events enter the aggregation.
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,
    /// CEL condition over `event` an event must satisfy to be aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Key, window and values.
    #[serde(flatten)]
    pub group: GroupSpec,
}

/// A windowed join of two sources on the same key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinAnalytic {
    /// Source of the left side (e.g. clicks).
    pub left: String,
    /// Source of the right side (e.g. purchases).
    pub right: String,
    /// Which key-windows produce a result.
    #[serde(default, rename = "type")]
    pub join_type: JoinType,
    /// Key, window and values; each aggregate names its side with `source`.
    #[serde(flatten)]
    pub group: GroupSpec,
}

/// Which key-windows of a join produce a result.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum JoinType {
    /// Only key-windows with events on both sides.
    Inner,
    /// Key-windows with events on the left side.
    Left,
    /// Every key-window with events on either side; a side without events counts zero.
    #[default]
    FullOuter,
}

/// Grouping shared by aggregations and joins: key, window, lateness and values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    /// Event field that keys the computation: `user`, `product`, `category`, `type` or an extra
    /// field.
    #[serde(default = "default_key_by")]
    pub key_by: String,
    /// Event-time window.
    pub window: WindowSpec,
    /// How long after a window closes late events still update it; each update is emitted again
    /// with a higher `revision`. Events later than that go to the dead-letter output (`late`).
    #[serde(default = "zero")]
    pub allowed_lateness: Duration,
    /// Values computed per key and window (at most 32, which also bounds the cost of the CEL
    /// rules that look names up in them).
    #[schemars(length(min = 1, max = 32))]
    pub aggregates: Vec<AggregateSpec>,
    /// Ratios of two aggregates (0 when the denominator is 0), e.g. a conversion rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ratios: Vec<RatioSpec>,
}

/// An event-time window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type == 'session' ? has(self.gap) : has(self.size)")
    .message("tumbling and sliding windows need size, session windows need gap"))]
#[x_kube(validation = kube::core::Rule::new("self.type != 'sliding' || has(self.slide)")
    .message("sliding windows need slide"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.slide) || !has(self.size) || self.slide.contains('d') || self.size.contains('d') || duration(self.slide) <= duration(self.size)"
).message("slide must not exceed size"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.offset) || self.type != 'session'")
    .message("session windows take no offset"))]
pub struct WindowSpec {
    /// Window kind.
    #[serde(rename = "type")]
    pub kind: WindowKind,
    /// Length of tumbling and sliding windows. Windows align to the Unix epoch (so to UTC hours
    /// and days) plus `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Duration>,
    /// Shift of tumbling and sliding windows from the epoch alignment, less than the slide (or
    /// size): `7d` windows with offset `4d` are weeks starting on Monday 00:00 UTC (the epoch
    /// was a Thursday); `1d` windows with offset `22h` are days starting at midnight UTC+2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<Duration>,
    /// Distance between the starts of sliding windows; at most `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<Duration>,
    /// Inactivity that closes a session window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Duration>,
}

/// Kinds of event-time windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WindowKind {
    /// Fixed-size, non-overlapping windows.
    Tumbling,
    /// Fixed-size windows starting every `slide`, computed incrementally from panes.
    Sliding,
    /// Per-key activity sessions separated by at least `gap`.
    Session,
}

/// One value computed per key and window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregateSpec {
    /// Name of the value in results.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub name: String,
    /// Aggregate function.
    pub op: AggregateOp,
    /// Event field aggregated; required by every function but `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Only events of this source count (in joins, the side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AggregateOp {
    /// Number of events.
    Count,
    /// Sum of a numeric field.
    Sum,
    /// Smallest value of a numeric field.
    Min,
    /// Largest value of a numeric field.
    Max,
    /// Mean of a numeric field.
    Avg,
    /// Number of distinct values of a field (exact).
    DistinctCount,
}

/// A ratio of two aggregates of the same analytic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatioSpec {
    /// Name of the value in results.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    pub name: String,
    /// Aggregate divided.
    pub numerator: String,
    /// Aggregate divided by; a zero denominator gives 0.
    pub denominator: String,
}

fn default_key_by() -> String {
    "user".into()
}

fn zero() -> Duration {
    Duration::from_millis(0)
}
