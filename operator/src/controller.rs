//! Controller: wires [`crate::reconcile`] into kube-runtime: one watch of MarketingPipelines per
//! watched namespace (or one cluster-wide), watches of the owned kinds that map changes back to
//! their pipeline, the error policy (exponential backoff per pipeline) and graceful shutdown
//! (in-flight reconciles finish, no new ones start).
//!
//! The top of the reconcile stack: it imports [`crate::reconcile`] and [`crate::context`], and
//! nothing but [`mod@crate::run`] imports it.

use std::future::Future;
use std::sync::Arc;
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

use crate::context::Context;
use crate::message::error_chain;
use crate::names::{CONTROLLER_NAME, LABEL_MANAGED_BY};
use crate::reconcile::{reconcile, ReconcileError};
use crate::trigger;

/// First retry delay after a failed reconcile; doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Reconciles running at once per watched scope. Each makes about a dozen API calls; bounding
/// them keeps a burst (operator start with hundreds of pipelines, a relist) from flooding the
/// API server, and queued pipelines simply wait their turn.
const CONCURRENCY: u16 = 8;

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
