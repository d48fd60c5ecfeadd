//! WATCH: newline-delimited `{"type": ..., "object": ...}` events from the event log and then live.
//!
//! Start points as in kube-apiserver: `resourceVersion` unset or `0` → synthetic ADDED for every
//! current object, then changes; `resourceVersion=N` → logged events after N, or one ERROR event
//! with a 410 `Expired` Status when N is older than the log (the client relists);
//! `sendInitialEvents=true` → ADDED for every object, then a BOOKMARK annotated
//! `k8s.io/initial-events-end` (streaming lists). Selector watches turn changes that enter or leave
//! the selection into ADDED/DELETED. A watch ends at `timeoutSeconds`, when the server goes
//! "unavailable" (fault injection) or shuts down, or when it falls more than the broadcast buffer
//! behind (then with a 410 ERROR event, so kube-runtime relists).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::{error, stream, App, Request};
use crate::error::ApiError;
use crate::registry::present;
use crate::resource::ResourceDef;
use crate::selector::Selector;
use crate::store::{Event, EventType};

/// Lines buffered between the watch task and the HTTP body: small, so a slow client pushes back
/// on its own task (which then lags on the broadcast and is told to relist) rather than on others.
const LINE_BUFFER: usize = 64;

/// Which events one watch wants.
struct Filter {
    def: ResourceDef,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
}

impl Filter {
    fn selects(&self, object: &Value) -> bool {
        self.labels.matches_labels(object) && self.fields.matches_fields(object)
    }

    /// The event this watch sees for a store change, if any.
    fn translate(&self, event: &Event) -> Option<Value> {
        if event.key.group != self.def.group || event.key.plural != self.def.plural {
            return None;
        }
        if self
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != event.key.namespace)
        {
            return None;
        }
        let now = self.selects(&event.object);
        let before = event.previous.as_deref().is_some_and(|p| self.selects(p));
        let kind = match event.kind {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if before => "DELETED",
            _ => return None,
        };
        Some(json!({"type": kind, "object": present(&self.def, &event.object)}))
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn expired(message: String) -> Value {
    json!({"type": "ERROR", "object": ApiError::Gone(message).to_status()})
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"apiVersion": def.api_version(), "kind": def.kind, "metadata": metadata}})
}

/// Starts a watch response.
pub fn watch(
    app: Arc<App>,
    def: ResourceDef,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
    req: &Request,
) -> Response {
    let rv_param = req.param("resourceVersion").unwrap_or_default().to_string();
    let send_initial = req.flag("sendInitialEvents");
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let rv = match rv_param.as_str() {
        "" | "0" => None,
        n => match n.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return error(&ApiError::BadRequest(format!(
                    "invalid resource version {n:?}"
                )))
            }
        },
    };
    let filter = Filter {
        def,
        namespace,
        labels,
        fields,
    };

    // Backlog and subscription are taken under one lock, so no event falls in between.
    let (backlog, start_rv, receiver) = {
        let state = app.lock();
        let receiver = app.events.subscribe();
        let current = state.store.revision();
        let backlog: Result<Vec<Value>, Value> = match rv {
            Some(n) if !send_initial => match state.store.events_since(n) {
                Ok(events) => Ok(events.iter().filter_map(|e| filter.translate(e)).collect()),
                Err(too_old) => Err(expired(too_old.to_string())),
            },
            _ => Ok(state
                .store
                .list(
                    &filter.def.group,
                    &filter.def.plural,
                    filter.namespace.as_deref(),
                )
                .into_iter()
                .filter(|o| filter.selects(o))
                .map(|o| json!({"type": "ADDED", "object": present(&filter.def, o)}))
                .collect()),
        };
        (backlog, current, receiver)
    };

    let (tx, rx) = mpsc::channel::<Bytes>(LINE_BUFFER);
    let unavailable = app.unavailable.subscribe();
    tokio::spawn(async move {
        let initial = match backlog {
            Ok(events) => events,
            Err(gone) => {
                let _ = tx.send(line(&gone)).await;
                return;
            }
        };
        for event in &initial {
            if tx.send(line(event)).await.is_err() {
                return;
            }
        }
        if send_initial
            && tx
                .send(line(&bookmark(&filter.def, start_rv, true)))
                .await
                .is_err()
        {
            return;
        }
        follow(filter, receiver, unavailable, tx, timeout).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    });
    stream(Body::from_stream(body))
}

/// Forwards live events until timeout, fault, shutdown, lag or client disconnect.
async fn follow(
    filter: Filter,
    mut receiver: broadcast::Receiver<Arc<Event>>,
    mut unavailable: tokio::sync::watch::Receiver<bool>,
    tx: mpsc::Sender<Bytes>,
    timeout: Option<Duration>,
) {
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(24 * 3600)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Ok(event) => {
                    if let Some(value) = filter.translate(&event) {
                        if tx.send(line(&value)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let _ = tx.send(line(&expired(format!("watch fell {n} events behind; relist")))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            changed = unavailable.changed() => {
                if changed.is_err() || *unavailable.borrow() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = tx.closed() => return,
        }
    }
}
