//! JSON decoding of source records through a source's field mapping: what an event is made of
//! (the mapped fields, resolved and checked) and why a record is rejected.
//!
//! Two readers fill the same slots. [`scan`] is the fast path: one pass over the bytes that
//! reads only the mapped fields (borrowed from the record) and validates the rest without
//! building anything. Whatever it is not sure of — malformed JSON, escapes in a key or a mapped
//! string, an unusual number — it hands to [`serde`], the serde_json reader, whose answer (and
//! error message) is authoritative. Both then go through the same checks ([`Decoder::resolve`]),
//! so a record gets the same event or the same rejection whichever path read it.

mod scan;
mod serde;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

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
        let mut slots = Slots::new(self.names.len());
        if scan::record(&self.names, raw, &mut slots).is_some() {
            return self.resolve(slots);
        }
        self.decode_with_serde(raw)
    }

    /// Decodes one record with serde_json alone: the reference the fast path is held to, and
    /// its fallback (public for benchmarks).
    pub fn decode_with_serde<'a>(&self, raw: &'a [u8]) -> Result<Event<'a>, Rejection> {
        let mut slots = Slots::new(self.names.len());
        serde::record(&self.names, raw, &mut slots)?;
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
    /// Empty slots for `names` field names.
    fn new(names: usize) -> Self {
        Self {
            fixed: Default::default(),
            extra: match names.saturating_sub(FIXED) {
                0 => Vec::new(),
                extra => vec![FieldValue::Null; extra],
            },
        }
    }

    fn get_mut(&mut self, slot: usize) -> &mut FieldValue<'a> {
        match slot.checked_sub(FIXED) {
            None => &mut self.fixed[slot],
            Some(extra) => &mut self.extra[extra],
        }
    }
}
