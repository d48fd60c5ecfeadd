//! The in-memory object store: objects by (group, plural, namespace, name), the global
//! `resourceVersion` counter, and the bounded watch event log.
//!
//! Pure data, no I/O, no API semantics (validation, generation, finalizers live in
//! [`crate::registry`]). Every write bumps one global counter, like etcd's revision, so a
//! `resourceVersion` is comparable across all kinds.
//!
//! The event log is bounded to [`EVENT_LOG_CAPACITY`] events: a long test must not grow memory
//! without limit, and a real apiserver also forgets old revisions (etcd compaction, a watch cache of
//! limited size). A watch from a revision older than the log answers 410 Gone, which makes kube-runtime
//! relist — the same recovery path as on a real cluster.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

/// How many watch events are kept. Tests write hundreds of objects, not thousands; a watcher that
/// falls this far behind relists, as it would after etcd compaction.
pub const EVENT_LOG_CAPACITY: usize = 4096;

/// Where an object lives. Versions of one resource share a key (there is no conversion).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The wire name: `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers will see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The revision this change produced.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the change (for deletes: its last state with the delete's revision).
    pub object: Arc<Value>,
    /// The object before the change, so selector watches can turn a change into ADDED/DELETED.
    pub previous: Option<Arc<Value>>,
}

/// A watch asked for a revision the log no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct TooOld {
    /// The revision the client asked for.
    pub requested: u64,
    /// The oldest revision still servable.
    pub oldest: u64,
}

/// Objects, revision counter and event log.
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    revision: u64,
    log: VecDeque<Arc<Event>>,
    /// Revision of the newest event that fell out of the log: watches must start at or after it.
    compacted: u64,
    capacity: usize,
    /// Events not yet handed to live watchers (drained by the HTTP layer under the same lock).
    pending: Vec<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        Store::with_capacity(EVENT_LOG_CAPACITY)
    }
}

impl Store {
    /// A store whose event log keeps `capacity` events.
    pub fn with_capacity(capacity: usize) -> Self {
        Store {
            objects: BTreeMap::new(),
            revision: 0,
            log: VecDeque::new(),
            compacted: 0,
            capacity: capacity.max(1),
            pending: Vec::new(),
        }
    }

    /// The newest revision (what a list answers as its `resourceVersion`).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The object at `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `group/plural`, in one namespace or all; sorted by namespace then name.
    pub fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == group && k.plural == plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v)
            .collect()
    }

    /// Every stored object with its key (for garbage collection and namespace cleanup).
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Value)> {
        self.objects.iter()
    }

    /// Writes `object` at `key`, stamping a new `metadata.resourceVersion`; returns the stored copy.
    pub fn put(&mut self, key: ObjectKey, mut object: Value) -> Value {
        self.revision += 1;
        set_resource_version(&mut object, self.revision);
        let previous = self.objects.insert(key.clone(), object.clone());
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(kind, key, object.clone(), previous);
        object
    }

    /// Removes the object at `key`; the returned last state carries the delete's revision.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Value> {
        let previous = self.objects.remove(key)?;
        self.revision += 1;
        let mut object = previous.clone();
        set_resource_version(&mut object, self.revision);
        self.record(
            EventType::Deleted,
            key.clone(),
            object.clone(),
            Some(previous),
        );
        Some(object)
    }

    fn record(&mut self, kind: EventType, key: ObjectKey, object: Value, previous: Option<Value>) {
        let event = Arc::new(Event {
            rv: self.revision,
            kind,
            key,
            object: Arc::new(object),
            previous: previous.map(Arc::new),
        });
        if self.log.len() == self.capacity {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
        self.log.push_back(event.clone());
        self.pending.push(event);
    }

    /// Logged events after revision `rv`, or [`TooOld`] when some of them were already dropped.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, TooOld> {
        if rv < self.compacted {
            return Err(TooOld {
                requested: rv,
                oldest: self.compacted,
            });
        }
        Ok(self.log.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// What a restart of kube-apiserver does to watches: the new server's watch cache starts
    /// empty at the current revision (moved on by one, as etcd moves on while the server is
    /// down), so every watch resumed from an older `resourceVersion` answers 410 Gone and its
    /// client must relist. Objects are kept.
    pub fn restart(&mut self) {
        self.revision += 1;
        self.log.clear();
        self.compacted = self.revision;
    }

    /// Takes the events recorded since the last call, in revision order.
    pub fn take_pending(&mut self) -> Vec<Arc<Event>> {
        std::mem::take(&mut self.pending)
    }
}

fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn after_a_restart_every_watch_resumed_from_before_it_is_too_old() {
        let mut store = Store::default();
        store.put(key("a"), json!({"metadata": {"name": "a"}}));
        let seen = store.revision();
        store.restart();
        assert_eq!(
            store.events_since(seen).err(),
            Some(TooOld {
                requested: seen,
                oldest: seen + 1
            })
        );
        assert!(store.events_since(store.revision()).is_ok());
        assert!(store.get(&key("a")).is_some(), "objects survive a restart");
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            plural: "configmaps".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn every_write_gets_a_higher_resource_version() {
        let mut store = Store::default();
        let a = store.put(key("a"), json!({"metadata": {"name": "a"}}));
        let b = store.put(key("a"), json!({"metadata": {"name": "a"}}));
        let gone = store.remove(&key("a")).expect("object exists");
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        assert_eq!(gone["metadata"]["resourceVersion"], "3");
        let kinds: Vec<_> = store
            .events_since(0)
            .expect("log")
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [EventType::Added, EventType::Modified, EventType::Deleted]
        );
    }

    #[test]
    fn watching_from_a_compacted_revision_is_too_old() {
        let mut store = Store::with_capacity(2);
        for i in 0..5 {
            store.put(key(&format!("o{i}")), json!({"metadata": {}}));
        }
        assert_eq!(
            store.events_since(1).err(),
            Some(TooOld {
                requested: 1,
                oldest: 3
            })
        );
        let rvs: Vec<u64> = store
            .events_since(3)
            .expect("kept")
            .iter()
            .map(|e| e.rv)
            .collect();
        assert_eq!(rvs, [4, 5]);
    }
}
