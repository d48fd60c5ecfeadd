//! Observe: what Prometheus knows of one pipeline's workers, in eight instant queries.
//!
//! The queries select the workers' series by `namespace` (the target label the chart's
//! ServiceMonitor/PodMonitor, or any Kubernetes service discovery, attaches) and `pipeline` (the
//! constant label every worker series carries). A partition whose lag two pods report (the
//! earlier and the new owner during a hand-off) counts once. Owns the PromQL text and turning
//! answers into an [`Observation`]; the decision is [`super::decide`]'s.

use tidemark_api::metrics::{
    BUSY_RATIO, CHECKPOINT_CORRUPT_TOTAL, CHECKPOINT_FAILURES_TOTAL,
    CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS, PIPELINE_LABEL, PIPELINE_TASKS, RECORDS_IN_TOTAL,
    SOURCE_LAG,
};

use super::prometheus::{Prometheus, PrometheusError, Sample};

/// One worker's load over the metrics window.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerLoad {
    /// The scrape target (`instance` label).
    pub instance: String,
    /// Records per second it took from its sources.
    pub processed_rate: f64,
    /// Share of wall time its task threads were busy, 0..1.
    pub busy_ratio: f64,
}

/// The pipeline's figures at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Records per second all workers took (the input rate).
    pub processed_rate: f64,
    /// Records behind the ends of the input partitions; `None` when no worker reports lag.
    pub lag: Option<f64>,
    /// Change of the lag per second over the window (positive: falling behind).
    pub lag_growth: f64,
    /// Per-worker load.
    pub workers: Vec<WorkerLoad>,
    /// Tasks of the pipeline (partitions of its input topics), as the workers report it.
    pub tasks: Option<u32>,
    /// Unix time of the oldest of the workers' newest checkpoints: every worker has
    /// checkpointed since.
    pub last_checkpoint: Option<f64>,
    /// Workers (pod, else scrape target) that found corrupt checkpoints when restoring, with how
    /// many since they started.
    pub corrupt_checkpoints: Vec<(String, f64)>,
    /// Workers that failed checkpoint writes within the window, with how many.
    pub checkpoint_failures: Vec<(String, f64)>,
}

/// The PromQL of each figure for pipeline `namespace/name` over `window` (a PromQL duration
/// such as `2m`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    /// Processed records/s by worker.
    pub processed: String,
    /// Busy ratio by worker.
    pub busy: String,
    /// Total lag, each partition once.
    pub lag: String,
    /// Lag growth per second, each partition once.
    pub lag_growth: String,
    /// Task count.
    pub tasks: String,
    /// Oldest newest checkpoint.
    pub last_checkpoint: String,
    /// Corrupt checkpoints skipped at restore, by worker.
    pub corrupt: String,
    /// Failed checkpoint writes within the window, by worker.
    pub failures: String,
}

impl Queries {
    /// The queries of one pipeline.
    pub fn new(namespace: &str, name: &str, window: &str) -> Self {
        let s = format!(
            "namespace=\"{}\",{PIPELINE_LABEL}=\"{}\"",
            escape(namespace),
            escape(name)
        );
        Self {
            processed: format!("sum by (instance) (rate({RECORDS_IN_TOTAL}{{{s}}}[{window}]))"),
            busy: format!("avg by (instance) (avg_over_time({BUSY_RATIO}{{{s}}}[{window}]))"),
            lag: format!("sum(max by (source, partition) ({SOURCE_LAG}{{{s}}}))"),
            lag_growth: format!(
                "sum(max by (source, partition) (deriv({SOURCE_LAG}{{{s}}}[{window}])))"
            ),
            tasks: format!("max({PIPELINE_TASKS}{{{s}}})"),
            last_checkpoint: format!("min({CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS}{{{s}}} > 0)"),
            corrupt: format!("sum by (pod, instance) ({CHECKPOINT_CORRUPT_TOTAL}{{{s}}}) > 0"),
            failures: format!(
                "sum by (pod, instance) (increase({CHECKPOINT_FAILURES_TOTAL}{{{s}}}[{window}])) > 0"
            ),
        }
    }
}

/// Asks `prometheus` at `url` every query of `queries`, concurrently.
///
/// Errors: the first failed query (unreachable, HTTP error, PromQL error, bad answer).
pub async fn observe(
    prometheus: &Prometheus,
    url: &str,
    queries: &Queries,
) -> Result<Observation, PrometheusError> {
    let (processed, busy, lag, growth, tasks, checkpoint, corrupt, failures) = futures::try_join!(
        prometheus.query(url, &queries.processed),
        prometheus.query(url, &queries.busy),
        prometheus.query(url, &queries.lag),
        prometheus.query(url, &queries.lag_growth),
        prometheus.query(url, &queries.tasks),
        prometheus.query(url, &queries.last_checkpoint),
        prometheus.query(url, &queries.corrupt),
        prometheus.query(url, &queries.failures),
    )?;
    let mut observation = assemble(&processed, &busy, &lag, &growth, &tasks, &checkpoint);
    observation.corrupt_checkpoints = by_worker(&corrupt);
    observation.checkpoint_failures = by_worker(&failures);
    Ok(observation)
}

