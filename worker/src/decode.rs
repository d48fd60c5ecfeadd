//! JSON decoding of source records through a source's field mapping.
//!
//! The decoder walks each object once with serde_json, keeps only the mapped fields (borrowed
//! when they contain no escapes) and skips everything else without building a DOM, which is what
//! makes decoding cheap enough to run a million events per second on one core.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use tidemark_api::{FieldMapping, TimeFormat};

use crate::event::{Event, FieldValue, Reason, Rejection};

/// Slots of the event fields in a record.
const USER: usize = 0;
const PRODUCT: usize = 1;
const TYPE: usize = 2;
const CATEGORY: usize = 3;
const PRICE: usize = 4;
const TIME: usize = 5;
const FIXED: usize = 6;

/// Decodes records of one source.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// Record field names by slot: the six event fields, then the extra fields.
    names: Vec<String>,
    time_format: TimeFormat,
}

impl Decoder {
    /// A decoder for `mapping`.
    pub fn new(mapping: &FieldMapping) -> Self {
        let mut names = vec![
            mapping.user.clone(),
            mapping.product.clone(),
            mapping.event_type.clone(),
            mapping.category.clone(),
            mapping.price.clone(),
            mapping.time.clone(),
        ];
        names.extend(mapping.extra.iter().cloned());
        Self {
            names,
            time_format: mapping.time_format,
        }
    }

    /// Number of extra fields an event of this source carries before derived fields.
    pub fn extra_fields(&self) -> usize {
        self.names.len() - FIXED
    }

    /// Decodes one record; the event borrows from `raw`.
    pub fn decode<'a>(&self, raw: &'a [u8]) -> Result<Event<'a>, Rejection> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        let mut slots = Slots {
            fixed: Default::default(),
            extra: Vec::new(),
        };
        if self.names.len() > FIXED {
            slots
                .extra
                .resize(self.names.len() - FIXED, FieldValue::Null);
        }
        let mut present = 0u64;
        let seed = RecordSeed {
            decoder: self,
            slots: &mut slots,
            present: &mut present,
        };
        seed.deserialize(&mut de)
            .map_err(|err| Rejection::new(Reason::MalformedJson, json_error(&err)))?;
        de.end()
            .map_err(|err| Rejection::new(Reason::MalformedJson, json_error(&err)))?;
        self.resolve(slots)
    }

    fn resolve<'a>(
        &self,
        Slots {
            fixed: mut slots,
            extra,
        }: Slots<'a>,
    ) -> Result<Event<'a>, Rejection> {
        let user = match std::mem::replace(&mut slots[USER], FieldValue::Null) {
            FieldValue::Null => return Err(self.missing(USER)),
            value => match id(value) {
                Some(user) if !user.is_empty() => user,
                _ => return Err(self.invalid(USER, "a non-empty string or an integer")),
            },
        };
        let time = match std::mem::replace(&mut slots[TIME], FieldValue::Null) {
            FieldValue::Null => return Err(self.missing(TIME)),
            value => parse_time(value, self.time_format).ok_or_else(|| {
                Rejection::new(
                    Reason::InvalidTime,
                    format!(
                        "field {:?} is not a time in format {:?}",
                        self.names[TIME], self.time_format
                    ),
                )
            })?,
        };
        let mut optional_id =
            |slot: usize| match std::mem::replace(&mut slots[slot], FieldValue::Null) {
                FieldValue::Null => Ok(None),
                value => id(value)
                    .map(Some)
                    .ok_or_else(|| self.invalid(slot, "a string or an integer")),
            };
        let product = optional_id(PRODUCT)?;
        let event_type = optional_id(TYPE)?;
        let category = optional_id(CATEGORY)?;
        let price = match &slots[PRICE] {
            FieldValue::Null => None,
            value => Some(
                value
                    .as_f64()
                    .filter(|p| p.is_finite())
                    .ok_or_else(|| self.invalid(PRICE, "a number"))?,
            ),
        };
        Ok(Event {
            time,
            user,
            product,
            event_type,
            category,
            price,
            extra,
        })
    }

    fn missing(&self, slot: usize) -> Rejection {
        Rejection::new(
            Reason::MissingField,
            format!("field {:?} is missing", self.names[slot]),
        )
    }

    fn invalid(&self, slot: usize, expected: &str) -> Rejection {
        Rejection::new(
            Reason::InvalidField,
            format!("field {:?} must be {expected}", self.names[slot]),
        )
    }
}

/// serde_json's message without the input it quotes (which may hold personal data).
fn json_error(err: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        err.classify(),
        err.line(),
        err.column()
    )
}

