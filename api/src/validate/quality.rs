//! Validation of `spec.dataQuality`: the deduplication horizon and the quality report's window
//! and sink.

use super::Problems;
use crate::spec::*;

/// Checks `spec.dataQuality`.
pub(super) fn check_quality(p: &mut Problems, spec: &MarketingPipelineSpec) {
    let quality = &spec.data_quality;
    if let Some(dedup) = &quality.deduplicate {
        if dedup.field.is_empty() {
            p.push("spec.dataQuality.deduplicate.field", "must not be empty");
        }
        if dedup.horizon.millis() == 0 {
            p.push("spec.dataQuality.deduplicate.horizon", "must be positive");
        }
    }
    if let Some(report) = &quality.report {
        if report.window.millis() == 0 {
            p.push("spec.dataQuality.report.window", "must be positive");
        }
        if !spec.sinks.iter().any(|s| s.name == report.sink) {
            p.push(
                "spec.dataQuality.report.sink",
                format!("unknown sink {:?}", report.sink),
            );
        }
    }
}
