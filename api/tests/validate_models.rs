//! The model examples through the real validation, and each invalid model setting reported at
//! its field path.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use rstest::rstest;
mod support;

use support::problems;
use tidemark_api::parse_manifest;

const SEGMENTS: &str = include_str!("../../examples/segments.yaml");
const PROPENSITY: &str = include_str!("../../examples/propensity.yaml");
const RECOMMENDATIONS: &str = include_str!("../../examples/recommendations.yaml");

#[test]
fn the_model_examples_are_valid() {
    for text in [SEGMENTS, PROPENSITY, RECOMMENDATIONS] {
        assert_eq!(problems(text), Vec::<String>::new());
    }
    let segments = parse_manifest(SEGMENTS).unwrap();
    let s = segments.spec.analytics[0].segments.as_ref().unwrap();
    assert_eq!((s.k, s.labels.as_ref().unwrap().names.len()), (4, 4));
}

#[rstest]
#[case::labels_not_k(
    SEGMENTS,
    "names: [champions, loyal, promising, at_risk]",
    "names: [champions, loyal]",
    "spec.analytics[0].segments.labels.names: needs one name per segment (4)"
)]
#[case::label_by_unknown_feature(
    SEGMENTS,
    "by: revenue",
    "by: clicks",
    "spec.analytics[0].segments.labels.by: \"clicks\" is not a feature"
)]
#[case::k_too_small(SEGMENTS, "k: 4", "k: 1", "spec.analytics[0].segments.k")]
#[case::unknown_source(
    SEGMENTS,
    "sources: [clicks, purchases]\n        epoch",
    "sources: [clicks, orders]\n        epoch",
    "spec.analytics[0].segments.sources[1]: unknown source \"orders\""
)]
#[case::bad_feature_cel(
    PROPENSITY,
    "        degree: 2\n",
    "        degree: 2\n        features: [{ name: rate, expr: 'carts /' }]\n",
    "spec.analytics[0].propensity.features[0].expr"
)]
#[case::duplicate_feature(
    PROPENSITY,
    "        degree: 2\n",
    "        degree: 2\n        features: [{ name: a, expr: views }, { name: a, expr: carts }]\n",
    "spec.analytics[0].propensity.features"
)]
#[case::degree_too_high(
    PROPENSITY,
    "degree: 2",
    "degree: 4",
    "spec.analytics[0].propensity.degree"
)]
#[case::zero_horizon(
    PROPENSITY,
    "horizon: 6h",
    "horizon: 0s",
    "spec.analytics[0].propensity.horizon"
)]
#[case::top_k_too_big(
    RECOMMENDATIONS,
    "topK: 10",
    "topK: 500",
    "spec.analytics[0].recommend.topK"
)]
#[case::no_view_types(
    RECOMMENDATIONS,
    "viewTypes: [view, add_to_cart]",
    "viewTypes: []",
    "spec.analytics[0].recommend.viewTypes: must name at least one type"
)]
#[case::two_kinds(
    SEGMENTS,
    "\n  sinks:",
    "\n      recommend: { sources: [clicks] }\n  sinks:",
    "spec.analytics[0]: exactly one of aggregate, join, topN, funnel, pattern, action, segments, propensity or recommend must be set"
)]
fn each_invalid_model_setting_names_the_field(
    #[case] example: &str,
    #[case] from: &str,
    #[case] to: &str,
    #[case] expected: &str,
) {
    assert!(
        example.contains(from),
        "the case edits the example: {from:?}"
    );
    let problems = problems(&example.replacen(from, to, 1));
    assert!(
        problems.iter().any(|p| p.starts_with(expected)),
        "expected {expected:?} in {problems:#?}"
    );
}
