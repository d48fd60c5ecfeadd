//! Intent patterns (`pattern` analytics): per user, a sequence of steps within a time bound,
//! optionally not followed by cancelling events, evaluated in event time against the
//! watermark (rules in `docs/patterns.md`).
//!
//! - [`matcher`]: the pure rules — which matches a user's events make.
//! - [`state`]: the task's state — each user's recent events and the matches emitted that are
//!   not final yet; a user is evaluated again only when the watermark passes a completion's
//!   time or an event arrives behind the watermark.
//!
//! Matches are keyed by the user (the partition key), so a pattern never needs the global
//! stage. `action` analytics (`crate::analytics::action`) evaluate the same plan.

pub mod matcher;
pub mod state;
#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::sync::Arc;

use tidemark_api::PatternAnalytic;

use super::{Compiled, GlobalAnalytic, KindPlan, TaskAnalytic};
use crate::analytics::AnalyticPlan;
use crate::event::{Event, FieldValue};
use crate::expr::Expr;
use crate::operators::{
    check_condition, field_of_inputs, inputs_named, PlanError, SourcePlan, PARTITION_KEY,
};
use crate::window::accumulate::Input;
use crate::window::WindowKind;
use matcher::Rules;

/// A step's or the absence's matching rule: event types and a CEL condition.
#[derive(Debug)]
struct Matcher {
    types: Vec<String>,
    when: Option<String>,
}

/// A compiled pattern: plain data, shared by task states (which compile the conditions for
/// themselves).
#[derive(Debug)]
pub struct PatternPlan {
    /// The pattern's name (the analytic's).
    pub name: String,
    /// How matches are found.
    pub rules: Rules,
    /// Step names, in order.
    pub step_names: Vec<String>,
    steps: Vec<Matcher>,
    absent: Option<Matcher>,
    /// Extra field names per input (for the conditions).
    extra_names: Vec<Arc<[String]>>,
    /// The `sameValue` field's accessor per input.
    same: Option<Vec<Input>>,
    /// Captured field names, and their accessors per input.
    pub capture: Vec<(String, Vec<Input>)>,
    /// Allowed lateness, ms.
    pub lateness: i64,
}

/// What an event is to a pattern: the steps it matches (bit k for step k) and whether it
/// cancels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Class {
    /// Steps matched, bit k for step k.
    pub steps: u8,
    /// Matches `notFollowedBy`.
    pub absent: bool,
}

