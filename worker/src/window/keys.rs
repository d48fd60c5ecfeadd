//! Key interning: each live key string gets a small integer id, reused once the key holds no
//! state, so that state and timers refer to keys by 4 bytes and memory follows live keys, not
//! every key ever seen.
//!
//! Entries are plain `Copy` data in chunks: a key up to 23 bytes is stored inline in its entry,
//! a longer one in one byte arena shared by the table (compacted when released names make up
//! most of it). Copying the table for a snapshot ([`KeyTable::capture`]) is therefore a few
//! memory copies, with no work per key.

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::slab::ChunkedVec;

/// Longest key stored inline in its entry.
const INLINE: usize = 23;

/// [`KeyName::len`] of a name stored in the table's arena.
const SPILLED: u8 = u8::MAX;

/// A key: its bytes inline, or (when [`SPILLED`]) its offset (8 bytes) and length (4 bytes) in
/// the table's arena.
#[derive(Clone, Copy, Debug, Default)]
struct KeyName {
    bytes: [u8; INLINE],
    len: u8,
}

impl KeyName {
    /// The name of `key`, appending it to `arena` if it is too long to be inline.
    fn new(key: &str, arena: &mut String) -> Self {
        let mut name = KeyName::default();
        if key.len() <= INLINE {
            name.bytes[..key.len()].copy_from_slice(key.as_bytes());
            name.len = key.len() as u8;
        } else {
            name.bytes[..8].copy_from_slice(&(arena.len() as u64).to_le_bytes());
            let len = u32::try_from(key.len()).expect("keys are shorter than 4 GiB");
            name.bytes[8..12].copy_from_slice(&len.to_le_bytes());
            name.len = SPILLED;
            arena.push_str(key);
        }
        name
    }

    /// Where a spilled name is in the arena.
    fn span(&self) -> Option<(usize, usize)> {
        (self.len == SPILLED).then(|| {
            let mut offset = [0; 8];
            offset.copy_from_slice(&self.bytes[..8]);
            let mut len = [0; 4];
            len.copy_from_slice(&self.bytes[8..12]);
            (
                u64::from_le_bytes(offset) as usize,
                u32::from_le_bytes(len) as usize,
            )
        })
    }

    #[inline]
    fn as_bytes<'a>(&'a self, arena: &'a str) -> &'a [u8] {
        match self.span() {
            Some((offset, len)) => &arena.as_bytes()[offset..offset + len],
            None => &self.bytes[..usize::from(self.len)],
        }
    }

    fn as_str<'a>(&'a self, arena: &'a str) -> &'a str {
        match self.span() {
            Some((offset, len)) => &arena[offset..offset + len],
            None => std::str::from_utf8(&self.bytes[..usize::from(self.len)])
                .expect("inline names are copied from a str"),
        }
    }
}

/// Per-key bookkeeping shared by the window kinds.
#[derive(Clone, Copy, Debug)]
pub struct KeyEntry {
    /// The key.
    name: KeyName,
    /// Window end at which the key's next result is due, or [`NONE`].
    pub next_fire: i64,
    /// A pane stored inline (pane windows): its index, or [`NONE`]. Most keys have one open
    /// pane, which then needs no entry in the overflow table.
    pub slot: i64,
    /// Accumulator block of the inline pane (pane windows) or first node of the session list
    /// (session windows); on a released id, the next free id.
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
    /// Names longer than [`INLINE`], back to back.
    arena: String,
    /// Bytes of `arena` that belong to released names.
    garbage: usize,
}

impl KeyTable {
    /// A table with room for `keys` keys in its hash index.
    pub fn with_capacity(keys: usize) -> Self {
        Self {
            table: HashTable::with_capacity(keys),
            ..Self::default()
        }
    }

    /// The id of `key`, interning it if new.
    #[inline]
    pub fn intern(&mut self, key: &str) -> u32 {
        self.intern_new(key).0
    }

    /// The id of `key` and whether it was interned just now. One probe of the hash index
    /// either way; a new key is copied into its entry (or the arena), nothing is allocated
    /// per key.
    #[inline]
    pub fn intern_new(&mut self, key: &str) -> (u32, bool) {
        let hash = FxBuildHasher.hash_one(key.as_bytes());
        let Self {
            table,
            entries,
            free,
            arena,
            ..
        } = self;
        let names = (&*entries, arena.as_str());
        let found = table.entry(
            hash,
            |&id| names.0.get(id as usize).name.as_bytes(names.1) == key.as_bytes(),
            |&id| FxBuildHasher.hash_one(names.0.get(id as usize).name.as_bytes(names.1)),
        );
        let vacant = match found {
            Entry::Occupied(found) => return (*found.get(), false),
            Entry::Vacant(vacant) => vacant,
        };
        let entry = KeyEntry {
            name: KeyName::new(key, arena),
            next_fire: NONE,
            slot: NONE,
            block: 0,
            live: 0,
        };
        let id = match *free {
            Some(id) => {
                let next = entries.get(id as usize).block;
                *free = (next != u32::MAX).then_some(next);
                *entries.get_mut(id as usize) = entry;
                id
            }
            None => u32::try_from(entries.push(entry)).expect("fewer than 2^32 live keys"),
        };
        vacant.insert(id);
        (id, true)
    }

    /// The entry of live key `id`.
    #[inline]
    pub fn get(&self, id: u32) -> &KeyEntry {
        self.entries.get(id as usize)
    }

    /// The entry of live key `id`, mutable.
    #[inline]
    pub fn get_mut(&mut self, id: u32) -> &mut KeyEntry {
        self.entries.get_mut(id as usize)
    }

