//! `aggregate` and `join` analytics: values per key and event-time window, computed by the
//! window state of `crate::window` (panes or sessions), merged across tasks by [`super::merge`].
//!
//! Both kinds share one compiled form, [`KeyedPlan`] (the accumulator layout, the join's
//! requirement and the value names); a join is an aggregation over two inputs whose result
//! needs events on the required sides. This file also compiles the group (key, window,
//! aggregates, ratios) that a top-N shares.

use std::sync::Arc;

use tidemark_api::{AggregateAnalytic, GroupSpec, JoinAnalytic, JoinType, WindowKind as SpecKind};

use super::merge::KeyedMerge;
use super::AnalyticPlan;
use super::{AnalyticCapture, Compiled, Emit, GlobalAnalytic, KindPlan, TaskAnalytic};
use crate::event::Event;
use crate::operators::{input_for, PlanError, SourcePlan};
use crate::window::accumulate::AccLayout;
use crate::window::codec::{Reader, Writer};
use crate::window::snapshot::WindowsSnapshot;
use crate::window::{Emission, Refused, WindowKind, WindowStats, Windows, WindowsCapture};

/// The compiled values of an aggregation or join.
#[derive(Clone, Debug)]
pub struct KeyedPlan {
    /// `aggregate` or `join`.
    pub kind: &'static str,
    /// Accumulator layout.
    pub layout: AccLayout,
    /// Inputs that must have events in a window for a result (inner/left joins).
    pub require: Vec<usize>,
    /// Value names: aggregates then ratios.
    pub value_names: Vec<String>,
    /// Window starts past the epoch alignment, ms (`window.offset`).
    pub offset: i64,
}

impl KindPlan for KeyedPlan {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn task_state(&self, analytic: &AnalyticPlan, partials: bool) -> Box<dyn TaskAnalytic> {
        Box::new(KeyedState {
            windows: self.windows(analytic, partials),
            value_names: self.value_names.clone(),
        })
    }

    fn global_state(&self, analytic: &AnalyticPlan) -> Box<dyn GlobalAnalytic> {
        Box::new(KeyedMerge::new(self.clone(), analytic.lateness, None))
    }

    fn window_offset(&self) -> i64 {
        self.offset
    }
}

impl KeyedPlan {
    /// The window state of `analytic` in a task. A global analytic's windows emit partials and
    /// leave the join requirement to the global stage, which sees every task's sides.
    pub fn windows(&self, analytic: &AnalyticPlan, partials: bool) -> Windows {
        let require = if partials {
            Vec::new()
        } else {
            self.require.clone()
        };
        let mut windows = Windows::new(
            analytic.window,
            analytic.lateness,
            self.layout.clone(),
            require,
        );
        if self.offset != 0 {
            let panes = windows.set_offset(self.offset);
            debug_assert!(panes, "validation refuses offsets of session windows");
        }
        if partials {
            let panes = windows.emit_partials();
            debug_assert!(panes, "Plan::for_tasks refuses global session windows");
        }
        windows
    }
}

/// An aggregation's or join's state in a task.
#[derive(Debug)]
struct KeyedState {
    windows: Windows,
    value_names: Vec<String>,
}

/// The window-state callback of a keyed analytic: results, or partials for the stage.
fn emitter<'e, 'o>(
    out: &'e mut Emit<'o>,
    names: &'e [String],
) -> impl FnMut(&Emission<'_>) + use<'e, 'o> {
    move |e| match e.partial {
        Some(block) => out.partial(e.key, e.start, e.end, e.revision, block),
        None => out.values(e.key, e.start, e.end, e.revision, names, e.values),
    }
}

impl TaskAnalytic for KeyedState {
    #[inline]
    fn add(
        &mut self,
        key: &str,
        input: usize,
        event: &Event<'_>,
        wm: i64,
        out: &mut Emit<'_>,
    ) -> bool {
        let mut emit = emitter(out, &self.value_names);
        self.windows.add(key, input, event, wm, &mut emit)
    }

    fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        let mut emit = emitter(out, &self.value_names);
        self.windows.advance(wm, &mut emit);
    }

    fn capture(&self) -> Box<dyn AnalyticCapture> {
        Box::new(self.windows.capture())
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        self.windows.restore_from(r)
    }

    fn restore_v1(&mut self, snapshot: &WindowsSnapshot) -> Result<(), Refused> {
        self.windows.restore(snapshot)
    }

    #[cfg(test)]
    fn snapshot_v1(&self) -> Option<WindowsSnapshot> {
        Some(self.windows.snapshot())
    }

    fn stats(&self) -> WindowStats {
        self.windows.stats()
    }
}

impl AnalyticCapture for WindowsCapture {
    fn encode(&mut self, w: &mut Writer) {
        WindowsCapture::encode(self, w);
    }
}

