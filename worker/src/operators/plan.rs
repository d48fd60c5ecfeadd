//! Compiling a pipeline spec into the plan a task executes: decoders, expressions, key and value
//! accessors resolved to indices, so that nothing is looked up by name per event.

use std::sync::Arc;

use tidemark_api::MarketingPipelineSpec;

use crate::analytics::KindPlan;
use crate::decode::Decoder;
use crate::expr::{Expr, ExprError};
use crate::privacy::Pseudonymizer;
use crate::quality::{QualityPlan, ReportPlan};
use crate::window::accumulate::Input;
use crate::window::WindowKind;

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

/// One analytic as a task runs it: what every kind has, and its kind (`crate::analytics`).
#[derive(Debug)]
pub struct AnalyticPlan {
    /// Analytic name.
    pub name: String,
    /// Pipeline source index of each input.
    pub inputs: Vec<usize>,
    /// Key accessor per input.
    pub key: Vec<Input>,
    /// Name of the key field.
    pub key_field: String,
    /// Filter over events (aggregate and top-N analytics).
    pub filter: Option<Expr>,
    /// Window kind.
    pub window: WindowKind,
    /// Allowed lateness, ms.
    pub lateness: i64,
    /// Keyed by something other than the partition key, or always global by kind, over more
    /// than one task: tasks emit partials that the global stage merges (`crate::global`). Set
    /// by [`Plan::for_tasks`].
    pub global: bool,
    /// The kind: how its task and global-stage states are made.
    pub kind: Arc<dyn KindPlan>,
}

impl AnalyticPlan {
    /// Whether a window of this analytic closes, or passes its allowed lateness, at a
    /// watermark in `(old, new]`: when the global stage must hear of a task's watermark.
    pub fn closes_between(&self, old: i64, new: i64) -> bool {
        if old == i64::MIN || new == i64::MAX {
            return new > old;
        }
        // A window whose result is final only some time after its end (a funnel's conversion
        // window) closes when the watermark passes that time.
        // Window ends are shifted by the kind's offset, too.
        let shift = self.kind.finality_delay() + self.kind.window_offset();
        let (old, new) = (old.saturating_sub(shift), new.saturating_sub(shift));
        let (size, slide) = match self.window {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Sliding { size, slide } => (size, slide),
            WindowKind::Session { .. } => return new > old,
        };
        // The first window end after `t`.
        let next_end = |t: i64| ((t - size).div_euclid(slide) + 1) * slide + size;
        next_end(old) <= new
            || next_end(old.saturating_sub(self.lateness)) <= new.saturating_sub(self.lateness)
    }
}

/// The field the source topics are partitioned by (docs/design.md, execution model): an analytic keyed by it has
/// each key in one task.
pub const PARTITION_KEY: &str = "user";

/// A compiled pipeline.
#[derive(Debug)]
pub struct Plan {
    /// Pipeline name (metadata.name).
    pub pipeline: String,
    /// Sources in spec order.
    pub sources: Vec<SourcePlan>,
    /// Analytics in spec order.
    pub analytics: Vec<AnalyticPlan>,
    /// Maximum out-of-orderness, ms.
    pub max_out_of_orderness: i64,
    /// Idle timeout, ms.
    pub idle_timeout: i64,
    /// The keyed hash that replaces every event's user id right after decoding, when the
    /// pipeline pseudonymises (`spec.privacy`); set by [`Plan::with_pseudonymizer`], because
    /// its key is read from a file and compiling stays free of I/O.
    pub pseudonymizer: Option<Pseudonymizer>,
    /// Data quality checks (`spec.dataQuality`): deduplication and the clock-skew bound.
    pub quality: QualityPlan,
}

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

