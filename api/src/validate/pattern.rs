//! Validation of `pattern` and `action` analytics.

use super::{check_cel, check_unique, source_fields, Problems};
use crate::spec::*;

/// Checks a pattern at `path` (`spec.analytics[i].pattern`).
pub(super) fn check_pattern(
    p: &mut Problems,
    path: &str,
    pattern: &PatternAnalytic,
    spec: &MarketingPipelineSpec,
) {
    let mut inputs = Vec::new();
    if pattern.sources.is_empty() {
        p.push(format!("{path}.sources"), "at least one source is required");
    }
    for (j, name) in pattern.sources.iter().enumerate() {
        match spec.sources.iter().find(|s| &s.name == name) {
            Some(source) => inputs.push(source),
            None => p.push(
                format!("{path}.sources[{j}]"),
                format!("unknown source {name:?}"),
            ),
        }
    }
    let field = |p: &mut Problems, at: String, name: &str| {
        if !inputs.is_empty() && !inputs.iter().all(|s| source_fields(s).any(|f| f == name)) {
            p.push(at, format!("unknown field {name:?}"));
        }
    };
    if !(1..=8).contains(&pattern.steps.len()) {
        p.push(format!("{path}.steps"), "a pattern has 1 to 8 steps");
    }
    check_unique(
        p,
        &format!("{path}.steps"),
        pattern.steps.iter().map(|s| s.name.as_str()),
    );
    for (k, step) in pattern.steps.iter().enumerate() {
        let at = format!("{path}.steps[{k}]");
        if step.event_types.is_empty() && step.when.is_none() {
            p.push(at.clone(), "a step needs eventTypes, when, or both");
        }
        if let Some(when) = &step.when {
            check_cel(p, &format!("{at}.when"), when);
        }
        if step.times == Some(0) || step.times.is_some_and(|t| t > 100) {
            p.push(format!("{at}.times"), "must be 1 to 100");
        }
        if let Some(f) = &step.same_value {
            if step.times.unwrap_or(1) < 2 {
                p.push(format!("{at}.sameValue"), "needs times above 1");
            }
            field(p, format!("{at}.sameValue"), f);
        }
    }
    match &pattern.within {
        Some(w) if w.millis() == 0 => p.push(format!("{path}.within"), "must be positive"),
        None if pattern.steps.len() > 1
            || pattern.steps.iter().any(|s| s.times.unwrap_or(1) > 1) =>
        {
            p.push(
                format!("{path}.within"),
                "a pattern of more than one step or occurrence needs within",
            )
        }
        _ => {}
    }
    if let Some(absent) = &pattern.not_followed_by {
        let at = format!("{path}.notFollowedBy");
        if absent.event_types.is_empty() && absent.when.is_none() {
            p.push(at.clone(), "needs eventTypes, when, or both");
        }
        if let Some(when) = &absent.when {
            check_cel(p, &format!("{at}.when"), when);
        }
        if absent.within.millis() == 0 {
            p.push(format!("{at}.within"), "must be positive");
        }
    }
    if pattern.capture.len() > 16 {
        p.push(format!("{path}.capture"), "at most 16 fields");
    }
    for (j, name) in pattern.capture.iter().enumerate() {
        field(p, format!("{path}.capture[{j}]"), name);
    }
}

/// Checks an action at `path` (`spec.analytics[i].action`).
pub(super) fn check_action(
    p: &mut Problems,
    path: &str,
    action: &ActionAnalytic,
    spec: &MarketingPipelineSpec,
) {
    let trigger = spec
        .analytics
        .iter()
        .find(|a| a.name == action.trigger)
        .and_then(|a| a.pattern.as_ref());
    let Some(pattern) = trigger else {
        p.push(
            format!("{path}.trigger"),
            format!("no pattern analytic named {:?}", action.trigger),
        );
        return;
    };
    let every = action.decide_every.as_ref().map_or(60_000, |d| d.millis());
    if every == 0 {
        p.push(format!("{path}.decideEvery"), "must be positive");
        return;
    }
    let multiple = |p: &mut Problems, at: String, ms: u64| {
        if ms == 0 || !ms.is_multiple_of(every) {
            p.push(at, "must be a positive multiple of decideEvery");
        }
    };
    if let Some(budget) = &action.budget {
        multiple(p, format!("{path}.budget.per"), budget.per.millis());
        if budget.max_actions == 0 {
            p.push(format!("{path}.budget.maxActions"), "must be positive");
        }
    }
    if let Some(w) = &action.report_window {
        multiple(p, format!("{path}.reportWindow"), w.millis());
    }
    if !(0.0..=90.0).contains(&action.holdout_percent) {
        p.push(format!("{path}.holdoutPercent"), "must be 0 to 90");
    }
    if action.validity.millis() == 0 {
        p.push(format!("{path}.validity"), "must be positive");
    }
    if action.conversion.within.millis() == 0 {
        p.push(format!("{path}.conversion.within"), "must be positive");
    }
    if action.conversion.event_types.is_empty() {
        p.push(
            format!("{path}.conversion.eventTypes"),
            "at least one event type is required",
        );
    }
    if let Some(score) = &action.score_by {
        if !pattern.capture.contains(score) {
            p.push(
                format!("{path}.scoreBy"),
                format!(
                    "{score:?} is not a captured field of pattern {:?}",
                    action.trigger
                ),
            );
        }
    }
    let known = |name: &str| {
        matches!(name, "user" | "action_id" | "pattern")
            || pattern.capture.iter().any(|c| c == name)
    };
    let templates = action
        .params
        .iter()
        .map(|(k, v)| (format!("{path}.params.{k}"), v))
        .chain(action.reason.iter().map(|r| (format!("{path}.reason"), r)));
    for (at, text) in templates {
        for name in placeholders(text) {
            if !known(name) {
                p.push(at.clone(), format!("unknown placeholder {{{name}}}"));
            }
        }
    }
}

/// The `{name}` placeholders of a template.
pub fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
}
