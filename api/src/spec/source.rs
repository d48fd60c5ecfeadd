//! Sources: where events come from and how a raw record maps onto Tidemark's event fields.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// One input stream of the pipeline. Exactly one of `kafka`, `file`, `stdin` or `generator`
/// names where its records come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.kafka), has(self.file), has(self.stdin), has(self.generator)].filter(x, x).size() == 1"
).message("exactly one of kafka, file, stdin or generator must be set"))]
pub struct SourceSpec {
    /// Name of the source, referenced by analytics (lowercase letters, digits, `_` and `-`).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([a-z0-9_-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Read a Kafka topic of the pipeline's cluster (`spec.kafka`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSource>,
    /// Read a file of JSON lines (local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// Read JSON lines from standard input (local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<StdinSource>,
    /// Built-in deterministic synthetic clickstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSpec>,
    /// Encoding of each record.
    #[serde(default)]
    pub format: Format,
    /// Where Tidemark's event fields are found in a record.
    #[serde(default)]
    pub fields: FieldMapping,
    /// Event types this source carries (values of the `type` field). Records of other types are
    /// routed to the dead-letter output with reason `unexpected_type`. Empty means every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// CEL condition over `event` that a record must satisfy to enter the pipeline,
    /// e.g. `event.price > 100.0 && event.category == "audio"`. Records that fail it are dropped
    /// and counted as filtered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Computed fields added to every event (map), each a CEL expression over `event`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derive: Vec<DerivedField>,
}

/// A Kafka topic to consume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSource {
    /// Topic name. All sources of a pipeline must have the same partition count.
    #[schemars(length(min = 1, max = 249))]
    pub topic: String,
}

/// A file of JSON lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    /// Path of the file, relative to the working directory.
    #[schemars(length(min = 1))]
    pub path: String,
}

/// Standard input as a source; it has no settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct StdinSource {}

/// Settings of the built-in clickstream generator. Its events are JSON objects
/// `{"type", "user_id", "product_id", "category", "price", "ts"}` with `ts` in epoch milliseconds.
/// The same settings produce the same events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorSpec {
    /// Events per second of wall-clock time; 0 means as fast as possible.
    #[serde(default = "defaults::rate")]
    #[schemars(range(min = 0))]
    pub rate: u64,
    /// Stop after this many events; absent means run until stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub events: Option<u64>,
    /// Number of distinct users (Zipf-distributed).
    #[serde(default = "defaults::users")]
    #[schemars(range(min = 1))]
    pub users: u64,
    /// Number of distinct products (Zipf-distributed).
    #[serde(default = "defaults::products")]
    #[schemars(range(min = 1))]
    pub products: u64,
    /// Zipf exponent of user and product popularity.
    #[serde(default = "defaults::skew")]
    #[schemars(range(min = 0.0, max = 5.0))]
    pub skew: f64,
    /// Fraction of events whose timestamp lags behind the generator's clock.
    #[serde(default = "defaults::out_of_order_fraction")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub out_of_order_fraction: f64,
    /// Largest lag of an out-of-order event.
    #[serde(default = "defaults::max_delay")]
    pub max_delay: crate::Duration,
    /// Event time advanced per event; with `rate` it sets how fast event time runs
    /// relative to the wall clock.
    #[serde(default = "defaults::time_step")]
    pub time_step: crate::Duration,
    /// Event time of the first event, epoch milliseconds (default 2026-01-01T00:00:00Z).
    #[serde(default = "defaults::start_time")]
    pub start_time: i64,
    /// Seed of the pseudo-random sequence.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Fraction of records that repeat the record before them (same `event_id`): the
    /// duplicates a retrying producer writes.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub duplicate_fraction: f64,
    /// Fraction of events stamped about a year ahead of the generator's clock: a device with
    /// a wrong clock.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub clock_skew_fraction: f64,
    /// Planted incidents: spans of event time in which one funnel step succeeds less often.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<IncidentSpec>,
}

/// A planted incident: from `from` to `to` after the generator's start (event time), the
/// chance that a journey reaches `step` is multiplied by `factor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSpec {
    /// The step that fails more often: `click`, `add_to_cart` or `purchase`.
    pub step: String,
    /// Multiplier of the step's success chance (0.2: a fifth of the usual conversions).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub factor: f64,
    /// Start of the span, after the generator's start time.
    pub from: crate::Duration,
    /// End of the span (exclusive).
    pub to: crate::Duration,
}

