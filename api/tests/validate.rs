//! Manifests parsed into the real types and run through the real validation: every problem is
//! reported with its field path.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use rstest::rstest;
mod support;

use support::problems;
use tidemark_api::{parse_manifest, ManifestError, MarketingPipelineSpec, WindowKind};

const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");

#[test]
fn the_quickstart_is_valid_and_has_the_seed_jobs_shape() {
    let pipeline = parse_manifest(QUICKSTART).unwrap();
    let spec: &MarketingPipelineSpec = &pipeline.spec;
    assert_eq!(pipeline.metadata.name.as_deref(), Some("quickstart"));
    let topics: Vec<&str> = spec
        .sources
        .iter()
        .map(|s| s.kafka.as_ref().unwrap().topic.as_str())
        .collect();
    assert_eq!(topics, ["click_topic", "purchase_topic"]);
    assert_eq!(
        spec.sinks[0].kafka.as_ref().unwrap().topic,
        "marketing_report_topic"
    );
    let join = spec.analytics[0].join.as_ref().unwrap();
    assert_eq!(join.group.window.kind, WindowKind::Tumbling);
    assert_eq!(join.group.window.size.as_ref().unwrap().millis(), 3_600_000);
    assert_eq!(spec.watermark.max_out_of_orderness.millis(), 10_000);
    assert_eq!(spec.checkpoint.retain, 3, "defaults are filled in");
}

#[rstest]
#[case::unknown_join_side(
    "right: purchases",
    "right: refunds",
    "spec.analytics[0].join.right: unknown source \"refunds\""
)]
#[case::same_join_sides(
    "right: purchases",
    "right: clicks",
    "spec.analytics[0].join.right: a join needs two different sources"
)]
#[case::unknown_ratio_part(
    "denominator: clicks",
    "denominator: views",
    "spec.analytics[0].join.ratios[0].denominator: unknown aggregate \"views\""
)]
#[case::sum_without_field(
    "op: sum, field: price,",
    "op: sum,",
    "spec.analytics[0].join.aggregates[2].field: Sum needs a field"
)]
#[case::unknown_field(
    "field: price",
    "field: cost",
    "spec.analytics[0].join.aggregates[2].field: unknown field \"cost\""
)]
#[case::unknown_key(
    "keyBy: user",
    "keyBy: campaign",
    "spec.analytics[0].join.keyBy: unknown field \"campaign\""
)]
#[case::duplicate_source(
    "- name: purchases",
    "- name: clicks",
    "spec.sources[1].name: duplicate name \"clicks\""
)]
#[case::bad_name(
    "name: marketing_report",
    "name: Marketing",
    "spec.analytics[0].name: invalid name \"Marketing\""
)]
#[case::two_kinds(
    "kafka: { topic: click_topic }",
    "kafka: { topic: click_topic }\n      file: { path: x }",
    "spec.sources[0]: exactly one of kafka, file, stdin or generator must be set"
)]
#[case::no_kafka_connection(
    "  kafka:\n    bootstrapServers: kafka:9092\n",
    "",
    "spec.kafka: kafka sources need spec.kafka.bootstrapServers"
)]
#[case::session_without_gap(
    "{ type: tumbling, size: 1h }",
    "{ type: session, size: 1h }",
    "spec.analytics[0].join.window.gap: Session windows need gap"
)]
#[case::slide_beyond_size(
    "{ type: tumbling, size: 1h }",
    "{ type: sliding, size: 1h, slide: 2h }",
    "spec.analytics[0].join.window.slide: must not exceed size"
)]
#[case::offset_not_shorter_than_the_window(
    "{ type: tumbling, size: 1h }",
    "{ type: tumbling, size: 1h, offset: 1h }",
    "spec.analytics[0].join.window.offset: must be shorter than the slide"
)]
#[case::offset_of_a_session(
    "{ type: tumbling, size: 1h }",
    "{ type: session, gap: 30m, offset: 5m }",
    "spec.analytics[0].join.window.offset: session windows take no offset"
)]
#[case::bad_cel(
    "eventTypes: [purchase]",
    "eventTypes: [purchase]\n      filter: 'event.price >'",
    "spec.sources[1].filter: invalid CEL expression"
)]
#[case::zero_parallelism(
    "parallelism: 2",
    "parallelism: 0",
    "spec.parallelism: must be at least 1"
)]
#[case::report_to_unknown_sink(
    "parallelism: 2",
    "parallelism: 2\n  dataQuality: { report: { window: 1m, sink: nowhere } }",
    "spec.dataQuality.report.sink: unknown sink \"nowhere\""
)]
#[case::report_window_zero(
    "parallelism: 2",
    "parallelism: 2\n  dataQuality: { report: { window: 0s, sink: reports } }",
    "spec.dataQuality.report.window: must be positive"
)]
#[case::dedup_horizon_zero(
    "parallelism: 2",
    "parallelism: 2\n  dataQuality: { deduplicate: { field: event_id, horizon: 0s } }",
    "spec.dataQuality.deduplicate.horizon: must be positive"
)]
#[case::wrong_kind(
    "kind: MarketingPipeline",
    "kind: Pipeline",
    "kind: must be MarketingPipeline"
)]
fn each_invalid_manifest_names_the_field(
    #[case] from: &str,
    #[case] to: &str,
    #[case] expected: &str,
) {
    assert!(
        QUICKSTART.contains(from),
        "the case edits the quickstart: {from:?}"
    );
    let problems = problems(&QUICKSTART.replacen(from, to, 1));
    assert!(
        problems.iter().any(|p| p.starts_with(expected)),
        "expected {expected:?} in {problems:#?}"
    );
}

