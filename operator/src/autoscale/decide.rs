//! Decide: how many workers a pipeline needs, from one observation of its metrics. Pure.
//!
//! docs/design.md, autoscaling. The throughput policy sizes for demand over measured capacity:
//!
//! ```text
//! demand   = input rate + lag growth + lag / catchUpDuration          (records/s)
//! capacity = processed rate / busy ratio, per worker                  (records/s of a fully busy worker)
//! raw      = ceil(demand / (capacity × targetUtilizationPercent / 100))
//! ```
//!
//! The lagThreshold policy (KEDA style) sizes for `ceil(lag / lagThreshold)`. Either result is
//! clamped to `[minParallelism, min(maxParallelism, tasks)]` and aligned to the task count (see
//! [`align`]); scaling up happens at once, scaling down only when every recommendation of the
//! stabilization window was lower ([`Recommendations`]), and never two actions within the
//! cool-down. This module owns none of the I/O: the observation comes from
//! [`super::observe`], the history and the clock from the caller.

use tidemark_api::{AutoscalingPolicy, AutoscalingSpec};

use super::observe::Observation;

/// Decision: more workers.
pub const SCALE_UP: &str = "ScaleUp";
/// Decision: fewer workers.
pub const SCALE_DOWN: &str = "ScaleDown";
/// Decision: keep the workers (the reason says why).
pub const HOLD: &str = "Hold";
/// Refusal: Prometheus could not be asked or answered with an error.
pub const PROMETHEUS_UNAVAILABLE: &str = "PrometheusUnavailable";
/// Refusal: Prometheus answered but has no usable series of the pipeline.
pub const NO_DATA: &str = "NoData";
/// Refusal: neither the spec nor the operator names a Prometheus.
pub const NO_PROMETHEUS: &str = "NoPrometheusUrl";

/// Busy ratios summed over the workers below this say nothing about capacity: the workers are
/// idle, and processed rate over busy ratio would divide noise by noise.
const MIN_BUSY: f64 = 0.02;

/// What the autoscaler decided in one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Workers to run from now on.
    pub desired: i32,
    /// [`SCALE_UP`], [`SCALE_DOWN`], [`HOLD`] or a refusal.
    pub kind: &'static str,
    /// Why, with the figures behind it.
    pub reason: String,
    /// The aligned recommendation of this observation, before stabilization and cool-down
    /// (what the history keeps); `None` on a refusal.
    pub recommendation: Option<i32>,
    /// Demand in records/s (throughput policy).
    pub demand: Option<f64>,
    /// Measured records/s of one fully busy worker.
    pub capacity_per_worker: Option<f64>,
}

impl Decision {
    /// Whether this is a refusal rather than a decision.
    pub fn refused(&self) -> bool {
        self.recommendation.is_none()
    }

    /// A refusal of `kind`: the workers stay at `current`.
    pub fn refuse(kind: &'static str, current: i32, reason: String) -> Self {
        Self {
            desired: current,
            kind,
            reason,
            recommendation: None,
            demand: None,
            capacity_per_worker: None,
        }
    }
}

/// Everything one decision depends on besides the observation.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// The pipeline's autoscaling settings.
    pub spec: &'a AutoscalingSpec,
    /// Workers in effect now.
    pub current: i32,
    /// Now, in Unix milliseconds.
    pub now_ms: i64,
    /// When the autoscaler last changed the parallelism (Unix ms), if it did.
    pub last_scale_ms: Option<i64>,
    /// A rescale's hand-off is still moving task state.
    pub handoff_in_progress: bool,
}

/// Recent aligned recommendations of one pipeline, for the scale-down stabilization window.
/// Kept in the operator's memory: after an operator restart the window starts empty, which only
/// delays a scale-down (never an up-scale).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recommendations {
    /// Since when the history has no gap (Unix ms): a refusal starts it again.
    since_ms: Option<i64>,
    /// (time in Unix ms, recommendation), oldest first.
    entries: Vec<(i64, i32)>,
}

