//! `tidemark run` with a data-quality report: the report's records go to the sink the report
//! names (a file) and to no other sink, one per source and window, and account for every input
//! line; a report to an undeclared sink is refused with its field path.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

mod cli_support;

use cli_support::{stderr, tidemark};

fn manifest(dir: &std::path::Path, report_sink: &str) -> String {
    format!(
        r#"apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: {{ name: dq }}
spec:
  sources:
    - name: clicks
      file: {{ path: {dir}/clicks.jsonl }}
      fields: {{ extra: [event_id] }}
  watermark: {{ maxOutOfOrderness: 1s }}
  dataQuality:
    deduplicate: {{ field: event_id, horizon: 1h }}
    report: {{ window: 1m, sink: {report_sink} }}
  analytics:
    - name: per_user
      aggregate:
        sources: [clicks]
        window: {{ type: tumbling, size: 1m }}
        aggregates: [{{ name: events, op: count }}]
  sinks:
    - {{ name: results, file: {{ path: {dir}/results.jsonl }} }}
    - {{ name: quality, file: {{ path: {dir}/quality.jsonl }}, analytics: [per_user] }}
  deadLetter: {{ file: {{ path: {dir}/dead.jsonl }} }}
"#,
        dir = dir.display()
    )
}

#[test]
fn the_report_goes_to_its_sink_and_accounts_for_every_line() {
    let dir = tempfile::tempdir().unwrap();
    // Two minutes of events, one duplicate and one broken line in each.
    let mut lines = Vec::new();
    for i in 0..120_i64 {
        let t = 1_767_225_600_000 + i * 1_000;
        lines.push(format!(
            r#"{{"user_id":"u{}","ts":{t},"event_id":"e{i}"}}"#,
            i % 3
        ));
        if i % 60 == 10 {
            lines.push(format!(r#"{{"user_id":"u0","ts":{t},"event_id":"e{i}"}}"#));
            lines.push("{broken".to_owned());
        }
    }
    std::fs::write(dir.path().join("clicks.jsonl"), lines.join("\n") + "\n").unwrap();
    let path = dir.path().join("dq.yaml");
    std::fs::write(&path, manifest(dir.path(), "quality")).unwrap();
    let out = tidemark(&["run", "-q", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let results = read("results.jsonl");
    assert!(
        results.iter().all(|r| r["report"].is_null()),
        "no report among results"
    );
    let quality = read("quality.jsonl");
    let reports: Vec<&serde_json::Value> = quality
        .iter()
        .filter(|r| r["report"] == "quality")
        .collect();
    assert_eq!(reports.len(), 2, "one per minute: {quality:?}");
    for (report, start) in reports
        .iter()
        .zip(["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"])
    {
        assert_eq!(report["window"]["start"], start);
        assert_eq!(report["records_in"], 62);
        assert_eq!(report["valid"]["count"], 60);
        assert_eq!(report["reasons"]["duplicate"]["count"], 1);
        assert_eq!(report["reasons"]["malformed_json"]["count"], 1);
    }
    assert_eq!(read("dead.jsonl").len(), 4);
}

#[test]
fn a_report_to_an_undeclared_sink_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dq.yaml");
    std::fs::write(&path, manifest(dir.path(), "nowhere")).unwrap();
    let out = tidemark(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.ends_with("spec.dataQuality.report.sink: unknown sink \"nowhere\"")),
        "{err}"
    );
}
