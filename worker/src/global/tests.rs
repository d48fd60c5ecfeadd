//! The global stage against one task holding every event: the same final results.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::engine::Task;
use crate::source::generator::Generator;

/// Analytics keyed by product and category (global over several tasks) next to one keyed by
/// user: every aggregate, a sliding window, an inner join, lateness; and two top-N rankings
/// (global over several tasks whatever their key): products by views with ties, users by
/// revenue over sliding windows. Some windows start at an offset past the hour.
const PIPELINE: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: { name: global }
spec:
  sources:
    - name: clicks
      generator: {}
      eventTypes: [view, click, add_to_cart]
    - name: purchases
      generator: {}
      eventTypes: [purchase]
  watermark: { maxOutOfOrderness: 10s, idleTimeout: 1h }
  analytics:
    - name: hot_products
      aggregate:
        sources: [clicks, purchases]
        keyBy: product
        window: { type: tumbling, size: 1h, offset: 15m }
        allowedLateness: 3h
        aggregates:
          - { name: views, op: count, source: clicks }
          - { name: purchases, op: count, source: purchases }
          - { name: revenue, op: sum, field: price, source: purchases }
          - { name: avg_price, op: avg, field: price }
          - { name: top_price, op: max, field: price }
          - { name: low_price, op: min, field: price }
          - { name: buyers, op: distinctCount, field: user, source: purchases }
        ratios:
          - { name: conversion, numerator: purchases, denominator: views }
    - name: category_trend
      aggregate:
        sources: [clicks]
        keyBy: category
        window: { type: sliding, size: 1h, slide: 20m, offset: 7m }
        allowedLateness: 3h
        aggregates:
          - { name: events, op: count }
          - { name: users, op: distinctCount, field: user }
    - name: bought_after_click
      join:
        left: clicks
        right: purchases
        type: inner
        keyBy: product
        window: { type: tumbling, size: 30m }
        allowedLateness: 3h
        aggregates:
          - { name: clicks, op: count, source: clicks }
          - { name: purchases, op: count, source: purchases }
    - name: per_user
      aggregate:
        sources: [clicks]
        keyBy: user
        window: { type: tumbling, size: 1h }
        allowedLateness: 3h
        aggregates:
          - { name: events, op: count }
    - name: top_products
      topN:
        sources: [clicks, purchases]
        keyBy: product
        window: { type: tumbling, size: 1h }
        allowedLateness: 3h
        aggregates:
          - { name: views, op: count, source: clicks }
          - { name: purchases, op: count, source: purchases }
        rankBy: views
        limit: 5
    - name: top_buyers
      topN:
        sources: [purchases]
        keyBy: user
        window: { type: sliding, size: 1h, slide: 30m }
        allowedLateness: 3h
        aggregates:
          - { name: purchases, op: count }
        rankBy: purchases
        limit: 3
  sinks:
    - name: out
      stdout: {}
"#;

pub(super) fn plan(tasks: u32) -> Plan {
    let pipeline = tidemark_api::parse_manifest(PIPELINE).unwrap();
    Plan::compile("global", &pipeline.spec)
        .unwrap()
        .for_tasks(tasks)
        .unwrap()
}

/// Generated events, a fifth of them up to 2 h late (within the analytics' 3 h lateness, so
/// that no event is dropped in any task and the final results are comparable).
pub(super) fn events(n: u64, seed: u64) -> Vec<Vec<u8>> {
    generated(n, seed, 0.2)
}

pub(super) fn generated(n: u64, seed: u64, out_of_order_fraction: f64) -> Vec<Vec<u8>> {
    let spec = tidemark_api::GeneratorSpec {
        events: Some(n),
        users: 500,
        products: 40,
        time_step: tidemark_api::Duration::from_millis(2_000),
        out_of_order_fraction,
        max_delay: tidemark_api::Duration::from_millis(2 * 3_600_000),
        seed,
        ..Default::default()
    };
    Generator::lines(&spec)
}

/// The task of an event: its user's partition, as a producer keyed by user chooses it.
fn task_of(raw: &[u8], tasks: u32) -> u32 {
    use std::hash::BuildHasher;
    let json: serde_json::Value = serde_json::from_slice(raw).unwrap();
    let user = json["user_id"].as_str().unwrap();
    (rustc_hash::FxBuildHasher.hash_one(user) % u64::from(tasks)) as u32
}