/// An id: strings as they are, integers in decimal.
fn id(value: FieldValue<'_>) -> Option<Cow<'_, str>> {
    match value {
        FieldValue::Str(s) => Some(s),
        FieldValue::Int(i) => Some(Cow::Owned(i.to_string())),
        _ => None,
    }
}

/// Epoch milliseconds of a time field, or `None` if it is not one in `format`.
pub fn parse_time(value: FieldValue<'_>, format: TimeFormat) -> Option<i64> {
    match (format, value) {
        (TimeFormat::EpochMillis, FieldValue::Int(ms)) => Some(ms),
        (TimeFormat::EpochMillis, FieldValue::Float(ms))
            if ms.fract() == 0.0 && ms.abs() < 9.0e15 =>
        {
            Some(ms as i64)
        }
        (TimeFormat::EpochSeconds, FieldValue::Int(s)) => s.checked_mul(1000),
        (TimeFormat::EpochSeconds, FieldValue::Float(s)) if s.is_finite() && s.abs() < 9.0e12 => {
            Some((s * 1000.0).round() as i64)
        }
        (TimeFormat::Rfc3339, FieldValue::Str(s)) => chrono::DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// Values found in a record: the event fields on the stack, extra fields in a vector that is only
/// allocated when the mapping has extra fields.
struct Slots<'a> {
    fixed: [FieldValue<'a>; FIXED],
    extra: Vec<FieldValue<'a>>,
}

impl<'a> Slots<'a> {
    fn get_mut(&mut self, slot: usize) -> &mut FieldValue<'a> {
        match slot.checked_sub(FIXED) {
            None => &mut self.fixed[slot],
            Some(extra) => &mut self.extra[extra],
        }
    }
}

struct RecordSeed<'d, 's, 'a> {
    decoder: &'d Decoder,
    slots: &'s mut Slots<'a>,
    present: &'s mut u64,
}

impl<'de, 'd, 's> DeserializeSeed<'de> for RecordSeed<'d, 's, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 'd, 's> Visitor<'de> for RecordSeed<'d, 's, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(slot) = map.next_key_seed(KeySeed(self.decoder))? {
            match slot {
                Some(slot) if *self.present & (1 << slot.min(63)) == 0 => {
                    *self.present |= 1 << slot.min(63);
                    *self.slots.get_mut(slot) = map.next_value::<Scalar<'de>>()?.0;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Maps a key to the slot of the field it names, without allocating.
struct KeySeed<'d>(&'d Decoder);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.names.iter().position(|name| name == key))
    }
}

/// A scalar JSON value; objects and arrays become [`FieldValue::Null`]-like mistypes.
struct Scalar<'a>(FieldValue<'a>);

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

/// Marker for a value that is present but not a scalar: kept as a Bool-free, Null-free mistype.
const NOT_SCALAR: FieldValue<'static> = FieldValue::Bool(false);

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Str(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Str(Cow::Owned(v))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar(
            i64::try_from(v)
                .map(FieldValue::Int)
                .unwrap_or(FieldValue::Float(v as f64)),
        ))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Float(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Bool(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar(FieldValue::Null))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar(NOT_SCALAR))
    }
    fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar(NOT_SCALAR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let mut mapping = FieldMapping::default();
        mapping.extra.push("campaign".into());
        Decoder::new(&mapping)
    }

    #[test]
    fn a_quickstart_event_decodes_with_borrowed_strings() {
        let raw = br#"{"type":"click","user_id":"u1","product_id":"p9","category":"audio","price":12.5,"ts":1767225600000,"campaign":"spring"}"#;
        let event = decoder().decode(raw).unwrap();
        assert_eq!(event.time, 1_767_225_600_000);
        assert!(matches!(event.user, Cow::Borrowed("u1")));
        assert_eq!(event.event_type.as_deref(), Some("click"));
        assert_eq!(event.price, Some(12.5));
        assert_eq!(event.extra, vec![FieldValue::Str("spring".into())]);
    }

    #[test]
    fn unknown_and_nested_fields_are_skipped() {
        let raw = br#"{"user_id":7,"meta":{"a":[1,2,{"b":null}]},"ts":5}"#;
        let event = decoder().decode(raw).unwrap();
        assert_eq!(event.user, "7");
        assert_eq!(event.product, None);
        assert_eq!(event.extra, vec![FieldValue::Null]);
    }

    #[test]
    fn each_kind_of_bad_record_gets_its_reason() {
        let cases: [(&[u8], Reason); 8] = [
            (b"{\"user_id\":\"u1\",", Reason::MalformedJson),
            (b"[1,2]", Reason::MalformedJson),
            (
                b"{\"user_id\":\"u1\",\"ts\":1} trailing",
                Reason::MalformedJson,
            ),
            (b"{\"ts\":1}", Reason::MissingField),
            (b"{\"user_id\":\"u1\"}", Reason::MissingField),
            (b"{\"user_id\":\"\",\"ts\":1}", Reason::InvalidField),
            (
                b"{\"user_id\":\"u1\",\"ts\":1,\"price\":\"cheap\"}",
                Reason::InvalidField,
            ),
            (
                b"{\"user_id\":\"u1\",\"ts\":\"yesterday\"}",
                Reason::InvalidTime,
            ),
        ];
        for (raw, reason) in cases {
            let rejection = decoder().decode(raw).unwrap_err();
            assert_eq!(rejection.reason, reason, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn rejections_never_quote_the_record() {
        let rejection = decoder()
            .decode(br#"{"user_id":"secret-person","ts":"x"}"#)
            .unwrap_err();
        assert!(!rejection.detail.contains("secret-person"));
        let rejection = decoder()
            .decode(br#"{"user_id":"secret-person" oops}"#)
            .unwrap_err();
        assert!(!rejection.detail.contains("secret"));
    }

    #[test]
    fn time_formats_convert_to_epoch_millis() {
        let str_time = |s: &'static str| FieldValue::Str(Cow::Borrowed(s));
        assert_eq!(
            parse_time(FieldValue::Int(1_700_000_000), TimeFormat::EpochSeconds),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_time(FieldValue::Float(1.5), TimeFormat::EpochSeconds),
            Some(1_500)
        );
        assert_eq!(
            parse_time(str_time("2026-01-01T01:00:00Z"), TimeFormat::Rfc3339),
            Some(1_767_229_200_000)
        );
        assert_eq!(
            parse_time(str_time("2026-01-01T01:00:00+01:00"), TimeFormat::Rfc3339),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_time(FieldValue::Float(1.5), TimeFormat::EpochMillis),
            None
        );
        assert_eq!(parse_time(FieldValue::Int(5), TimeFormat::Rfc3339), None);
    }
}
