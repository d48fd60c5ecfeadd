//! Validation of a pipeline spec: a pure function that returns every problem with its field path.
//!
//! The CRD schema and its CEL rules reject most shapes before the operator sees them; this check
//! covers what a schema cannot express (references between names, CEL syntax, window algebra) and
//! is the one the local CLI runs, where no API server validates anything.

use std::collections::HashSet;
use std::fmt;

use crate::spec::*;

mod funnel;
mod model;
mod pattern;
pub use pattern::placeholders;
mod quality;

/// One thing wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `spec.analytics[0].join.window.slide`.
    pub path: String,
    /// What is wrong, lowercase, without the path.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Every problem of `spec`, in field order; empty when the spec can run.
pub fn validate(spec: &MarketingPipelineSpec) -> Vec<Problem> {
    let mut problems = Problems(Vec::new());
    let p = &mut problems;
    check_unique(
        p,
        "spec.sources",
        spec.sources.iter().map(|s| s.name.as_str()),
    );
    for (i, source) in spec.sources.iter().enumerate() {
        check_source(
            p,
            &format!("spec.sources[{i}]"),
            source,
            spec.kafka.is_some(),
        );
    }
    check_unique(
        p,
        "spec.analytics",
        spec.analytics.iter().map(|a| a.name.as_str()),
    );
    for (i, analytic) in spec.analytics.iter().enumerate() {
        check_analytic(p, &format!("spec.analytics[{i}]"), analytic, spec);
    }
    check_unique(p, "spec.sinks", spec.sinks.iter().map(|s| s.name.as_str()));
    for (i, sink) in spec.sinks.iter().enumerate() {
        let path = format!("spec.sinks[{i}]");
        check_name(p, &path, &sink.name);
        let kinds = [
            sink.kafka.is_some(),
            sink.file.is_some(),
            sink.stdout.is_some(),
        ];
        check_one_of(p, &path, &kinds, "kafka, file or stdout");
        if sink.kafka.is_some() && spec.kafka.is_none() {
            p.push("spec.kafka", "kafka sinks need spec.kafka.bootstrapServers");
        }
        for (j, name) in sink.analytics.iter().enumerate() {
            if !spec.analytics.iter().any(|a| &a.name == name) {
                p.push(
                    format!("{path}.analytics[{j}]"),
                    format!("unknown analytic {name:?}"),
                );
            }
        }
    }
    if let Some(dl) = &spec.dead_letter {
        let kinds = [dl.kafka.is_some(), dl.file.is_some(), dl.stderr.is_some()];
        check_one_of(p, "spec.deadLetter", &kinds, "kafka, file or stderr");
    }
    quality::check_quality(p, spec);
    if spec.sources.is_empty() {
        p.push("spec.sources", "at least one source is required");
    }
    if spec.analytics.is_empty() {
        p.push("spec.analytics", "at least one analytic is required");
    }
    if spec.sinks.is_empty() {
        p.push("spec.sinks", "at least one sink is required");
    }
    if spec.parallelism < 1 {
        p.push("spec.parallelism", "must be at least 1");
    }
    if spec.checkpoint.retain < 1 {
        p.push("spec.checkpoint.retain", "must be at least 1");
    }
    if spec.checkpoint.interval.millis() == 0 {
        p.push("spec.checkpoint.interval", "must be positive");
    }
    if let Some(auto) = &spec.autoscaling {
        if auto.min_parallelism < 1 {
            p.push("spec.autoscaling.minParallelism", "must be at least 1");
        }
        if auto.min_parallelism > auto.max_parallelism {
            p.push(
                "spec.autoscaling",
                "minParallelism must not exceed maxParallelism",
            );
        }
        if !(10..=100).contains(&auto.target_utilization_percent) {
            p.push(
                "spec.autoscaling.targetUtilizationPercent",
                "must be between 10 and 100",
            );
        }
        if auto.evaluation_interval.millis() == 0 {
            p.push("spec.autoscaling.evaluationInterval", "must be positive");
        }
        if auto.metrics_window.millis() < 1000 {
            p.push("spec.autoscaling.metricsWindow", "must be at least 1s");
        }
        if auto.catch_up_duration.millis() == 0 {
            p.push("spec.autoscaling.catchUpDuration", "must be positive");
        }
        if let Some(url) = &auto.prometheus_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.push(
                    "spec.autoscaling.prometheusUrl",
                    "must be an http:// or https:// URL",
                );
            }
        }
    }
    problems.0
}

fn check_name(p: &mut Problems, path: &str, name: &str) {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && !name.ends_with(['-', '_']);
    if !valid {
        p.push(format!("{path}.name"), format!("invalid name {name:?}: use lowercase letters, digits, '_' and '-', starting with a letter"));
    }
}

fn check_unique<'a>(p: &mut Problems, path: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            p.push(
                format!("{path}[{i}].name"),
                format!("duplicate name {name:?}"),
            );
        }
    }
}

