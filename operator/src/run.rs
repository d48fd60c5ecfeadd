//! The operator process: HTTP endpoint, leader election, controllers and graceful shutdown.
//!
//! Shutdown: SIGTERM or Ctrl-C flips one watch channel that every task listens to; controllers
//! let in-flight reconciles finish, the Lease is released, the HTTP server drains. Losing the
//! Lease ends the process with an error, so Kubernetes restarts it as a fresh candidate and two
//! replicas never reconcile at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;

use crate::autoscale::Autoscaler;
use crate::context::Context;
use crate::controller;
use crate::events::Recorder;
use crate::http;
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Metrics;
use crate::names::CONTROLLER_NAME;

/// Settings of a running operator.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Default worker image.
    pub worker_image: String,
    /// Address of `/metrics` and `/healthz`.
    pub metrics_addr: SocketAddr,
    /// Whether to elect a leader.
    pub leader_election: bool,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace; `None` means the client's default namespace.
    pub lease_namespace: Option<String>,
    /// Identity in the Lease and in events.
    pub identity: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Prometheus HTTP API of pipelines that name none (autoscaler, status lag).
    pub prometheus_url: Option<String>,
    /// Whether each pipeline gets a NetworkPolicy over its workers' port 9102.
    pub worker_network_policy: bool,
    /// Namespaces whose pods may reach the workers' port 9102 (Prometheus scraping).
    pub scrape_namespaces: Vec<String>,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster config.
    #[error("failed to create a Kubernetes client")]
    Client(#[source] kube::Error),
    /// The autoscaler's HTTP client could not be built.
    #[error("failed to set up the Prometheus client")]
    Prometheus(#[source] std::io::Error),
    /// Metrics could not be registered.
    #[error("failed to register metrics")]
    Metrics(#[source] prometheus::Error),
    /// The HTTP endpoint failed.
    #[error("failed to serve /metrics and /healthz")]
    Http(#[from] http::HttpError),
    /// Another replica took the Lease, or it could not be renewed.
    #[error("failed to keep the leader Lease")]
    LeadershipLost,
}

/// Runs the operator until SIGTERM/Ctrl-C (`Ok`) or a fatal error.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::new().map_err(RunError::Metrics)?);
    let autoscaler =
        Autoscaler::new(config.prometheus_url.clone()).map_err(RunError::Prometheus)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(stop_on_signal(stop_tx.clone()));

    let (addr, server) = http::serve(
        config.metrics_addr,
        metrics.clone(),
        stopped(stop_rx.clone()),
    )
    .await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    let server = tokio::spawn(server);

    let mut elector = config.leader_election.then(|| {
        let namespace = config
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Elector::new(
            client.clone(),
            LeaseConfig {
                name: config.lease_name.clone(),
                namespace,
                identity: config.identity.clone(),
                lease_duration: config.lease_duration,
            },
        )
    });
    let mut lost = false;
    if let Some(elector) = elector.as_mut() {
        tracing::info!(identity = %config.identity, lease = %elector.config().name, "waiting for the leader Lease");
        let mut stop = stop_rx.clone();
        if elector.acquire(&mut stop).await {
            tracing::info!(identity = %config.identity, "became leader");
            metrics.set_leader(true);
        }
    }
    if !*stop_rx.borrow() {
        let recorder = Recorder::new(client.clone(), CONTROLLER_NAME, &config.identity);
        let ctx = Arc::new(
            Context::new(
                client.clone(),
                recorder,
                metrics.clone(),
                config.worker_image.clone(),
                autoscaler,
            )
            .with_network_policy(
                config.worker_network_policy,
                config.scrape_namespaces.clone(),
            ),
        );
        let (controller_stop_tx, controller_stop_rx) = watch::channel(false);
        let controllers = {
            let namespaces = config.namespaces.clone();
            let stop = stopped(controller_stop_rx);
            tokio::spawn(async move { controller::run(ctx, &namespaces, stop).await })
        };
        match elector.as_mut() {
            Some(elector) => {
                let mut stop = stop_rx.clone();
                lost = !elector.hold(&mut stop).await;
            }
            None => {
                let mut stop = stop_rx.clone();
                let _ = stop.wait_for(|s| *s).await;
            }
        }
        let _ = controller_stop_tx.send(true);
        if lost {
            // Stop at once: another replica may already be reconciling.
            controllers.abort();
        } else if let Err(err) = controllers.await {
            tracing::warn!(error = %err, "controller task ended abnormally");
        }
    }
    if let Some(elector) = elector.as_ref().filter(|_| !lost) {
        if let Err(err) = elector.release().await {
            tracing::warn!(error = %crate::message::error_chain(&err), "Lease not released");
        }
        metrics.set_leader(false);
    }
    let _ = stop_tx.send(true);
    match server.await {
        Ok(result) => result?,
        Err(err) => tracing::warn!(error = %err, "HTTP task ended abnormally"),
    }
    if lost {
        return Err(RunError::LeadershipLost);
    }
    tracing::info!("stopped");
    Ok(())
}

/// A future that completes when `rx` turns true (or its sender is gone).
fn stopped(
    mut rx: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static {
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rx.wait_for(|s| *s).await;
        let _ = done_tx.send(());
    });
    futures::FutureExt::shared(async move {
        let _ = done_rx.await;
    })
}

async fn stop_on_signal(stop: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
}

/// The Lease identity when neither `--identity` nor `$POD_NAME` gives one: the host name
/// (`$HOSTNAME`, else the kernel's, which a shell does not always export) and the process id, so
/// two replicas on one host differ.
pub fn default_identity(env_host: Option<String>, kernel_host: Option<String>, pid: u32) -> String {
    let host = [env_host, kernel_host]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| crate::names::CONTROLLER_NAME.to_owned());
    format!("{host}-{pid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_identity_is_the_host_name_even_when_hostname_is_not_exported() {
        assert_eq!(
            default_identity(Some("op-7f9".into()), Some("other\n".into()), 42),
            "op-7f9-42"
        );
        assert_eq!(
            default_identity(None, Some("node-3\n".into()), 42),
            "node-3-42"
        );
        assert_eq!(
            default_identity(None, None, 42),
            format!("{}-42", crate::names::CONTROLLER_NAME)
        );
    }
}
