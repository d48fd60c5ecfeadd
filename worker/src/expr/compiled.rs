//! CEL expressions compiled to closures over the decoded event: the common shapes of filters and
//! derived fields (field comparisons with constants, `in` lists of constants, `&&`, `||`, `!`,
//! `?:`, arithmetic, string equality, `startsWith`/`endsWith`/`contains`) run without building
//! CEL values, maps or strings.
//!
//! A compiled expression answers only where it is sure to agree with the interpreter: every
//! closure returns `None` when an operand has a type the shape does not cover (a `null` field, an
//! integer overflow, a comparison of mixed kinds, a missing field), and the caller then evaluates
//! the expression with the interpreter, whose answer (or error) is authoritative. Compilation
//! itself returns `None` for expressions with any other node (macros, maps, indexing, functions
//! other than those above), which always run in the interpreter. The semantics copied here are
//! cel 0.15's: `&&`/`||` as its special cases, `==` as `Val::equals`, ordering as `Comparer`,
//! integer arithmetic checked.

use std::cmp::Ordering;
use std::sync::Arc;

use cel::common::ast::{operators, Expr as Ast, LiteralValue};
use cel::IdedExpr;

use crate::event::{Event, FieldValue};

/// A value of a compiled expression; strings borrow from the event or the expression.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Val<'e> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'e str),
}

/// A compiled node: its value for an event, or `None` to defer to the interpreter.
pub(super) type Node = Box<dyn for<'e> Fn(&'e Event<'e>) -> Option<Val<'e>> + Send + Sync>;

/// A field of `event`.
#[derive(Clone, Copy, Debug)]
enum Builtin {
    User,
    Product,
    Type,
    Category,
    Price,
    Time,
}