impl Recommendations {
    /// Adds the recommendation made at `now_ms` and forgets those older than `keep_ms`.
    pub fn record(&mut self, now_ms: i64, recommendation: i32, keep_ms: i64) {
        self.since_ms.get_or_insert(now_ms);
        self.entries.retain(|(at, _)| now_ms - at <= keep_ms);
        self.entries.push((now_ms, recommendation));
    }

    /// Forgets everything: after a refusal nothing is known about the gap.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The highest recommendation within the last `window_ms`, if the history covers the whole
    /// window without a gap.
    pub fn window_max(&self, now_ms: i64, window_ms: i64) -> Option<i32> {
        let since = self.since_ms?;
        if now_ms - since < window_ms {
            return None;
        }
        self.entries
            .iter()
            .filter(|(at, _)| now_ms - at <= window_ms)
            .map(|(_, r)| *r)
            .max()
    }

    /// How long the history has run without a gap (ms).
    pub fn covered_ms(&self, now_ms: i64) -> i64 {
        self.since_ms.map_or(0, |since| now_ms - since)
    }
}

/// The worker count bounds for a pipeline of `tasks` tasks (if known): `[min, min(max, tasks)]`,
/// with `min` lowered to the upper bound when it exceeds it (more workers than tasks would idle).
pub fn bounds(spec: &AutoscalingSpec, tasks: Option<u32>) -> (i32, i32) {
    let tasks = tasks.map(|t| i32::try_from(t).unwrap_or(i32::MAX).max(1));
    let upper = tasks.map_or(spec.max_parallelism, |t| spec.max_parallelism.min(t));
    let upper = upper.max(1);
    (spec.min_parallelism.clamp(1, upper), upper)
}

/// Aligns `workers` (within `[1, upper]`) to the task count so that tasks stay balanced: the
/// smallest divisor of `tasks` that is at least `workers` and at most `upper`; if there is none,
/// the fewest workers that reach the smallest busiest-worker load possible under `upper`
/// (`ceil(tasks / ceil(tasks / upper))`: e.g. 12 tasks with at most 5 workers gives 4, because 5
/// workers would still leave one with 3 tasks), which may be fewer than `workers`.
pub fn align(workers: i32, upper: i32, tasks: Option<u32>) -> i32 {
    let Some(tasks) = tasks.map(i64::from).filter(|t| *t > 0) else {
        return workers;
    };
    let workers = i64::from(workers.max(1));
    let upper = i64::from(upper.max(1));
    if let Some(divisor) = (workers..=upper.min(tasks)).find(|d| tasks % d == 0) {
        return i32::try_from(divisor).unwrap_or(i32::MAX);
    }
    let per_worker = (tasks + upper - 1) / upper;
    i32::try_from((tasks + per_worker - 1) / per_worker).unwrap_or(i32::MAX)
}