fn check_one_of(p: &mut Problems, path: &str, set: &[bool], names: &str) {
    if set.iter().filter(|x| **x).count() != 1 {
        p.push(
            path.to_owned(),
            format!("exactly one of {names} must be set"),
        );
    }
}

fn check_cel(p: &mut Problems, path: &str, expr: &str) {
    if let Err(err) = cel::Program::compile(expr) {
        let first = err
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        p.push(
            path.to_owned(),
            format!("invalid CEL expression {expr:?}: {first}"),
        );
    }
}

fn check_source(p: &mut Problems, path: &str, source: &SourceSpec, has_kafka: bool) {
    check_name(p, path, &source.name);
    let kinds = [
        source.kafka.is_some(),
        source.file.is_some(),
        source.stdin.is_some(),
        source.generator.is_some(),
    ];
    check_one_of(p, path, &kinds, "kafka, file, stdin or generator");
    if source.kafka.is_some() && !has_kafka {
        p.push(
            "spec.kafka",
            "kafka sources need spec.kafka.bootstrapServers",
        );
    }
    if let Some(generator) = &source.generator {
        if generator.time_step.millis() == 0 {
            p.push(format!("{path}.generator.timeStep"), "must be positive");
        }
        if !(0.0..=1.0).contains(&generator.out_of_order_fraction) {
            p.push(
                format!("{path}.generator.outOfOrderFraction"),
                "must be between 0 and 1",
            );
        }
        if generator.users == 0 || generator.products == 0 {
            p.push(
                format!("{path}.generator"),
                "users and products must be at least 1",
            );
        }
    }
    let f = &source.fields;
    for (name, value) in [("user", &f.user), ("time", &f.time)] {
        if value.is_empty() {
            p.push(format!("{path}.fields.{name}"), "must name a record field");
        }
    }
    for (j, extra) in f.extra.iter().enumerate() {
        if EVENT_FIELDS.contains(&extra.as_str()) {
            p.push(
                format!("{path}.fields.extra[{j}]"),
                format!("{extra:?} is already an event field"),
            );
        }
    }
    if let Some(filter) = &source.filter {
        check_cel(p, &format!("{path}.filter"), filter);
    }
    for (j, derived) in source.derive.iter().enumerate() {
        check_cel(p, &format!("{path}.derive[{j}].expr"), &derived.expr);
        if EVENT_FIELDS.contains(&derived.name.as_str()) || f.extra.contains(&derived.name) {
            p.push(
                format!("{path}.derive[{j}].name"),
                format!("{:?} is already a field", derived.name),
            );
        }
    }
}

/// Fields an event of `source` has: the event fields, its extra fields and derived fields.
fn source_fields(source: &SourceSpec) -> impl Iterator<Item = &str> {
    EVENT_FIELDS
        .iter()
        .copied()
        .chain(source.fields.extra.iter().map(String::as_str))
        .chain(source.derive.iter().map(|d| d.name.as_str()))
}

fn check_analytic(
    p: &mut Problems,
    path: &str,
    analytic: &AnalyticSpec,
    spec: &MarketingPipelineSpec,
) {
    check_name(p, path, &analytic.name);
    check_one_of(
        p,
        path,
        &[
            analytic.aggregate.is_some(),
            analytic.join.is_some(),
            analytic.top_n.is_some(),
            analytic.funnel.is_some(),
            analytic.pattern.is_some(),
            analytic.action.is_some(),
            analytic.segments.is_some(),
            analytic.propensity.is_some(),
            analytic.recommend.is_some(),
        ],
        "aggregate, join, topN, funnel, pattern, action, segments, propensity or recommend",
    );
    if let Some(s) = &analytic.segments {
        model::check_segments(p, &format!("{path}.segments"), s, spec);
    }
    if let Some(m) = &analytic.propensity {
        model::check_propensity(p, &format!("{path}.propensity"), m, spec);
    }
    if let Some(r) = &analytic.recommend {
        model::check_recommend(p, &format!("{path}.recommend"), r, spec);
    }
    if let Some(f) = &analytic.funnel {
        funnel::check_funnel(p, &format!("{path}.funnel"), f, spec);
    }
    if let Some(pattern) = &analytic.pattern {
        pattern::check_pattern(p, &format!("{path}.pattern"), pattern, spec);
    }
    if let Some(action) = &analytic.action {
        pattern::check_action(p, &format!("{path}.action"), action, spec);
    }
    let find = |name: &str| spec.sources.iter().find(|s| s.name == name);
    let check_sources = |p: &mut Problems, path: &str, names: &[String], filter: Option<&str>| {
        if names.is_empty() {
            p.push(format!("{path}.sources"), "at least one source is required");
        }
        let mut inputs = Vec::new();
        for (j, name) in names.iter().enumerate() {
            match find(name) {
                Some(source) => inputs.push(source),
                None => p.push(
                    format!("{path}.sources[{j}]"),
                    format!("unknown source {name:?}"),
                ),
            }
        }
        if let Some(filter) = filter {
            check_cel(p, &format!("{path}.filter"), filter);
        }
        inputs
    };
    if let Some(agg) = &analytic.aggregate {
        let path = format!("{path}.aggregate");
        let inputs = check_sources(p, &path, &agg.sources, agg.filter.as_deref());
        check_group(p, &path, &agg.group, &inputs);
    }
    if let Some(top) = &analytic.top_n {
        let path = format!("{path}.topN");
        let agg = &top.aggregate;
        let inputs = check_sources(p, &path, &agg.sources, agg.filter.as_deref());
        check_group(p, &path, &agg.group, &inputs);
        let group = &agg.group;
        let ranked = group.aggregates.iter().map(|a| &a.name);
        if !ranked
            .chain(group.ratios.iter().map(|r| &r.name))
            .any(|n| n == &top.rank_by)
        {
            p.push(
                format!("{path}.rankBy"),
                format!("unknown aggregate or ratio {:?}", top.rank_by),
            );
        }
        if group.window.kind == WindowKind::Session {
            p.push(
                format!("{path}.window.type"),
                "topN needs tumbling or sliding windows",
            );
        }
        if !(1..=1000).contains(&top.limit) {
            p.push(format!("{path}.limit"), "must be between 1 and 1000");
        }
    }
    if let Some(join) = &analytic.join {
        let path = format!("{path}.join");
        let mut inputs = Vec::new();
        for (side, name) in [("left", &join.left), ("right", &join.right)] {
            match find(name) {
                Some(source) => inputs.push(source),
                None => p.push(format!("{path}.{side}"), format!("unknown source {name:?}")),
            }
        }
        if join.left == join.right {
            p.push(
                format!("{path}.right"),
                "a join needs two different sources",
            );
        }
        check_group(p, &path, &join.group, &inputs);
        for (j, agg) in join.group.aggregates.iter().enumerate() {
            if agg.source.is_none() {
                p.push(
                    format!("{path}.aggregates[{j}].source"),
                    "each aggregate of a join names its side (left or right source)",
                );
            }
        }
    }
}

