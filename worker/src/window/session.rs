//! Session windows: per key, activity separated by at least `gap` of event time.
//!
//! An event opens the interval `[t, t + gap)`; intervals that overlap merge into one session
//! (so two events exactly `gap` apart are in different sessions). A session's result is due when
//! the watermark passes its end. A late event that merges into a fired session within lateness
//! emits the merged session again with a higher revision; its window start may move earlier.

//!
//! Storage is flat, so that a snapshot's copy of it is a few memory copies: a key's sessions are a
//! linked list of `Copy` nodes in one chunked slab (the key entry holds the head and the count),
//! and timers are one binary heap of `(time, sequence, key)`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashSet;

use super::accumulate::{AccArena, AccLayout, DistinctSets, Value};
use super::codec::{DecodeError, Reader, Writer};
use super::keys::{KeyTable, KeysCapture, KeysSpare};
use super::slab::ChunkedVec;
#[cfg(test)]
use super::snapshot::SessionSnapshot;
use super::snapshot::{self as format, SessionsSnapshot, ABSENT};
use super::{Emission, EmitFn, Refused, WindowStats};
use crate::event::Event;

#[derive(Clone, Copy, Debug)]
struct Session {
    start: i64,
    end: i64,
    block: u32,
    /// Revision of the last emission, if the session was emitted.
    revision: Option<u32>,
    /// Whether the watermark has passed `end` (the session fired, emitted or suppressed).
    fired: bool,
}

/// A session in a key's list.
#[derive(Clone, Copy, Debug)]
struct Node {
    session: Session,
    /// Next node of the list, or the next free node.
    next: u32,
}

/// End of a list.
const NIL: u32 = u32::MAX;

/// A timer: at `.0`, look at key `.2`; `.1` orders timers of one time by when they were set.
type Timer = Reverse<(i64, u64, u32)>;

/// Session window state of one analytic in one task.
#[derive(Debug)]
pub struct SessionWindows {
    gap: i64,
    lateness: i64,
    layout: AccLayout,
    require: Vec<usize>,
    /// Keys; an entry's `block` is the first node of its sessions and `live` their number.
    keys: KeyTable,
    /// Sessions of all keys; each key's list is sorted by start, non-overlapping.
    nodes: ChunkedVec<Node>,
    /// Head of the free list of nodes.
    free: u32,
    /// Sessions in all.
    live: usize,
    arena: AccArena,
    distinct: DistinctSets,
    /// Keys with a session ending (fire) or leaving lateness (purge) at a time.
    timers: BinaryHeap<Timer>,
    /// Sequence number of the next timer.
    sequence: u64,
    /// The sessions of the key being worked on (taken out of its list and put back).
    list: Vec<Session>,
    /// Keys due at the time being processed.
    due: Vec<u32>,
    values: Vec<Value>,
    /// Buffers of the last capture, once it is dropped, for the next one.
    spare: Arc<Mutex<SessionSpare>>,
}

/// Buffers of a dropped [`SessionCapture`]. The next capture copies into them: memory that is
/// already mapped, so the copy costs no page faults (most of a capture's cost otherwise).
#[derive(Debug, Default)]
struct SessionSpare {
    keys: KeysSpare,
    nodes: Vec<Vec<Node>>,
    blocks: Vec<Box<[u64]>>,
    sets: Vec<FxHashSet<u64>>,
    timers: Vec<Timer>,
}

impl SessionWindows {
    /// Sessions closed by `gap` of inactivity, kept for `lateness` after their end.
    pub fn new(gap: i64, lateness: i64, layout: AccLayout, require: Vec<usize>) -> Self {
        Self {
            gap,
            lateness,
            arena: AccArena::new(layout.width),
            layout,
            require,
            keys: KeyTable::default(),
            nodes: ChunkedVec::default(),
            free: NIL,
            live: 0,
            distinct: DistinctSets::default(),
            timers: BinaryHeap::new(),
            sequence: 0,
            list: Vec::new(),
            due: Vec::new(),
            values: Vec::new(),
            spare: Arc::default(),
        }
    }

