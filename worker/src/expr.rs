//! CEL expressions over events: source and analytic filters, and derived fields (map).
//!
//! An expression sees one variable, `event`, a map with the fields `user`, `product`, `type`,
//! `category`, `price`, `time` (epoch ms) and the source's extra and derived fields. Absent fields
//! are `null`. A filter must yield a boolean; anything else is an error for that event (it goes to
//! the dead-letter output with reason `expression_error`), never a crash.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Program, Value as CelValue};

use crate::event::{Event, FieldValue};

/// Why an expression failed.
#[derive(Debug, thiserror::Error)]
pub enum ExprError {
    /// The text is not CEL.
    #[error("failed to compile CEL expression {source_text:?}: {message}")]
    Compile {
        /// The expression.
        source_text: String,
        /// The parser's message.
        message: String,
    },
    /// Evaluation failed on an event.
    #[error("failed to evaluate {0}")]
    Eval(String),
    /// A filter gave something other than a boolean.
    #[error("filter yielded {0}, not a boolean")]
    NotBoolean(&'static str),
    /// A derived field gave a list, map or other non-scalar.
    #[error("derived field yielded {0}, not a scalar")]
    NotScalar(&'static str),
}

/// A compiled expression with the context it runs in.
pub struct Expr {
    program: Program,
    context: Context<'static, 'static>,
    /// Names of `Event::extra` entries, in order.
    extra_names: Arc<[String]>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expr")
            .field("extra_names", &self.extra_names)
            .finish_non_exhaustive()
    }
}

impl Expr {
    /// Compiles `text`; events will carry `extra_names` extra fields.
    pub fn compile(text: &str, extra_names: Arc<[String]>) -> Result<Self, ExprError> {
        let program = Program::compile(text).map_err(|err| ExprError::Compile {
            source_text: text.to_owned(),
            message: err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        })?;
        Ok(Self {
            program,
            context: Context::default(),
            extra_names,
        })
    }

    fn eval(&self, event: &Event<'_>) -> Result<CelValue, ExprError> {
        let mut scope = self.context.new_inner_scope();
        scope.add_variable_from_value("event", event_value(event, &self.extra_names));
        self.program
            .execute(&scope)
            .map_err(|err| ExprError::Eval(err.to_string()))
    }

    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event<'_>) -> Result<bool, ExprError> {
        match self.eval(event)? {
            CelValue::Bool(b) => Ok(b),
            other => Err(ExprError::NotBoolean(type_name(&other))),
        }
    }

    /// The value of this derived field for `event`.
    pub fn derive(&self, event: &Event<'_>) -> Result<FieldValue<'static>, ExprError> {
        match self.eval(event)? {
            CelValue::Int(i) => Ok(FieldValue::Int(i)),
            CelValue::UInt(u) => Ok(i64::try_from(u)
                .map(FieldValue::Int)
                .unwrap_or(FieldValue::Float(u as f64))),
            CelValue::Float(f) => Ok(FieldValue::Float(f)),
            CelValue::String(s) => Ok(FieldValue::Str(s.as_str().to_owned().into())),
            CelValue::Bool(b) => Ok(FieldValue::Bool(b)),
            CelValue::Null => Ok(FieldValue::Null),
            other => Err(ExprError::NotScalar(type_name(&other))),
        }
    }
}

fn type_name(value: &CelValue) -> &'static str {
    match value {
        CelValue::List(_) => "a list",
        CelValue::Map(_) => "a map",
        CelValue::Int(_) | CelValue::UInt(_) => "an integer",
        CelValue::Float(_) => "a double",
        CelValue::String(_) => "a string",
        CelValue::Bytes(_) => "bytes",
        CelValue::Bool(_) => "a boolean",
        CelValue::Null => "null",
        _ => "a value of another type",
    }
}

fn field(value: &FieldValue<'_>) -> CelValue {
    match value {
        FieldValue::Str(s) => CelValue::String(Arc::new(s.to_string())),
        FieldValue::Int(i) => CelValue::Int(*i),
        FieldValue::Float(f) => CelValue::Float(*f),
        FieldValue::Bool(b) => CelValue::Bool(*b),
        FieldValue::Null => CelValue::Null,
    }
}

fn text(value: Option<&str>) -> CelValue {
    value.map_or(CelValue::Null, |s| CelValue::String(Arc::new(s.to_owned())))
}

/// The `event` variable.
fn event_value(event: &Event<'_>, extra_names: &[String]) -> CelValue {
    let mut map: HashMap<Key, CelValue> = HashMap::with_capacity(6 + extra_names.len());
    let key = |name: &str| Key::String(Arc::new(name.to_owned()));
    map.insert(
        key("user"),
        CelValue::String(Arc::new(event.user.to_string())),
    );
    map.insert(key("product"), text(event.product.as_deref()));
    map.insert(key("type"), text(event.event_type.as_deref()));
    map.insert(key("category"), text(event.category.as_deref()));
    map.insert(
        key("price"),
        event.price.map_or(CelValue::Null, CelValue::Float),
    );
    map.insert(key("time"), CelValue::Int(event.time));
    for (name, value) in extra_names.iter().zip(&event.extra) {
        map.insert(key(name), field(value));
    }
    CelValue::Map(Map { map: Arc::new(map) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(price: f64, category: &'static str) -> Event<'static> {
        Event {
            time: 1_000,
            user: "u1".into(),
            product: Some("p1".into()),
            event_type: Some("purchase".into()),
            category: Some(category.into()),
            price: Some(price),
            extra: vec![FieldValue::Str("spring".into())],
        }
    }

    fn compile(text: &str) -> Expr {
        Expr::compile(text, Arc::from(vec!["campaign".to_owned()])).unwrap()
    }

    #[test]
    fn the_design_example_filter_selects_expensive_audio() {
        let filter = compile(r#"event.price > 100.0 && event.category == "audio""#);
        assert!(filter.matches(&event(150.0, "audio")).unwrap());
        assert!(!filter.matches(&event(50.0, "audio")).unwrap());
        assert!(!filter.matches(&event(150.0, "books")).unwrap());
    }

    #[test]
    fn extra_fields_and_derived_values_are_visible() {
        assert!(compile(r#"event.campaign == "spring""#)
            .matches(&event(1.0, "x"))
            .unwrap());
        assert_eq!(
            compile("event.price * 0.5")
                .derive(&event(10.0, "x"))
                .unwrap(),
            FieldValue::Float(5.0)
        );
    }

    #[test]
    fn a_non_boolean_filter_is_an_error_not_a_crash() {
        assert!(matches!(
            compile("event.price").matches(&event(1.0, "x")),
            Err(ExprError::NotBoolean(_))
        ));
        assert!(compile("event.nope > 1").matches(&event(1.0, "x")).is_err());
        assert!(Expr::compile("event.price >", Arc::from(Vec::new())).is_err());
    }
}
