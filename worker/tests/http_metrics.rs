//! The worker's metrics as `/metrics` exposes them: every docs/design.md, observability name with the `pipeline`
//! label, engine counters published as deltas, per-task gauges and checkpoint outcomes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use tidemark_worker::engine::Counters;
use tidemark_worker::event::Reason;
use tidemark_worker::metrics::*;
use tidemark_worker::window::WindowStats;

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

fn counters(records_in: u64, dead: u64) -> Counters {
    Counters {
        records_in: vec![records_in, 1],
        filtered: vec![2, 0],
        dead_letters: BTreeMap::from([
            (("clicks".to_owned(), Reason::MalformedJson), dead),
            ((String::new(), Reason::UnexpectedType), 1),
        ]),
        results: vec![3],
        late: vec![1],
        partials: vec![records_in / 5],
        clock_skew: Box::default(),
    }
}

fn publisher(metrics: &Metrics, task: u32) -> TaskMetrics {
    TaskMetrics::new(
        metrics,
        task,
        vec!["clicks".into(), "purchases".into()],
        vec!["marketing_report".into()],
    )
}

#[test]
fn every_design_metric_is_exposed_with_the_pipeline_label() {
    let metrics = Metrics::new("quickstart").unwrap();
    let _ = publisher(&metrics, 0);
    metrics.records_out("reports", 1);
    metrics.set_source_lag("clicks", 0, 5);
    metrics.set_watermark(0, 1_000, 3_000);
    metrics.set_state(0, WindowStats::default());
    let text = metrics.render();
    for name in [
        RECORDS_IN_TOTAL,
        RECORDS_OUT_TOTAL,
        RESULTS_TOTAL,
        DEAD_LETTER_TOTAL,
        LATE_RECORDS_TOTAL,
        FILTERED_TOTAL,
        SOURCE_LAG,
        WATERMARK_DELAY_SECONDS,
        CHECKPOINT_DURATION_SECONDS,
        CHECKPOINT_SIZE_BYTES,
        CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS,
        CHECKPOINT_FAILURES_TOTAL,
        CHECKPOINT_CORRUPT_TOTAL,
        STATE_KEYS,
        STATE_WINDOWS,
        STATE_BYTES,
        BUSY_RATIO,
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "tidemark_watermark_delay_seconds",
            &[("pipeline", "quickstart"), ("task", "0")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_source_lag",
            &[
                ("partition", "0"),
                ("pipeline", "quickstart"),
                ("source", "clicks")
            ]
        ),
        Some(5.0)
    );
}

#[test]
fn counters_are_published_as_deltas_and_a_reset_adds_the_new_value() {
    let metrics = Metrics::new("p").unwrap();
    let mut task = publisher(&metrics, 0);
    task.publish(&metrics, &counters(10, 2));
    task.publish(&metrics, &counters(10, 2));
    task.publish(&metrics, &counters(15, 3));
    let text = metrics.render();
    assert_eq!(
        sample(
            &text,
            "tidemark_records_in_total",
            &[("pipeline", "p"), ("source", "clicks")]
        ),
        Some(15.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_global_partials_total",
            &[("outcome", "emitted"), ("pipeline", "p")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_records_in_total",
            &[("pipeline", "p"), ("source", "purchases")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_dead_letter_total",
            &[
                ("pipeline", "p"),
                ("reason", "malformed_json"),
                ("source", "clicks")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_dead_letter_total",
            &[
                ("pipeline", "p"),
                ("reason", "unexpected_type"),
                ("source", "unrouted")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_results_total",
            &[("analytic", "marketing_report"), ("pipeline", "p")]
        ),
        Some(3.0)
    );
    // A task rebuilt after a restore counts from zero again.
    task.publish(&metrics, &counters(4, 3));
    assert_eq!(
        sample(
            &metrics.render(),
            "tidemark_records_in_total",
            &[("pipeline", "p"), ("source", "clicks")]
        ),
        Some(19.0)
    );
}

#[test]
fn two_tasks_of_a_worker_add_up_and_a_released_task_loses_its_gauges() {
    let metrics = Metrics::new("p").unwrap();
    let (mut a, mut b) = (publisher(&metrics, 0), publisher(&metrics, 1));
    a.publish(&metrics, &counters(10, 0));
    b.publish(&metrics, &counters(5, 0));
    metrics.set_state(
        1,
        WindowStats {
            keys: 3,
            windows: 4,
            bytes: 500,
        },
    );
    let text = metrics.render();
    assert_eq!(
        sample(
            &text,
            "tidemark_records_in_total",
            &[("pipeline", "p"), ("source", "clicks")]
        ),
        Some(15.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_state_bytes",
            &[("pipeline", "p"), ("task", "1")]
        ),
        Some(500.0)
    );
    metrics.remove_task(1);
    assert!(!metrics.render().contains(r#"task="1""#));
}

#[test]
fn checkpoint_outcomes_are_recorded() {
    let metrics = Metrics::new("p").unwrap();
    metrics.checkpoint_succeeded(Duration::from_millis(120), 4096, 1_767_225_600.5);
    metrics.checkpoint_failed();
    metrics.checkpoint_corrupt(2);
    metrics.set_busy_ratio(1.7);
    let text = metrics.render();
    assert_eq!(
        sample(
            &text,
            "tidemark_checkpoint_duration_seconds_count",
            &[("pipeline", "p")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_checkpoint_size_bytes",
            &[("pipeline", "p")]
        ),
        Some(4096.0)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_checkpoint_last_success_timestamp_seconds",
            &[("pipeline", "p")]
        ),
        Some(1767225600.5)
    );
    assert_eq!(
        sample(
            &text,
            "tidemark_checkpoint_corrupt_total",
            &[("pipeline", "p")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "tidemark_busy_ratio", &[("pipeline", "p")]),
        Some(1.0)
    );
}
