//! The quickstart job on a generated file, against an answer computed independently from the raw
//! JSON (serde_json::Value, a HashMap, and the watermark rule written out again).

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const HOUR: i64 = 3_600_000;
const BOUND: i64 = 10_000;

fn tidemark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
}

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.yaml")
}

#[derive(Debug, Default, PartialEq)]
struct Report {
    clicks: u64,
    purchases: u64,
    revenue: f64,
}

/// Reports and late lines the quickstart must produce for `lines` read in order.
fn oracle(lines: &[String]) -> (HashMap<(String, i64), Report>, Vec<String>) {
    let mut max_time: HashMap<bool, i64> = HashMap::new();
    let mut reports: HashMap<(String, i64), Report> = HashMap::new();
    let mut late = Vec::new();
    for line in lines {
        let event: Value = serde_json::from_str(line).unwrap();
        let purchase = event["type"] == "purchase";
        let ts = event["ts"].as_i64().unwrap();
        let watermark = match (max_time.get(&false), max_time.get(&true)) {
            (Some(c), Some(p)) => (c - BOUND).min(p - BOUND),
            _ => i64::MIN,
        };
        let start = ts.div_euclid(HOUR) * HOUR;
        if start + HOUR <= watermark {
            late.push(line.clone());
        } else {
            let report = reports
                .entry((event["user_id"].as_str().unwrap().to_owned(), start))
                .or_default();
            if purchase {
                report.purchases += 1;
                report.revenue += event["price"].as_f64().unwrap();
            } else {
                report.clicks += 1;
            }
        }
        let max = max_time.entry(purchase).or_insert(i64::MIN);
        *max = (*max).max(ts);
    }
    (reports, late)
}

fn run_quickstart(events: &str, extra: &[&str]) -> (Vec<Value>, Vec<Value>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let status = tidemark()
        .args(["generate", "--out"])
        .arg(&input)
        .args(if extra.contains(&"--users") {
            &[][..]
        } else {
            &["--users", "2000"][..]
        })
        .args(["--events", events])
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success());
    let output = dir.path().join("results.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let run = tidemark()
        .args(["run", "--quiet", "-f"])
        .arg(quickstart())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--dead-letter")
        .arg(&dead)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let lines = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (read(&output), read(&dead), lines)
}

fn check(results: &[Value], expected: &HashMap<(String, i64), Report>) {
    assert_eq!(
        results.len(),
        expected.len(),
        "one report per user and window with events"
    );
    for result in results {
        let start =
            chrono::DateTime::parse_from_rfc3339(result["window"]["start"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
        let end = chrono::DateTime::parse_from_rfc3339(result["window"]["end"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        assert_eq!(end - start, HOUR);
        assert_eq!(start % HOUR, 0, "windows align to UTC hours");
        let user = result["key"].as_str().unwrap().to_owned();
        let report = &expected[&(user, start)];
        assert_eq!(
            result["clicks"].as_u64().unwrap(),
            report.clicks,
            "{result}"
        );
        assert_eq!(
            result["purchases"].as_u64().unwrap(),
            report.purchases,
            "{result}"
        );
        assert!(
            (result["revenue"].as_f64().unwrap() - report.revenue).abs() < 1e-6,
            "{result}"
        );
        let rate = if report.clicks == 0 {
            0.0
        } else {
            report.purchases as f64 / report.clicks as f64
        };
        assert!(
            (result["conversion_rate"].as_f64().unwrap() - rate).abs() < 1e-12,
            "{result}"
        );
        assert_eq!(result["revision"], 0);
        assert_eq!(result["pipeline"], "quickstart");
        assert_eq!(result["analytic"], "marketing_report");
    }
}

#[test]
fn quickstart_reports_equal_the_independent_answer() {
    // Many users, so that some have only a repeat purchase in an hour (sessions now follow
    // journeys: most purchases come after clicks).
    let (results, dead, lines) = run_quickstart("60000", &["--users", "50000"]);
    let (expected, late) = oracle(&lines);
    assert!(
        late.is_empty(),
        "disorder of 5 s stays within the 10 s bound"
    );
    assert!(dead.is_empty());
    assert!(
        expected.values().any(|r| r.clicks > 0 && r.purchases == 0),
        "click-only users are reported"
    );
    assert!(
        expected.values().any(|r| r.clicks == 0 && r.purchases > 0),
        "purchase-only users are reported"
    );
    check(&results, &expected);
}

#[test]
fn events_later_than_the_watermark_go_to_the_dead_letter_output_and_nothing_else_is_lost() {
    let (results, dead, lines) = run_quickstart(
        "60000",
        &[
            "--out-of-order",
            "0.2",
            "--max-delay",
            "1h",
            "--time-step",
            "2s",
        ],
    );
    let (expected, late) = oracle(&lines);
    assert!(
        late.len() > 50,
        "the settings produce late events, got {}",
        late.len()
    );
    check(&results, &expected);
    let dead_raw: Vec<&str> = dead.iter().map(|d| d["raw"].as_str().unwrap()).collect();
    assert_eq!(
        dead_raw,
        late.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(dead.iter().all(|d| d["reason"] == "late"));
    let accounted = results
        .iter()
        .map(|r| r["clicks"].as_u64().unwrap() + r["purchases"].as_u64().unwrap())
        .sum::<u64>()
        + dead.len() as u64;
    assert_eq!(
        accounted,
        lines.len() as u64,
        "every event is in a report or dead-lettered"
    );
}
