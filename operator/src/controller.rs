//! Controller: wires [`crate::reconcile`] into kube-runtime: one watch of MarketingPipelines per
//! watched namespace (or one cluster-wide), watches of the owned kinds that map changes back to
//! their pipeline, the error policy (exponential backoff per pipeline) and graceful shutdown
//! (in-flight reconciles finish, no new ones start).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, reflector, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Api, Client};
use tidemark_api::MarketingPipeline;

use crate::autoscale::Autoscaler;
use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::names::{CONTROLLER_NAME, LABEL_MANAGED_BY};
use crate::reconcile::{error_chain, reconcile, ReconcileError};
use crate::secret::HandoffSecrets;
use crate::trigger;

/// First retry delay after a failed reconcile; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Reconciles running at once per watched scope. Each makes about a dozen API calls; bounding
/// them keeps a burst (operator start with hundreds of pipelines, a relist) from flooding the
/// API server, and queued pipelines simply wait their turn.
const CONCURRENCY: u16 = 8;

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Default worker image.
    pub worker_image: String,
    /// The autoscaler of every pipeline.
    pub autoscaler: Autoscaler,
    /// Which pipelines' hand-off token Secrets exist.
    pub handoff_secrets: HandoffSecrets,
    /// Whether each pipeline gets a NetworkPolicy over its workers.
    pub network_policy: bool,
    /// Namespaces whose pods may reach the workers' port 9102 (Prometheus scraping).
    pub scrape_namespaces: Vec<String>,
    /// Consecutive failures per pipeline, for the backoff.
    failures: Mutex<HashMap<ObjectRef<MarketingPipeline>, u32>>,
}

impl Context {
    /// A context with no failures recorded.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        worker_image: String,
        autoscaler: Autoscaler,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            worker_image,
            autoscaler,
            handoff_secrets: HandoffSecrets::default(),
            network_policy: true,
            scrape_namespaces: Vec::new(),
            failures: Mutex::default(),
        }
    }

    /// With the workers' NetworkPolicy on or off, admitting `scrape_namespaces`.
    pub fn with_network_policy(mut self, enabled: bool, scrape_namespaces: Vec<String>) -> Self {
        self.network_policy = enabled;
        self.scrape_namespaces = scrape_namespaces;
        self
    }

    /// Counts a failure of `pipeline` and returns how many in a row.
    fn count_failure(&self, pipeline: &MarketingPipeline) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(ObjectRef::from(pipeline)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Clears the failure count of `pipeline` after a successful reconcile.
    pub fn forget_failures(&self, pipeline: &MarketingPipeline) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(&ObjectRef::from(pipeline));
    }
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, … capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

fn error_policy(
    pipeline: Arc<MarketingPipeline>,
    err: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let failures = ctx.count_failure(&pipeline);
    let delay = backoff(failures);
    tracing::warn!(
        pipeline = %ObjectRef::from(pipeline.as_ref()),
        error = %error_chain(err),
        failures,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Runs the controllers of `namespaces` (empty: all namespaces) until `shutdown` completes.
pub async fn run<S>(ctx: Arc<Context>, namespaces: &[String], shutdown: S)
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let controllers = scopes
        .into_iter()
        .map(|namespace| controller(ctx.clone(), namespace, shutdown.clone()));
    futures::future::join_all(controllers).await;
}

async fn controller<S>(ctx: Arc<Context>, namespace: Option<&str>, shutdown: S)
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = &ctx.client;
    // Only objects the operator manages: keeps the caches (and memory) small.
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}"));
    tracing::info!(
        namespace = namespace.unwrap_or("*"),
        "watching MarketingPipelines"
    );
    // The pipelines' own watch, with its errors handled per watch (see `trigger`): built here
    // instead of by `Controller::new`, whose watch errors would pause every trigger.
    let writer = reflector::store::Writer::<MarketingPipeline>::default();
    let reader = writer.as_reader();
    let pipelines = reflector(
        writer,
        trigger::resilient(watcher(
            api::<MarketingPipeline>(client, namespace),
            watcher::Config::default(),
        )),
    )
    .applied_objects();
    Controller::for_stream(pipelines, reader)
        .owns_stream(trigger::changes(
            api::<ConfigMap>(client, namespace),
            owned.clone(),
        ))
        .owns_stream(trigger::changes(
            api::<Service>(client, namespace),
            owned.clone(),
        ))
        .owns_stream(trigger::changes(
            api::<StatefulSet>(client, namespace),
            owned.clone(),
        ))
        .owns_stream(trigger::changes(
            api::<PodDisruptionBudget>(client, namespace),
            owned.clone(),
        ))
        .owns_stream(trigger::changes(
            api::<NetworkPolicy>(client, namespace),
            owned,
        ))
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _action)) => tracing::debug!(%object, "reconciled"),
                Err(err) => tracing::debug!(error = %error_chain(&err), "controller event"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        let delays: Vec<u64> = [1, 2, 3, 4, 9, 10, 40].map(|n| backoff(n).as_secs()).into();
        assert_eq!(delays, [1, 2, 4, 8, 256, 300, 300]);
    }
}
