//! Manifests beyond the quickstart, run by the real binary over standard input and output:
//! CEL filters, derived and extra fields, keys other than the user, sliding and session windows,
//! and every aggregate function, checked against answers worked out by hand.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

const MANIFEST: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: { name: analytics }
spec:
  sources:
    - name: events
      stdin: {}
      fields: { extra: [campaign] }
      derive:
        - { name: discounted, expr: "event.price * 0.9" }
  watermark: { maxOutOfOrderness: 0s }
  analytics:
    - name: big_audio
      aggregate:
        sources: [events]
        filter: 'event.price > 100.0 && event.category == "audio"'
        keyBy: product
        window: { type: tumbling, size: 1m }
        aggregates:
          - { name: total, op: count }
          - { name: avg_price, op: avg, field: price }
          - { name: min_price, op: min, field: price }
          - { name: max_price, op: max, field: price }
          - { name: buyers, op: distinctCount, field: user }
    - name: sessions
      aggregate:
        sources: [events]
        keyBy: user
        window: { type: session, gap: 60s }
        aggregates:
          - { name: total, op: count }
          - { name: discounted, op: sum, field: discounted }
    - name: campaigns
      aggregate:
        sources: [events]
        keyBy: campaign
        window: { type: sliding, size: 2m, slide: 1m }
        aggregates:
          - { name: total, op: count }
  sinks:
    - name: out
      stdout: {}
"#;

const EVENTS: &str = r#"{"type":"view","user_id":"u1","product_id":"p1","category":"audio","price":150,"ts":0,"campaign":"a"}
{"type":"click","user_id":"u1","product_id":"p2","category":"audio","price":50,"ts":1000,"campaign":"a"}
{"type":"purchase","user_id":"u1","product_id":"p1","category":"audio","price":150,"ts":2000,"campaign":"b"}
{"type":"view","user_id":"u2","product_id":"p3","category":"books","price":200,"ts":30000,"campaign":"a"}
{"type":"view","user_id":"u1","product_id":"p1","category":"audio","price":120,"ts":400000,"campaign":"a"}
"#;

/// (analytic, key, window start ms, window end ms) → values without the envelope.
type Results = BTreeMap<(String, String, i64, i64), serde_json::Value>;

fn run(manifest: &str, input: &str) -> (Results, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, manifest).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "-q", "-f", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let results = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = (
                v["analytic"].as_str().unwrap().to_owned(),
                v["key"].as_str().unwrap().to_owned(),
                time(&v["window"]["start"]),
                time(&v["window"]["end"]),
            );
            let values = v.as_object_mut().unwrap();
            for envelope in [
                "pipeline",
                "analytic",
                "key",
                "window",
                "emitted_at",
                "revision",
            ] {
                values.remove(envelope);
            }
            (id, v)
        })
        .collect();
    (results, stderr)
}

fn id(analytic: &str, key: &str, start: i64, end: i64) -> (String, String, i64, i64) {
    (analytic.to_owned(), key.to_owned(), start, end)
}

#[test]
fn filters_keys_windows_and_aggregates_give_the_worked_out_answers() {
    let (results, dead_letters) = run(MANIFEST, EVENTS);
    assert!(dead_letters.is_empty(), "{dead_letters}");
    use serde_json::json;
    let expected: Results = [
        // price > 100 and audio: p1 at 0 and 2000 (u1 twice), p1 at 400000
        (id("big_audio", "p1", 0, 60_000), json!({"total": 2, "avg_price": 150.0, "min_price": 150.0, "max_price": 150.0, "buyers": 1})),
        (id("big_audio", "p1", 360_000, 420_000), json!({"total": 1, "avg_price": 120.0, "min_price": 120.0, "max_price": 120.0, "buyers": 1})),
        // sessions of 60 s gap; discounted = price * 0.9
        (id("sessions", "u1", 0, 62_000), json!({"total": 3, "discounted": 315.0})),
        (id("sessions", "u2", 30_000, 90_000), json!({"total": 1, "discounted": 180.0})),
        (id("sessions", "u1", 400_000, 460_000), json!({"total": 1, "discounted": 108.0})),
        // 2-minute windows every minute, keyed by the extra field `campaign`
        (id("campaigns", "a", -60_000, 60_000), json!({"total": 3})),
        (id("campaigns", "a", 0, 120_000), json!({"total": 3})),
        (id("campaigns", "b", -60_000, 60_000), json!({"total": 1})),
        (id("campaigns", "b", 0, 120_000), json!({"total": 1})),
        (id("campaigns", "a", 300_000, 420_000), json!({"total": 1})),
        (id("campaigns", "a", 360_000, 480_000), json!({"total": 1})),
    ]
    .into_iter()
    .collect();
    assert_eq!(results.len(), expected.len(), "{results:#?}");
    for (key, want) in expected {
        let got = &results[&key];
        for (name, value) in want.as_object().unwrap() {
            let (g, w) = (got[name].as_f64().unwrap(), value.as_f64().unwrap());
            assert!((g - w).abs() < 1e-9, "{key:?} {name}: got {g}, want {w}");
        }
    }
}