    /// Takes the sessions of key `k` out of the slab.
    fn load(&mut self, k: u32) -> Vec<Session> {
        let mut list = std::mem::take(&mut self.list);
        list.clear();
        let entry = self.keys.get(k);
        let (mut node, n) = (entry.block, entry.live);
        for _ in 0..n {
            let Node { session, next } = *self.nodes.get(node as usize);
            list.push(session);
            self.nodes.get_mut(node as usize).next = self.free;
            self.free = node;
            node = next;
        }
        self.live -= list.len();
        list
    }

    /// Makes `list` the sessions of key `k`.
    fn store(&mut self, k: u32, list: Vec<Session>) {
        let mut head = NIL;
        for &session in list.iter().rev() {
            let node = Node {
                session,
                next: head,
            };
            head = if self.free == NIL {
                u32::try_from(self.nodes.push(node)).expect("fewer than 2^32 sessions")
            } else {
                let index = self.free;
                self.free = self.nodes.get(index as usize).next;
                *self.nodes.get_mut(index as usize) = node;
                index
            };
        }
        self.live += list.len();
        let entry = self.keys.get_mut(k);
        entry.block = head;
        entry.live = list.len() as u32;
        self.list = list;
    }

    fn schedule(&mut self, time: i64, k: u32) {
        self.timers.push(Reverse((time, self.sequence, k)));
        self.sequence += 1;
    }

