//! Context: what every reconcile of every pipeline shares — the API client, the event recorder,
//! the metrics, the autoscaler, the hand-off token Secrets known to exist, the operator's
//! settings for owned objects — and the count of consecutive failures per pipeline that the
//! controller's backoff reads.
//!
//! It sits below both [`crate::reconcile`] (which uses it) and [`crate::controller`] (which
//! builds the error policy on it), so neither has to import the other for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;
use kube::Client;
use tidemark_api::MarketingPipeline;

use crate::autoscale::Autoscaler;
use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::secret::HandoffSecrets;

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
    pub(crate) fn count_failure(&self, pipeline: &MarketingPipeline) -> u32 {
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
