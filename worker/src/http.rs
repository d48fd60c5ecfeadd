//! The worker's HTTP endpoint (default `0.0.0.0:9102`): `/metrics`, `/healthz`, `/readyz` and the
//! snapshot hand-off `GET /v1/tasks/{t}/snapshot` (docs/design.md, delivery, checkpoints and recovery).
//!
//! Owns the routes; they read the [`Health`] the worker loop reports into (`crate::health`). The snapshot route answers 401 without the pipeline's bearer token
//! ([`SnapshotAuth`], from `$TIDEMARK_HANDOFF_TOKEN_FILE`); its refusals are counted in
//! `tidemark_handoff_refused_total`. Does not own the worker loop, checkpoints' contents or the fetching side
//! of a hand-off; it serves what the store holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::checkpoint::CheckpointStore;
pub use crate::handoff::auth::SnapshotAuth;
pub use crate::handoff::{CHECKPOINT_ID_HEADER, EPOCH_HEADER};
pub use crate::health::Health;
use crate::metrics::Metrics;

/// The default listen address.
pub const DEFAULT_ADDR: &str = "0.0.0.0:9102";
/// A heartbeat older than this turns `/healthz` red by default: several checkpoint intervals,
/// so one slow checkpoint or a long restore does not get the pod restarted.
pub const DEFAULT_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Failed to serve HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("failed to bind {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The server stopped with an error.
    #[error("failed to serve HTTP")]
    Serve(#[source] std::io::Error),
}

/// What the routes share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Metrics rendered by `/metrics`.
    pub metrics: Metrics,
    /// Heartbeat, readiness and running tasks.
    pub health: Arc<Health>,
    /// Checkpoints served by the snapshot route.
    pub store: CheckpointStore,
}

/// The routes, with the snapshot token from `$TIDEMARK_HANDOFF_TOKEN_FILE`.
pub fn router(state: AppState) -> Router {
    router_with(state, Arc::new(SnapshotAuth::from_env()))
}

/// The routes, with the snapshot route guarded by `auth`.
pub fn router_with(state: AppState, auth: Arc<SnapshotAuth>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/tasks/{task}/snapshot", get(snapshot))
        .layer(Extension(auth))
        .with_state(state)
}

/// Binds `addr` (port 0 picks a free port) and returns the bound address and the server future.
/// The future ends (after in-flight requests finish) once `shutdown` holds `true` or its sender
/// is dropped.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), HttpError>>,
    ),
    HttpError,
> {
    serve_with(addr, state, Arc::new(SnapshotAuth::from_env()), shutdown).await
}

/// Like [`serve`], with the snapshot route guarded by `auth`.
pub async fn serve_with(
    addr: SocketAddr,
    state: AppState,
    auth: Arc<SnapshotAuth>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), HttpError>>,
    ),
    HttpError,
> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|err| HttpError::Bind(addr, err))?;
    let bound = listener
        .local_addr()
        .map_err(|err| HttpError::Bind(addr, err))?;
    let signal = async move {
        // An error means the sender is gone: nobody can ask any more, so stop too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let server = axum::serve(listener, router_with(state, auth)).with_graceful_shutdown(signal);
    Ok((bound, async move { server.await.map_err(HttpError::Serve) }))
}

async fn metrics(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<SnapshotAuth>>,
) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&auth.render_metrics());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.health.liveness(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(age) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("worker loop silent for {:.1} s\n", age.as_secs_f64()),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

/// Query of the snapshot route.
#[derive(Debug, serde::Deserialize)]
struct SnapshotQuery {
    /// A checkpoint by id instead of the newest valid one (exactly-once hand-off: the checkpoint
    /// whose transaction committed can be the one before the newest).
    id: Option<u64>,
}

/// Serves the newest valid checkpoint file of a released task (or checkpoint `?id=N`), as
/// written (header included) so the receiver validates it with `Checkpoint::decode`. 401
/// without the pipeline's token, 409 while
/// the task runs here, 404 when there is none (or no valid one of that id), 500 when the store
/// cannot be read.
async fn snapshot(
    State(state): State<AppState>,
    Extension(auth): Extension<Arc<SnapshotAuth>>,
    headers: HeaderMap,
    Path(task): Path<u32>,
    Query(query): Query<SnapshotQuery>,
) -> Response {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(refusal) = auth.check(authorization) {
        // No peer address or token in the log: the counter and the reason are enough.
        tracing::warn!(task, reason = refusal.label(), "refused a snapshot request");
        return (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer")],
            "the snapshot hand-off needs this pipeline's bearer token\n",
        )
            .into_response();
    }
    if state.health.is_running(task) {
        return (
            StatusCode::CONFLICT,
            format!("task {task} still runs here; retry after its release\n"),
        )
            .into_response();
    }
    let store = state.store.clone();
    // Reading and checking a large file is blocking work: keep it off the async threads.
    let found = tokio::task::spawn_blocking(move || match query.id {
        None => store.latest_valid(task),
        Some(id) => match store.read(task, id) {
            Ok(checkpoint) => Ok(crate::checkpoint::Recovery {
                checkpoint,
                skipped: Vec::new(),
            }),
            Err(crate::checkpoint::CheckpointError::Corrupt { path, problem }) => {
                tracing::warn!(task, id, path = %path.display(), %problem,
                    "asked for a corrupt checkpoint");
                Ok(crate::checkpoint::Recovery::default())
            }
            Err(err) => Err(err),
        },
    })
    .await;
    let recovery = match found {
        Ok(Ok(recovery)) => recovery,
        Ok(Err(err)) => {
            tracing::warn!(task, error = %err, "failed to read checkpoints for a snapshot");
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response();
        }
        Err(err) => {
            tracing::warn!(task, error = %err, "snapshot reader panicked");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "snapshot reader failed\n",
            )
                .into_response();
        }
    };
    for skipped in &recovery.skipped {
        tracing::warn!(task, id = skipped.id, path = %skipped.path.display(),
            problem = %skipped.problem, "skipped a corrupt checkpoint while serving a snapshot");
    }
    match recovery.checkpoint {
        None => (
            StatusCode::NOT_FOUND,
            format!("no checkpoint of task {task}\n"),
        )
            .into_response(),
        Some(checkpoint) => {
            let id = checkpoint.meta.checkpoint_id.to_string();
            let epoch = checkpoint.meta.epoch.to_string();
            (
                [
                    (CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (HeaderName::from_static(CHECKPOINT_ID_HEADER), id),
                    (HeaderName::from_static(EPOCH_HEADER), epoch),
                ],
                checkpoint.into_bytes(),
            )
                .into_response()
        }
    }
}
