//! Autoscale: how many workers a pipeline should run, and what Prometheus says of its lag and
//! checkpoints (docs/design.md, autoscaling, `docs/autoscaling.md`).
//!
//! With `spec.autoscaling.enabled`, every `evaluationInterval` the autoscaler asks Prometheus
//! for the pipeline's figures ([`observe`]), decides a parallelism ([`decide`]) and the
//! reconcile carries it out through [`crate::rescale`]'s hand-off. It decides
//! `status.parallelism` and never writes the spec, so GitOps sees no drift; when it is disabled
//! `spec.parallelism` rules (and with it `kubectl scale`, an HPA or KEDA through the scale
//! subresource). Whenever a Prometheus URL is known, the same observation also fills
//! `status.lag` and `status.lastCheckpoint`, and reports the workers' checkpoint trouble
//! ([`CheckpointHealth`]): failing writes degrade the pipeline, corrupt checkpoints found at
//! restore become Warning events.
//!
//! Contract of [`Autoscaler::evaluate`]: at most one evaluation per pipeline per interval (other
//! reconciles in between reuse the parallelism in effect, so a failed status write can never
//! flip a decision back); a refusal (no Prometheus URL, Prometheus unreachable or erroring, no
//! series) keeps the parallelism in effect and is reported, never guessed around. State kept in
//! memory (the stabilization history, the last evaluation time) is lost on an operator restart,
//! which only delays a scale-down; the cool-down counts from `status.autoscaler.lastScaleTime`.

pub mod decide;
pub mod observe;
pub mod prometheus;

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tidemark_api::{AutoscalerStatus, AutoscalingSpec, MarketingPipeline, CONDITION_AUTOSCALING};

use crate::rescale::Assignment;
use decide::{Context, Decision, Recommendations};
use observe::{observe, Queries};
use prometheus::Prometheus;

/// Why the autoscaler does not decide (reason of the `Autoscaling` condition).
pub const REASON_DISABLED: &str = "Disabled";
/// What the autoscaler remembers of a pipeline it has not evaluated for this long is dropped.
const FORGET_AFTER_MS: i64 = 3_600_000;
/// Evaluation interval when autoscaling is disabled but a Prometheus URL is known (lag and last
/// checkpoint in status).
const OBSERVE_INTERVAL_MS: i64 = 30_000;

/// The `Autoscaling` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoscalingCondition {
    /// `True` while the autoscaler decides from fresh figures.
    pub active: bool,
    /// The last decision (`ScaleUp`, `ScaleDown`, `Hold`), refusal or `Disabled`.
    pub reason: String,
    /// Its reason in words.
    pub message: String,
}

impl AutoscalingCondition {
    /// Autoscaling is off: `spec.parallelism` rules.
    pub fn disabled() -> Self {
        Self {
            active: false,
            reason: REASON_DISABLED.into(),
            message: "spec.parallelism is in effect".into(),
        }
    }
}

/// What the workers' checkpoint metrics say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointHealth {
    /// Workers that failed checkpoint writes within the metrics window, with how many: the
    /// pipeline is Degraded while there are any.
    pub failing: Vec<(String, f64)>,
    /// Workers whose count of corrupt checkpoints skipped at restore rose since the last
    /// observation, with how many more: one Warning event each.
    pub newly_corrupt: Vec<(String, f64)>,
}

/// What one reconcile learns from the autoscaler.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The parallelism the workers should run.
    pub desired: i32,
    /// The `Autoscaling` condition.
    pub condition: AutoscalingCondition,
    /// `status.autoscaler`.
    pub status: Option<AutoscalerStatus>,
    /// `status.lag`.
    pub lag: Option<i64>,
    /// `status.lastCheckpoint`.
    pub last_checkpoint: Option<String>,
    /// Set when this reconcile evaluated with autoscaling on: for the event and the metric.
    pub decided: Option<Decision>,
    /// Checkpoint trouble of the workers (the last observation's, between observations).
    pub checkpoints: CheckpointHealth,
    /// Time until the next evaluation is due, if one ever is.
    pub next_in: Option<std::time::Duration>,
}

#[derive(Debug, Default)]
struct Memory {
    last_evaluated_ms: Option<i64>,
    history: Recommendations,
    /// Corrupt checkpoints each worker had reported at the last observation. A worker that no
    /// longer reports any (restarted, counter back to 0, or gone) is forgotten.
    corrupt_seen: HashMap<String, f64>,
    /// The last observation's failing workers.
    failing: Vec<(String, f64)>,
}