impl IncidentSpec {
    /// Parses `STEP:FACTOR@FROM..TO`, e.g. `purchase:0.2@2h..4h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || {
            format!("invalid incident {text:?}: expected STEP:FACTOR@FROM..TO, e.g. purchase:0.2@2h..4h")
        };
        let (step, rest) = text.split_once(':').ok_or_else(err)?;
        let (factor, span) = rest.split_once('@').ok_or_else(err)?;
        let (from, to) = span.split_once("..").ok_or_else(err)?;
        let factor: f64 = factor.parse().map_err(|_| err())?;
        let from = crate::Duration::parse(from).map_err(|_| err())?;
        let to = crate::Duration::parse(to).map_err(|_| err())?;
        if !["click", "add_to_cart", "purchase"].contains(&step)
            || !(0.0..=1.0).contains(&factor)
            || from.millis() >= to.millis()
        {
            return Err(err());
        }
        Ok(Self {
            step: step.to_owned(),
            factor,
            from,
            to,
        })
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        Self {
            rate: defaults::rate(),
            events: None,
            users: defaults::users(),
            products: defaults::products(),
            skew: defaults::skew(),
            out_of_order_fraction: defaults::out_of_order_fraction(),
            max_delay: defaults::max_delay(),
            time_step: defaults::time_step(),
            start_time: defaults::start_time(),
            seed: defaults::seed(),
            duplicate_fraction: 0.0,
            clock_skew_fraction: 0.0,
            incidents: Vec::new(),
        }
    }
}

/// Encoding of source records.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// One JSON object per record (per line in files).
    #[default]
    Json,
}

/// Names of the record fields that carry Tidemark's event fields (a rename), and the extra
/// fields to keep (a projection). In CEL expressions the event has the fields `user`, `product`,
/// `type`, `category`, `price`, `time` (epoch ms) and every extra or derived field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldMapping {
    /// Field holding the user id, the key of per-user analytics.
    #[serde(default = "defaults::user")]
    pub user: String,
    /// Field holding the product id.
    #[serde(default = "defaults::product")]
    pub product: String,
    /// Field holding the event type (`view`, `click`, `add_to_cart`, `purchase`, ...).
    #[serde(default = "defaults::event_type", rename = "type")]
    pub event_type: String,
    /// Field holding the product category.
    #[serde(default = "defaults::category")]
    pub category: String,
    /// Field holding the price, a number.
    #[serde(default = "defaults::price")]
    pub price: String,
    /// Field holding the event time.
    #[serde(default = "defaults::time")]
    pub time: String,
    /// How the event time is written.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Further fields to keep, by name (strings or numbers), e.g. `campaign` or `channel`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

impl Default for FieldMapping {
    fn default() -> Self {
        Self {
            user: defaults::user(),
            product: defaults::product(),
            event_type: defaults::event_type(),
            category: defaults::category(),
            price: defaults::price(),
            time: defaults::time(),
            time_format: TimeFormat::default(),
            extra: Vec::new(),
        }
    }
}

/// How event times are written in records.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum TimeFormat {
    /// Integer milliseconds since the Unix epoch.
    #[default]
    EpochMillis,
    /// Seconds since the Unix epoch, integer or fractional.
    EpochSeconds,
    /// An RFC 3339 timestamp string, e.g. `2026-01-01T10:00:00Z`.
    Rfc3339,
}

/// A field computed from each event (map).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DerivedField {
    /// Name of the new field.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// CEL expression over `event`, e.g. `event.price * 0.9`.
    #[schemars(length(min = 1))]
    pub expr: String,
}

/// The event fields every source has, as analytics name them.
pub const EVENT_FIELDS: [&str; 6] = ["user", "product", "type", "category", "price", "time"];

mod defaults {
    use crate::Duration;

    pub fn user() -> String {
        "user_id".into()
    }
    pub fn product() -> String {
        "product_id".into()
    }
    pub fn event_type() -> String {
        "type".into()
    }
    pub fn category() -> String {
        "category".into()
    }
    pub fn price() -> String {
        "price".into()
    }
    pub fn time() -> String {
        "ts".into()
    }
    pub fn rate() -> u64 {
        20_000
    }
    pub fn users() -> u64 {
        1_000
    }
    pub fn products() -> u64 {
        200
    }
    pub fn skew() -> f64 {
        1.0
    }
    pub fn out_of_order_fraction() -> f64 {
        0.05
    }
    pub fn max_delay() -> Duration {
        Duration::from_millis(5_000)
    }
    pub fn time_step() -> Duration {
        Duration::from_millis(50)
    }
    pub fn start_time() -> i64 {
        1_767_225_600_000
    }
    pub fn seed() -> u64 {
        42
    }
}