fn check_group(p: &mut Problems, path: &str, group: &GroupSpec, inputs: &[&SourceSpec]) {
    let known = |field: &str| inputs.iter().any(|s| source_fields(s).any(|f| f == field));
    if !inputs.is_empty() && !known(&group.key_by) {
        p.push(
            format!("{path}.keyBy"),
            format!("unknown field {:?}", group.key_by),
        );
    }
    check_window(p, &format!("{path}.window"), &group.window);
    funnel::check_offset(p, &format!("{path}.window"), &group.window);
    check_unique(
        p,
        &format!("{path}.aggregates"),
        group
            .aggregates
            .iter()
            .map(|a| a.name.as_str())
            .chain(group.ratios.iter().map(|r| r.name.as_str())),
    );
    if group.aggregates.is_empty() {
        p.push(
            format!("{path}.aggregates"),
            "at least one aggregate is required",
        );
    }
    for (j, agg) in group.aggregates.iter().enumerate() {
        let apath = format!("{path}.aggregates[{j}]");
        match (&agg.field, agg.op) {
            (None, AggregateOp::Count) => {}
            (None, op) => p.push(format!("{apath}.field"), format!("{op:?} needs a field")),
            (Some(field), _) if !inputs.is_empty() && !known(field) => {
                p.push(format!("{apath}.field"), format!("unknown field {field:?}"))
            }
            _ => {}
        }
        if let Some(source) = &agg.source {
            if !inputs.iter().any(|s| &s.name == source) {
                p.push(
                    format!("{apath}.source"),
                    format!("{source:?} is not an input of this analytic"),
                );
            }
        }
    }
    for (j, ratio) in group.ratios.iter().enumerate() {
        for (part, name) in [
            ("numerator", &ratio.numerator),
            ("denominator", &ratio.denominator),
        ] {
            if !group.aggregates.iter().any(|a| &a.name == name) {
                p.push(
                    format!("{path}.ratios[{j}].{part}"),
                    format!("unknown aggregate {name:?}"),
                );
            }
        }
    }
}

fn check_window(p: &mut Problems, path: &str, window: &WindowSpec) {
    let positive = |p: &mut Problems,
                    field: &str,
                    value: &Option<crate::Duration>,
                    needed: bool| match value {
        Some(d) if d.millis() == 0 => p.push(format!("{path}.{field}"), "must be positive"),
        None if needed => p.push(
            format!("{path}.{field}"),
            format!("{:?} windows need {field}", window.kind),
        ),
        _ => {}
    };
    match window.kind {
        WindowKind::Tumbling => positive(p, "size", &window.size, true),
        WindowKind::Sliding => {
            positive(p, "size", &window.size, true);
            positive(p, "slide", &window.slide, true);
            if let (Some(size), Some(slide)) = (&window.size, &window.slide) {
                if slide.millis() > size.millis() {
                    p.push(format!("{path}.slide"), "must not exceed size");
                }
            }
        }
        WindowKind::Session => positive(p, "gap", &window.gap, true),
    }
}