/// Compiles `expr` for events whose extra fields are `extra_names`; `None` if it has a node this
/// module does not cover.
pub(super) fn compile(expr: &IdedExpr, extra_names: &Arc<[String]>) -> Option<Node> {
    match &expr.expr {
        // A string constant outside a comparison (`c ? "a" : "b"`) cannot be returned as a
        // borrow of the closure: such expressions run in the interpreter.
        Ast::Literal(literal) => match constant(literal)? {
            Constant::Str(_) => None,
            Constant::Scalar(v) => Some(Box::new(move |_| Some(v))),
        },
        Ast::Select(select) if !select.test => match &select.operand.expr {
            Ast::Ident(name) if name == "event" => field(&select.field, extra_names),
            _ => None,
        },
        Ast::Call(call) => {
            let name = call.func_name.as_str();
            match (&call.target, call.args.as_slice()) {
                (None, [a, b, c]) if name == operators::CONDITIONAL => {
                    let (a, b, c) = (
                        compile(a, extra_names)?,
                        compile(b, extra_names)?,
                        compile(c, extra_names)?,
                    );
                    Some(Box::new(move |e| match a(e)? {
                        Val::Bool(true) => b(e),
                        Val::Bool(false) => c(e),
                        _ => None,
                    }))
                }
                (None, [a]) => {
                    let a = compile(a, extra_names)?;
                    match name {
                        operators::LOGICAL_NOT => Some(Box::new(move |e| match a(e)? {
                            Val::Bool(b) => Some(Val::Bool(!b)),
                            _ => None,
                        })),
                        operators::NEGATE => Some(Box::new(move |e| match a(e)? {
                            Val::Int(i) => i.checked_neg().map(Val::Int),
                            Val::Float(f) => Some(Val::Float(-f)),
                            _ => None,
                        })),
                        _ => None,
                    }
                }
                (None, [a, b]) => binary(name, a, b, extra_names),
                (Some(target), [arg]) => method(name, target, arg, extra_names),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A literal: strings apart, since a node cannot return a borrow of itself.
enum Constant {
    Str(Arc<str>),
    Scalar(Val<'static>),
}

fn constant(literal: &LiteralValue) -> Option<Constant> {
    Some(match literal {
        LiteralValue::Boolean(b) => Constant::Scalar(Val::Bool(*b.inner())),
        LiteralValue::Int(i) => Constant::Scalar(Val::Int(*i.inner())),
        LiteralValue::Double(f) => Constant::Scalar(Val::Float(*f.inner())),
        LiteralValue::Null => Constant::Scalar(Val::Null),
        LiteralValue::String(s) => Constant::Str(Arc::from(s.inner())),
        // Unsigned integers and bytes have no compiled form.
        _ => return None,
    })
}

/// Reads field `name` of the event, as the interpreter's `event` map has it: the six event
/// fields, overridden by extra fields of the same name (the last one the event carries). `None`
/// for a name that is neither (an error in the interpreter).
fn field(name: &str, extra_names: &Arc<[String]>) -> Option<Node> {
    let builtin = match name {
        "user" => Some(Builtin::User),
        "product" => Some(Builtin::Product),
        "type" => Some(Builtin::Type),
        "category" => Some(Builtin::Category),
        "price" => Some(Builtin::Price),
        "time" => Some(Builtin::Time),
        _ => None,
    };
    let slots: Vec<usize> = extra_names
        .iter()
        .enumerate()
        .filter(|(_, n)| *n == name)
        .map(|(i, _)| i)
        .rev()
        .collect();
    Some(match (builtin, slots.as_slice()) {
        (None, []) => return None,
        (Some(builtin), []) => Box::new(move |e| Some(read_builtin(builtin, e))),
        (None, [slot]) => {
            let slot = *slot;
            Box::new(move |e| e.extra.get(slot).map(read_extra))
        }
        _ => Box::new(
            move |e| match slots.iter().find(|&&slot| slot < e.extra.len()) {
                Some(&slot) => Some(read_extra(&e.extra[slot])),
                None => builtin.map(|b| read_builtin(b, e)),
            },
        ),
    })
}

#[inline]
fn read_builtin<'e>(builtin: Builtin, e: &'e Event<'e>) -> Val<'e> {
    let text = |s: &'e Option<std::borrow::Cow<'e, str>>| s.as_deref().map_or(Val::Null, Val::Str);
    match builtin {
        Builtin::User => Val::Str(&e.user),
        Builtin::Product => text(&e.product),
        Builtin::Type => text(&e.event_type),
        Builtin::Category => text(&e.category),
        Builtin::Price => e.price.map_or(Val::Null, Val::Float),
        Builtin::Time => Val::Int(e.time),
    }
}

#[inline]
fn read_extra<'e>(value: &'e FieldValue<'e>) -> Val<'e> {
    match value {
        FieldValue::Str(s) => Val::Str(s),
        FieldValue::Int(i) => Val::Int(*i),
        FieldValue::Float(f) => Val::Float(*f),
        FieldValue::Bool(b) => Val::Bool(*b),
        FieldValue::Null => Val::Null,
    }
}

/// An operand of a binary operator: a string constant is kept apart so that comparisons with it
/// borrow it from the closure.
enum Operand {
    Str(Arc<str>),
    Node(Node),
}

fn operand(expr: &IdedExpr, extra_names: &Arc<[String]>) -> Option<Operand> {
    if let Ast::Literal(LiteralValue::String(s)) = &expr.expr {
        return Some(Operand::Str(Arc::from(s.inner())));
    }
    compile(expr, extra_names).map(Operand::Node)
}

/// `a OP b`; `f` gets both values (a string constant as `Val::Str`).
fn pair(a: Operand, b: Operand, f: fn(Val<'_>, Val<'_>) -> Option<Val<'static>>) -> Option<Node> {
    Some(match (a, b) {
        (Operand::Node(a), Operand::Node(b)) => Box::new(move |e| f(a(e)?, b(e)?)),
        (Operand::Node(a), Operand::Str(s)) => Box::new(move |e| f(a(e)?, Val::Str(&s))),
        (Operand::Str(s), Operand::Node(b)) => Box::new(move |e| f(Val::Str(&s), b(e)?)),
        // Two constants: rare enough to leave to the interpreter.
        (Operand::Str(_), Operand::Str(_)) => return None,
    })
}

fn binary(name: &str, a: &IdedExpr, b: &IdedExpr, extra_names: &Arc<[String]>) -> Option<Node> {
    match name {
        operators::LOGICAL_AND | operators::LOGICAL_OR => {
            let (a, b) = (compile(a, extra_names)?, compile(b, extra_names)?);
            // The interpreter's rule where the left side is a boolean; an error or another type
            // on the left defers.
            let short = name == operators::LOGICAL_OR;
            Some(Box::new(move |e| match a(e)? {
                Val::Bool(left) if left == short => Some(Val::Bool(short)),
                Val::Bool(_) => match b(e)? {
                    Val::Bool(right) => Some(Val::Bool(right)),
                    _ => None,
                },
                _ => None,
            }))
        }
        operators::IN => {
            let Ast::List(list) = &b.expr else {
                return None;
            };
            if !list.optional_indices.is_empty() {
                return None;
            }
            let mut strings = Vec::new();
            let mut scalars = Vec::new();
            for element in &list.elements {
                let Ast::Literal(literal) = &element.expr else {
                    return None;
                };
                match constant(literal)? {
                    Constant::Str(s) => strings.push(s),
                    Constant::Scalar(v) => scalars.push(v),
                }
            }
            let a = compile(a, extra_names)?;
            Some(Box::new(move |e| {
                let value = a(e)?;
                let found = match value {
                    Val::Str(s) => strings.iter().any(|c| **c == *s),
                    _ => scalars.iter().any(|&c| equals(c, value)),
                };
                Some(Val::Bool(found))
            }))
        }
        _ => {
            let f: fn(Val<'_>, Val<'_>) -> Option<Val<'static>> = match name {
                operators::EQUALS => |a, b| Some(Val::Bool(equals(a, b))),
                operators::NOT_EQUALS => |a, b| Some(Val::Bool(!equals(a, b))),
                operators::LESS => |a, b| Some(Val::Bool(compare(a, b)? == Ordering::Less)),
                operators::LESS_EQUALS => {
                    |a, b| Some(Val::Bool(compare(a, b)? != Ordering::Greater))
                }
                operators::GREATER => |a, b| Some(Val::Bool(compare(a, b)? == Ordering::Greater)),
                operators::GREATER_EQUALS => {
                    |a, b| Some(Val::Bool(compare(a, b)? != Ordering::Less))
                }
                operators::ADD => |a, b| arithmetic(a, b, i64::checked_add, |x, y| x + y),
                operators::SUBSTRACT => |a, b| arithmetic(a, b, i64::checked_sub, |x, y| x - y),
                operators::MULTIPLY => |a, b| arithmetic(a, b, i64::checked_mul, |x, y| x * y),
                operators::DIVIDE => |a, b| arithmetic(a, b, i64::checked_div, |x, y| x / y),
                operators::MODULO => |a, b| match (a, b) {
                    (Val::Int(x), Val::Int(y)) => x.checked_rem(y).map(Val::Int),
                    _ => None,
                },
                _ => return None,
            };
            pair(operand(a, extra_names)?, operand(b, extra_names)?, f)
        }
    }
}

/// `target.name(arg)` for the string methods.
fn method(
    name: &str,
    target: &IdedExpr,
    arg: &IdedExpr,
    extra_names: &Arc<[String]>,
) -> Option<Node> {
    let f: fn(Val<'_>, Val<'_>) -> Option<Val<'static>> = match name {
        "startsWith" => |a, b| match (a, b) {
            (Val::Str(a), Val::Str(b)) => Some(Val::Bool(a.starts_with(b))),
            _ => None,
        },
        "endsWith" => |a, b| match (a, b) {
            (Val::Str(a), Val::Str(b)) => Some(Val::Bool(a.ends_with(b))),
            _ => None,
        },
        "contains" => |a, b| match (a, b) {
            (Val::Str(a), Val::Str(b)) => Some(Val::Bool(a.contains(b))),
            _ => None,
        },
        _ => return None,
    };
    pair(operand(target, extra_names)?, operand(arg, extra_names)?, f)
}

/// `a == b` as cel's `Val::equals`: numbers by value across int and double, strings, booleans
/// and null by kind and value, anything else unequal (never an error).
#[inline]
fn equals(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Str(a), Val::Str(b)) => a == b,
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Null, Val::Null) => true,
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            compare(a, b) == Some(Ordering::Equal)
        }
        _ => false,
    }
}

/// Ordering as cel's `Comparer` for numbers and strings; `None` (an error in the interpreter, or
/// a kind left to it) otherwise.
#[inline]
fn compare(a: Val<'_>, b: Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(a), Val::Int(b)) => Some(a.cmp(&b)),
        (Val::Float(a), Val::Float(b)) => a.partial_cmp(&b),
        (Val::Int(a), Val::Float(b)) => (a as f64).partial_cmp(&b),
        (Val::Float(a), Val::Int(b)) => a.partial_cmp(&(b as f64)),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Arithmetic on two integers (checked: overflow and division by zero defer) or two doubles.
#[inline]
fn arithmetic(
    a: Val<'_>,
    b: Val<'_>,
    int: fn(i64, i64) -> Option<i64>,
    float: fn(f64, f64) -> f64,
) -> Option<Val<'static>> {
    match (a, b) {
        (Val::Int(a), Val::Int(b)) => int(a, b).map(Val::Int),
        (Val::Float(a), Val::Float(b)) => Some(Val::Float(float(a, b))),
        _ => None,
    }
}
