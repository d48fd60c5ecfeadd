//! Session windows: per key, activity separated by at least `gap` of event time.
//!
//! An event opens the interval `[t, t + gap)`; intervals that overlap merge into one session
//! (so two events exactly `gap` apart are in different sessions). A session's result is due when
//! the watermark passes its end. A late event that merges into a fired session within lateness
//! emits the merged session again with a higher revision; its window start may move earlier.

use std::collections::BTreeMap;

use super::accumulate::{AccArena, AccLayout, DistinctSets, Value};
use super::keys::KeyTable;
use super::snapshot::{SessionSnapshot, SessionsSnapshot};
use super::{Emission, EmitFn, WindowStats};
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

/// Session window state of one analytic in one task.
#[derive(Debug)]
pub struct SessionWindows {
    gap: i64,
    lateness: i64,
    layout: AccLayout,
    require: Vec<usize>,
    keys: KeyTable,
    /// Sessions per key id, sorted by start, non-overlapping.
    sessions: Vec<Vec<Session>>,
    arena: AccArena,
    distinct: DistinctSets,
    /// Time → keys with a session ending (fire) or leaving lateness (purge) then.
    timers: BTreeMap<i64, Vec<u32>>,
    values: Vec<Value>,
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
            sessions: Vec::new(),
            distinct: DistinctSets::default(),
            timers: BTreeMap::new(),
            values: Vec::new(),
        }
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
        let k = self.keys.intern(key) as usize;
        if self.sessions.len() <= k {
            self.sessions.resize_with(k + 1, Vec::new);
        }
        let list = &mut self.sessions[k];
        let first = list.partition_point(|s| s.end <= start);
        let last = list[first..].partition_point(|s| s.start < end) + first;
        if first == last && end.saturating_add(self.lateness) <= wm {
            if list.is_empty() {
                self.keys.release_if_idle(k as u32);
            }
            return false;
        }
        let mut merged = if first == last {
            let block = self.arena.alloc(&self.layout);
            self.keys.get_mut(k as u32).live += 1;
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
                self.keys.get_mut(k as u32).live -= 1;
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
                self.keys.get(k as u32).name.as_str(),
                &merged,
                revision,
                out,
            ) {
                merged.revision = Some(revision);
            }
            if !merged.fired {
                merged.fired = true;
            }
            self.timers
                .entry(merged.end + self.lateness)
                .or_default()
                .push(k as u32);
        } else {
            merged.fired = false;
            self.timers.entry(merged.end).or_default().push(k as u32);
        }
        self.sessions[k].insert(first, merged);
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
        });
        true
    }

    /// Emits sessions whose end the watermark passed and drops those past lateness.
    pub fn advance(&mut self, wm: i64, out: EmitFn<'_>) {
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > wm {
                break;
            }
            for k in entry.remove() {
                self.process_key(k, wm, out);
            }
        }
    }

    fn process_key(&mut self, k: u32, wm: i64, out: EmitFn<'_>) {
        let Some(list) = self.sessions.get_mut(k as usize) else {
            return;
        };
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
                    self.keys.get(k).name.as_str(),
                    &session,
                    revision,
                    out,
                ) {
                    session.revision = Some(revision);
                }
                session.fired = true;
                list[i] = session;
                if self.lateness > 0 {
                    self.timers
                        .entry(session.end + self.lateness)
                        .or_default()
                        .push(k);
                }
            }
            if session.fired && session.end.saturating_add(self.lateness) <= wm {
                self.layout
                    .release(self.arena.get_mut(session.block), &mut self.distinct);
                self.arena.free(session.block);
                list.remove(i);
                self.keys.get_mut(k).live -= 1;
            } else {
                i += 1;
            }
        }
        if list.is_empty() && self.keys.release_if_idle(k) {
            list.shrink_to_fit();
        }
    }

    /// A logical copy of the state (see [`super::snapshot`]).
    pub fn snapshot(&self) -> SessionsSnapshot {
        let mut position = rustc_hash::FxHashMap::default();
        let mut keys = Vec::with_capacity(self.keys.len());
        for (id, entry) in self.keys.iter() {
            position.insert(id, keys.len() as u32);
            let sessions = self
                .sessions
                .get(id as usize)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let sessions = sessions
                .iter()
                .map(|s| SessionSnapshot {
                    start: s.start,
                    end: s.end,
                    revision: s.revision,
                    fired: s.fired,
                    block: self.layout.export(self.arena.get(s.block), &self.distinct),
                })
                .collect();
            keys.push((entry.name.to_string(), sessions));
        }
        let timers = self
            .timers
            .iter()
            .map(|(&t, ids)| {
                (
                    t,
                    ids.iter()
                        .filter_map(|id| position.get(id).copied())
                        .collect(),
                )
            })
            .collect();
        SessionsSnapshot { keys, timers }
    }

    /// Loads `snapshot` into this (empty) state.
    pub fn restore(&mut self, snapshot: &SessionsSnapshot) {
        let mut ids = Vec::with_capacity(snapshot.keys.len());
        for (name, sessions) in &snapshot.keys {
            let k = self.keys.intern(name);
            ids.push(k);
            if self.sessions.len() <= k as usize {
                self.sessions.resize_with(k as usize + 1, Vec::new);
            }
            for s in sessions {
                let block = self.arena.alloc(&self.layout);
                self.layout
                    .import(self.arena.get_mut(block), &s.block, &mut self.distinct);
                self.sessions[k as usize].push(Session {
                    start: s.start,
                    end: s.end,
                    block,
                    revision: s.revision,
                    fired: s.fired,
                });
                self.keys.get_mut(k).live += 1;
            }
        }
        for (t, positions) in &snapshot.timers {
            self.timers.entry(*t).or_default().extend(
                positions
                    .iter()
                    .filter_map(|p| ids.get(*p as usize).copied()),
            );
        }
    }

    /// Sizes of the state.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            keys: self.keys.len(),
            windows: self.sessions.iter().map(Vec::len).sum(),
            bytes: self.keys.bytes()
                + self.sessions.capacity() * 24
                + self
                    .sessions
                    .iter()
                    .map(|s| s.capacity() * std::mem::size_of::<Session>())
                    .sum::<usize>()
                + self.arena.bytes()
                + self
                    .timers
                    .values()
                    .map(|v| v.capacity() * 4 + 32)
                    .sum::<usize>(),
        }
    }
}
