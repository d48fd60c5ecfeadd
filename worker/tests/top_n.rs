//! Top-N analytics through the real binary: `examples/hot-products.yaml` over a file
//! (`tidemark run --input`, one task) ranks every window as counting the events by hand does,
//! and on the embedded Kafka over four partitions (the global stage ranks) it reports the same.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod cli_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cli_support::{embedded_four_partitions, generate, stderr, tidemark};

const HOUR: i64 = 3_600_000;
const QUARTER: i64 = HOUR / 4;

fn example() -> PathBuf {
    cli_support::example("hot-products.yaml")
}

const GENERATOR: [&str; 8] = [
    "--events",
    "30000",
    "--users",
    "400",
    "--time-step",
    "400ms",
    "--seed",
    "17",
];

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Kafka key → ranked (key, value) of `most_viewed` (views per product per hour, 10) and
/// `top_revenue` (revenue per product over an hour every 15 minutes, 5), from the raw events.
fn oracle(events: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut sums: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in events.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let (ts, product) = (e["ts"].as_i64().unwrap(), e["product_id"].as_str().unwrap());
        let mut add = |window: String, amount: f64| {
            *sums
                .entry(window)
                .or_default()
                .entry(product.into())
                .or_default() += amount;
        };
        match e["type"].as_str().unwrap() {
            "view" => add(
                format!("most_viewed/{}", rfc3339(ts.div_euclid(HOUR) * HOUR)),
                1.0,
            ),
            "purchase" => {
                let last = ts.div_euclid(QUARTER) * QUARTER;
                for start in (0..4).map(|i| last - i * QUARTER) {
                    add(
                        format!("top_revenue/{}", rfc3339(start)),
                        e["price"].as_f64().unwrap(),
                    );
                }
            }
            _ => {}
        }
    }
    sums.into_iter()
        .map(|(window, by_product)| {
            let limit = if window.starts_with("most_viewed/") {
                10
            } else {
                5
            };
            let mut ranked: Vec<(String, f64)> = by_product.into_iter().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(limit);
            (window, ranked)
        })
        .collect()
}

/// The final (highest-revision) ranking of every window in `text` (JSON lines), by Kafka key.
fn finals(text: &str) -> BTreeMap<String, Vec<(String, f64)>> {
    let mut newest: BTreeMap<String, (u64, Vec<(String, f64)>)> = BTreeMap::new();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            r.get("key").is_none(),
            "a ranking has no key of its own: {r}"
        );
        let key = format!(
            "{}/{}",
            r["analytic"].as_str().unwrap(),
            r["window"]["start"].as_str().unwrap()
        );
        let revision = r["revision"].as_u64().unwrap();
        let top = r["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap().to_owned(),
                    i["value"].as_f64().unwrap(),
                )
            })
            .collect();
        if newest.get(&key).is_none_or(|(held, _)| *held < revision) {
            newest.insert(key, (revision, top));
        }
    }
    newest.into_iter().map(|(k, (_, top))| (k, top)).collect()
}

/// `got` ranks as `want`: the same keys in the same order and values equal up to the last
/// bits of a float sum added in another order (where two sums are that close, either order).
fn assert_same_rankings(
    got: &BTreeMap<String, Vec<(String, f64)>>,
    want: &BTreeMap<String, Vec<(String, f64)>>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "one ranking per window"
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    for (window, w) in want {
        let g = &got[window];
        assert_eq!(g.len(), w.len(), "{window}");
        for (i, ((gk, gv), (wk, wv))) in g.iter().zip(w).enumerate() {
            assert!(close(*gv, *wv), "{window} #{i}: {gv} vs {wv}");
            let near_tie = w.iter().any(|(k, v)| k != wk && close(*v, *wv));
            assert!(gk == wk || near_tie, "{window} #{i}: {gk} vs {wk}");
        }
    }
}

/// Generates the test's events into `dir` and runs the example over them as a file run;
/// returns (events, results) as JSON lines.
fn file_run(dir: &Path) -> (String, String) {
    let events = dir.join("events.jsonl");
    generate(&events, &GENERATOR);
    let output = dir.join("top.jsonl");
    let out = tidemark(&[
        "run",
        "-q",
        "-f",
        example().to_str().unwrap(),
        "--input",
        events.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    (read(&events), read(&output))
}

#[test]
fn a_file_run_of_the_hot_products_example_ranks_every_window_as_counted_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (events, text) = file_run(dir.path());
    let want = oracle(&events);
    let windows = |prefix: &str| want.keys().filter(|k| k.starts_with(prefix)).count();
    assert!(windows("most_viewed/") >= 3 && windows("top_revenue/") >= 12);
    assert!(want.values().all(|top| !top.is_empty()));
    assert_same_rankings(&finals(&text), &want);
    // Each result's Kafka-style identity is its analytic and window: one line per window, as
    // the events come in order within the out-of-orderness (no late re-ranking).
    assert_eq!(text.lines().count(), want.len());
}

#[test]
fn the_embedded_kafka_over_four_partitions_ranks_as_the_file_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let want = finals(&file_run(dir.path()).1);
    // Every task sees every product: its partials go to the global stage, which ranks each
    // window once all four tasks have passed it.
    let got = finals(&embedded_four_partitions(&example(), &GENERATOR));
    assert!(got.len() > 12, "{}", got.len());
    assert_same_rankings(&got, &want);
}