#[test]
fn keyed_windows_take_an_offset_shorter_than_their_slide() {
    for window in [
        "{ type: tumbling, size: 1h, offset: 59m }",
        "{ type: sliding, size: 1h, slide: 20m, offset: 5m }",
    ] {
        let manifest = QUICKSTART.replacen("{ type: tumbling, size: 1h }", window, 1);
        assert_eq!(problems(&manifest), Vec::<String>::new(), "{window}");
    }
}

#[test]
fn a_report_to_a_declared_sink_is_valid() {
    let text = QUICKSTART.replacen(
        "parallelism: 2",
        "parallelism: 2\n  dataQuality: { report: { window: 1m, sink: reports } }",
        1,
    );
    assert_eq!(problems(&text), Vec::<String>::new());
    let report = parse_manifest(&text)
        .unwrap()
        .spec
        .data_quality
        .report
        .unwrap();
    assert_eq!(report.window.millis(), 60_000);
    assert_eq!(report.sink, "reports");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = QUICKSTART
        .replace("right: purchases", "right: refunds")
        .replace("parallelism: 2", "parallelism: 0");
    assert!(problems(&text).len() >= 2);
}

#[rstest]
#[case::bad_duration("maxOutOfOrderness: 10s", "maxOutOfOrderness: 10 seconds")]
#[case::unknown_op("op: count, source: clicks", "op: median, source: clicks")]
#[case::not_yaml("spec:", "spec: [")]
fn malformed_manifests_are_parse_errors(#[case] from: &str, #[case] to: &str) {
    let err = parse_manifest(&QUICKSTART.replacen(from, to, 1)).unwrap_err();
    assert!(matches!(err, ManifestError::Parse(_)), "{err}");
}

const HOT_PRODUCTS: &str = include_str!("../../examples/hot-products.yaml");

#[test]
fn the_hot_products_example_is_valid_and_ranks_products() {
    let pipeline = parse_manifest(HOT_PRODUCTS).unwrap();
    let top = pipeline.spec.analytics[0].top_n.as_ref().unwrap();
    assert_eq!(
        (
            top.aggregate.group.key_by.as_str(),
            top.rank_by.as_str(),
            top.limit
        ),
        ("product", "views", 10)
    );
    assert_eq!(top.aggregate.group.allowed_lateness.millis(), 300_000);
    let revenue = pipeline.spec.analytics[1].top_n.as_ref().unwrap();
    assert_eq!(revenue.aggregate.group.window.kind, WindowKind::Sliding);
}

