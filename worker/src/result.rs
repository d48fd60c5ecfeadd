//! Encoding of results and dead letters as JSON records (docs/design.md, results).
//!
//! A result's Kafka key is `<analytic>/<key>/<window_start>`; its value holds `pipeline`,
//! `analytic`, `key`, `window: {start, end}` (RFC 3339), the analytic's values by name,
//! `revision` and `emitted_at`. Everything but `emitted_at` is a function of the input, so a
//! consumer can deduplicate by key and revision.
//!
//! A top-N analytic has one result per window, not per key: Kafka key
//! `<analytic>/<window_start>`, and instead of `key` and values, `rankBy` and `top`, the ranked
//! list of `{key, value}`.

use std::io::Write;

use chrono::{DateTime, SecondsFormat};

use crate::event::Reason;
use crate::window::accumulate::Value;
use crate::window::Emission;

/// One key-window of a window being ranked (`crate::analytics::top_n`): what a ranking lists.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The key (a product, say).
    pub key: String,
    /// The key-window's revision (0 for its first result, then one more per update).
    pub revision: u32,
    /// Its ranked value.
    pub value: Value,
}

/// A result ready for a sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRecord {
    /// Index of the analytic that produced it.
    pub analytic: usize,
    /// Kafka key.
    pub key: String,
    /// JSON value.
    pub value: Vec<u8>,
}

/// A rejected input record with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Source it came from, if it was routed to one.
    pub source: Option<String>,
    /// Why it was rejected.
    pub reason: Reason,
    /// What went wrong, without the record's data.
    pub detail: String,
    /// The record as it arrived.
    pub raw: Vec<u8>,
}

impl DeadLetter {
    /// The JSON value written to dead-letter outputs.
    pub fn to_json(&self, pipeline: &str, at: &str) -> Vec<u8> {
        let raw = String::from_utf8_lossy(&self.raw);
        let value = serde_json::json!({
            "pipeline": pipeline,
            "source": self.source,
            "reason": self.reason.as_str(),
            "detail": self.detail,
            "raw": raw,
            "at": at,
        });
        serde_json::to_vec(&value).expect("a JSON value always serializes")
    }
}

/// A record of the partials topic (`crate::partials`), for the global stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalRecord {
    /// Kafka key (informative: the task's partition of the topic is chosen by the task).
    pub key: String,
    /// The encoded record.
    pub value: Vec<u8>,
}

/// What a task produced since it was last drained.
#[derive(Debug, Default)]
pub struct Output {
    /// Results in emission order.
    pub results: Vec<ResultRecord>,
    /// Rejected records in arrival order.
    pub dead_letters: Vec<DeadLetter>,
    /// Partials and progress marks for the global stage, in emission order.
    pub partials: Vec<InternalRecord>,
}

impl Output {
    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty() && self.dead_letters.is_empty() && self.partials.is_empty()
    }

    /// Moves everything of `other` to the end of this output.
    pub fn append(&mut self, other: &mut Output) {
        self.results.append(&mut other.results);
        self.dead_letters.append(&mut other.dead_letters);
        self.partials.append(&mut other.partials);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.results.clear();
        self.dead_letters.clear();
        self.partials.clear();
    }
}

/// RFC 3339 text of epoch milliseconds, UTC, fractional seconds only when non-zero.
pub fn rfc3339(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None if ms < 0 => "-infinity".to_owned(),
        None => "+infinity".to_owned(),
    }
}

/// Encodes results, caching the formatted window bounds (results of one window share them).
#[derive(Debug)]
pub struct Encoder {
    pipeline: String,
    emitted_at: String,
    start: (i64, String),
    end: (i64, String),
}