/// The autoscaler of every pipeline: the Prometheus client and what it remembers per pipeline.
#[derive(Debug)]
pub struct Autoscaler {
    prometheus: Prometheus,
    default_url: Option<String>,
    memory: Mutex<HashMap<String, Memory>>,
}

impl Autoscaler {
    /// An autoscaler asking `default_url` for pipelines that name no Prometheus of their own.
    ///
    /// Errors: the system's TLS roots cannot be loaded.
    pub fn new(default_url: Option<String>) -> Result<Self, std::io::Error> {
        Ok(Self {
            prometheus: Prometheus::new()?,
            default_url: default_url.filter(|u| !u.is_empty()),
            memory: Mutex::default(),
        })
    }

    /// Forgets a deleted pipeline.
    pub fn forget(&self, pipeline: &MarketingPipeline) {
        self.lock().remove(&key(pipeline));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Memory>> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Compares an observation's checkpoint counters with the last ones of pipeline `key`.
    fn checkpoint_health(&self, key: &str, o: &observe::Observation) -> CheckpointHealth {
        let mut memory = self.lock();
        let m = memory.entry(key.to_owned()).or_default();
        let mut newly_corrupt = Vec::new();
        let mut seen = HashMap::new();
        for (worker, count) in &o.corrupt_checkpoints {
            let before = m.corrupt_seen.get(worker).copied().unwrap_or(0.0);
            if *count > before {
                newly_corrupt.push((worker.clone(), count - before));
            }
            seen.insert(worker.clone(), *count);
        }
        m.corrupt_seen = seen;
        m.failing = o.checkpoint_failures.clone();
        CheckpointHealth {
            failing: m.failing.clone(),
            newly_corrupt,
        }
    }

    /// The parallelism and status figures for `pipeline`, whose workers run `assignment` (none
    /// yet at creation); see the module doc for the contract.
    pub async fn evaluate(
        &self,
        pipeline: &MarketingPipeline,
        assignment: Option<&Assignment>,
        now: Timestamp,
    ) -> Evaluation {
        let spec = &pipeline.spec;
        let previous = pipeline.status.as_ref();
        let auto = spec.autoscaling.as_ref().filter(|a| a.enabled);
        let url = spec
            .autoscaling
            .as_ref()
            .and_then(|a| a.prometheus_url.clone())
            .or_else(|| self.default_url.clone());
        let interval_ms = match &spec.autoscaling {
            Some(a) => a.evaluation_interval.millis_i64().max(1),
            None => OBSERVE_INTERVAL_MS,
        };
        let now_ms = now.as_millisecond();
        let key = key(pipeline);
        let (last, failing) = {
            let memory = self.lock();
            let m = memory.get(&key);
            (
                m.and_then(|m| m.last_evaluated_ms),
                m.map(|m| m.failing.clone()).unwrap_or_default(),
            )
        };
        // Due once an interval has passed (or the clock went back); otherwise the next
        // reconcile is asked for when it will be.
        let wait_ms = last.map_or(0, |last| {
            if now_ms < last {
                0
            } else {
                (interval_ms - (now_ms - last)).max(0)
            }
        });
        let due = wait_ms == 0;
        let next_in = (auto.is_some() || url.is_some()).then(|| {
            let ms = if due { interval_ms } else { wait_ms };
            std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        });
        let in_effect = assignment.map(|a| a.parallelism);
        let mut evaluation = Evaluation {
            desired: spec.parallelism.max(1),
            condition: AutoscalingCondition::disabled(),
            status: None,
            lag: previous.and_then(|s| s.lag),
            last_checkpoint: previous.and_then(|s| s.last_checkpoint.clone()),
            decided: None,
            checkpoints: CheckpointHealth {
                failing,
                newly_corrupt: Vec::new(),
            },
            next_in,
        };
        if let Some(auto) = auto {
            evaluation.desired = in_effect.unwrap_or_else(|| initial(spec.parallelism, auto));
            evaluation.status = previous.and_then(|s| s.autoscaler.clone());
            evaluation.condition = previous_condition(pipeline).unwrap_or(AutoscalingCondition {
                active: false,
                reason: decide::HOLD.into(),
                message: "waiting for the first evaluation".into(),
            });
        }
        if !due || (auto.is_none() && url.is_none()) {
            return evaluation;
        }
        {
            let mut memory = self.lock();
            // Pipelines deleted without this operator seeing it (the garbage collector removes
            // them, no finalizer) are forgotten: every live one is evaluated far more often.
            memory.retain(|_, m| {
                m.last_evaluated_ms
                    .is_some_and(|t| now_ms - t < FORGET_AFTER_MS)
            });
            memory.entry(key.clone()).or_default().last_evaluated_ms = Some(now_ms);
        }

        let observed = match &url {
            Some(url) => {
                let window = promql_duration(
                    spec.autoscaling
                        .as_ref()
                        .map_or(120_000, |a| a.metrics_window.millis()),
                );
                let queries = Queries::new(
                    &pipeline.namespace().unwrap_or_default(),
                    &pipeline.name_any(),
                    &window,
                );
                Some(observe(&self.prometheus, url, &queries).await)
            }
            None => None,
        };
        if let Some(Ok(o)) = &observed {
            evaluation.checkpoints = self.checkpoint_health(&key, o);
            evaluation.lag = o.lag.map(|l| l.round() as i64);
            evaluation.last_checkpoint = o
                .last_checkpoint
                .and_then(|t| Timestamp::from_second(t.floor() as i64).ok())
                .map(|t| t.to_string());
        }
        let Some(auto) = auto else {
            if let Some(Err(err)) = &observed {
                tracing::debug!(pipeline = %key, error = %crate::message::error_chain(err), "lag not observed");
            }
            return evaluation;
        };

        let current = evaluation.desired;
        let in_progress = assignment.is_some_and(Assignment::in_progress);
        let decision = match observed {
            None => Decision::refuse(
                decide::NO_PROMETHEUS,
                current,
                "neither spec.autoscaling.prometheusUrl nor the operator's --prometheus-url names \
                 a Prometheus"
                    .into(),
            ),
            Some(Err(err)) => Decision::refuse(
                decide::PROMETHEUS_UNAVAILABLE,
                current,
                crate::message::error_chain(&err),
            ),
            Some(Ok(observation)) => {
                let history = self
                    .lock()
                    .get(&key)
                    .map(|m| m.history.clone())
                    .unwrap_or_default();
                let ctx = Context {
                    spec: auto,
                    current,
                    now_ms,
                    last_scale_ms: evaluation
                        .status
                        .as_ref()
                        .and_then(|s| s.last_scale_time.as_deref())
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .map(|t| t.as_millisecond()),
                    handoff_in_progress: in_progress,
                };
                decide::decide(&ctx, &observation, &history)
            }
        };
        {
            let mut memory = self.lock();
            let history = &mut memory.entry(key).or_default().history;
            match decision.recommendation {
                Some(r) => history.record(now_ms, r, auto.scale_down_stabilization.millis_i64()),
                None => history.clear(),
            }
        }
        let time = Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string();
        let last_scale_time = if decision.desired != current {
            Some(time.clone())
        } else {
            evaluation
                .status
                .as_ref()
                .and_then(|s| s.last_scale_time.clone())
        };
        evaluation.desired = decision.desired;
        evaluation.condition = AutoscalingCondition {
            active: !decision.refused(),
            reason: decision.kind.into(),
            message: decision.reason.clone(),
        };
        evaluation.status = Some(AutoscalerStatus {
            desired_parallelism: Some(decision.desired),
            decision: decision.kind.into(),
            reason: decision.reason.clone(),
            time,
            last_scale_time,
            demand: decision.demand.map(round2),
            capacity_per_worker: decision.capacity_per_worker.map(round2),
        });
        evaluation.decided = Some(decision);
        evaluation
    }
}

/// The parallelism a new pipeline starts with: its spec's, within the autoscaler's bounds.
fn initial(parallelism: i32, auto: &AutoscalingSpec) -> i32 {
    let upper = auto.max_parallelism.max(1);
    parallelism.clamp(auto.min_parallelism.clamp(1, upper), upper)
}

fn previous_condition(pipeline: &MarketingPipeline) -> Option<AutoscalingCondition> {
    let c = crate::conditions::condition(pipeline.status.as_ref(), CONDITION_AUTOSCALING)?;
    (c.reason != REASON_DISABLED).then(|| AutoscalingCondition {
        active: c.status == "True",
        reason: c.reason.clone(),
        message: c.message.clone(),
    })
}

fn key(pipeline: &MarketingPipeline) -> String {
    format!(
        "{}/{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any(),
        pipeline.uid().unwrap_or_default()
    )
}

/// A PromQL duration for `millis` (whole seconds, at least one).
fn promql_duration(millis: u64) -> String {
    format!("{}s", (millis / 1000).max(1))
}

/// Two decimals are plenty for records/s in status, and keep it from changing on noise alone.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