impl Plan {
    /// Compiles `spec` of pipeline `pipeline`.
    pub fn compile(pipeline: &str, spec: &MarketingPipelineSpec) -> Result<Self, PlanError> {
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
        let mut analytics = Vec::with_capacity(spec.analytics.len());
        for (a, analytic) in spec.analytics.iter().enumerate() {
            let path = format!("spec.analytics[{a}]");
            let compiled = crate::analytics::compile(analytic, &path, &sources)?;
            let inputs: Vec<usize> = compiled
                .inputs
                .iter()
                .map(|name| {
                    sources.iter().position(|s| &s.name == name).ok_or_else(|| {
                        PlanError::Reference {
                            path: path.clone(),
                            message: format!("unknown source {name:?}"),
                        }
                    })
                })
                .collect::<Result<_, _>>()?;
            let key = inputs
                .iter()
                .map(|&s| {
                    input_for(&compiled.key_by, &sources[s].extra_names).ok_or_else(|| {
                        PlanError::Reference {
                            path: format!("{path}.keyBy"),
                            message: format!(
                                "source {:?} has no field {:?}",
                                sources[s].name, compiled.key_by
                            ),
                        }
                    })
                })
                .collect::<Result<_, _>>()?;
            let filter = match compiled.filter {
                Some((filter_path, text)) => {
                    // An analytic's filter sees the fields of its first input's mapping.
                    let names = sources[inputs[0]].extra_names.clone();
                    Some(
                        Expr::compile(&text, names).map_err(|source| PlanError::Expr {
                            path: filter_path,
                            source,
                        })?,
                    )
                }
                None => None,
            };
            for (local, &s) in inputs.iter().enumerate() {
                sources[s].consumers.push((a, local));
            }
            analytics.push(AnalyticPlan {
                name: analytic.name.clone(),
                inputs,
                key,
                key_field: compiled.key_by,
                filter,
                window: compiled.window,
                lateness: compiled.lateness,
                global: false,
                kind: compiled.kind,
            });
        }
        let quality = QualityPlan {
            dedup: spec.data_quality.deduplicate.as_ref().map(|d| {
                let fields = sources
                    .iter()
                    .map(|s| input_for(&d.field, &s.extra_names))
                    .collect();
                (fields, d.horizon.millis_i64())
            }),
            max_future_skew: spec.data_quality.max_future_skew.millis_i64(),
            report: spec.data_quality.report.as_ref().map(|r| ReportPlan {
                window: r.window.millis_i64(),
                sink: r.sink.clone(),
            }),
        };
        Ok(Plan {
            pipeline: pipeline.to_owned(),
            sources,
            analytics,
            max_out_of_orderness: spec.watermark.max_out_of_orderness.millis_i64(),
            idle_timeout: spec.watermark.idle_timeout.millis_i64(),
            pseudonymizer: None,
            quality,
        })
    }
}

impl Plan {
    /// The plan of a pipeline run as `tasks` tasks: each analytic keyed by anything but the
    /// partition key becomes global (its tasks emit partials for the global stage), and so does
    /// every top-N (a ranking needs every key of a window, whatever the key is). Session
    /// windows cannot be merged across tasks: such an analytic is refused over several tasks.
    pub fn for_tasks(mut self, tasks: u32) -> Result<Self, PlanError> {
        for (a, analytic) in self.analytics.iter_mut().enumerate() {
            analytic.global =
                tasks > 1 && (analytic.key_field != PARTITION_KEY || analytic.kind.always_global());
            if analytic.global && matches!(analytic.window, WindowKind::Session { .. }) {
                return Err(PlanError::Reference {
                    path: format!("spec.analytics[{a}].window"),
                    message: format!(
                        "analytic {:?} has session windows keyed by {:?}: over {tasks} partitions its sessions cannot be merged across tasks; key it by `{PARTITION_KEY}` or use tumbling or sliding windows",
                        analytic.name, analytic.key_field
                    ),
                });
            }
        }
        Ok(self)
    }

    /// The same plan pseudonymising user ids with `pseudonymizer` (none: ids as they are).
    pub fn with_pseudonymizer(mut self, pseudonymizer: Option<Pseudonymizer>) -> Self {
        self.pseudonymizer = pseudonymizer;
        self
    }

    /// Whether any analytic is global.
    pub fn has_global(&self) -> bool {
        self.analytics.iter().any(|a| a.global)
    }
}