#[test]
fn a_filter_that_fails_on_an_event_dead_letters_it_and_the_run_goes_on() {
    let manifest = MANIFEST
        .replace(
            "derive:\n        - { name: discounted, expr: \"event.price * 0.9\" }",
            "filter: 'event.price > 100.0'",
        )
        .replace(
            "          - { name: discounted, op: sum, field: discounted }\n",
            "",
        );
    // A record without a price: `null > 100.0` is an evaluation error, not a crash.
    let input = format!(
        "{EVENTS}{}\n",
        r#"{"type":"view","user_id":"u9","ts":5000}"#
    );
    let (results, dead_letters) = run(&manifest, &input);
    assert!(results.keys().all(|(_, key, _, _)| key != "u9"));
    let dead: serde_json::Value = serde_json::from_str(dead_letters.trim()).unwrap();
    assert_eq!(dead["reason"], "expression_error");
    assert_eq!(dead["source"], "events");
    assert!(
        results.contains_key(&id("sessions", "u1", 0, 62_000)),
        "{results:#?}"
    );
}

/// Runs `manifest` (written into a temporary directory that is also the working directory) and
/// returns the result lines of `results.jsonl`.
fn run_in_dir(manifest: &str, files: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("pipeline.yaml"), manifest).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["run", "-q", "-f", "pipeline.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.path().join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn file_sources_feed_a_join_and_a_file_sink_receives_it() {
    let quickstart = include_str!("../../examples/quickstart.yaml");
    let manifest = quickstart
        .replace("  kafka:\n    bootstrapServers: kafka:9092\n", "")
        .replace(
            "kafka: { topic: click_topic }",
            "file: { path: clicks.jsonl }",
        )
        .replace(
            "kafka: { topic: purchase_topic }",
            "file: { path: purchases.jsonl }",
        )
        .replace(
            "kafka: { topic: marketing_report_topic }",
            "file: { path: results.jsonl }",
        )
        .replace(
            "kafka: { topic: tidemark_dead_letter }",
            "file: { path: dead.jsonl }",
        );
    let clicks = [0, 1_000, 3_600_000]
        .map(|ts| format!(r#"{{"type":"click","user_id":"u1","price":1,"ts":{ts}}}"#))
        .join("\n");
    let purchases = r#"{"type":"purchase","user_id":"u1","price":30,"ts":2000}"#;
    let results = run_in_dir(
        &manifest,
        &[("clicks.jsonl", &clicks), ("purchases.jsonl", purchases)],
    );
    let summary: Vec<(u64, u64, f64)> = results
        .iter()
        .map(|r| {
            (
                r["clicks"].as_u64().unwrap(),
                r["purchases"].as_u64().unwrap(),
                r["revenue"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(2, 1, 30.0), (1, 0, 0.0)]);
}

#[test]
fn a_generator_source_runs_a_bounded_stream_to_the_end() {
    let manifest = MANIFEST
        .replace(
            "stdin: {}",
            "generator: { events: 5000, rate: 0, users: 50, timeStep: 100ms }",
        )
        .replace("stdout: {}", "file: { path: results.jsonl }");
    let results = run_in_dir(&manifest, &[]);
    let sessions: u64 = results
        .iter()
        .filter(|r| r["analytic"] == "sessions")
        .map(|r| r["total"].as_u64().unwrap())
        .sum();
    assert_eq!(
        sessions, 5000,
        "every generated event is in exactly one session"
    );
}