    /// Adds `event`; returns false if it is late (its session would be past lateness).
    pub fn add(
        &mut self,
        key: &str,
        source: usize,
        event: &Event<'_>,
        wm: i64,
        out: EmitFn<'_>,
    ) -> bool {
        let (start, end) = (event.time, event.time.saturating_add(self.gap));
        let k = self.keys.intern(key);
        let mut list = self.load(k);
        let first = list.partition_point(|s| s.end <= start);
        let last = list[first..].partition_point(|s| s.start < end) + first;
        if first == last && end.saturating_add(self.lateness) <= wm {
            let empty = list.is_empty();
            self.store(k, list);
            if empty {
                self.keys.release_if_idle(k);
            }
            return false;
        }
        let mut merged = if first == last {
            let block = self.arena.alloc(&self.layout);
            Session {
                start,
                end,
                block,
                revision: None,
                fired: false,
            }
        } else {
            let mut merged = list[first];
            for other in list.drain(first + 1..last) {
                let src = self.arena.get(other.block).to_vec();
                self.layout
                    .merge(self.arena.get_mut(merged.block), &src, &mut self.distinct);
                self.layout
                    .release(self.arena.get_mut(other.block), &mut self.distinct);
                self.arena.free(other.block);
                merged.start = merged.start.min(other.start);
                merged.end = merged.end.max(other.end);
                merged.revision = merged.revision.max(other.revision);
            }
            list.remove(first);
            merged.start = merged.start.min(start);
            merged.end = merged.end.max(end);
            merged
        };
        self.layout.update(
            self.arena.get_mut(merged.block),
            source,
            event,
            &mut self.distinct,
        );
        if merged.end <= wm {
            // Late update of a fired session within lateness: emit again now.
            let revision = merged.revision.map_or(0, |r| r + 1);
            if Self::emit_session(
                &self.layout,
                &self.require,
                &self.arena,
                &self.distinct,
                &mut self.values,
                self.keys.name(k),
                &merged,
                revision,
                out,
            ) {
                merged.revision = Some(revision);
            }
            if !merged.fired {
                merged.fired = true;
            }
            self.schedule(merged.end + self.lateness, k);
        } else {
            merged.fired = false;
            self.schedule(merged.end, k);
        }
        list.insert(first, merged);
        self.store(k, list);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_session(
        layout: &AccLayout,
        require: &[usize],
        arena: &AccArena,
        distinct: &DistinctSets,
        values: &mut Vec<Value>,
        key: &str,
        session: &Session,
        revision: u32,
        out: EmitFn<'_>,
    ) -> bool {
        let block = arena.get(session.block);
        if require
            .iter()
            .any(|&s| layout.side_count(block, s) == Some(0))
        {
            return false;
        }
        layout.finish(block, distinct, values);
        out(&Emission {
            key,
            start: session.start,
            end: session.end,
            revision,
            values,
            partial: None,
        });
        true
    }

    /// Emits sessions whose end the watermark passed and drops those past lateness. Timers of
    /// one time are handled together, in the order they were set; timers set meanwhile wait for
    /// the next round.
    pub fn advance(&mut self, wm: i64, out: EmitFn<'_>) {
        while let Some(&Reverse((time, _, _))) = self.timers.peek() {
            if time > wm {
                break;
            }
            let mut due = std::mem::take(&mut self.due);
            while let Some(&Reverse((t, _, k))) = self.timers.peek() {
                if t != time {
                    break;
                }
                self.timers.pop();
                due.push(k);
            }
            for &k in &due {
                self.process_key(k, wm, out);
            }
            due.clear();
            self.due = due;
        }
    }

    fn process_key(&mut self, k: u32, wm: i64, out: EmitFn<'_>) {
        if !self.keys.is_live(k) {
            return; // a timer of a key released since
        }
        let mut list = self.load(k);
        let mut i = 0;
        while i < list.len() {
            let mut session = list[i];
            if !session.fired && session.end <= wm {
                let revision = session.revision.map_or(0, |r| r + 1);
                if Self::emit_session(
                    &self.layout,
                    &self.require,
                    &self.arena,
                    &self.distinct,
                    &mut self.values,
                    self.keys.name(k),
                    &session,
                    revision,
                    out,
                ) {
                    session.revision = Some(revision);
                }
                session.fired = true;
                list[i] = session;
                if self.lateness > 0 {
                    self.schedule(session.end + self.lateness, k);
                }
            }
            if session.fired && session.end.saturating_add(self.lateness) <= wm {
                self.layout
                    .release(self.arena.get_mut(session.block), &mut self.distinct);
                self.arena.free(session.block);
                list.remove(i);
            } else {
                i += 1;
            }
        }
        let empty = list.is_empty();
        self.store(k, list);
        if empty {
            self.keys.release_if_idle(k);
        }
    }

    /// A copy of the state for a snapshot, taken between events: flat copies of the tables
    /// (see [`SessionCapture`]).
    pub fn capture(&self) -> SessionCapture {
        // Buffers the state no longer needs (it shrank) are freed here.
        let mut spare = std::mem::take(&mut *super::lock(&self.spare));
        let mut timers = std::mem::take(&mut spare.timers);
        timers.clear();
        timers.extend_from_slice(self.timers.as_slice());
        SessionCapture {
            layout: self.layout.clone(),
            keys: self.keys.capture(&mut spare.keys),
            nodes: self.nodes.copy_into(&mut spare.nodes),
            arena: self.arena.copy_into(&mut spare.blocks),
            distinct: self.distinct.copy_into(spare.sets),
            timers,
            spare: Arc::clone(&self.spare),
        }
    }

    /// Adds `sessions` (sorted, non-overlapping) as the sessions of new key `k`, each block
    /// written by `place`.
    fn restore_key(
        &mut self,
        k: u32,
        sessions: impl Iterator<Item = (Session, usize)>,
        mut place: impl FnMut(usize, &AccLayout, &mut [u64], &mut DistinctSets) -> bool,
    ) -> Result<(), Refused> {
        let mut list = std::mem::take(&mut self.list);
        list.clear();
        for (mut session, i) in sessions {
            if session.start > session.end || list.last().is_some_and(|p| p.end > session.start) {
                return Err(DecodeError("sessions overlap or are out of order").into());
            }
            session.block = self.arena.alloc(&self.layout);
            let block = self.arena.get_mut(session.block);
            if !place(i, &self.layout, block, &mut self.distinct) {
                return Err(Refused::Layout);
            }
            list.push(session);
        }
        self.store(k, list);
        Ok(())
    }

    /// Loads state written by [`SessionCapture::encode`] (after its kind byte) into this
    /// (empty) state.
    pub fn restore_from(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        if !format::read_layout(r, &self.layout)? {
            return Err(Refused::Layout);
        }
        let (keys, ids) = format::read_keys(r)?;
        self.keys = keys;
        let n = r.len_prefix()?;
        let positions = r.column(n)?;
        let starts = r.column(n)?;
        let ends = r.column(n)?;
        let revisions = r.column(n)?;
        let fired = r.column_bounded(n, 1)?;
        let blocks = format::read_blocks(r, &self.layout, n)?;
        let mut at = 0;
        while at < n {
            let p = positions[at];
            let count = positions[at..].iter().take_while(|&&q| q == p).count();
            if at > 0 && positions[at - 1] > p {
                return Err(DecodeError("sessions are not in key order").into());
            }
            let mut sessions = Vec::with_capacity(count);
            for i in at..at + count {
                let revision = match revisions[i] {
                    -1 => None,
                    rev => Some(u32::try_from(rev).map_err(|_| DecodeError("bad revision"))?),
                };
                let session = Session {
                    start: starts[i],
                    end: ends[i],
                    block: 0,
                    revision,
                    fired: fired[i] == 1,
                };
                sessions.push((session, i));
            }
            let k = format::id_at(&ids, p)?;
            self.restore_key(k, sessions.into_iter(), |i, _, block, distinct| {
                blocks.place(i, block, distinct);
                true
            })?;
            at += count;
        }
        let n = r.len_prefix()?;
        let times = r.column(n)?;
        let positions = r.column(n)?;
        self.timers.reserve(n);
        for (&t, &p) in times.iter().zip(&positions) {
            let k = format::id_at(&ids, p)?;
            self.schedule(t, k);
        }
        Ok(())
    }

    /// Sessions of key `k`, in order.
    #[cfg(test)]
    fn sessions_of(&self, k: u32) -> Vec<Session> {
        let mut out = Vec::new();
        walk(&self.nodes, self.keys.get(k), |s| out.push(*s));
        out
    }

    /// A logical copy of the state in snapshot format 1.
    #[cfg(test)]
    pub fn snapshot(&self) -> SessionsSnapshot {
        let mut position = rustc_hash::FxHashMap::default();
        let mut keys = Vec::with_capacity(self.keys.len());
        for (id, _) in self.keys.iter() {
            position.insert(id, keys.len() as u32);
            let sessions = self
                .sessions_of(id)
                .iter()
                .map(|s| SessionSnapshot {
                    start: s.start,
                    end: s.end,
                    revision: s.revision,
                    fired: s.fired,
                    block: self.layout.export(self.arena.get(s.block), &self.distinct),
                })
                .collect();
            keys.push((self.keys.name(id).to_string(), sessions));
        }
        let mut timers: Vec<(i64, Vec<u32>)> = Vec::new();
        let mut sorted = self.timers.clone().into_vec();
        sort_timers(&mut sorted);
        for &Reverse((t, _, id)) in &sorted {
            if timers.last().is_none_or(|(last, _)| *last != t) {
                timers.push((t, Vec::new()));
            }
            if let (Some(&p), Some((_, ids))) = (position.get(&id), timers.last_mut()) {
                ids.push(p);
            }
        }
        SessionsSnapshot { keys, timers }
    }

    /// Loads a format-1 `snapshot` into this (empty) state.
    pub fn restore(&mut self, snapshot: &SessionsSnapshot) -> Result<(), Refused> {
        let mut ids = Vec::with_capacity(snapshot.keys.len());
        for (name, sessions) in &snapshot.keys {
            let (k, new) = self.keys.intern_new(name);
            if !new {
                return Err(DecodeError("a key appears twice").into());
            }
            ids.push(k);
            let list = sessions.iter().enumerate().map(|(i, s)| {
                let session = Session {
                    start: s.start,
                    end: s.end,
                    block: 0,
                    revision: s.revision,
                    fired: s.fired,
                };
                (session, i)
            });
            self.restore_key(k, list, |i, layout, block, distinct| {
                layout.import(block, &sessions[i].block, distinct)
            })?;
        }
        for (t, positions) in &snapshot.timers {
            for p in positions {
                if let Some(&k) = ids.get(*p as usize) {
                    self.schedule(*t, k);
                }
            }
        }
        Ok(())
    }

    /// Sizes of the state.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            keys: self.keys.len(),
            windows: self.live,
            bytes: self.keys.bytes()
                + self.nodes.bytes()
                + self.arena.bytes()
                + self.timers.capacity() * std::mem::size_of::<Timer>(),
        }
    }
}