/// Finite values by worker name (the `pod` label, else the scrape target), sorted by name.
pub fn by_worker(samples: &[Sample]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| s.value.is_finite())
        .map(|s| {
            let name = s
                .labels
                .get("pod")
                .or_else(|| s.labels.get("instance"))
                .cloned()
                .unwrap_or_default();
            (name, s.value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Turns the answers into an observation. NaN and infinite values (a rate over one sample, a
/// division by zero inside Prometheus) count as absent.
pub fn assemble(
    processed: &[Sample],
    busy: &[Sample],
    lag: &[Sample],
    growth: &[Sample],
    tasks: &[Sample],
    checkpoint: &[Sample],
) -> Observation {
    let scalar = |samples: &[Sample]| samples.iter().map(|s| s.value).find(|v| v.is_finite());
    let instance = |s: &Sample| s.labels.get("instance").cloned().unwrap_or_default();
    let mut workers: Vec<WorkerLoad> = processed
        .iter()
        .filter(|s| s.value.is_finite())
        .map(|s| WorkerLoad {
            instance: instance(s),
            processed_rate: s.value.max(0.0),
            busy_ratio: busy
                .iter()
                .find(|b| instance(b) == instance(s))
                .map(|b| b.value)
                .filter(|v| v.is_finite())
                .unwrap_or(0.0)
                .clamp(0.0, 1.0),
        })
        .collect();
    workers.sort_by(|a, b| a.instance.cmp(&b.instance));
    Observation {
        processed_rate: workers.iter().map(|w| w.processed_rate).sum(),
        lag: scalar(lag).map(|l| l.max(0.0)),
        lag_growth: scalar(growth).unwrap_or(0.0),
        workers,
        tasks: scalar(tasks)
            .filter(|t| *t >= 1.0 && *t <= f64::from(u32::MAX))
            .map(|t| t as u32),
        last_checkpoint: scalar(checkpoint),
        corrupt_checkpoints: Vec::new(),
        checkpoint_failures: Vec::new(),
    }
}

/// Escapes a label value for a PromQL string literal. Kubernetes names never need it; this keeps
/// a query well-formed whatever it is given.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn sample(instance: Option<&str>, value: f64) -> Sample {
        let mut labels = BTreeMap::new();
        if let Some(i) = instance {
            labels.insert("instance".to_owned(), i.to_owned());
        }
        Sample { labels, value }
    }

    #[test]
    fn queries_select_the_pipeline_by_namespace_and_name_and_count_each_partition_once() {
        let q = Queries::new("shop", "clicks", "2m");
        assert_eq!(
            q.processed,
            r#"sum by (instance) (rate(tidemark_records_in_total{namespace="shop",pipeline="clicks"}[2m]))"#
        );
        assert_eq!(
            q.lag,
            r#"sum(max by (source, partition) (tidemark_source_lag{namespace="shop",pipeline="clicks"}))"#
        );
        assert!(q.lag_growth.contains("deriv(tidemark_source_lag{"));
        assert!(q.tasks.starts_with("max(tidemark_pipeline_tasks{"));
        assert_eq!(
            Queries::new("a\"b", "c", "1m").tasks,
            r#"max(tidemark_pipeline_tasks{namespace="a\"b",pipeline="c"})"#
        );
    }

    #[test]
    fn answers_become_per_worker_loads_and_totals() {
        let o = assemble(
            &[
                sample(Some("w1:9102"), 300.0),
                sample(Some("w0:9102"), 100.0),
            ],
            &[
                sample(Some("w0:9102"), 0.25),
                sample(Some("w1:9102"), f64::NAN),
            ],
            &[sample(None, 5000.0)],
            &[sample(None, -12.5)],
            &[sample(None, 8.0)],
            &[sample(None, 1_700_000_000.5)],
        );
        assert_eq!(o.processed_rate, 400.0);
        assert_eq!(o.lag, Some(5000.0));
        assert_eq!(o.lag_growth, -12.5);
        assert_eq!(o.tasks, Some(8));
        assert_eq!(o.last_checkpoint, Some(1_700_000_000.5));
        assert_eq!(
            o.workers,
            vec![
                WorkerLoad {
                    instance: "w0:9102".into(),
                    processed_rate: 100.0,
                    busy_ratio: 0.25
                },
                WorkerLoad {
                    instance: "w1:9102".into(),
                    processed_rate: 300.0,
                    busy_ratio: 0.0
                },
            ]
        );
    }

    #[test]
    fn checkpoint_problems_are_named_by_pod_else_by_scrape_target() {
        let mut pod = sample(Some("10.0.0.7:9102"), 2.0);
        pod.labels.insert("pod".into(), "clicks-1".into());
        let bare = sample(Some("10.0.0.5:9102"), 1.0);
        assert_eq!(
            by_worker(&[pod, bare, sample(None, f64::NAN)]),
            vec![
                ("10.0.0.5:9102".to_owned(), 1.0),
                ("clicks-1".to_owned(), 2.0)
            ]
        );
        let q = Queries::new("shop", "clicks", "2m");
        assert_eq!(
            q.failures,
            r#"sum by (pod, instance) (increase(tidemark_checkpoint_failures_total{namespace="shop",pipeline="clicks"}[2m])) > 0"#
        );
    }

    #[test]
    fn empty_answers_leave_the_figures_absent() {
        let o = assemble(&[], &[], &[], &[], &[], &[]);
        assert_eq!(o, Observation::default());
        let nan = assemble(
            &[],
            &[],
            &[sample(None, f64::NAN)],
            &[],
            &[sample(None, 0.0)],
            &[],
        );
        assert_eq!(nan.lag, None);
        assert_eq!(nan.tasks, None);
    }
}