/// The final (highest-revision) value of every result, by Kafka key.
pub(super) fn finals(
    results: &[crate::result::ResultRecord],
) -> BTreeMap<String, serde_json::Value> {
    let mut out: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for r in results {
        let mut json: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("emitted_at");
        let revision = obj.remove("revision").unwrap().as_u64().unwrap();
        let newer = out
            .get(&r.key)
            .is_none_or(|old| old["__revision"].as_u64().unwrap() < revision);
        if newer {
            obj.insert("__revision".into(), revision.into());
            out.insert(r.key.clone(), json);
        }
    }
    for v in out.values_mut() {
        v.as_object_mut().unwrap().remove("__revision");
    }
    out
}

/// Floats summed in another order differ in the last bits.
fn assert_same(
    got: &BTreeMap<String, serde_json::Value>,
    want: &BTreeMap<String, serde_json::Value>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same key-windows"
    );
    for (key, w) in want {
        let g = &got[key];
        for (field, wv) in w.as_object().unwrap() {
            let gv = &g[field];
            match (gv.as_f64(), wv.as_f64()) {
                (Some(a), Some(b)) if gv.is_f64() || wv.is_f64() => assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{key} {field}: {a} vs {b}"
                ),
                _ => assert_eq!(gv, wv, "{key} {field}"),
            }
        }
    }
}

/// What one task holding every event reports.
pub(super) fn single_task(events: &[Vec<u8>]) -> Vec<crate::result::ResultRecord> {
    let mut task = Task::new(plan(1), 0);
    let mut out = Output::default();
    for e in events {
        task.route(e, 0, &mut out);
    }
    task.finish(0, &mut out);
    assert!(out.dead_letters.is_empty(), "no event is late");
    assert!(out.partials.is_empty(), "one task emits no partials");
    out.results
}

/// Runs `events` as `tasks` tasks: returns the results of user-keyed analytics and each task's
/// records for the partials topic, in order.
pub(super) fn run_tasks(
    events: &[Vec<u8>],
    tasks: u32,
) -> (Vec<crate::result::ResultRecord>, Vec<Vec<Vec<u8>>>) {
    let mut runs: Vec<Task> = (0..tasks)
        .map(|t| Task::new(plan(tasks), 0).with_id(t))
        .collect();
    let mut outs: Vec<Output> = (0..tasks).map(|_| Output::default()).collect();
    for e in events {
        let t = task_of(e, tasks) as usize;
        runs[t].route(e, 0, &mut outs[t]);
    }
    let mut results = Vec::new();
    let mut partials = Vec::new();
    for (task, mut out) in runs.iter_mut().zip(outs) {
        task.finish(0, &mut out);
        assert!(out.dead_letters.is_empty(), "no event is late");
        results.append(&mut out.results);
        partials.push(out.partials.into_iter().map(|r| r.value).collect());
    }
    (results, partials)
}

