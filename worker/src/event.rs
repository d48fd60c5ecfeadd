//! Decoded events and the reasons an input record is rejected.
//!
//! An [`Event`] borrows from the raw record where it can (strings without escapes), so decoding a
//! batch allocates almost nothing.

use std::borrow::Cow;
use std::fmt;

/// A scalar field value of an event.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum FieldValue<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// An integer.
    Int(i64),
    /// A non-integer number (or one beyond `i64`).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Absent or `null`.
    #[default]
    Null,
}

impl FieldValue<'_> {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Int(i) => Some(*i as f64),
            FieldValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Writes the value as a key: strings as they are, numbers in their shortest form.
    pub fn write_key(&self, out: &mut String) -> bool {
        match self {
            FieldValue::Str(s) => out.push_str(s),
            FieldValue::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            FieldValue::Float(f) => out.push_str(ryu::Buffer::new().format(*f)),
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            FieldValue::Null => return false,
        }
        true
    }

    /// An owned copy, independent of the raw record.
    pub fn into_owned(self) -> FieldValue<'static> {
        match self {
            FieldValue::Str(s) => FieldValue::Str(Cow::Owned(s.into_owned())),
            FieldValue::Int(i) => FieldValue::Int(i),
            FieldValue::Float(f) => FieldValue::Float(f),
            FieldValue::Bool(b) => FieldValue::Bool(b),
            FieldValue::Null => FieldValue::Null,
        }
    }
}

/// One input event with Tidemark's event fields resolved through the source's field mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// Event time, epoch milliseconds.
    pub time: i64,
    /// User id (the default key).
    pub user: Cow<'a, str>,
    /// Product id.
    pub product: Option<Cow<'a, str>>,
    /// Event type (`view`, `click`, `add_to_cart`, `purchase`, ...).
    pub event_type: Option<Cow<'a, str>>,
    /// Product category.
    pub category: Option<Cow<'a, str>>,
    /// Price.
    pub price: Option<f64>,
    /// Extra fields of the source's mapping, then derived fields, in declaration order.
    pub extra: Vec<FieldValue<'a>>,
}

impl Event<'_> {
    /// An owned copy, independent of the raw record.
    pub fn into_owned(self) -> Event<'static> {
        let own = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        Event {
            time: self.time,
            user: Cow::Owned(self.user.into_owned()),
            product: own(self.product),
            event_type: own(self.event_type),
            category: own(self.category),
            price: self.price,
            extra: self.extra.into_iter().map(FieldValue::into_owned).collect(),
        }
    }
}

/// Why an input record did not enter the pipeline. Each reason is a metric label and the
/// `reason` of the dead-letter record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a JSON object.
    MalformedJson,
    /// A required field (user, event time) is absent.
    MissingField,
    /// A field has the wrong type or an empty id.
    InvalidField,
    /// The event time cannot be read in the configured format.
    InvalidTime,
    /// The event type is not one the source carries, or no source carries it.
    UnexpectedType,
    /// Later than the allowed lateness of every window it belongs to.
    Late,
    /// A filter or derived-field expression failed on the event.
    ExpressionError,
    /// Its id was seen within the deduplication horizon (`spec.dataQuality.deduplicate`).
    Duplicate,
    /// Its event time is ahead of the wall clock by more than `spec.dataQuality.maxFutureSkew`.
    ClockSkew,
}

impl Reason {
    /// Every reason, for metric initialisation.
    pub const ALL: [Reason; 9] = [
        Reason::MalformedJson,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::InvalidTime,
        Reason::UnexpectedType,
        Reason::Late,
        Reason::ExpressionError,
        Reason::Duplicate,
        Reason::ClockSkew,
    ];

    /// The label used in metrics and dead-letter records.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::InvalidTime => "invalid_time",
            Reason::UnexpectedType => "unexpected_type",
            Reason::Late => "late",
            Reason::ExpressionError => "expression_error",
            Reason::Duplicate => "duplicate",
            Reason::ClockSkew => "clock_skew",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record's reason and a short, data-free explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: Reason,
    /// Which field or what went wrong, never the field's value.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason` with `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}
