//! The HTTP face of the emulator (axum): routing of kube-apiserver paths, fault injection,
//! content negotiation and `Status` error bodies. One fallback handler parses the path itself,
//! because Kubernetes paths (`/apis/{g}/{v}/namespaces/{ns}/{plural}/{name}/{sub}`) overlap in
//! ways a route table expresses poorly.
//!
//! The [`crate::registry::State`] sits behind one mutex: requests are short and tests are small,
//! and a single lock makes the event order of watches equal to the revision order.

mod objects;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::sync::{broadcast, watch as signal};

use crate::discovery;
use crate::error::ApiError;
use crate::registry::State;
use crate::store::Event;

/// How many events a live watcher may fall behind before it is told to relist (410). Large
/// enough for any burst a test makes; a stuck watcher costs at most this many `Arc`s.
const WATCH_BUFFER: usize = 1024;

/// Shared server state.
#[derive(Debug)]
pub struct App {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
    /// `true` while the API is "down" (fault injection) or shutting down: watches end.
    unavailable: signal::Sender<bool>,
    latency_ms: AtomicU64,
    /// `host:port` for discovery documents.
    address: String,
}

impl App {
    /// A fresh cluster state reachable at `address`, keeping `log_capacity` watch events.
    pub fn new(address: String, log_capacity: usize) -> Arc<Self> {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let (unavailable, _) = signal::channel(false);
        Arc::new(App {
            state: Mutex::new(State::new(log_capacity)),
            events,
            unavailable,
            latency_ms: AtomicU64::new(0),
            address,
        })
    }

    /// Locks the cluster state. A panic in another request cannot leave the store half-written
    /// (every mutation is a single `put`/`remove`), so a poisoned lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the events of the last mutation to live watches, under the same lock.
    fn publish(&self, state: &mut State) {
        for event in state.store.take_pending() {
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(event);
        }
    }

    /// Runs `f` on the state and publishes what it changed.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.lock();
        let out = f(&mut state);
        self.publish(&mut state);
        out
    }

    /// Turns the fault "API server down" on or off.
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.send_replace(down);
    }

    /// Whether requests currently fail with 503.
    pub fn is_unavailable(&self) -> bool {
        *self.unavailable.borrow()
    }

    /// Adds a delay before every response.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }
}

/// The router: everything goes through [`dispatch`].
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(dispatch).with_state(app)
}

/// A JSON response.
pub fn json(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A `Status` error response.
pub fn error(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, &err.to_status())
}

fn not_found() -> Response {
    error(&ApiError::NotFound(
        "the server could not find the requested resource".into(),
    ))
}

/// The parsed request every handler needs.
#[derive(Debug)]
pub struct Request {
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Bytes,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn dispatch(
    AxumState(app): AxumState<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if app.is_unavailable() {
        return error(&ApiError::Unavailable(
            "the API server is unavailable (fault injected)".into(),
        ));
    }
    let latency = app.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    tracing::debug!(%method, %uri, accept = ?headers.get(header::ACCEPT), content_type = ?headers.get(header::CONTENT_TYPE), "request");
    let req = Request {
        method,
        headers,
        query,
        body,
    };
    let path = uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if req.method != Method::GET && !matches!(segments.first(), Some(&"api" | &"apis")) {
        return error(&ApiError::MethodNotAllowed(format!(
            "{} is not allowed on {path}",
            req.method
        )));
    }
    let catalog = app.lock().catalog.clone();
    match segments.as_slice() {
        ["version"] => json(StatusCode::OK, &discovery::version()),
        ["healthz" | "livez" | "readyz"] => (StatusCode::OK, "ok").into_response(),
        ["openapi", "v2"] => json(StatusCode::OK, &discovery::openapi_v2()),
        ["openapi", "v3"] => json(StatusCode::OK, &discovery::openapi_v3_index(&catalog)),
        ["openapi", "v3", "api", "v1"] => json(
            StatusCode::OK,
            &discovery::openapi_v3_group(&catalog, "", "v1").unwrap_or_default(),
        ),
        ["openapi", "v3", "apis", g, v] => match discovery::openapi_v3_group(&catalog, g, v) {
            Some(doc) => json(StatusCode::OK, &doc),
            None => not_found(),
        },
        ["api"] if req.method == Method::GET => {
            json(StatusCode::OK, &discovery::core_versions(&app.address))
        }
        ["apis"] if req.method == Method::GET => json(StatusCode::OK, &discovery::groups(&catalog)),
        ["api", v] if req.method == Method::GET => {
            discovery_or_404(discovery::resources(&catalog, "", v))
        }
        ["apis", g] if req.method == Method::GET => discovery_or_404(discovery::group(&catalog, g)),
        ["apis", g, v] if req.method == Method::GET => {
            discovery_or_404(discovery::resources(&catalog, g, v))
        }
        ["api", v, rest @ ..] if !rest.is_empty() => {
            objects::handle(&app, &catalog, "", v, rest, req).await
        }
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            objects::handle(&app, &catalog, g, v, rest, req).await
        }
        _ => not_found(),
    }
}

fn discovery_or_404(doc: Option<Value>) -> Response {
    match doc {
        Some(doc) => json(StatusCode::OK, &doc),
        None => not_found(),
    }
}

/// Wraps a streaming body (watches).
pub fn stream(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