impl Encoder {
    /// An encoder for pipeline `pipeline`.
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: json_string(pipeline),
            emitted_at: json_string(&rfc3339(0)),
            start: (i64::MIN, String::new()),
            end: (i64::MIN, String::new()),
        }
    }

    /// Sets `emitted_at` of the results encoded from now on (epoch ms, wall clock).
    pub fn set_now(&mut self, now_ms: i64) {
        self.emitted_at = json_string(&rfc3339(now_ms));
    }

    /// The current `emitted_at` text.
    pub fn now_text(&self) -> &str {
        self.emitted_at.trim_matches('"')
    }

    fn cached(cache: &mut (i64, String), ms: i64) -> &str {
        if cache.0 != ms {
            *cache = (ms, rfc3339(ms));
        }
        &cache.1
    }

    /// Encodes `emission` of analytic `analytic` named `name` with value names `names`.
    pub fn encode(
        &mut self,
        analytic: usize,
        name: &str,
        names: &[String],
        emission: &Emission<'_>,
    ) -> ResultRecord {
        self.encode_values(
            analytic,
            name,
            Some(emission.key),
            emission.start,
            emission.end,
            emission.revision,
            |v| {
                for (value_name, value) in names.iter().zip(emission.values) {
                    write_field(v, value_name);
                    write_value(v, *value);
                }
            },
        )
    }

    /// Encodes a result of window `[start, end)` of analytic `analytic` named `name`: `key`
    /// (none for a per-window result such as a ranking, whose Kafka key is then
    /// `<analytic>/<window_start>`), the values `write` appends as `,"name":value` pairs, the
    /// `revision` and `emitted_at`. Every kind's results go through here.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_values(
        &mut self,
        analytic: usize,
        name: &str,
        key: Option<&str>,
        start: i64,
        end: i64,
        revision: u32,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> ResultRecord {
        let start = Self::cached(&mut self.start, start).to_owned();
        let end = Self::cached(&mut self.end, end);
        let mut kafka_key =
            String::with_capacity(name.len() + key.map_or(0, str::len) + start.len() + 2);
        kafka_key.push_str(name);
        kafka_key.push('/');
        if let Some(key) = key {
            kafka_key.push_str(key);
            kafka_key.push('/');
        }
        kafka_key.push_str(&start);
        let mut v = Vec::with_capacity(256);
        let _ = write!(v, "{{\"pipeline\":{},\"analytic\":", self.pipeline);
        write_json_str(&mut v, name);
        if let Some(key) = key {
            v.extend_from_slice(b",\"key\":");
            write_json_str(&mut v, key);
        }
        let _ = write!(v, ",\"window\":{{\"start\":\"{start}\",\"end\":\"{end}\"}}");
        write(&mut v);
        let _ = write!(
            v,
            ",\"revision\":{},\"emitted_at\":{}}}",
            revision, self.emitted_at
        );
        ResultRecord {
            analytic,
            key: kafka_key,
            value: v,
        }
    }
}

impl Encoder {
    /// Encodes the top-N result of window `[start, end)` of analytic `analytic` named `name`:
    /// `items` ranked by the value `rank_name`, the window's top-N `revision`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_top(
        &mut self,
        analytic: usize,
        name: &str,
        rank_name: &str,
        start: i64,
        end: i64,
        items: &[Item],
        revision: u32,
    ) -> ResultRecord {
        self.encode_values(analytic, name, None, start, end, revision, |v| {
            v.extend_from_slice(b",\"rankBy\":");
            write_json_str(v, rank_name);
            v.extend_from_slice(b",\"top\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    v.push(b',');
                }
                v.extend_from_slice(b"{\"key\":");
                write_json_str(v, &item.key);
                v.extend_from_slice(b",\"value\":");
                write_value(v, item.value);
                v.push(b'}');
            }
            v.push(b']');
        })
    }
}

/// Appends `,"name":` (a value follows).
pub fn write_field(v: &mut Vec<u8>, name: &str) {
    v.push(b',');
    write_json_str(v, name);
    v.push(b':');
}

/// A value as JSON: integers and finite floats as numbers, anything else `null`.
pub fn write_value(v: &mut Vec<u8>, value: Value) {
    match value {
        Value::Int(i) => v.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        Value::Float(f) if f.is_finite() => {
            v.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes())
        }
        Value::Float(_) | Value::Null => v.extend_from_slice(b"null"),
    }
}

/// `s` as a JSON string (quoted and escaped).
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// Appends `s` as a JSON string.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_result_has_the_design_shape() {
        let mut encoder = Encoder::new("quickstart");
        encoder.set_now(1_767_229_300_000);
        let names: Vec<String> = ["clicks", "revenue", "conversion_rate"]
            .map(String::from)
            .to_vec();
        let values = [Value::Int(3), Value::Float(12.5), Value::Float(1.0 / 3.0)];
        let emission = Emission {
            key: "u\"1",
            start: 1_767_225_600_000,
            end: 1_767_229_200_000,
            revision: 2,
            values: &values,
            partial: None,
        };
        let record = encoder.encode(0, "marketing_report", &names, &emission);
        let top = encoder.encode_top(
            1,
            "hot_products",
            "views",
            1_767_225_600_000,
            1_767_229_200_000,
            &[
                Item {
                    key: "p\"7".into(),
                    revision: 0,
                    value: Value::Int(9),
                },
                Item {
                    key: "p1".into(),
                    revision: 1,
                    value: Value::Int(4),
                },
            ],
            2,
        );
        assert_eq!(top.key, "hot_products/2026-01-01T00:00:00Z");
        let json: serde_json::Value = serde_json::from_slice(&top.value).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "pipeline": "quickstart", "analytic": "hot_products",
                "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"},
                "rankBy": "views",
                "top": [{"key": "p\"7", "value": 9}, {"key": "p1", "value": 4}],
                "revision": 2, "emitted_at": "2026-01-01T01:01:40Z"
            })
        );
        assert_eq!(record.key, "marketing_report/u\"1/2026-01-01T00:00:00Z");
        let json: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "pipeline": "quickstart", "analytic": "marketing_report", "key": "u\"1",
                "window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"},
                "clicks": 3, "revenue": 12.5, "conversion_rate": 1.0 / 3.0,
                "revision": 2, "emitted_at": "2026-01-01T01:01:40Z"
            })
        );
    }
}
