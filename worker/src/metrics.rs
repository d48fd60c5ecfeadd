//! The worker's Prometheus metrics (docs/design.md, observability): names defined once here, one registry per worker
//! process with a constant `pipeline` label, rendered in the text format by `crate::http`.
//!
//! Owns the series and how engine counters become Prometheus counters ([`TaskMetrics`] publishes
//! a task's [`Counters`] as deltas). Does not own when to publish (the worker loop), the HTTP
//! endpoint, or the chart's dashboards and alerts, which use these names.

use std::collections::HashMap;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

// The names the operator reads back from Prometheus are shared with it through the api crate.
pub use tidemark_api::metrics::{
    BUSY_RATIO, CHECKPOINT_CORRUPT_TOTAL, CHECKPOINT_FAILURES_TOTAL,
    CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS, PIPELINE_LABEL, PIPELINE_TASKS, RECORDS_IN_TOTAL,
    SOURCE_LAG,
};

use crate::engine::{Counters, Task};
use crate::event::Reason;
use crate::global::{task_label, GlobalCounters, GlobalStage};
use crate::quality::SkewHistogram;

pub use crate::quality::skew::CLOCK_SKEW_SECONDS;
use crate::window::WindowStats;

/// Counter of records written, by `sink`.
pub const RECORDS_OUT_TOTAL: &str = "tidemark_records_out_total";
/// Counter of results emitted, by `analytic`.
pub const RESULTS_TOTAL: &str = "tidemark_results_total";
/// Counter of an action's decisions, by `analytic` and `outcome` (`sent`, `holdout`,
/// `cooldown`, `budget`).
pub const ACTIONS_TOTAL: &str = "tidemark_actions_total";
/// Gauge of a model's quality and size, by `analytic` and `measure` (`model_version`,
/// `log_loss`, `auc`, `size_<segment>`, `epochs_learned`, ...), where the model is learned.
pub const MODEL: &str = "tidemark_model";
/// The outcomes of [`ACTIONS_TOTAL`], in the order analytics count them.
const OUTCOMES: [&str; 4] = ["sent", "holdout", "cooldown", "budget"];
/// Counter of dead-lettered records, by `source` and `reason`.
pub const DEAD_LETTER_TOTAL: &str = "tidemark_dead_letter_total";
/// Counter of events later than the allowed lateness, by `analytic`.
pub const LATE_RECORDS_TOTAL: &str = "tidemark_late_records_total";
/// Counter of events dropped by filters, by `source`.
pub const FILTERED_TOTAL: &str = "tidemark_filtered_total";
/// Counter of records deleted from a source's log (retention) before a task read them, by
/// `source`.
pub const SOURCE_RECORDS_SKIPPED_TOTAL: &str = "tidemark_source_records_skipped_total";
/// Gauge of wall clock minus watermark, by `task`.
pub const WATERMARK_DELAY_SECONDS: &str = "tidemark_watermark_delay_seconds";
/// Histogram of checkpoint write durations.
pub const CHECKPOINT_DURATION_SECONDS: &str = "tidemark_checkpoint_duration_seconds";
/// Histogram of the time a checkpoint stops its task (capture and sink preparation).
pub const CHECKPOINT_PAUSE_SECONDS: &str = "tidemark_checkpoint_pause_seconds";
/// Gauge of the size of the last checkpoint written.
pub const CHECKPOINT_SIZE_BYTES: &str = "tidemark_checkpoint_size_bytes";
/// Gauge of live keys, by `task`.
pub const STATE_KEYS: &str = "tidemark_state_keys";
/// Gauge of live key-windows, by `task`.
pub const STATE_WINDOWS: &str = "tidemark_state_windows";
/// Gauge of state bytes, by `task`.
pub const STATE_BYTES: &str = "tidemark_state_bytes";
/// Moved tasks whose state a worker took over at start, by where the newest state was
/// (`from="peer"`: fetched from an earlier owner; `from="local"`: this volume's was newest).
pub const HANDOFF_TASKS_TOTAL: &str = "tidemark_handoff_tasks_total";
/// Checkpoint bytes fetched from earlier owners of moved tasks.
pub const HANDOFF_BYTES_TOTAL: &str = "tidemark_handoff_bytes_total";
/// Time from a moved task's first question to its earlier owners until its state was installed.
pub const HANDOFF_DURATION_SECONDS: &str = "tidemark_handoff_duration_seconds";
/// Partials of the global stage by `outcome`: `emitted` by tasks; `merged`, `stale` (a replay
/// of a revision already held), `late` (its key-window already dropped) or `malformed` at the
/// global stage.
pub const GLOBAL_PARTIALS_TOTAL: &str = "tidemark_global_partials_total";
/// Tasks whose producer was fenced by a newer one for the same task, by `task`: another worker
/// runs the task now, and this one stopped its tasks and stepped back (exactly-once).
pub const SINK_FENCED_TOTAL: &str = "tidemark_sink_fenced_total";
/// `source` label value of dead letters that no source accepted (routing by event type failed).
pub const UNROUTED_SOURCE: &str = "unrouted";

