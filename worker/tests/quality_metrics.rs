//! The data-quality series as `/metrics` exposes them: the clock-skew histogram per source
//! (bucket counts, exact sum, deltas, a reset after a restore) and the per-source counters an
//! invalid share is computed from, fed by a real task.
#![allow(clippy::unwrap_used)]

use tidemark_worker::engine::{Counters, Task};
use tidemark_worker::metrics::*;
use tidemark_worker::plan::Plan;
use tidemark_worker::quality::SkewCounts;
use tidemark_worker::result::Output;

/// The value of the sample `name` whose labels are exactly `labels` (in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (inner, value) = rest.split_once("} ")?;
        let mut got: Vec<String> = inner.split(',').map(str::to_owned).collect();
        got.sort();
        (got == want).then(|| value.parse().ok())?
    })
}

fn skew(leads_ms: &[i64]) -> Counters {
    let mut counts = SkewCounts::default();
    for lead in leads_ms {
        counts.observe(*lead);
    }
    Counters {
        records_in: vec![0, 0],
        filtered: vec![0, 0],
        clock_skew: vec![counts, SkewCounts::default()].into(),
        ..Counters::default()
    }
}

fn bucket(text: &str, source: &str, le: &str) -> Option<f64> {
    sample(
        text,
        "tidemark_clock_skew_seconds_bucket",
        &[("le", le), ("pipeline", "p"), ("source", source)],
    )
}

#[test]
fn clock_skew_is_a_histogram_per_source_published_as_deltas() {
    let metrics = Metrics::new("p").unwrap();
    let mut task = TaskMetrics::new(
        &metrics,
        0,
        vec!["clicks".into(), "buys".into()],
        vec!["a".into()],
    );
    let text = metrics.render();
    assert!(text.contains(&format!("# TYPE {CLOCK_SKEW_SECONDS} histogram")));
    assert_eq!(
        bucket(&text, "buys", "+Inf"),
        Some(0.0),
        "series exist at 0"
    );

    task.publish(&metrics, &skew(&[50, 700, 2_000]));
    task.publish(&metrics, &skew(&[50, 700, 2_000]));
    task.publish(&metrics, &skew(&[50, 700, 2_000, 400_000]));
    let text = metrics.render();
    assert_eq!(bucket(&text, "clicks", "0.1"), Some(1.0));
    assert_eq!(bucket(&text, "clicks", "1"), Some(2.0));
    assert_eq!(bucket(&text, "clicks", "5"), Some(3.0));
    assert_eq!(bucket(&text, "clicks", "300"), Some(3.0));
    assert_eq!(bucket(&text, "clicks", "900"), Some(4.0));
    assert_eq!(bucket(&text, "clicks", "+Inf"), Some(4.0));
    let labels = [("pipeline", "p"), ("source", "clicks")];
    assert_eq!(
        sample(&text, "tidemark_clock_skew_seconds_count", &labels),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, "tidemark_clock_skew_seconds_sum", &labels),
        Some(402.75)
    );
    // A task rebuilt after a restore counts from zero: its whole value is added.
    task.publish(&metrics, &skew(&[3_000]));
    let text = metrics.render();
    assert_eq!(
        sample(&text, "tidemark_clock_skew_seconds_count", &labels),
        Some(5.0)
    );
    assert_eq!(bucket(&text, "clicks", "5"), Some(4.0));
}

const PIPELINE: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: { name: p }
spec:
  sources:
    - { name: clicks, generator: {}, fields: { extra: [event_id] } }
  dataQuality:
    deduplicate: { field: event_id, horizon: 1h }
    maxFutureSkew: 1m
  analytics:
    - name: a
      aggregate:
        sources: [clicks]
        window: { type: tumbling, size: 1h }
        aggregates: [{ name: events, op: count }]
  sinks: [{ name: out, stdout: {} }]
"#;

#[test]
fn a_task_feeds_records_in_dead_letters_by_reason_and_clock_skew() {
    let wall = 1_796_083_200_000_i64;
    let spec = tidemark_api::parse_manifest(PIPELINE).unwrap().spec;
    let mut task = Task::new(Plan::compile("p", &spec).unwrap(), 0);
    task.set_wall_clock(wall);
    let mut out = Output::default();
    let line = |id: &str, t: i64| format!(r#"{{"user_id":"u","ts":{t},"event_id":"{id}"}}"#);
    for raw in [
        line("a", wall - 5_000),
        line("a", wall - 5_000),
        line("b", wall + 30_000),
        line("c", wall + 600_000),
        "not json".to_owned(),
    ] {
        task.process(0, raw.as_bytes(), 0, &mut out);
    }
    let metrics = Metrics::new("p").unwrap();
    let mut publisher = TaskMetrics::for_task(&metrics, 0, &task);
    publisher.publish_task(&metrics, &task, wall);
    let text = metrics.render();
    let source = [("pipeline", "p"), ("source", "clicks")];
    assert_eq!(
        sample(&text, "tidemark_records_in_total", &source),
        Some(5.0)
    );
    for (reason, n) in [
        ("duplicate", 1.0),
        ("clock_skew", 1.0),
        ("malformed_json", 1.0),
    ] {
        let labels = [("pipeline", "p"), ("reason", reason), ("source", "clicks")];
        assert_eq!(
            sample(&text, "tidemark_dead_letter_total", &labels),
            Some(n)
        );
    }
    // Two events ahead of the wall clock (30 s, within the bound; 10 min, rejected).
    assert_eq!(
        sample(&text, "tidemark_clock_skew_seconds_count", &source),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "tidemark_clock_skew_seconds_sum", &source),
        Some(630.0)
    );
}