    /// Whether `id` is interned (not released).
    #[inline]
    pub fn is_live(&self, id: u32) -> bool {
        self.get(id).live != FREED
    }

    /// The key of live id `id`.
    #[inline]
    pub fn name(&self, id: u32) -> &str {
        self.get(id).name.as_str(&self.arena)
    }

    /// Forgets `id` if it holds no state and no result is due (`next_fire`); the caller keeps
    /// ids that other structures still refer to. Returns whether it forgot it.
    pub fn release_if_idle(&mut self, id: u32) -> bool {
        let entry = self.entries.get(id as usize);
        if entry.live != 0 || entry.next_fire != NONE {
            return false;
        }
        let hash = FxBuildHasher.hash_one(entry.name.as_bytes(&self.arena));
        if let Ok(found) = self.table.find_entry(hash, |&other| other == id) {
            found.remove();
        }
        let entry = self.entries.get_mut(id as usize);
        if let Some((_, len)) = entry.name.span() {
            self.garbage += len;
        }
        entry.name = KeyName::default();
        entry.live = FREED;
        entry.block = self.free.unwrap_or(u32::MAX);
        self.free = Some(id);
        if self.garbage > (self.arena.len() / 2).max(self.entries.len()) {
            self.compact();
        }
        true
    }

    /// Rewrites the arena without released names. Its cost is paid for by the garbage that
    /// triggers it (more than half the arena and more than one byte per entry).
    fn compact(&mut self) {
        let mut arena = String::with_capacity(self.arena.len() - self.garbage);
        for id in 0..self.entries.len() {
            let entry = self.entries.get_mut(id);
            if entry.live != FREED && entry.name.span().is_some() {
                entry.name = KeyName::new(entry.name.as_str(&self.arena), &mut arena);
            }
        }
        self.arena = arena;
        self.garbage = 0;
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
            + self.arena.capacity()
    }

    /// A copy of the entries and names, without the hash index: flat memory copies, into the
    /// buffers of `spare` where it has some.
    pub fn capture(&self, spare: &mut KeysSpare) -> KeysCapture {
        let mut arena = std::mem::take(&mut spare.arena);
        arena.clear();
        arena.push_str(&self.arena);
        KeysCapture {
            entries: self.entries.copy_into(&mut spare.entries),
            arena,
            len: self.len(),
        }
    }
}

/// Buffers of a dropped [`KeysCapture`], for the next one.
#[derive(Debug, Default)]
pub struct KeysSpare {
    entries: Vec<Vec<KeyEntry>>,
    arena: String,
}

/// A copy of a [`KeyTable`]'s entries and names, taken for a snapshot.
#[derive(Debug, Default)]
pub struct KeysCapture {
    entries: ChunkedVec<KeyEntry>,
    arena: String,
    len: usize,
}

impl KeysCapture {
    /// Gives the buffers back for the next capture.
    pub fn into_spare(self) -> KeysSpare {
        KeysSpare {
            entries: self.entries.into_chunks(),
            arena: self.arena,
        }
    }

    /// Ids, names (UTF-8) and entries of the keys interned at the capture, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8], &KeyEntry)> {
        (0..self.entries.len())
            .map(|id| (id as u32, self.entries.get(id)))
            .filter(|(_, e)| e.live != FREED)
            .map(|(id, e)| (id, e.name.as_bytes(&self.arena), e))
    }

    /// Keys interned at the capture.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there were none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest id.
    pub fn ids(&self) -> usize {
        self.entries.len()
    }

    /// The entry of id `id`.
    pub fn get(&self, id: u32) -> &KeyEntry {
        self.entries.get(id as usize)
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
        assert_eq!(keys.name(c), "carol");
        assert_ne!(keys.intern("alice"), c);
        assert_eq!(keys.name(b), "bob");
    }

    #[test]
    fn a_key_with_state_is_not_released() {
        let mut keys = KeyTable::default();
        let a = keys.intern("alice");
        keys.get_mut(a).live = 1;
        assert!(!keys.release_if_idle(a));
        assert_eq!(keys.intern("alice"), a);
    }

    #[test]
    fn long_keys_live_in_the_arena_which_is_compacted_as_they_are_released() {
        let mut keys = KeyTable::default();
        let long = |i: usize| format!("{i:08}-0000-4000-8000-{:012}", i * 7);
        assert_eq!(std::mem::size_of::<KeyEntry>(), 48);
        for i in 0..10_000 {
            let id = keys.intern(&long(i));
            assert_eq!(keys.name(id), long(i));
        }
        let short = keys.intern("é234567890123456789€");
        assert!(keys.get(short).name.span().is_none(), "23 bytes are inline");
        assert_eq!(keys.name(short), "é234567890123456789€");
        for i in 0..10_000 {
            if i % 10 != 0 {
                let id = keys.intern(&long(i));
                assert!(keys.release_if_idle(id));
            }
        }
        assert!(
            keys.arena.len() < 10_000 * 36 / 2,
            "compacted: {}",
            keys.arena.len()
        );
        for i in (0..10_000).step_by(10) {
            let (id, new) = keys.intern_new(&long(i));
            assert!(!new);
            assert_eq!(keys.name(id), long(i));
        }
        let capture = keys.capture(&mut KeysSpare::default());
        assert_eq!(capture.len(), 1_001);
        let names: Vec<&[u8]> = capture.iter().map(|(_, name, _)| name).collect();
        assert!(names.contains(&"é234567890123456789€".as_bytes()));
        assert!(names.contains(&long(9_990).as_bytes()));
    }
}
