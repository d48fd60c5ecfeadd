//! Key interning: each live key string gets a small integer id, reused once the key holds no
//! state, so that state and timers refer to keys by 4 bytes and memory follows live keys, not
//! every key ever seen.

use std::hash::BuildHasher;

use compact_str::CompactString;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::slab::ChunkedVec;

/// Per-key bookkeeping shared by the window kinds.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The key (inline up to 24 bytes).
    pub name: CompactString,
    /// Window end at which the key's next result is due, or [`NONE`].
    pub next_fire: i64,
    /// A pane stored inline (pane windows): its index, or [`NONE`]. Most keys have one open
    /// pane, which then needs no entry in the overflow table.
    pub slot: i64,
    /// Accumulator block of the inline pane; on a released id, the next free id.
    pub block: u32,
    /// Panes or sessions holding state; [`FREED`] once the id is on the free list.
    pub live: u32,
}

/// "No time" marker for [`KeyEntry::next_fire`].
pub const NONE: i64 = i64::MIN;

/// Marker in [`KeyEntry::live`] of a released id, so that releasing twice is harmless.
const FREED: u32 = u32::MAX;

/// Interned keys.
#[derive(Debug, Default)]
pub struct KeyTable {
    table: HashTable<u32>,
    entries: ChunkedVec<KeyEntry>,
    /// Head of the free list of released ids, threaded through `KeyEntry::block`.
    free: Option<u32>,
    /// Bytes of key strings too long to be stored inline.
    heap_bytes: usize,
}

impl KeyTable {
    /// The id of `key`, interning it if new.
    pub fn intern(&mut self, key: &str) -> u32 {
        let hash = FxBuildHasher.hash_one(key);
        let entries = &self.entries;
        if let Some(&id) = self
            .table
            .find(hash, |&id| entries.get(id as usize).name == key)
        {
            return id;
        }
        let entry = KeyEntry {
            name: CompactString::new(key),
            next_fire: NONE,
            slot: NONE,
            block: 0,
            live: 0,
        };
        if entry.name.is_heap_allocated() {
            self.heap_bytes += entry.name.capacity();
        }
        let id = match self.free {
            Some(id) => {
                let next = self.entries.get(id as usize).block;
                self.free = (next != u32::MAX).then_some(next);
                *self.entries.get_mut(id as usize) = entry;
                id
            }
            None => u32::try_from(self.entries.push(entry)).expect("fewer than 2^32 live keys"),
        };
        let entries = &self.entries;
        self.table.insert_unique(hash, id, |&id| {
            FxBuildHasher.hash_one(entries.get(id as usize).name.as_str())
        });
        id
    }

    /// The entry of live key `id`.
    pub fn get(&self, id: u32) -> &KeyEntry {
        self.entries.get(id as usize)
    }

    /// The entry of live key `id`, mutable.
    pub fn get_mut(&mut self, id: u32) -> &mut KeyEntry {
        self.entries.get_mut(id as usize)
    }

    /// Forgets `id` if it holds no state and no result is due (`next_fire`); the caller keeps
    /// ids that other structures still refer to. Returns whether it forgot it.
    pub fn release_if_idle(&mut self, id: u32) -> bool {
        let entry = self.entries.get(id as usize);
        if entry.live != 0 || entry.next_fire != NONE {
            return false;
        }
        let hash = FxBuildHasher.hash_one(entry.name.as_str());
        if let Ok(found) = self.table.find_entry(hash, |&other| other == id) {
            found.remove();
        }
        let entry = self.entries.get_mut(id as usize);
        if entry.name.is_heap_allocated() {
            self.heap_bytes -= entry.name.capacity();
        }
        entry.name = CompactString::default();
        entry.live = FREED;
        entry.block = self.free.unwrap_or(u32::MAX);
        self.free = Some(id);
        true
    }

    /// Ids and entries of the interned keys, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &KeyEntry)> {
        (0..self.entries.len())
            .map(|id| (id as u32, self.entries.get(id)))
            .filter(|(_, e)| e.live != FREED)
    }

    /// Keys interned now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no key is interned.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes held, including key strings too long to be stored inline.
    pub fn bytes(&self) -> usize {
        self.entries.bytes()
            + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.heap_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_key_id_is_reused_and_the_old_name_no_longer_resolves() {
        let mut keys = KeyTable::default();
        let a = keys.intern("alice");
        assert_eq!(keys.intern("alice"), a);
        let b = keys.intern("bob");
        assert!(keys.release_if_idle(a));
        assert!(!keys.release_if_idle(a), "a second release does nothing");
        assert_eq!(keys.len(), 1);
        let c = keys.intern("carol");
        assert_eq!(c, a, "freed id is reused");
        assert_eq!(keys.get(c).name, "carol");
        assert_ne!(keys.intern("alice"), c);
        assert_eq!(keys.get(b).name, "bob");
    }

    #[test]
    fn a_key_with_state_is_not_released() {
        let mut keys = KeyTable::default();
        let a = keys.intern("alice");
        keys.get_mut(a).live = 1;
        assert!(!keys.release_if_idle(a));
        assert_eq!(keys.intern("alice"), a);
    }
}