/// Calls `f` with each session of the key of `entry`, in order.
fn walk(nodes: &ChunkedVec<Node>, entry: &super::keys::KeyEntry, mut f: impl FnMut(&Session)) {
    let mut node = entry.block;
    for _ in 0..entry.live {
        let n = nodes.get(node as usize);
        f(&n.session);
        node = n.next;
    }
}

/// Sorts timers into the order they are handled (the heap's order).
fn sort_timers(timers: &mut [Timer]) {
    timers.sort_unstable_by(|a, b| b.cmp(a));
}

/// A copy of [`SessionWindows`] state for a snapshot: the key entries, session nodes and
/// accumulator chunks, and the timer heap, each copied as it is; [`SessionCapture::encode`]
/// then does the work per key, on any thread. Dropped, it leaves its buffers to the next
/// capture.
#[derive(Debug)]
pub struct SessionCapture {
    layout: AccLayout,
    keys: KeysCapture,
    nodes: ChunkedVec<Node>,
    arena: AccArena,
    distinct: DistinctSets,
    timers: Vec<Timer>,
    spare: Arc<Mutex<SessionSpare>>,
}

impl Drop for SessionCapture {
    fn drop(&mut self) {
        let spare = SessionSpare {
            keys: std::mem::take(&mut self.keys).into_spare(),
            nodes: std::mem::take(&mut self.nodes).into_chunks(),
            blocks: std::mem::replace(&mut self.arena, AccArena::new(1)).into_chunks(),
            sets: std::mem::take(&mut self.distinct).into_sets(),
            timers: std::mem::take(&mut self.timers),
        };
        *super::lock(&self.spare) = spare;
    }
}

