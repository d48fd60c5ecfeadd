//! Triggers from owned objects: a watch of one owned kind that passes on only real changes.
//!
//! Every watch event of an owned object starts a reconcile of its pipeline. Events that change
//! nothing but bookkeeping (`resourceVersion`, `managedFields`) are dropped here: a relist after
//! a watch expiry re-sends every object, and an API server that records no-op applies (the test
//! emulator does) would otherwise feed each reconcile's own writes back as the next trigger.
//! Deletions always pass, so a deleted owned object is re-created at once.
//!
//! Watch errors never reach the controller ([`resilient`]): kube-runtime pauses *all* of a
//! controller's triggers behind one shared backoff on any trigger error, so after an API server
//! restart — when every resumed watch answers 410 "too old resource version" — five watches'
//! errors put every watch, the pipelines' own included, to sleep for minutes. Here a 410 relists
//! at once (the watcher has already reset itself to relist; it only needs polling), and any
//! other error backs off for that one watch only, at most [`WATCH_BACKOFF_MAX`].

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::utils::{Backoff, StreamBackoff};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// First delay before a failed watch is retried; doubles per failure.
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest delay before a failed watch is retried: an outage is noticed within this time after
/// the API server is back (kube-runtime's default, 30 s, is kinder to an overloaded server but
/// leaves the operator blind for half a minute after every restart).
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(4);

/// Delays of one watch's retries: [`WATCH_BACKOFF_MIN`] doubling to [`WATCH_BACKOFF_MAX`],
/// from the start again after any event.
#[derive(Debug)]
struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: WATCH_BACKOFF_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(WATCH_BACKOFF_MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Whether `err` is the API server's 410 Gone: the watch's resourceVersion is too old (after a
/// restart or compaction) and the watcher has reset itself to relist.
pub fn is_gone(err: &watcher::Error) -> bool {
    matches!(err, watcher::Error::WatchError(status) if status.code == 410)
}

/// `events` of one watcher with its errors handled here instead of by the controller: a 410
/// lets the watcher relist at once; any other error is logged and delays this watch only (from
/// [`WATCH_BACKOFF_MIN`] doubling to [`WATCH_BACKOFF_MAX`]). The stream yields no `Err`.
pub fn resilient<K, S>(events: S) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    // A 410 becomes an `Ok(None)`: not an error to back off from, and nothing to pass on.
    let classified = events.map(|event| match event {
        Ok(event) => Ok(Some(event)),
        Err(err) if is_gone(&err) => {
            tracing::debug!(error = %err, "watch expired; relisting");
            Ok(None)
        }
        Err(err) => Err(err),
    });
    StreamBackoff::new(classified, WatchBackoff::default()).filter_map(|event| {
        futures::future::ready(match event {
            Ok(event) => event.map(Ok),
            Err(err) => {
                tracing::warn!(error = %crate::message::error_chain(&err), "watch failed; retrying");
                None
            }
        })
    })
}

/// Watches `api` and yields the objects that really changed or were deleted.
pub fn changes<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    resilient(watcher(api, config)).filter_map(move |event| {
        let passed = match event {
            Ok(Event::Apply(object) | Event::InitApply(object)) => {
                let key = object.uid().unwrap_or_else(|| object.name_any());
                let print = fingerprint(&object);
                (seen.insert(key, print) != Some(print)).then_some(Ok(object))
            }
            Ok(Event::Delete(object)) => {
                seen.remove(&object.uid().unwrap_or_else(|| object.name_any()));
                Some(Ok(object))
            }
            Ok(Event::Init | Event::InitDone) => None,
            Err(err) => Some(Err(err)),
        };
        futures::future::ready(passed)
    })
}

/// Hash of the object without the fields every write changes.
pub fn fingerprint<K: Serialize>(object: &K) -> u64 {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    let mut hasher = DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn watch_error(code: u16) -> watcher::Error {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({"code": code, "message": "m"}))
                .expect("status");
        watcher::Error::WatchError(Box::new(status))
    }

    #[tokio::test(start_paused = true)]
    async fn a_410_relists_at_once_and_other_errors_delay_only_this_watch_briefly() {
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Err(watch_error(410)),
            Ok(Event::InitDone),
            Err(watch_error(500)),
            Ok(Event::Init),
        ]);
        let mut out = Box::pin(resilient::<ConfigMap, _>(events));
        let start = tokio::time::Instant::now();
        assert!(matches!(out.next().await, Some(Ok(Event::Init))));
        assert!(matches!(out.next().await, Some(Ok(Event::InitDone))));
        assert_eq!(start.elapsed(), Duration::ZERO, "a 410 costs no backoff");
        assert!(matches!(out.next().await, Some(Ok(Event::Init))));
        let waited = start.elapsed();
        assert!(
            (WATCH_BACKOFF_MIN..=WATCH_BACKOFF_MAX).contains(&waited),
            "another error backs off briefly: {waited:?}"
        );
        assert!(out.next().await.is_none(), "no error is passed on");
    }

    fn config_map(yaml: &str) -> ConfigMap {
        serde_saphyr::from_str(yaml).expect("yaml")
    }

    #[test]
    fn bookkeeping_changes_keep_the_fingerprint_and_data_changes_move_it() {
        let a = config_map("metadata: { name: x, resourceVersion: '1' }\ndata: { k: v }");
        let b = config_map(
            "metadata: { name: x, resourceVersion: '2', managedFields: [{ manager: m }] }\ndata: { k: v }",
        );
        let c = config_map("metadata: { name: x, resourceVersion: '3' }\ndata: { k: w }");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
