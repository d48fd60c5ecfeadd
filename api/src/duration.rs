//! Human-readable durations (`500ms`, `10s`, `5m`, `1h30m`) as they appear in manifests.
//!
//! The language is the subset of Go's `time.ParseDuration` with the units ms, s, m and h, plus
//! `d` for days (24 h, as Flink and Prometheus read it: UTC has no daylight saving). Kubernetes
//! CEL's `duration(...)` does not know `d`, so CEL rules compare durations only when neither is
//! written in days; the worker's validation checks the rest.
//!
//! The manifest keeps the text the user wrote, so that what the operator writes back never
//! differs from what a GitOps repository holds; [`Duration::millis`] parses it on use.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pattern that the CRD schema enforces; [`Duration::parse_millis`] accepts exactly this language.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

/// A duration as written in a manifest, validated on deserialization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    millis: u64,
}

/// Why a duration text is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {text:?}: expected digits followed by ms, s, m, h or d, e.g. 10s, 1h30m or 7d")]
pub struct DurationError {
    text: String,
}

impl Duration {
    /// Parses `text`, e.g. `1h30m`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        Ok(Self {
            text: text.to_owned(),
            millis: Self::parse_millis(text)?,
        })
    }

    /// A duration of `millis` milliseconds, written in the largest exact unit.
    pub fn from_millis(millis: u64) -> Self {
        const UNITS: [(u64, &str); 4] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")];
        let (factor, unit) = UNITS
            .iter()
            .copied()
            .find(|(factor, _)| millis.is_multiple_of(*factor) && millis != 0)
            .unwrap_or((1, "ms"));
        Self {
            text: format!("{}{unit}", millis / factor),
            millis,
        }
    }

    /// Milliseconds of `text`, or an error naming the text.
    pub fn parse_millis(text: &str) -> Result<u64, DurationError> {
        let err = || DurationError {
            text: text.to_owned(),
        };
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(err());
        }
        let mut total: u64 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err());
            }
            let number: u64 = text[start..i].parse().map_err(|_| err())?;
            let factor = match &bytes[i..] {
                [b'm', b's', ..] => {
                    i += 2;
                    1
                }
                [b's', ..] => {
                    i += 1;
                    1_000
                }
                [b'm', ..] => {
                    i += 1;
                    60_000
                }
                [b'h', ..] => {
                    i += 1;
                    3_600_000
                }
                [b'd', ..] => {
                    i += 1;
                    86_400_000
                }
                _ => return Err(err()),
            };
            total = number
                .checked_mul(factor)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(err)?;
        }
        Ok(total)
    }

    /// The duration in milliseconds.
    pub fn millis(&self) -> u64 {
        self.millis
    }

    /// The duration in milliseconds as a signed event-time offset.
    pub fn millis_i64(&self) -> i64 {
        i64::try_from(self.millis).unwrap_or(i64::MAX)
    }

    /// The text as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: digits followed by ms, s, m or h, e.g. 10s or 1h30m."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_durations_add_their_parts() {
        assert_eq!(Duration::parse_millis("1h30m").unwrap(), 5_400_000);
        assert_eq!(Duration::parse_millis("500ms").unwrap(), 500);
        assert_eq!(Duration::parse_millis("48h").unwrap(), 172_800_000);
        assert_eq!(Duration::parse_millis("1m1s1ms").unwrap(), 61_001);
    }

    #[test]
    fn days_are_24_hours() {
        assert_eq!(Duration::parse_millis("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(Duration::parse_millis("1d12h").unwrap(), 36 * 3_600_000);
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "1.5s",
            "-1s",
            "1h 30m",
            "2w",
            "99999999999999999999h",
        ] {
            assert!(
                Duration::parse_millis(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn from_millis_picks_the_largest_exact_unit() {
        assert_eq!(Duration::from_millis(3_600_000).as_str(), "1h");
        assert_eq!(Duration::from_millis(90_000).as_str(), "90s");
        assert_eq!(Duration::from_millis(1_500).as_str(), "1500ms");
        assert_eq!(Duration::from_millis(0).as_str(), "0ms");
    }
}
