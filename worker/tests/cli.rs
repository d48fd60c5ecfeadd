//! The `tidemark` command line: exit codes, one-line errors, dead letters for bad input, the
//! embedded quickstart.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod cli_support;

use std::path::Path;

use cli_support::{example, stderr, tidemark};

#[test]
fn an_invalid_manifest_prints_one_line_per_problem_with_its_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("quickstart.yaml"))
        .unwrap()
        .replace("right: purchases", "right: refunds")
        .replace("denominator: clicks", "denominator: views");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    for command in ["validate", "run"] {
        let out = tidemark(&[command, "-f", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 4, "{err}");
        assert!(
            lines[0].ends_with("spec.analytics[0].join.right: unknown source \"refunds\""),
            "{err}"
        );
        assert!(lines[1].ends_with("spec.analytics[0].join.aggregates[1].source: \"purchases\" is not an input of this analytic"), "{err}");
        assert!(
            lines[3].ends_with(
                "spec.analytics[0].join.ratios[0].denominator: unknown aggregate \"views\""
            ),
            "{err}"
        );
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("error: ") && l.contains("bad.yaml: spec.")),
            "{err}"
        );
    }
}

#[test]
fn a_missing_file_or_a_bad_flag_is_one_line_and_a_non_zero_exit() {
    let out = tidemark(&["run", "-f", "/nonexistent/pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).contains("failed to read /nonexistent/pipeline.yaml"));
    let out = tidemark(&[
        "run",
        "-f",
        example("quickstart.yaml").to_str().unwrap(),
        "--input",
        "/nonexistent.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let out = tidemark(&["generate", "--out", "/tmp/x", "--time-step", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    // Kafka sources without --input or --embedded run a worker; an unreachable broker is one
    // error line after the metadata timeout, not a hang.
    let dir = tempfile::tempdir().unwrap();
    let out = tidemark(&[
        "run",
        "-q",
        "-f",
        example("quickstart.yaml").to_str().unwrap(),
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--http-addr",
        "127.0.0.1:0",
        "--checkpoint-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: failed to fetch metadata of topic \"click_topic\""),
        "{err}"
    );
    // A worker with a file sink would write its results nowhere: refused before connecting.
    let manifest = dir.path().join("file-sink.yaml");
    let text = std::fs::read_to_string(example("quickstart.yaml"))
        .unwrap()
        .replace(
            "kafka: { topic: marketing_report_topic }",
            "file: { path: reports.jsonl }",
        );
    std::fs::write(&manifest, text).unwrap();
    let out = tidemark(&[
        "run",
        "-q",
        "-f",
        manifest.to_str().unwrap(),
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--checkpoint-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: sink \"reports\" is not a Kafka topic: a worker writes Kafka sinks and a Kafka dead-letter topic only (use `tidemark run --output` for files)"
    );
}

#[test]
fn malformed_records_are_dead_lettered_with_their_reason_and_processing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let lines = [
        r#"{"type":"click","user_id":"u1","product_id":"p1","category":"audio","price":10.0,"ts":1767225600000}"#,
        r#"{"type":"click","user_id":"u1","#,
        r#"{"type":"click","product_id":"p1","ts":1767225600001}"#,
        r#"{"type":"click","user_id":"u1","ts":"noon"}"#,
        r#"{"type":"purchase","user_id":"u1","price":"free","ts":1767225600002}"#,
        r#"{"type":"refund","user_id":"u1","ts":1767225600003}"#,
        "",
        r#"{"type":"purchase","user_id":"u1","product_id":"p1","category":"audio","price":10.0,"ts":1767225600004}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let out = tidemark(&[
        "run",
        "-q",
        "-f",
        example("quickstart.yaml").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "malformed_json",
            "missing_field",
            "invalid_time",
            "invalid_field",
            "unexpected_type"
        ]
    );
    assert_eq!(dead[1]["raw"], lines[2]);
    assert!(dead
        .iter()
        .all(|d| d["pipeline"] == "quickstart"
            && d["detail"].as_str().is_some_and(|s| !s.is_empty())));
    let results: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 1);
    assert_eq!(
        (
            results[0]["clicks"].as_u64(),
            results[0]["purchases"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(results[0]["conversion_rate"], 1.0);
}

/// Reports without their wall-clock `emitted_at`, as sorted JSON texts.
fn reports(text: &str) -> Vec<String> {
    let mut reports: Vec<String> = text
        .lines()
        .map(|l| {
            let mut report: serde_json::Value = serde_json::from_str(l).unwrap();
            report.as_object_mut().unwrap().remove("emitted_at");
            report.to_string()
        })
        .collect();
    reports.sort();
    reports
}

/// The reports of a one-task file run of `manifest` over the events `generator` (flags of
/// `tidemark generate`) makes, as [`reports`] gives them.
fn file_run_reports(dir: &Path, manifest: &Path, generator: &[&str]) -> Vec<String> {
    let events = dir.join("events.jsonl");
    let out = tidemark(&[&["generate", "--out", events.to_str().unwrap()], generator].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let file_run = dir.join("file.jsonl");
    let out = tidemark(&[
        "run",
        "-q",
        "-f",
        manifest.to_str().unwrap(),
        "--input",
        events.to_str().unwrap(),
        "--output",
        file_run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    reports(&std::fs::read_to_string(&file_run).unwrap())
}

/// Runs `manifest` on the embedded Kafka (`--rate 0`) with `flags`, over the events `generator`
/// makes; returns its reports, as [`reports`] gives them, and its standard error.
fn embedded_run(manifest: &Path, flags: &[&str], generator: &[&str]) -> (Vec<String>, String) {
    let run = [
        "run",
        "-f",
        manifest.to_str().unwrap(),
        "--embedded",
        "--rate",
        "0",
    ];
    let out = tidemark(&[&run[..], flags, generator].concat());
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    (reports(&String::from_utf8_lossy(&out.stdout)), err)
}

#[test]
fn the_embedded_quickstart_runs_the_kafka_path_and_reports_what_a_file_run_reports() {
    let dir = tempfile::tempdir().unwrap();
    let generator = [
        "--events",
        "60000",
        "--users",
        "300",
        "--time-step",
        "200ms",
        "--seed",
        "7",
    ];
    let quickstart = example("quickstart.yaml");
    let expected = file_run_reports(dir.path(), &quickstart, &generator);
    assert!(
        expected.len() > 900,
        "four hours of 300 users: {}",
        expected.len()
    );

    // The same events through the embedded Kafka: produced into click_topic and
    // purchase_topic, consumed by the worker's tasks (4 partitions, transactions),
    // read back from marketing_report_topic.
    for delivery in ["exactlyOnce", "atLeastOnce"] {
        let (got, err) = embedded_run(&quickstart, &["--delivery", delivery], &generator);
        assert_eq!(got, expected, "{delivery}");
        let summary = err.lines().last().unwrap_or_default();
        assert!(
            summary.starts_with("tidemark: done: 60000 events")
                && summary.contains("through the embedded Kafka"),
            "{err}"
        );
    }
}

#[test]
fn an_analytic_keyed_by_other_than_the_partition_key_is_merged_by_the_global_stage() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("by-category.yaml");
    let text = std::fs::read_to_string(example("quickstart.yaml"))
        .unwrap()
        .replace("keyBy: user", "keyBy: category");
    std::fs::write(&manifest, text).unwrap();
    let generator = [
        "--events",
        "20000",
        "--users",
        "300",
        "--time-step",
        "500ms",
        "--seed",
        "3",
    ];
    // One task over the file sees every event of a category: the whole answer.
    let expected = file_run_reports(dir.path(), &manifest, &generator);
    assert!(expected.len() > 8, "{}", expected.len());
    // Over 4 partitions keyed by user, every task sees every category: its partials go to the
    // partials topic and the global stage merges them.
    for delivery in ["exactlyOnce", "atLeastOnce"] {
        let flags = ["--partitions", "4", "--delivery", delivery];
        let (got, _) = embedded_run(&manifest, &flags, &generator);
        assert_same_reports(&got, &expected, delivery);
    }
}

/// `got` and `want` hold the same reports; sums merged from several tasks may differ from one
/// task's in the last bits of a float.
fn assert_same_reports(got: &[String], want: &[String], context: &str) {
    assert_eq!(got.len(), want.len(), "{context}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        let g: serde_json::Value = serde_json::from_str(g).unwrap();
        let w: serde_json::Value = serde_json::from_str(w).unwrap();
        for (field, wv) in w.as_object().unwrap() {
            let gv = &g[field];
            match (gv.as_f64(), wv.as_f64()) {
                (Some(a), Some(b)) if gv.is_f64() || wv.is_f64() => {
                    assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        "{context}: {g} vs {w}"
                    )
                }
                _ => assert_eq!(gv, wv, "{context}: {g} vs {w}"),
            }
        }
    }
}
