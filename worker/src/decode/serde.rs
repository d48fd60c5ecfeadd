//! The serde_json reader of a record: walks the object with serde_json's deserializer, keeps
//! only the mapped fields (borrowed when they contain no escapes) and skips everything else
//! without building a DOM. It is the fallback of the fast scanner and the reference it is
//! tested against; its errors are the `malformed_json` rejections' details.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::event::{FieldValue, Reason, Rejection};

use super::Slots;

/// Reads the mapped fields of `raw` (field names by slot in `names`) into `slots`.
pub(super) fn record<'a>(
    names: &[String],
    raw: &'a [u8],
    slots: &mut Slots<'a>,
) -> Result<(), Rejection> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let mut present = 0u64;
    let seed = RecordSeed {
        names,
        slots,
        present: &mut present,
    };
    seed.deserialize(&mut de)
        .map_err(|err| Rejection::new(Reason::MalformedJson, json_error(&err)))?;
    de.end()
        .map_err(|err| Rejection::new(Reason::MalformedJson, json_error(&err)))
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

struct RecordSeed<'d, 's, 'a> {
    names: &'d [String],
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
        while let Some(slot) = map.next_key_seed(KeySeed(self.names))? {
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
struct KeySeed<'d>(&'d [String]);

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
        Ok(self.0.iter().position(|name| name == key))
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
