//! Validation of `funnel` analytics, and of window offsets (every windowed analytic).

use super::{check_cel, check_unique, check_window, source_fields, Problems};
use crate::spec::*;

/// Checks a funnel at `path` (`spec.analytics[i].funnel`).
pub(super) fn check_funnel(
    p: &mut Problems,
    path: &str,
    funnel: &FunnelAnalytic,
    spec: &MarketingPipelineSpec,
) {
    let mut inputs = Vec::new();
    if funnel.sources.is_empty() {
        p.push(format!("{path}.sources"), "at least one source is required");
    }
    for (j, name) in funnel.sources.iter().enumerate() {
        match spec.sources.iter().find(|s| &s.name == name) {
            Some(source) => inputs.push(source),
            None => p.push(
                format!("{path}.sources[{j}]"),
                format!("unknown source {name:?}"),
            ),
        }
    }
    let known = |field: &str| {
        !inputs.is_empty() && inputs.iter().all(|s| source_fields(s).any(|f| f == field))
    };
    if !(2..=16).contains(&funnel.steps.len()) {
        p.push(format!("{path}.steps"), "a funnel has 2 to 16 steps");
    }
    check_unique(
        p,
        &format!("{path}.steps"),
        funnel.steps.iter().map(|s| s.name.as_str()),
    );
    for (k, step) in funnel.steps.iter().enumerate() {
        let at = format!("{path}.steps[{k}]");
        if step.event_types.is_empty() && step.when.is_none() {
            p.push(at.clone(), "a step needs eventTypes, when, or both");
        }
        if let Some(when) = &step.when {
            check_cel(p, &format!("{at}.when"), when);
        }
    }
    if funnel.conversion_window.millis() == 0 {
        p.push(format!("{path}.conversionWindow"), "must be positive");
    }
    let position = |name: &str| funnel.steps.iter().position(|s| s.name == name);
    if funnel.exclusions.len() > 16 {
        p.push(format!("{path}.exclusions"), "at most 16 exclusions");
    }
    for (x, exclusion) in funnel.exclusions.iter().enumerate() {
        let at = format!("{path}.exclusions[{x}]");
        if exclusion.event_types.is_empty() {
            p.push(
                format!("{at}.eventTypes"),
                "at least one event type is required",
            );
        }
        match exclusion.between.as_slice() {
            [a, b] => match (position(a), position(b)) {
                (Some(a), Some(b)) if a < b => {}
                (Some(_), Some(_)) => p.push(
                    format!("{at}.between"),
                    "the first step must come before the second",
                ),
                _ => p.push(format!("{at}.between"), "names two steps of the funnel"),
            },
            _ => p.push(format!("{at}.between"), "names two steps of the funnel"),
        }
    }
    if let Some(breakdown) = &funnel.breakdown {
        if !inputs.is_empty() && !known(&breakdown.field) {
            p.push(
                format!("{path}.breakdown.field"),
                format!("unknown field {:?}", breakdown.field),
            );
        }
    }
    match (funnel.unit, &funnel.session) {
        (FunnelUnit::Session, None) => p.push(
            format!("{path}.session"),
            "a session funnel needs session (field or gap)",
        ),
        (FunnelUnit::Session, Some(session)) => match (&session.field, &session.gap) {
            (Some(field), None) => {
                if !inputs.is_empty() && !known(field) {
                    p.push(
                        format!("{path}.session.field"),
                        format!("unknown field {field:?}"),
                    );
                }
            }
            (None, Some(gap)) if gap.millis() > 0 => {}
            (None, Some(_)) => p.push(format!("{path}.session.gap"), "must be positive"),
            _ => p.push(
                format!("{path}.session"),
                "exactly one of field or gap must be set",
            ),
        },
        (FunnelUnit::User, Some(_)) => p.push(
            format!("{path}.session"),
            "sessions apply to unit: session only",
        ),
        (FunnelUnit::User, None) => {}
    }
    let window = format!("{path}.window");
    if funnel.window.kind == WindowKind::Session {
        p.push(
            format!("{window}.type"),
            "a funnel needs tumbling or sliding windows (its sessions are set by unit and session)",
        );
    } else {
        check_window(p, &window, &funnel.window);
        check_offset(p, &window, &funnel.window);
    }
}

/// An offset must be shorter than the distance between window starts.
pub(super) fn check_offset(p: &mut Problems, path: &str, window: &WindowSpec) {
    let Some(offset) = &window.offset else { return };
    let every = match window.kind {
        WindowKind::Tumbling => window.size.as_ref(),
        WindowKind::Sliding => window.slide.as_ref(),
        WindowKind::Session => {
            p.push(format!("{path}.offset"), "session windows take no offset");
            return;
        }
    };
    if every.is_some_and(|d| offset.millis() >= d.millis()) {
        p.push(
            format!("{path}.offset"),
            "must be shorter than the slide (the size of tumbling windows)",
        );
    }
}
