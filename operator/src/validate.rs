//! Validate: may this pipeline run? Pure. The API server's schema and CEL rules already rejected
//! most bad shapes; this adds `tidemark_api::validate` (references, CEL syntax, window algebra)
//! and the limits that only the operator knows, such as name lengths of the owned objects.

use tidemark_api::{MarketingPipeline, Problem};

/// Longest pipeline name: the StatefulSet controller labels each pod with
/// `controller-revision-hash: <name>-<10 characters>`, a label value of at most 63 characters.
pub const MAX_NAME_LEN: usize = 52;

/// Every reason `pipeline` cannot run; empty when it can.
pub fn validate(pipeline: &MarketingPipeline) -> Vec<Problem> {
    let mut problems = Vec::new();
    let name = pipeline.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_NAME_LEN {
        problems.push(Problem {
            path: "metadata.name".into(),
            message: format!(
                "must be at most {MAX_NAME_LEN} characters (pod labels derive from it)"
            ),
        });
    }
    problems.extend(tidemark_api::validate(&pipeline.spec));
    problems
}

/// The problems as one message for a condition or an event, cut to fit an event note (1 kB).
pub fn summary(problems: &[Problem]) -> String {
    let mut text = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() > 1000 {
        let mut end = 1000;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{pipeline, GENERATOR, QUICKSTART};
    use rstest::rstest;

    #[rstest]
    #[case::seed_job(QUICKSTART)]
    #[case::generator(GENERATOR)]
    fn valid_fixtures_have_no_problems(#[case] yaml: &str) {
        assert_eq!(validate(&pipeline(yaml)), vec![]);
    }

    #[test]
    fn a_reference_to_an_unknown_source_is_reported_with_its_path() {
        let yaml = GENERATOR.replace("sources: [events]", "sources: [nowhere]");
        let problems = validate(&pipeline(&yaml));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "spec.analytics[0].aggregate.sources[0]");
        assert!(summary(&problems).contains("unknown source"));
    }

    #[test]
    fn a_name_too_long_for_pod_labels_is_invalid() {
        let mut p = pipeline(GENERATOR);
        p.metadata.name = Some("a".repeat(MAX_NAME_LEN + 1));
        assert_eq!(validate(&p)[0].path, "metadata.name");
    }

    #[test]
    fn summary_is_cut_to_fit_an_event_note() {
        let many: Vec<_> = (0..100)
            .map(|i| Problem {
                path: format!("spec.x[{i}]"),
                message: "é wrong".repeat(3),
            })
            .collect();
        assert!(summary(&many).len() <= 1003);
    }
}