impl SessionCapture {
    /// Writes the state in snapshot format 2 (see [`super::snapshot`]): layout, keys, sessions
    /// in key and start order with their blocks, and the timers in the order they are handled.
    pub fn encode(&mut self, w: &mut Writer) {
        w.u8(format::SESSIONS);
        format::write_layout(w, &self.layout);
        let position = format::write_keys(w, &self.keys);
        let (mut positions, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let (mut revisions, mut fired, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
        for (p, (_, _, entry)) in self.keys.iter().enumerate() {
            walk(&self.nodes, entry, |s| {
                positions.push(p as i64);
                starts.push(s.start);
                ends.push(s.end);
                revisions.push(s.revision.map_or(-1, i64::from));
                fired.push(i64::from(s.fired));
                blocks.push(s.block);
            });
        }
        w.len_prefix(blocks.len());
        for column in [&positions, &starts, &ends, &revisions, &fired] {
            w.column(column);
        }
        format::write_blocks(w, &self.layout, &self.arena, &self.distinct, &blocks);
        let (mut times, mut keys) = (Vec::new(), Vec::new());
        sort_timers(&mut self.timers);
        for &Reverse((t, _, id)) in &self.timers {
            if let Some(&p) = position.get(id as usize).filter(|&&p| p != ABSENT) {
                times.push(t);
                keys.push(i64::from(p));
            }
        }
        w.len_prefix(times.len());
        w.column(&times);
        w.column(&keys);
    }
}
