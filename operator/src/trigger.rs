//! Triggers from owned objects: a watch of one owned kind that passes on only real changes.
//!
//! Every watch event of an owned object starts a reconcile of its pipeline. Events that change
//! nothing but bookkeeping (`resourceVersion`, `managedFields`) are dropped here: a relist after
//! a watch expiry re-sends every object, and an API server that records no-op applies (the test
//! emulator does) would otherwise feed each reconcile's own writes back as the next trigger.
//! Deletions always pass, so a deleted owned object is re-created at once.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Watches `api` and yields the objects that really changed or were deleted.
pub fn changes<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
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
