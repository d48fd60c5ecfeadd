//! CEL expressions over events: source and analytic filters, and derived fields (map).
//!
//! An expression sees one variable, `event`, a map with the fields `user`, `product`, `type`,
//! `category`, `price`, `time` (epoch ms) and the source's extra and derived fields. Absent fields
//! are `null`. A filter must yield a boolean; anything else is an error for that event (it goes to
//! the dead-letter output with reason `expression_error`), never a crash.
//!
//! Each expression runs in two ways: compiled to closures over the event where its shape is a
//! common one ([`compiled`]), and in cel's interpreter over a map built per event, the fallback
//! for every other shape and for any event the compiled form is not sure about. Both give the
//! same answer, errors included (a property test holds them to it); the compiled form only skips
//! the interpreter's per-event map and values, ≈ 1.5 µs per event.

mod compiled;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Program, Value as CelValue};

use crate::event::{Event, FieldValue};

use compiled::{Node, Val};

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
    /// The compiled form, when the expression has one.
    compiled: Option<Node>,
    context: Context<'static, 'static>,
    /// Names of `Event::extra` entries, in order.
    extra_names: Arc<[String]>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expr")
            .field("extra_names", &self.extra_names)
            .field("compiled", &self.compiled.is_some())
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
        let compiled = compiled::compile(program.expression(), &extra_names);
        Ok(Self {
            program,
            compiled,
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

    /// Whether the expression runs compiled (for common shapes) rather than only interpreted.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// The compiled form's value, where it is sure of it.
    #[inline]
    fn fast<'e>(&self, event: &'e Event<'e>) -> Option<Val<'e>> {
        self.compiled.as_ref().and_then(|node| node(event))
    }

    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event<'_>) -> Result<bool, ExprError> {
        if let Some(Val::Bool(b)) = self.fast(event) {
            return Ok(b);
        }
        self.matches_interpreted(event)
    }

    /// [`Expr::matches`] by the interpreter alone, as it ran before the compiled form existed
    /// (for tests and benchmarks).
    pub fn matches_interpreted(&self, event: &Event<'_>) -> Result<bool, ExprError> {
        match self.eval(event)? {
            CelValue::Bool(b) => Ok(b),
            other => Err(ExprError::NotBoolean(type_name(&other))),
        }
    }

    /// The value of this derived field for `event`.
    pub fn derive(&self, event: &Event<'_>) -> Result<FieldValue<'static>, ExprError> {
        match self.fast(event) {
            Some(Val::Int(i)) => Ok(FieldValue::Int(i)),
            Some(Val::Float(f)) => Ok(FieldValue::Float(f)),
            Some(Val::Str(s)) => Ok(FieldValue::Str(s.to_owned().into())),
            Some(Val::Bool(b)) => Ok(FieldValue::Bool(b)),
            Some(Val::Null) => Ok(FieldValue::Null),
            None => self.derive_interpreted(event),
        }
    }

    /// [`Expr::derive`] by the interpreter alone.
    fn derive_interpreted(&self, event: &Event<'_>) -> Result<FieldValue<'static>, ExprError> {
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