/// Feeds the tasks' records to `stage` interleaved by `choices` (each picks the next task with
/// records left), keeping each task's order as its partition does.
pub(crate) fn feed(
    stage: &mut GlobalStage,
    streams: &[Vec<Vec<u8>>],
    choices: &[usize],
    out: &mut Output,
) {
    let mut next = vec![0; streams.len()];
    let mut choices = choices.iter().cycle();
    loop {
        let open: Vec<usize> = (0..streams.len())
            .filter(|&t| next[t] < streams[t].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let t = open[choices.next().copied().unwrap_or(0) % open.len()];
        stage.process(&streams[t][next[t]], out);
        next[t] += 1;
    }
}

#[test]
fn the_global_stage_reports_what_one_task_with_every_event_reports() {
    let events = events(30_000, 7);
    let want = finals(&single_task(&events));
    let tasks = 4;
    let (mut got, streams) = run_tasks(&events, tasks);
    let mut stage = GlobalStage::new(plan(tasks), tasks);
    let mut out = Output::default();
    feed(&mut stage, &streams, &[0, 3, 1, 1, 2, 0, 2, 3, 3], &mut out);
    assert!(stage.finished());
    assert_eq!(
        stage.stats().windows,
        0,
        "every key-window dropped at the end"
    );
    assert_eq!(stage.counters().malformed + stage.counters().late, 0);
    // Events 2 h late reopened closed windows: the stage emitted revisions.
    assert!(
        revisions(&out.results) > 0,
        "late partials produce revisions"
    );
    got.append(&mut out.results);
    let got = finals(&got);
    for analytic in [
        "hot_products/",
        "category_trend/",
        "bought_after_click/",
        "per_user/",
        "top_buyers/",
    ] {
        assert!(
            want.keys().filter(|k| k.starts_with(analytic)).count() > 20,
            "{analytic} has results"
        );
    }
    assert!(
        want.keys()
            .filter(|k| k.starts_with("top_products/"))
            .count()
            > 10
    );
    assert_same(&got, &want);
}

#[test]
fn in_order_events_give_one_result_per_key_window_once_every_task_has_passed_it() {
    let events = generated(20_000, 5, 0.0);
    let want = single_task(&events);
    let tasks = 3;
    let (mut got, streams) = run_tasks(&events, tasks);
    let mut stage = GlobalStage::new(plan(tasks), tasks);
    let mut out = Output::default();
    // One task's records first, whole: the stage must not close a window on its word alone.
    feed(&mut stage, &streams[..1], &[0], &mut out);
    assert!(out.results.is_empty(), "closed before tasks 1 and 2 passed");
    let mut rest = streams.clone();
    rest[0].clear();
    feed(&mut stage, &rest, &[2, 1, 1], &mut out);
    assert_eq!(
        revisions(&out.results),
        0,
        "no result emitted early and revised"
    );
    got.append(&mut out.results);
    assert_eq!(got.len(), want.len(), "one result per key-window");
    assert_same(&finals(&got), &finals(&want));
}

/// Results of a revision above 0.
pub(super) fn revisions(results: &[crate::result::ResultRecord]) -> usize {
    results
        .iter()
        .filter(|r| {
            let json: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            json["revision"].as_u64() > Some(0)
        })
        .count()
}

#[test]
fn replayed_partials_change_nothing_and_a_restored_stage_goes_on_where_it_stopped() {
    let events = events(12_000, 11);
    let tasks = 3;
    let (_, streams) = run_tasks(&events, tasks);
    let mut whole = GlobalStage::new(plan(tasks), tasks);
    let mut want = Output::default();
    feed(&mut whole, &streams, &[2, 0, 1, 1], &mut want);

    // Half of every task's records, a snapshot, then the rest, with the first half of task 1
    // replayed (an at-least-once restart of that task from an older checkpoint).
    let half: Vec<Vec<Vec<u8>>> = streams.iter().map(|s| s[..s.len() / 2].to_vec()).collect();
    let mut first = GlobalStage::new(plan(tasks), tasks);
    let mut got = Output::default();
    feed(&mut first, &half, &[2, 0, 1, 1], &mut got);
    let bytes = first.snapshot();
    let mut second = GlobalStage::new(plan(tasks), tasks);
    second.restore(&bytes).unwrap();
    assert_eq!(second.snapshot(), bytes);
    assert_eq!(second.stats(), first.stats());
    assert!(first.stats().windows > 0);
    assert_eq!(second.watermark(), first.watermark());
    let mut rest: Vec<Vec<Vec<u8>>> = streams.iter().map(|s| s[s.len() / 2..].to_vec()).collect();
    let mut replayed = half[1].clone();
    replayed.append(&mut rest[1]);
    rest[1] = replayed;
    feed(&mut second, &rest, &[1, 1, 0, 2], &mut got);
    assert!(second.finished());
    assert!(second.counters().stale + second.counters().late > 0);
    assert_same(&finals(&got.results), &finals(&want.results));
}

#[test]
fn an_idle_task_holds_nobody_back_and_damaged_records_are_counted() {
    let tasks = 2;
    let mut stage = GlobalStage::new(plan(tasks), tasks);
    let mut out = Output::default();
    let mut task = Task::new(plan(tasks), 0).with_id(0);
    let mut task_out = Output::default();
    for e in events(3_000, 5) {
        task.route(&e, 0, &mut task_out);
    }
    for r in &task_out.partials {
        stage.process(&r.value, &mut out);
    }
    assert_eq!(stage.watermark(), i64::MIN, "task 1 has said nothing yet");
    assert!(out.results.is_empty());
    // Task 1 never receives an event: after the idle timeout it says it is idle.
    let mut idle = Task::new(plan(tasks), 0).with_id(1);
    let mut idle_out = Output::default();
    idle.tick(3_600_000, &mut idle_out);
    assert_eq!(idle_out.partials.len(), 1);
    stage.process(&idle_out.partials[0].value, &mut out);
    assert!(stage.watermark() > i64::MIN);
    assert!(
        !out.results.is_empty(),
        "task 0's closed windows are reported"
    );

    let before = stage.snapshot();
    stage.process(b"not a partial", &mut out);
    let bad = Partial {
        task: 9,
        analytic: "hot_products",
        key: "p1",
        start: 0,
        end: 3_600_000,
        revision: 0,
        block: &[],
    };
    stage.process(&bad.encode(), &mut out);
    let unknown = Partial {
        analytic: "nope",
        task: 0,
        ..bad.clone()
    };
    stage.process(&unknown.encode(), &mut out);
    let truncated = Partial {
        task: 0,
        end: i64::MAX - 1,
        ..bad
    };
    stage.process(&truncated.encode(), &mut out);
    assert_eq!(stage.counters().malformed, 4);
    assert_eq!(stage.snapshot(), before, "nothing of them was kept");
}

#[test]
fn a_snapshot_with_changed_aggregates_is_refused_and_damage_never_panics() {
    let tasks = 2;
    let (_, streams) = run_tasks(&events(3_000, 3), tasks);
    let half: Vec<Vec<Vec<u8>>> = streams.iter().map(|s| s[..s.len() / 2].to_vec()).collect();
    let mut stage = GlobalStage::new(plan(tasks), tasks);
    let mut out = Output::default();
    feed(&mut stage, &half, &[0, 1], &mut out);
    let bytes = stage.snapshot();
    assert!(stage.stats().windows > 0);
    let changed = PIPELINE.replace(
        "- { name: low_price, op: min, field: price }",
        "- { name: low_price, op: sum, field: price }",
    );
    let pipeline = tidemark_api::parse_manifest(&changed).unwrap();
    let other = Plan::compile("global", &pipeline.spec)
        .unwrap()
        .for_tasks(tasks)
        .unwrap();
    assert!(matches!(
        GlobalStage::new(other, tasks).restore(&bytes),
        Err(RestoreError::Layout(name)) if name == "hot_products"
    ));
    let mut target = GlobalStage::new(plan(tasks), tasks);
    for cut in (0..bytes.len()).step_by(bytes.len() / 500 + 1) {
        assert!(target.restore(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    for at in (0..bytes.len() * 8).step_by(bytes.len() / 100 + 1) {
        let mut flipped = bytes.clone();
        flipped[at / 8] ^= 1 << (at % 8);
        let _ = target.restore(&flipped);
    }
    target.restore(&bytes).unwrap();
    assert_eq!(target.snapshot(), bytes);
}

#[test]
fn session_windows_keyed_by_another_field_are_refused_over_several_tasks() {
    let text = PIPELINE.replace(
        "window: { type: sliding, size: 1h, slide: 20m, offset: 7m }",
        "window: { type: session, gap: 5m }",
    );
    let pipeline = tidemark_api::parse_manifest(&text).unwrap();
    let compiled = || Plan::compile("global", &pipeline.spec).unwrap();
    let err = compiled().for_tasks(4).unwrap_err().to_string();
    assert!(err.contains("spec.analytics[1].window"), "{err}");
    assert!(err.contains("category_trend"), "{err}");
    assert!(compiled().for_tasks(1).is_ok(), "one task needs no merge");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_task_count_and_interleaving_gives_the_one_task_results(
        tasks in 2u32..6,
        seed in 0u64..1_000,
        choices in proptest::collection::vec(0usize..8, 1..16),
    ) {
        let events = events(4_000, seed);
        let want = finals(&single_task(&events));
        let (mut got, streams) = run_tasks(&events, tasks);
        let mut stage = GlobalStage::new(plan(tasks), tasks);
        let mut out = Output::default();
        feed(&mut stage, &streams, &choices, &mut out);
        prop_assert!(stage.finished());
        got.append(&mut out.results);
        assert_same(&finals(&got), &want);
    }
}