/// The worker's metrics and the registry that exposes them. Cheap to clone (handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    results: IntCounterVec,
    dead_letter: IntCounterVec,
    late: IntCounterVec,
    filtered: IntCounterVec,
    source_lag: IntGaugeVec,
    source_skipped: IntCounterVec,
    watermark_delay: GaugeVec,
    checkpoint_duration: Histogram,
    checkpoint_pause: Histogram,
    checkpoint_size: IntGauge,
    checkpoint_last_success: Gauge,
    checkpoint_failures: IntCounter,
    checkpoint_corrupt: IntCounter,
    state_keys: IntGaugeVec,
    state_windows: IntGaugeVec,
    state_bytes: IntGaugeVec,
    busy_ratio: Gauge,
    tasks: IntGauge,
    global_partials: IntCounterVec,
    actions: IntCounterVec,
    models: GaugeVec,
    handoff_tasks: IntCounterVec,
    handoff_bytes: IntCounter,
    handoff_duration: Histogram,
    sink_fenced: IntCounterVec,
    clock_skew: SkewHistogram,
}

impl Metrics {
    /// Registers every metric in a fresh registry whose series carry `pipeline="<pipeline>"`.
    ///
    /// Errors: only on an invalid label value or a duplicate registration (a bug).
    pub fn new(pipeline: &str) -> Result<Self, prometheus::Error> {
        let labels = HashMap::from([(PIPELINE_LABEL.to_owned(), pipeline.to_owned())]);
        let registry = Registry::new_custom(None, Some(labels))?;
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<_> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<_> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let metrics = Self {
            records_in: counter(RECORDS_IN_TOTAL, "Records received.", &["source"])?,
            records_out: counter(RECORDS_OUT_TOTAL, "Records written.", &["sink"])?,
            results: counter(RESULTS_TOTAL, "Results emitted.", &["analytic"])?,
            actions: counter(
                ACTIONS_TOTAL,
                "Decisions of actions, by outcome.",
                &["analytic", "outcome"],
            )?,
            models: {
                let g = GaugeVec::new(
                    Opts::new(MODEL, "A model's quality and size, by measure."),
                    &["analytic", "measure"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            dead_letter: counter(
                DEAD_LETTER_TOTAL,
                "Records sent to the dead-letter output.",
                &["source", "reason"],
            )?,
            late: counter(
                LATE_RECORDS_TOTAL,
                "Events later than the allowed lateness.",
                &["analytic"],
            )?,
            filtered: counter(FILTERED_TOTAL, "Events dropped by filters.", &["source"])?,
            source_lag: int_gauge(
                SOURCE_LAG,
                "Records between the consumer position and the end of the partition.",
                &["source", "partition"],
            )?,
            source_skipped: counter(
                SOURCE_RECORDS_SKIPPED_TOTAL,
                "Records deleted from the log (retention) before a task read them.",
                &["source"],
            )?,
            watermark_delay: {
                let g = GaugeVec::new(
                    Opts::new(WATERMARK_DELAY_SECONDS, "Wall clock minus watermark."),
                    &["task"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            checkpoint_duration: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(CHECKPOINT_DURATION_SECONDS, "Checkpoint write time.")
                        .buckets(vec![
                            0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            checkpoint_pause: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        CHECKPOINT_PAUSE_SECONDS,
                        "Time a checkpoint stops its task: state capture and sink preparation.",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            checkpoint_size: {
                let g = IntGauge::new(CHECKPOINT_SIZE_BYTES, "Size of the last checkpoint.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            checkpoint_last_success: {
                let g = Gauge::new(
                    CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS,
                    "Unix time of the last successful checkpoint.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            sink_fenced: counter(
                SINK_FENCED_TOTAL,
                "Tasks whose producer was fenced by a newer one: another worker runs them.",
                &["task"],
            )?,
            checkpoint_failures: {
                let c = IntCounter::new(CHECKPOINT_FAILURES_TOTAL, "Failed checkpoint writes.")?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            checkpoint_corrupt: {
                let c = IntCounter::new(
                    CHECKPOINT_CORRUPT_TOTAL,
                    "Corrupt checkpoints skipped when reading.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            state_keys: int_gauge(STATE_KEYS, "Live keys.", &["task"])?,
            state_windows: int_gauge(STATE_WINDOWS, "Live key-windows.", &["task"])?,
            state_bytes: int_gauge(STATE_BYTES, "Bytes of window state.", &["task"])?,
            busy_ratio: {
                let g = Gauge::new(BUSY_RATIO, "Share of wall time spent processing.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            tasks: {
                let g = IntGauge::new(
                    PIPELINE_TASKS,
                    "Tasks of the pipeline: the partition count of its input topics.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            global_partials: counter(
                GLOBAL_PARTIALS_TOTAL,
                "Partials of the global stage: emitted by tasks, merged, stale, late or malformed at the stage.",
                &["outcome"],
            )?,
            handoff_tasks: counter(
                HANDOFF_TASKS_TOTAL,
                "Moved tasks taken over at start, by where their newest state was.",
                &["from"],
            )?,
            handoff_bytes: {
                let c = IntCounter::new(
                    HANDOFF_BYTES_TOTAL,
                    "Checkpoint bytes fetched from earlier owners of moved tasks.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            handoff_duration: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        HANDOFF_DURATION_SECONDS,
                        "Time a moved task waited for its earlier owners and installed its state.",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            clock_skew: {
                let h = SkewHistogram::new()?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            registry,
        };
        Ok(metrics)
    }

    /// Counts `n` records written to `sink`.
    pub fn records_out(&self, sink: &str, n: u64) {
        self.records_out.with_label_values(&[sink]).inc_by(n);
    }

    /// Counts `n` records of `source` deleted from the log before a task read them.
    pub fn records_skipped(&self, source: &str, n: u64) {
        self.source_skipped.with_label_values(&[source]).inc_by(n);
    }

    /// Sets the lag of one source partition.
    pub fn set_source_lag(&self, source: &str, partition: i32, lag: i64) {
        self.source_lag
            .with_label_values(&[source, &partition.to_string()])
            .set(lag);
    }

    /// Sets the pipeline's task count (the autoscaler aligns parallelism to its divisors).
    pub fn set_tasks(&self, tasks: u32) {
        self.tasks.set(i64::from(tasks));
    }

    /// Sets the busy ratio (clamped to 0..1).
    pub fn set_busy_ratio(&self, ratio: f64) {
        self.busy_ratio.set(ratio.clamp(0.0, 1.0));
    }

    /// Records a successful checkpoint of `bytes` that took `duration`, finished at Unix time
    /// `at_unix_seconds`.
    pub fn checkpoint_succeeded(&self, duration: Duration, bytes: u64, at_unix_seconds: f64) {
        self.checkpoint_duration.observe(duration.as_secs_f64());
        self.checkpoint_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.checkpoint_last_success.set(at_unix_seconds);
    }

    /// Records how long a checkpoint stopped its task.
    pub fn checkpoint_paused(&self, pause: Duration) {
        self.checkpoint_pause.observe(pause.as_secs_f64());
    }

    /// Counts a failed checkpoint write.
    pub fn checkpoint_failed(&self) {
        self.checkpoint_failures.inc();
    }

    /// Records that `task`'s producer was fenced by a newer one.
    pub fn sink_fenced(&self, task: u32) {
        self.sink_fenced
            .with_label_values(&[&task_label(task)])
            .inc();
    }

    /// Records a moved task taken over in `took`, its state found `from` a peer or the local
    /// volume, `bytes` fetched.
    pub fn handoff(&self, took: Duration, from: &str, bytes: u64) {
        self.handoff_tasks.with_label_values(&[from]).inc();
        self.handoff_bytes.inc_by(bytes);
        self.handoff_duration.observe(took.as_secs_f64());
    }

    /// Counts `n` corrupt checkpoints skipped by a reader.
    pub fn checkpoint_corrupt(&self, n: u64) {
        self.checkpoint_corrupt.inc_by(n);
    }

    /// Sets a task's state gauges.
    pub fn set_state(&self, task: u32, stats: WindowStats) {
        let task = task_label(task);
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.state_keys
            .with_label_values(&[&task])
            .set(gauge(stats.keys));
        self.state_windows
            .with_label_values(&[&task])
            .set(gauge(stats.windows));
        self.state_bytes
            .with_label_values(&[&task])
            .set(gauge(stats.bytes));
    }

    /// Sets a task's watermark delay from its watermark and the wall clock (both epoch ms).
    /// Before the first event (`i64::MIN`) the series is left alone; at the end of time
    /// (`i64::MAX`) the delay is 0.
    pub fn set_watermark(&self, task: u32, watermark_ms: i64, now_ms: i64) {
        if watermark_ms == i64::MIN {
            return;
        }
        let delay = (now_ms.saturating_sub(watermark_ms)).max(0) as f64 / 1000.0;
        self.watermark_delay
            .with_label_values(&[&task_label(task)])
            .set(delay);
    }

    /// Drops a task's per-task series (after its hand-off), so a moved task is not reported
    /// by two workers.
    pub fn remove_task(&self, task: u32) {
        let task = task_label(task);
        for vec in [&self.state_keys, &self.state_windows, &self.state_bytes] {
            let _ = vec.remove_label_values(&[&task]);
        }
        let _ = self.watermark_delay.remove_label_values(&[&task]);
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding well-formed families into a Vec cannot fail; an empty page is the fallback.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// The registry, for callers that add their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Publishes one task's counters into [`Metrics`] as deltas since the last publish.
///
/// Engine counters are cumulative per task; Prometheus counters are per worker and summed over
/// its tasks, so each publish adds only what grew. A counter that went down (a task rebuilt
/// after a restore starts from zero) counts as a reset: its whole value is added.
#[derive(Debug)]
pub struct TaskMetrics {
    task: u32,
    sources: Vec<String>,
    analytics: Vec<String>,
    last: Counters,
    last_global: GlobalCounters,
    last_decisions: Vec<[u64; 4]>,
}

impl TaskMetrics {
    /// A publisher for task `task` whose sources and analytics are named in plan order. Creates
    /// the task's series at zero, so rates exist before the first event.
    pub fn new(metrics: &Metrics, task: u32, sources: Vec<String>, analytics: Vec<String>) -> Self {
        for source in &sources {
            metrics.records_in.with_label_values(&[source]);
            metrics.filtered.with_label_values(&[source]);
            metrics.clock_skew.touch(source);
            for reason in Reason::ALL {
                metrics
                    .dead_letter
                    .with_label_values(&[source, reason.as_str()]);
            }
        }
        for analytic in &analytics {
            metrics.results.with_label_values(&[analytic]);
            metrics.late.with_label_values(&[analytic]);
        }
        Self {
            task,
            sources,
            analytics,
            last: Counters::default(),
            last_global: GlobalCounters::default(),
            last_decisions: Vec::new(),
        }
    }

    /// Publishes the global stage's counters, state gauges and watermark delay.
    pub fn publish_global(&mut self, metrics: &Metrics, stage: &GlobalStage, now_ms: i64) {
        let counters = stage.counters();
        let was = &self.last_global;
        for (outcome, now, before) in [
            ("merged", counters.merged, was.merged),
            ("stale", counters.stale, was.stale),
            ("late", counters.late, was.late),
            ("malformed", counters.malformed, was.malformed),
        ] {
            let delta = delta(now, before);
            if delta > 0 {
                metrics
                    .global_partials
                    .with_label_values(&[outcome])
                    .inc_by(delta);
            }
        }
        let results = Counters {
            results: counters.results.clone(),
            ..self.last.clone()
        };
        self.publish(metrics, &results);
        self.last_global.clone_from(counters);
        self.publish_decisions(metrics, stage.decisions());
        self.publish_models(metrics, stage.model_gauges());
        metrics.set_state(self.task, stage.stats());
        metrics.set_watermark(self.task, stage.watermark(), now_ms);
    }

    /// A publisher named after `task`'s plan.
    pub fn for_task(metrics: &Metrics, task_id: u32, task: &Task) -> Self {
        let plan = task.plan();
        Self::new(
            metrics,
            task_id,
            plan.sources.iter().map(|s| s.name.clone()).collect(),
            plan.analytics.iter().map(|a| a.name.clone()).collect(),
        )
    }

    /// Publishes a task's counters, state gauges and watermark delay at wall time `now_ms`.
    pub fn publish_task(&mut self, metrics: &Metrics, task: &Task, now_ms: i64) {
        self.publish(metrics, task.counters());
        self.publish_decisions(metrics, task.decisions());
        self.publish_models(metrics, task.model_gauges());
        metrics.set_state(self.task, task.stats());
        metrics.set_watermark(self.task, task.watermark(), now_ms);
    }

    /// Adds what grew in the actions' decisions (`now`, per analytic) since the last call.
    fn publish_decisions(&mut self, metrics: &Metrics, now: Vec<[u64; 4]>) {
        for (i, (name, counts)) in self.analytics.iter().zip(&now).enumerate() {
            let before = self.last_decisions.get(i).copied().unwrap_or([0; 4]);
            for (k, outcome) in OUTCOMES.iter().enumerate() {
                let delta = delta(counts[k], before[k]);
                if delta > 0 {
                    metrics
                        .actions
                        .with_label_values(&[name.as_str(), outcome])
                        .inc_by(delta);
                }
            }
        }
        self.last_decisions = now;
    }

    /// Sets the gauges of the models learned here (`now`, per analytic).
    fn publish_models(&self, metrics: &Metrics, now: Vec<Vec<(String, f64)>>) {
        for (name, gauges) in self.analytics.iter().zip(now) {
            for (measure, value) in gauges {
                metrics
                    .models
                    .with_label_values(&[name.as_str(), measure.as_str()])
                    .set(value);
            }
        }
    }

    /// Adds what grew in `counters` since the last call. Idempotent for unchanged counters.
    pub fn publish(&mut self, metrics: &Metrics, counters: &Counters) {
        let add = |vec: &IntCounterVec, names: &[String], now: &[u64], before: &[u64]| {
            for (i, name) in names.iter().enumerate() {
                let now = now.get(i).copied().unwrap_or(0);
                let delta = delta(now, before.get(i).copied().unwrap_or(0));
                if delta > 0 {
                    vec.with_label_values(&[name]).inc_by(delta);
                }
            }
        };
        add(
            &metrics.records_in,
            &self.sources,
            &counters.records_in,
            &self.last.records_in,
        );
        add(
            &metrics.filtered,
            &self.sources,
            &counters.filtered,
            &self.last.filtered,
        );
        add(
            &metrics.results,
            &self.analytics,
            &counters.results,
            &self.last.results,
        );
        add(
            &metrics.late,
            &self.analytics,
            &counters.late,
            &self.last.late,
        );
        let emitted = delta(
            counters.partials.iter().sum(),
            self.last.partials.iter().sum(),
        );
        if emitted > 0 {
            metrics
                .global_partials
                .with_label_values(&["emitted"])
                .inc_by(emitted);
        }
        for (i, source) in self.sources.iter().enumerate() {
            if let Some(now) = counters.clock_skew.get(i) {
                let before = self.last.clock_skew.get(i).cloned().unwrap_or_default();
                let delta = now.since(&before);
                if delta.count() > 0 {
                    metrics.clock_skew.add(source, &delta);
                }
            }
        }
        for ((source, reason), &now) in &counters.dead_letters {
            let before = self
                .last
                .dead_letters
                .get(&(source.clone(), *reason))
                .copied()
                .unwrap_or(0);
            let delta = delta(now, before);
            if delta > 0 {
                let source = if source.is_empty() {
                    UNROUTED_SOURCE
                } else {
                    source
                };
                metrics
                    .dead_letter
                    .with_label_values(&[source, reason.as_str()])
                    .inc_by(delta);
            }
        }
        self.last.clone_from(counters);
    }
}

fn delta(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}
