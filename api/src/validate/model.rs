//! Validation of the model analytics: `segments`, `propensity` and `recommend`.

use super::{check_cel, check_unique, Problems};
use crate::spec::*;

/// Checks what every model has at `path`.
fn check_input(p: &mut Problems, path: &str, input: &ModelInput, spec: &MarketingPipelineSpec) {
    if input.sources.is_empty() {
        p.push(format!("{path}.sources"), "at least one source is required");
    }
    for (j, name) in input.sources.iter().enumerate() {
        if !spec.sources.iter().any(|s| &s.name == name) {
            p.push(
                format!("{path}.sources[{j}]"),
                format!("unknown source {name:?}"),
            );
        }
    }
    if input.epoch.as_ref().is_some_and(|e| e.millis() == 0) {
        p.push(format!("{path}.epoch"), "must be positive");
    }
    if input.purchase_types.as_ref().is_some_and(Vec::is_empty) {
        p.push(
            format!("{path}.purchaseTypes"),
            "must name at least one type",
        );
    }
}

/// Checks a model's features at `path`.
fn check_features(p: &mut Problems, path: &str, features: &[UserFeature]) {
    check_unique(p, path, features.iter().map(|f| f.name.as_str()));
    for (j, f) in features.iter().enumerate() {
        check_cel(p, &format!("{path}[{j}].expr"), &f.expr);
    }
}

/// Checks a `segments` analytic at `path`.
pub(super) fn check_segments(
    p: &mut Problems,
    path: &str,
    s: &SegmentsAnalytic,
    spec: &MarketingPipelineSpec,
) {
    check_input(p, path, &s.input, spec);
    check_features(p, &format!("{path}.features"), &s.features);
    if !(2..=32).contains(&s.k) {
        p.push(format!("{path}.k"), "must be 2 to 32");
    }
    if let Some(labels) = &s.labels {
        if labels.names.len() != s.k as usize {
            p.push(
                format!("{path}.labels.names"),
                format!("needs one name per segment ({})", s.k),
            );
        }
        let named = if s.features.is_empty() {
            ["recency_hours", "purchases", "revenue"].contains(&labels.by.as_str())
        } else {
            s.features.iter().any(|f| f.name == labels.by)
        };
        if !named {
            p.push(
                format!("{path}.labels.by"),
                format!("{:?} is not a feature", labels.by),
            );
        }
    }
}

/// Checks a `propensity` analytic at `path`.
pub(super) fn check_propensity(
    p: &mut Problems,
    path: &str,
    m: &PropensityAnalytic,
    spec: &MarketingPipelineSpec,
) {
    check_input(p, path, &m.input, spec);
    check_features(p, &format!("{path}.features"), &m.features);
    if m.horizon.millis() == 0 {
        p.push(format!("{path}.horizon"), "must be positive");
    }
    if m.degree.is_some_and(|d| !(1..=3).contains(&d)) {
        p.push(format!("{path}.degree"), "must be 1 to 3");
    }
    if m.learning_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        p.push(format!("{path}.learningRate"), "must be positive");
    }
    if m.l2.is_some_and(|r| !(r >= 0.0 && r.is_finite())) {
        p.push(format!("{path}.l2"), "must not be negative");
    }
}

/// Checks a `recommend` analytic at `path`.
pub(super) fn check_recommend(
    p: &mut Problems,
    path: &str,
    r: &RecommendAnalytic,
    spec: &MarketingPipelineSpec,
) {
    check_input(p, path, &r.input, spec);
    if r.session_gap.as_ref().is_some_and(|g| g.millis() == 0) {
        p.push(format!("{path}.sessionGap"), "must be positive");
    }
    if r.view_types.as_ref().is_some_and(Vec::is_empty) {
        p.push(format!("{path}.viewTypes"), "must name at least one type");
    }
    if r.top_k.is_some_and(|k| !(1..=100).contains(&k)) {
        p.push(format!("{path}.topK"), "must be 1 to 100");
    }
}
