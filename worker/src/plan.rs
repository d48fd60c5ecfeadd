//! Compiling a pipeline spec into the plan a task executes: the sources (`crate::operators`),
//! each analytic with its kind (`crate::analytics`), the data-quality checks, and how the plan
//! changes over several tasks.

use tidemark_api::MarketingPipelineSpec;

pub use crate::analytics::AnalyticPlan;
use crate::expr::Expr;
use crate::operators::{compile_sources, input_for, PlanError, SourcePlan, PARTITION_KEY};
use crate::privacy::Pseudonymizer;
use crate::quality::{QualityPlan, ReportPlan};
use crate::window::WindowKind;

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

impl Plan {
    /// Compiles `spec` of pipeline `pipeline`.
    pub fn compile(pipeline: &str, spec: &MarketingPipelineSpec) -> Result<Self, PlanError> {
        let mut sources = compile_sources(spec)?;
        let mut analytics = Vec::with_capacity(spec.analytics.len());
        for (a, analytic) in spec.analytics.iter().enumerate() {
            let path = format!("spec.analytics[{a}]");
            let compiled =
                crate::analytics::compile(pipeline, &spec.analytics, a, &path, &sources)?;
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
