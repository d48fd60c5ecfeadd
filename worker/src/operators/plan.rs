//! The per-source part of the plan: each source's decoder, filter and derived fields compiled
//! once, field accessors resolved to indices (so nothing is looked up by name per event), and
//! the plan's error type. The analytics over the sources are compiled by `crate::analytics`;
//! the whole pipeline's plan is `crate::plan`.

use std::sync::Arc;

use tidemark_api::MarketingPipelineSpec;

use crate::decode::Decoder;
use crate::expr::{Expr, ExprError};
use crate::window::accumulate::Input;

/// Why a spec cannot be compiled (validation normally catches these first).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A CEL expression does not compile.
    #[error("failed to compile {path}")]
    Expr {
        /// Field path of the expression.
        path: String,
        /// The compiler's error.
        #[source]
        source: ExprError,
    },
    /// A name refers to nothing.
    #[error("failed to resolve {path}: {message}")]
    Reference {
        /// Field path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// One source as a task runs it.
#[derive(Debug)]
pub struct SourcePlan {
    /// Source name.
    pub name: String,
    /// Record decoder.
    pub decoder: Decoder,
    /// Event types the source carries; empty means all.
    pub event_types: Vec<String>,
    /// Filter over events.
    pub filter: Option<Expr>,
    /// Derived fields, appended to `Event::extra` after the mapped extra fields.
    pub derive: Vec<Expr>,
    /// Names of `Event::extra` entries.
    pub extra_names: Arc<[String]>,
    /// (analytic index, the source's index among that analytic's inputs).
    pub consumers: Vec<(usize, usize)>,
    /// Index of the first source with the same field mapping (decode once for all of them).
    pub decode_group: usize,
}

/// The field the source topics are partitioned by (docs/design.md, execution model): an analytic keyed by it has
/// each key in one task.
pub const PARTITION_KEY: &str = "user";

/// The accessor of event field `field` for a source whose extra fields are `extra_names`.
pub fn input_for(field: &str, extra_names: &[String]) -> Option<Input> {
    Some(match field {
        "user" => Input::User,
        "product" => Input::Product,
        "type" => Input::Type,
        "category" => Input::Category,
        "price" => Input::Price,
        "time" => Input::Time,
        other => Input::Extra(extra_names.iter().position(|n| n == other)?),
    })
}

/// The sources named `names` (an analytic's inputs, at `path.sources`), in order.
pub fn inputs_named<'a>(
    names: &[String],
    path: &str,
    sources: &'a [SourcePlan],
) -> Result<Vec<&'a SourcePlan>, PlanError> {
    names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            sources
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| PlanError::Reference {
                    path: format!("{path}.sources[{j}]"),
                    message: format!("unknown source {name:?}"),
                })
        })
        .collect()
}

/// The accessor of field `name` in each of `inputs`; an input without it is an error at `at`.
pub fn field_of_inputs(
    inputs: &[&SourcePlan],
    name: &str,
    at: &str,
) -> Result<Vec<Input>, PlanError> {
    inputs
        .iter()
        .map(|s| {
            input_for(name, &s.extra_names).ok_or_else(|| PlanError::Reference {
                path: at.to_owned(),
                message: format!("source {:?} has no field {name:?}", s.name),
            })
        })
        .collect()
}

/// Checks that CEL condition `text` (at `at`) compiles against the fields of each of `inputs`.
pub fn check_condition(inputs: &[&SourcePlan], text: &str, at: &str) -> Result<(), PlanError> {
    for input in inputs {
        Expr::compile(text, input.extra_names.clone()).map_err(|source| PlanError::Expr {
            path: at.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Compiles every source of `spec`: decoder, filter and derived fields; `consumers` is left
/// empty for the plan to fill as it compiles the analytics.
pub fn compile_sources(spec: &MarketingPipelineSpec) -> Result<Vec<SourcePlan>, PlanError> {
    let mut sources = Vec::with_capacity(spec.sources.len());
    for (i, source) in spec.sources.iter().enumerate() {
        let mut extra_names: Vec<String> = source.fields.extra.clone();
        extra_names.extend(source.derive.iter().map(|d| d.name.clone()));
        let extra_names: Arc<[String]> = Arc::from(extra_names);
        let expr = |path: String, text: &str| {
            Expr::compile(text, extra_names.clone())
                .map_err(|source| PlanError::Expr { path, source })
        };
        let filter = source
            .filter
            .as_deref()
            .map(|f| expr(format!("spec.sources[{i}].filter"), f))
            .transpose()?;
        let derive = source
            .derive
            .iter()
            .enumerate()
            .map(|(j, d)| expr(format!("spec.sources[{i}].derive[{j}].expr"), &d.expr))
            .collect::<Result<_, _>>()?;
        let decode_group = spec.sources[..i]
            .iter()
            .position(|s| s.fields == source.fields)
            .unwrap_or(i);
        sources.push(SourcePlan {
            name: source.name.clone(),
            decoder: Decoder::new(&source.fields),
            event_types: source.event_types.clone(),
            filter,
            derive,
            extra_names,
            consumers: Vec::new(),
            decode_group,
        });
    }
    Ok(sources)
}