impl PatternPlan {
    /// The conditions compiled for a task state, per input: each step's, then the absence's.
    pub fn compile_conditions(&self) -> Vec<Vec<Option<Expr>>> {
        self.extra_names
            .iter()
            .map(|names| {
                self.steps
                    .iter()
                    .chain(self.absent.as_ref())
                    .map(|m| {
                        m.when.as_ref().map(|text| {
                            Expr::compile(text, names.clone())
                                .expect("the condition compiled when the plan was compiled")
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Classifies `event` of input `input` with the compiled conditions `when`.
    pub fn classify(&self, input: usize, event: &Event<'_>, when: &[Vec<Option<Expr>>]) -> Class {
        let hits = |m: &Matcher, k: usize| {
            (m.types.is_empty()
                || event
                    .event_type
                    .as_deref()
                    .is_some_and(|t| m.types.iter().any(|x| x == t)))
                && when[input][k]
                    .as_ref()
                    .is_none_or(|w| w.matches(event).unwrap_or(false))
        };
        let mut class = Class::default();
        for (k, m) in self.steps.iter().enumerate() {
            if hits(m, k) {
                class.steps |= 1 << k;
            }
        }
        if let Some(m) = &self.absent {
            class.absent = hits(m, self.steps.len());
        }
        class
    }

    /// A stable 64-bit hash of `event`'s `sameValue` field (0 without one).
    pub fn same_of(&self, input: usize, event: &Event<'_>, buf: &mut String) -> u64 {
        let Some(fields) = &self.same else {
            return 0;
        };
        buf.clear();
        fields[input].read(event).write_key(buf);
        let bytes = buf.as_bytes();
        (u64::from(crc32c::crc32c(bytes)) << 32)
            | u64::from(crc32c::crc32c_append(0x9e37_79b9, bytes))
    }

    /// The captured fields of `event` of input `input` as a JSON object (`None` without
    /// captured fields).
    pub fn captured(&self, input: usize, event: &Event<'_>) -> Option<Box<str>> {
        if self.capture.is_empty() {
            return None;
        }
        let mut v: Vec<u8> = Vec::with_capacity(64);
        v.push(b'{');
        for (i, (name, fields)) in self.capture.iter().enumerate() {
            if i > 0 {
                v.push(b',');
            }
            crate::result::write_json_str(&mut v, name);
            v.push(b':');
            match fields[input].read(event) {
                FieldValue::Str(s) => crate::result::write_json_str(&mut v, &s),
                FieldValue::Int(i) => v.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
                FieldValue::Float(f) if f.is_finite() => {
                    let _ = write!(v, "{f}");
                }
                FieldValue::Bool(b) => v.extend_from_slice(if b { b"true" } else { b"false" }),
                FieldValue::Float(_) | FieldValue::Null => v.extend_from_slice(b"null"),
            }
        }
        v.push(b'}');
        Some(
            String::from_utf8(v)
                .expect("JSON written from strings")
                .into_boxed_str(),
        )
    }
}

/// The pattern kind: its plan, shared.
#[derive(Debug)]
struct PatternKind(Arc<PatternPlan>);

impl KindPlan for PatternKind {
    fn kind(&self) -> &'static str {
        "pattern"
    }

    fn task_state(&self, _analytic: &AnalyticPlan, _partials: bool) -> Box<dyn TaskAnalytic> {
        Box::new(state::PatternState::new(self.0.clone()))
    }

    fn global_state(&self, _analytic: &AnalyticPlan) -> Box<dyn GlobalAnalytic> {
        unreachable!("a pattern is keyed by the partition key: never global")
    }
}

/// Compiles the pattern of `spec` (at `path`, e.g. `spec.analytics[2].pattern`).
pub fn compile_plan(
    name: &str,
    spec: &PatternAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<PatternPlan, PlanError> {
    let reference = |at: String, message: String| PlanError::Reference { path: at, message };
    let inputs = inputs_named(&spec.sources, path, sources)?;
    if !(1..=8).contains(&spec.steps.len()) {
        return Err(reference(
            format!("{path}.steps"),
            "a pattern has 1 to 8 steps".into(),
        ));
    }
    let field = |name: &str, at: String| field_of_inputs(&inputs, name, &at);
    let check = |text: &Option<String>, at: String| match text {
        Some(text) => check_condition(&inputs, text, &at),
        None => Ok(()),
    };
    let mut same_field: Option<&str> = None;
    for (k, s) in spec.steps.iter().enumerate() {
        check(&s.when, format!("{path}.steps[{k}].when"))?;
        if let Some(f) = &s.same_value {
            if same_field.is_some_and(|g| g != f) {
                return Err(reference(
                    format!("{path}.steps[{k}].sameValue"),
                    "every step's sameValue names the same field".into(),
                ));
            }
            same_field = Some(f);
        }
    }
    if let Some(a) = &spec.not_followed_by {
        check(&a.when, format!("{path}.notFollowedBy.when"))?;
    }
    let times: Vec<u32> = spec
        .steps
        .iter()
        .map(|s| s.times.unwrap_or(1).max(1))
        .collect();
    let within = spec
        .within
        .as_ref()
        .map(|w| w.millis_i64())
        .filter(|w| *w > 0);
    if within.is_none() && (spec.steps.len() > 1 || times.iter().any(|t| *t > 1)) {
        return Err(reference(
            format!("{path}.within"),
            "a pattern of more than one step or occurrence needs within".into(),
        ));
    }
    let same = match same_field {
        Some(f) => Some(field(f, format!("{path}.steps.sameValue"))?),
        None => None,
    };
    let capture = spec
        .capture
        .iter()
        .enumerate()
        .map(|(j, name)| Ok((name.clone(), field(name, format!("{path}.capture[{j}]"))?)))
        .collect::<Result<_, PlanError>>()?;
    Ok(PatternPlan {
        name: name.to_owned(),
        rules: Rules {
            times,
            same: spec.steps.iter().map(|s| s.same_value.is_some()).collect(),
            within,
            absence: spec
                .not_followed_by
                .as_ref()
                .map(|a| a.within.millis_i64().max(1)),
        },
        step_names: spec.steps.iter().map(|s| s.name.clone()).collect(),
        steps: spec
            .steps
            .iter()
            .map(|s| Matcher {
                types: s.event_types.clone(),
                when: s.when.clone(),
            })
            .collect(),
        absent: spec.not_followed_by.as_ref().map(|a| Matcher {
            types: a.event_types.clone(),
            when: a.when.clone(),
        }),
        extra_names: inputs.iter().map(|s| s.extra_names.clone()).collect(),
        same,
        capture,
        lateness: spec.allowed_lateness.millis_i64(),
    })
}

/// Compiles a `pattern` analytic named `name`.
pub fn compile(
    name: &str,
    spec: &PatternAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let plan = compile_plan(name, spec, &format!("{path}.pattern"), sources)?;
    let lateness = plan.lateness;
    Ok(Compiled {
        kind: Arc::new(PatternKind(Arc::new(plan))),
        inputs: spec.sources.clone(),
        key_by: PARTITION_KEY.to_owned(),
        filter: None,
        window: WindowKind::Tumbling { size: 60_000 },
        lateness,
    })
}
