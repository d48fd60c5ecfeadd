//! Top-N analytics against a brute-force oracle: one task holding every event, and the global
//! stage over several tasks, rank each window's keys as counting the events by hand does.

use std::collections::BTreeMap;

use super::tests::{events, feed, finals, generated, plan, revisions, run_tasks, single_task};
use super::*;
use crate::result::rfc3339;

const HOUR: i64 = 3_600_000;

/// Kafka key of a top-N result → its ranked `[{key, value}]`, worked out from the raw events:
/// `top_products` (views per product, hourly, 5) and `top_buyers` (purchases per user,
/// hour-long windows every 30 minutes, 3), ties by key.
fn oracle(events: &[Vec<u8>]) -> BTreeMap<String, serde_json::Value> {
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for raw in events {
        let e: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let ts = e["ts"].as_i64().unwrap();
        if e["type"] == "purchase" {
            let user = e["user_id"].as_str().unwrap();
            let half = ts.div_euclid(HOUR / 2) * (HOUR / 2);
            for start in [half - HOUR / 2, half] {
                let window = format!("top_buyers/{}", rfc3339(start));
                *counts
                    .entry(window)
                    .or_default()
                    .entry(user.into())
                    .or_default() += 1;
            }
        } else {
            let product = e["product_id"].as_str().unwrap();
            let window = format!("top_products/{}", rfc3339(ts.div_euclid(HOUR) * HOUR));
            *counts
                .entry(window)
                .or_default()
                .entry(product.into())
                .or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(window, by_key)| {
            let n = if window.starts_with("top_products/") {
                5
            } else {
                3
            };
            let mut ranked: Vec<(String, u64)> = by_key.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(n);
            let top: Vec<serde_json::Value> = ranked
                .into_iter()
                .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
                .collect();
            (window, serde_json::Value::Array(top))
        })
        .collect()
}

/// The `top` lists of the final top-N results, by Kafka key.
fn tops(results: &[crate::result::ResultRecord]) -> BTreeMap<String, serde_json::Value> {
    finals(results)
        .into_iter()
        .filter(|(key, _)| key.starts_with("top_"))
        .map(|(key, value)| (key, value["top"].clone()))
        .collect()
}

/// Final top-N lists of `events` run as `tasks` tasks and the global stage.
fn through_the_stage(
    events: &[Vec<u8>],
    tasks: u32,
    choices: &[usize],
) -> BTreeMap<String, serde_json::Value> {
    let (mut got, streams) = run_tasks(events, tasks);
    assert!(
        got.iter().all(|r| !r.key.starts_with("top_")),
        "no task ranks a window alone"
    );
    let mut stage = GlobalStage::new(plan(tasks), tasks);
    let mut out = Output::default();
    feed(&mut stage, &streams, choices, &mut out);
    assert!(stage.finished());
    got.append(&mut out.results);
    tops(&got)
}

#[test]
fn one_task_and_the_global_stage_rank_every_window_as_the_oracle_does() {
    for (seed, tasks, choices) in [
        (1, 2, &[0, 1][..]),
        (7, 3, &[2, 2, 0, 1]),
        (13, 5, &[4, 0, 3, 1, 1, 2]),
    ] {
        let events = events(20_000, seed);
        let want = oracle(&events);
        assert!(want.len() > 20, "{}", want.len());
        let ties = want
            .values()
            .filter(|top| {
                let top = top.as_array().unwrap();
                top.windows(2).any(|w| w[0]["value"] == w[1]["value"])
            })
            .count();
        assert!(ties > 0, "windows with ties, broken by key: {ties}");
        assert_eq!(tops(&single_task(&events)), want, "one task, seed {seed}");
        assert_eq!(
            through_the_stage(&events, tasks, choices),
            want,
            "{tasks} tasks, seed {seed}"
        );
    }
}

#[test]
fn late_events_re_rank_their_window_with_the_next_revision() {
    let events = events(6_000, 3);
    let results = single_task(&events);
    let mut by_window: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.key.starts_with("top_")) {
        let json: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        by_window
            .entry(&r.key)
            .or_default()
            .push(json["revision"].as_u64().unwrap());
    }
    // Each window's rankings come as revisions 0, 1, 2, … in order: one per late update.
    for (window, revisions) in &by_window {
        let expected: Vec<u64> = (0..revisions.len() as u64).collect();
        assert_eq!(revisions, &expected, "{window}");
    }
    assert!(
        by_window.values().any(|r| r.len() > 3),
        "late events re-ranked windows"
    );
    assert!(revisions(&results) > 0);
}

#[test]
fn in_order_events_give_one_ranking_per_window() {
    let events = generated(6_000, 9, 0.0);
    let (_, streams) = run_tasks(&events, 3);
    let mut stage = GlobalStage::new(plan(3), 3);
    let mut out = Output::default();
    feed(&mut stage, &streams, &[1, 0, 2], &mut out);
    let rankings: Vec<&crate::result::ResultRecord> = out
        .results
        .iter()
        .filter(|r| r.key.starts_with("top_"))
        .collect();
    let windows: std::collections::BTreeSet<&str> =
        rankings.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(rankings.len(), windows.len(), "one ranking per window");
    assert_eq!(oracle(&events), tops(&out.results));
    assert!(rankings.iter().all(|r| {
        let json: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        json["revision"] == 0 && json["rankBy"].is_string() && json.get("key").is_none()
    }));
}

#[test]
fn a_task_restored_mid_way_ranks_late_updates_as_the_task_that_never_stopped() {
    let events = events(12_000, 21);
    let whole = single_task(&events);
    let (first, second) = events.split_at(5_003);
    let mut before = crate::engine::Task::new(plan(1), 0);
    let mut out = Output::default();
    for e in first {
        before.route(e, 0, &mut out);
    }
    let mut after = crate::engine::Task::new(plan(1), 0);
    after.restore(&before.snapshot()).unwrap();
    drop(before);
    for e in second {
        after.route(e, 0, &mut out);
    }
    after.finish(0, &mut out);
    let ranked = |results: &[crate::result::ResultRecord]| -> Vec<crate::result::ResultRecord> {
        results
            .iter()
            .filter(|r| r.key.starts_with("top_"))
            .cloned()
            .collect()
    };
    assert!(
        revisions(&ranked(&whole)) > 10,
        "late updates after the restore re-rank windows"
    );
    assert_eq!(ranked(&out.results), ranked(&whole));
}