/// Compiles an `aggregate` analytic.
pub fn compile_aggregate(
    agg: &AggregateAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let plan = compile_group(&agg.group, &agg.sources, None, path, sources)?;
    let filter = agg
        .filter
        .clone()
        .map(|f| (format!("{path}.aggregate.filter"), f));
    compiled(
        Arc::new(plan),
        agg.sources.clone(),
        &agg.group,
        filter,
        path,
    )
}

/// Compiles a `join` analytic.
pub fn compile_join(
    join: &JoinAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let inputs = vec![join.left.clone(), join.right.clone()];
    let plan = compile_group(&join.group, &inputs, Some(join.join_type), path, sources)?;
    compiled(Arc::new(plan), inputs, &join.group, None, path)
}

/// The parts of [`Compiled`] every grouped kind shares.
pub fn compiled(
    kind: Arc<dyn KindPlan>,
    inputs: Vec<String>,
    group: &GroupSpec,
    filter: Option<(String, String)>,
    path: &str,
) -> Result<Compiled, PlanError> {
    Ok(Compiled {
        kind,
        inputs,
        key_by: group.key_by.clone(),
        filter,
        window: window_kind(group, path)?,
        lateness: group.allowed_lateness.millis_i64(),
    })
}

/// Compiles the aggregates, ratios and join requirement of `group` over the sources named
/// `inputs`.
pub fn compile_group(
    group: &GroupSpec,
    inputs: &[String],
    join: Option<JoinType>,
    path: &str,
    sources: &[SourcePlan],
) -> Result<KeyedPlan, PlanError> {
    let inputs: Vec<&SourcePlan> = inputs
        .iter()
        .map(|name| {
            sources
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| PlanError::Reference {
                    path: path.to_owned(),
                    message: format!("unknown source {name:?}"),
                })
        })
        .collect::<Result<_, _>>()?;
    let mut aggs = Vec::new();
    for (j, agg) in group.aggregates.iter().enumerate() {
        let per_input = inputs
            .iter()
            .map(|s| {
                if agg.source.as_ref().is_some_and(|only| only != &s.name) {
                    return None;
                }
                match &agg.field {
                    None => Some(crate::window::accumulate::Input::Time),
                    Some(field) => input_for(field, &s.extra_names),
                }
            })
            .collect::<Vec<_>>();
        if per_input.iter().all(Option::is_none) {
            return Err(PlanError::Reference {
                path: format!("{path}.aggregates[{j}]"),
                message: "no input of the analytic provides this aggregate's field".into(),
            });
        }
        aggs.push((agg.op, per_input));
    }
    let position = |name: &str, part: &str, j: usize| {
        group
            .aggregates
            .iter()
            .position(|x| x.name == name)
            .ok_or_else(|| PlanError::Reference {
                path: format!("{path}.ratios[{j}].{part}"),
                message: format!("unknown aggregate {name:?}"),
            })
    };
    let ratios = group
        .ratios
        .iter()
        .enumerate()
        .map(|(j, r)| {
            Ok((
                position(&r.numerator, "numerator", j)?,
                position(&r.denominator, "denominator", j)?,
            ))
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    let require = match join {
        Some(JoinType::Inner) => vec![0, 1],
        Some(JoinType::Left) => vec![0],
        _ => Vec::new(),
    };
    let layout = AccLayout::new(aggs, ratios, inputs.len(), !require.is_empty());
    let mut value_names: Vec<String> = group.aggregates.iter().map(|x| x.name.clone()).collect();
    value_names.extend(group.ratios.iter().map(|r| r.name.clone()));
    Ok(KeyedPlan {
        kind: if join.is_some() { "join" } else { "aggregate" },
        layout,
        require,
        value_names,
        offset: group.window.offset.as_ref().map_or(0, |d| d.millis_i64()),
    })
}

/// The window of `group`, in milliseconds.
pub fn window_kind(group: &GroupSpec, path: &str) -> Result<WindowKind, PlanError> {
    let missing = |field: &str| PlanError::Reference {
        path: format!("{path}.window.{field}"),
        message: "missing".into(),
    };
    let positive = |d: &Option<tidemark_api::Duration>, field: &str| {
        d.as_ref()
            .map(|d| d.millis_i64())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| missing(field))
    };
    Ok(match group.window.kind {
        SpecKind::Tumbling => WindowKind::Tumbling {
            size: positive(&group.window.size, "size")?,
        },
        SpecKind::Sliding => WindowKind::Sliding {
            size: positive(&group.window.size, "size")?,
            slide: positive(&group.window.slide, "slide")?,
        },
        SpecKind::Session => WindowKind::Session {
            gap: positive(&group.window.gap, "gap")?,
        },
    })
}
