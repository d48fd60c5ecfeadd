//! The operator's own Prometheus metrics (names defined once here; the chart's dashboards and
//! alerts use them). The worker's metrics are the worker's business.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};

/// Counter of reconciles by `result` (`success`, `invalid_spec`, `error`).
pub const RECONCILES_TOTAL: &str = "tidemark_operator_reconciles_total";
/// Histogram of reconcile durations.
pub const RECONCILE_DURATION_SECONDS: &str = "tidemark_operator_reconcile_duration_seconds";
/// Counter of autoscaler decisions and refusals by `namespace`, `pipeline` and `decision`.
pub const AUTOSCALER_DECISIONS_TOTAL: &str = "tidemark_operator_autoscaler_decisions_total";
/// Gauge per pipeline (`namespace`, `pipeline`): the parallelism the autoscaler last decided.
pub const AUTOSCALER_DESIRED_PARALLELISM: &str = "tidemark_operator_autoscaler_desired_parallelism";
/// Gauge per pipeline (`namespace`, `pipeline`): 1 while its Degraded condition is True.
pub const PIPELINE_DEGRADED: &str = "tidemark_operator_pipeline_degraded";
/// Gauge: 1 while this replica holds the leader Lease.
pub const LEADER: &str = "tidemark_operator_leader";

/// Reconcile results, the values of the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Desired state applied.
    Success,
    /// Spec invalid; waiting for a change.
    InvalidSpec,
    /// Failed; retried with backoff.
    Error,
}

impl ReconcileResult {
    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::InvalidSpec => "invalid_spec",
            Self::Error => "error",
        }
    }
}

/// The operator's metrics and the registry that exposes them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    duration: Histogram,
    autoscaler_decisions: IntCounterVec,
    autoscaler_desired: prometheus::IntGaugeVec,
    leader: prometheus::IntGauge,
    degraded: prometheus::IntGaugeVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                RECONCILES_TOTAL,
                "Reconciles of MarketingPipelines by result.",
            ),
            &["result"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                RECONCILE_DURATION_SECONDS,
                "Time of one reconcile of a MarketingPipeline.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let autoscaler_decisions = IntCounterVec::new(
            Opts::new(
                AUTOSCALER_DECISIONS_TOTAL,
                "Autoscaler decisions and refusals by decision.",
            ),
            &["namespace", "pipeline", "decision"],
        )?;
        let autoscaler_desired = prometheus::IntGaugeVec::new(
            Opts::new(
                AUTOSCALER_DESIRED_PARALLELISM,
                "Parallelism the autoscaler last decided for the pipeline.",
            ),
            &["namespace", "pipeline"],
        )?;
        let leader = prometheus::IntGauge::new(
            LEADER,
            "Whether this replica holds the leader Lease (1) or waits (0).",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(autoscaler_decisions.clone()))?;
        registry.register(Box::new(autoscaler_desired.clone()))?;
        let degraded = prometheus::IntGaugeVec::new(
            Opts::new(
                PIPELINE_DEGRADED,
                "1 while the pipeline's Degraded condition is True.",
            ),
            &["namespace", "pipeline"],
        )?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(degraded.clone()))?;
        for result in [
            ReconcileResult::Success,
            ReconcileResult::InvalidSpec,
            ReconcileResult::Error,
        ] {
            reconciles.with_label_values(&[result.label()]);
        }
        Ok(Self {
            registry,
            reconciles,
            duration,
            autoscaler_decisions,
            autoscaler_desired,
            leader,
            degraded,
        })
    }

    /// Counts one reconcile of `seconds` with `result`.
    pub fn reconciled(&self, result: ReconcileResult, seconds: f64) {
        self.reconciles.with_label_values(&[result.label()]).inc();
        self.duration.observe(seconds);
    }

    /// Counts an autoscaler decision (or refusal) `decision` for pipeline `namespace/name`,
    /// which now wants `desired` workers.
    pub fn autoscaler_decided(&self, namespace: &str, name: &str, decision: &str, desired: i32) {
        self.autoscaler_decisions
            .with_label_values(&[namespace, name, decision])
            .inc();
        self.autoscaler_desired
            .with_label_values(&[namespace, name])
            .set(i64::from(desired));
    }

    /// Records whether pipeline `namespace/name` is degraded.
    pub fn set_degraded(&self, namespace: &str, name: &str, degraded: bool) {
        self.degraded
            .with_label_values(&[namespace, name])
            .set(i64::from(degraded));
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_timed() {
        let metrics = Metrics::new().expect("metrics");
        metrics.reconciled(ReconcileResult::Success, 0.02);
        metrics.reconciled(ReconcileResult::InvalidSpec, 0.001);
        let text = metrics.render();
        assert!(
            text.contains(r#"tidemark_operator_reconciles_total{result="success"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"tidemark_operator_reconciles_total{result="error"} 0"#));
        assert!(text.contains("tidemark_operator_reconcile_duration_seconds_count 2"));
    }
}