/// Decides from `observation` and `history` (which the caller updates with
/// [`Decision::recommendation`] afterwards). Idempotent for equal inputs.
pub fn decide(ctx: &Context<'_>, observation: &Observation, history: &Recommendations) -> Decision {
    let spec = ctx.spec;
    let (lower, upper) = bounds(spec, observation.tasks);
    let Some(lag) = observation.lag else {
        return Decision::refuse(
            NO_DATA,
            ctx.current,
            "Prometheus has no tidemark_source_lag series of the pipeline (are the workers \
             scraped?)"
                .into(),
        );
    };
    let (raw, demand, capacity, basis) = match spec.policy {
        AutoscalingPolicy::LagThreshold => {
            let per_worker = spec.lag_threshold.max(1) as f64;
            let raw = (lag / per_worker).ceil();
            (
                raw,
                None,
                None,
                format!("lag {lag:.0} records at {per_worker:.0} per worker"),
            )
        }
        AutoscalingPolicy::Throughput => {
            let catch_up = (spec.catch_up_duration.millis().max(1) as f64) / 1000.0;
            let demand =
                (observation.processed_rate + observation.lag_growth + lag / catch_up).max(0.0);
            let busy: f64 = observation.workers.iter().map(|w| w.busy_ratio).sum();
            if busy < MIN_BUSY {
                if demand < 1.0 {
                    // Nothing to do and nothing behind: the fewest workers suffice.
                    (
                        f64::from(lower),
                        Some(demand),
                        None,
                        format!("no load (demand {demand:.1} records/s, workers idle)"),
                    )
                } else {
                    return Decision::refuse(
                        NO_DATA,
                        ctx.current,
                        format!(
                            "demand is {demand:.0} records/s but the workers report no busy time \
                             (busy ratio {busy:.3}): their capacity cannot be measured"
                        ),
                    );
                }
            } else {
                let capacity = observation.processed_rate / busy;
                let usable = capacity * f64::from(spec.target_utilization_percent) / 100.0;
                let raw = if usable > 0.0 {
                    (demand / usable).ceil()
                } else {
                    f64::from(upper)
                };
                (
                    raw,
                    Some(demand),
                    Some(capacity),
                    format!(
                        "demand {demand:.0} records/s (input {:.0}, lag growth {:.0}, lag {lag:.0} \
                         over {catch_up:.0}s), capacity {capacity:.0} records/s per worker at \
                         {}% target",
                        observation.processed_rate,
                        observation.lag_growth,
                        spec.target_utilization_percent
                    ),
                )
            }
        }
    };
    let clamped = if raw.is_finite() {
        (raw as i64).clamp(i64::from(lower), i64::from(upper)) as i32
    } else {
        upper
    };
    // The fallback of `align` may go below `workers`; never below the user's minimum.
    let recommendation = align(clamped, upper, observation.tasks).max(lower);
    let tasks = observation
        .tasks
        .map_or_else(|| "task count unknown".into(), |t| format!("{t} tasks"));
    let wants = format!(
        "{basis}: {} ({tasks}, bounds {lower}..{upper}, now {})",
        crate::message::workers(recommendation),
        ctx.current
    );
    let decided = |desired: i32, kind: &'static str, reason: String| Decision {
        desired,
        kind,
        reason,
        recommendation: Some(recommendation),
        demand,
        capacity_per_worker: capacity,
    };
    if ctx.handoff_in_progress {
        return decided(
            ctx.current,
            HOLD,
            format!("{wants}; a rescale's hand-off is under way"),
        );
    }
    let cooling = ctx.last_scale_ms.and_then(|last| {
        let left = spec.cooldown.millis_i64() - (ctx.now_ms - last);
        (left > 0).then_some(left)
    });
    // The clamp applies at once, whatever the history says: the bounds are the user's.
    let current = ctx.current.clamp(lower, upper);
    if recommendation > current || current != ctx.current {
        let target = recommendation.max(current);
        if let Some(left) = cooling.filter(|_| current == ctx.current) {
            return decided(
                ctx.current,
                HOLD,
                format!("{wants}; cool-down for {}s more", ceil_seconds(left)),
            );
        }
        let kind = if target > ctx.current {
            SCALE_UP
        } else {
            SCALE_DOWN
        };
        return decided(target, kind, wants);
    }
    if recommendation == current {
        return decided(current, HOLD, wants);
    }
    let window = spec.scale_down_stabilization.millis_i64();
    let mut with_this = history.clone();
    with_this.record(ctx.now_ms, recommendation, window);
    let Some(stable) = with_this.window_max(ctx.now_ms, window) else {
        return decided(
            current,
            HOLD,
            format!(
                "{wants}; scale-down waits for the stabilization window ({}s of {}s seen)",
                with_this.covered_ms(ctx.now_ms) / 1000,
                window / 1000
            ),
        );
    };
    if stable >= current {
        return decided(
            current,
            HOLD,
            format!(
                "{wants}; within the last {}s up to {} were needed",
                window / 1000,
                crate::message::workers(stable)
            ),
        );
    }
    if let Some(left) = cooling {
        return decided(
            current,
            HOLD,
            format!("{wants}; cool-down for {}s more", ceil_seconds(left)),
        );
    }
    decided(stable, SCALE_DOWN, wants)
}

fn ceil_seconds(ms: i64) -> i64 {
    (ms + 999) / 1000
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
