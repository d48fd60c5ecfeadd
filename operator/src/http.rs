//! The operator's HTTP endpoint: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`.
//! Standby replicas serve it too: they are healthy while they wait for the Lease.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

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

/// The routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Binds `addr` (port 0 picks a free port) and returns the bound address and the server future,
/// which ends when `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
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
    let server = axum::serve(listener, router(metrics)).with_graceful_shutdown(shutdown);
    Ok((bound, async move { server.await.map_err(HttpError::Serve) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_and_metrics_answer_on_a_loopback_port() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = serve("127.0.0.1:0".parse().expect("addr"), metrics, async {
            let _ = rx.await;
        })
        .await
        .expect("bind");
        let task = tokio::spawn(server);
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics")
            .await
            .contains("tidemark_operator_reconciles_total"));
        tx.send(()).expect("shutdown");
        task.await.expect("join").expect("clean shutdown");
    }
}