#[rstest]
#[case::unknown_rank(
    "rankBy: views",
    "rankBy: clicks",
    "spec.analytics[0].topN.rankBy: unknown aggregate or ratio \"clicks\""
)]
#[case::session_window(
    "{ type: tumbling, size: 1h }",
    "{ type: session, gap: 30m }",
    "spec.analytics[0].topN.window.type: topN needs tumbling or sliding windows"
)]
#[case::no_limit(
    "limit: 10",
    "limit: 0",
    "spec.analytics[0].topN.limit: must be between 1 and 1000"
)]
#[case::unknown_source(
    "sources: [clicks]",
    "sources: [views]",
    "spec.analytics[0].topN.sources[0]: unknown source \"views\""
)]
#[case::bad_filter(
    "filter: 'event.type == \"view\"'",
    "filter: 'event.type =='",
    "spec.analytics[0].topN.filter: invalid CEL expression"
)]
#[case::two_kinds(
    "    - name: most_viewed\n",
    "    - name: most_viewed\n      aggregate: { sources: [clicks], window: { type: tumbling, size: 1h }, aggregates: [{ name: total, op: count }] }\n",
    "spec.analytics[0]: exactly one of aggregate, join, topN, funnel, pattern, action, segments, propensity or recommend must be set"
)]
fn each_invalid_top_n_names_the_field(
    #[case] from: &str,
    #[case] to: &str,
    #[case] expected: &str,
) {
    assert!(
        HOT_PRODUCTS.contains(from),
        "the case edits the example: {from:?}"
    );
    let problems = problems(&HOT_PRODUCTS.replacen(from, to, 1));
    assert!(
        problems.iter().any(|p| p.starts_with(expected)),
        "expected {expected:?} in {problems:#?}"
    );
}

const ABANDONED_CART: &str = include_str!("../../examples/abandoned-cart.yaml");

#[test]
fn the_abandoned_cart_example_is_valid_and_acts_on_its_pattern() {
    let pipeline = parse_manifest(ABANDONED_CART).unwrap();
    assert!(problems(ABANDONED_CART).is_empty());
    let pattern = pipeline.spec.analytics[0].pattern.as_ref().unwrap();
    assert_eq!(
        pattern.not_followed_by.as_ref().unwrap().within.millis(),
        1_800_000
    );
    let action = pipeline.spec.analytics[1].action.as_ref().unwrap();
    assert_eq!(
        (action.trigger.as_str(), action.holdout_percent),
        ("abandoned_cart", 10.0)
    );
}

#[rstest]
#[case::unknown_trigger(
    "trigger: abandoned_cart",
    "trigger: carts",
    "spec.analytics[1].action.trigger: no pattern analytic named \"carts\""
)]
#[case::two_steps_without_within(
    "- { name: carted, eventTypes: [add_to_cart] }",
    "- { name: viewed, eventTypes: [view] }\n          - { name: carted, eventTypes: [add_to_cart] }",
    "spec.analytics[0].pattern.within: a pattern of more than one step or occurrence needs within"
)]
#[case::budget_not_a_multiple(
    "per: 1h",
    "per: 90s",
    "spec.analytics[1].action.budget.per: must be a positive multiple of decideEvery"
)]
#[case::unknown_placeholder(
    "\"left {product} in the cart\"",
    "\"left {sku} in the cart\"",
    "spec.analytics[1].action.reason: unknown placeholder {sku}"
)]
#[case::score_not_captured(
    "scoreBy: price",
    "scoreBy: category",
    "spec.analytics[1].action.scoreBy: \"category\" is not a captured field"
)]
#[case::holdout_too_high(
    "holdoutPercent: 10",
    "holdoutPercent: 95",
    "spec.analytics[1].action.holdoutPercent: must be 0 to 90"
)]
#[case::unknown_capture(
    "capture: [product, price]",
    "capture: [product, sku]",
    "spec.analytics[0].pattern.capture[1]: unknown field \"sku\""
)]
fn each_invalid_pattern_or_action_names_the_field(
    #[case] from: &str,
    #[case] to: &str,
    #[case] expected: &str,
) {
    assert!(
        ABANDONED_CART.contains(from),
        "the case edits the example: {from:?}"
    );
    let problems = problems(&ABANDONED_CART.replacen(from, to, 1));
    assert!(
        problems.iter().any(|p| p.starts_with(expected)),
        "expected {expected:?} in {problems:#?}"
    );
}
