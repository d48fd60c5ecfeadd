//! A funnel's state in one task: each user's recent events, the windows that may still get
//! entries, and the final windows still within lateness with each user's units in them.
//!
//! A window becomes final when the watermark passes its end plus the conversion window: then
//! every user's units in it are evaluated ([`super::unit::units`]) and tallied per breakdown
//! value, and each value's result (or, over several tasks, partial) is emitted with revision 0.
//! A final window's tallies are kept until the watermark passes its end plus the conversion
//! window plus the allowed lateness; a late event re-evaluates its user in every such window it
//! can count in — the user's units without the event and with it, both from the stored events
//! (an event in order cannot change a final window, so the stored events give the units
//! counted) — and each breakdown value whose tally changed is emitted again with the next
//! revision. Events are dropped once no kept window can use them.
//!
//! Checkpoints encode the state whole on the task thread (it is small next to keyed windows:
//! events of the users active within the conversion window and lateness).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::tally::Tally;
use super::unit::{units, Ev, UnitResult};
use super::FunnelPlan;
use crate::analytics::{AnalyticCapture, Emit, TaskAnalytic};
use crate::event::Event;
use crate::expr::Expr;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::{Refused, WindowStats};

/// Kind byte of a funnel's state in snapshots (keyed windows write 0 for panes, 1 for sessions):
/// final windows with each user's units (read, no longer written).
const FUNNEL_UNITS: u8 = 3;
/// Kind byte of a funnel's state with final windows as tallies.
const FUNNEL: u8 = 6;

/// A final window kept for late events.
#[derive(Debug, Default)]
struct Final {
    start: i64,
    /// Tallies by breakdown value id.
    tallies: BTreeMap<u32, Tally>,
    /// Last revision emitted per breakdown value id.
    revisions: BTreeMap<u32, u32>,
}

/// A funnel's task state: see the module documentation.
#[derive(Debug)]
pub struct FunnelState {
    plan: Arc<FunnelPlan>,
    when: Vec<Vec<Option<Expr>>>,
    partials: bool,
    /// Breakdown values by id, and ids by value.
    values: Vec<Box<str>>,
    ids: FxHashMap<Box<str>, u32>,
    /// Each user's stored events, by time (arrival order within a time).
    users: FxHashMap<Box<str>, Vec<Ev>>,
    /// Windows with an entry that are not final yet: end → start.
    open: BTreeMap<i64, i64>,
    /// Final windows within lateness, by end.
    finals: BTreeMap<i64, Final>,
    buf: String,
    /// Sizes kept as they change, so that [`TaskAnalytic::stats`] (asked for often) does not
    /// walk every user: events stored, bytes of user names.
    stored: usize,
    name_bytes: usize,
}

impl FunnelState {
    /// Empty state of `plan`; `partials`: emit partials for the global stage.
    pub fn new(plan: Arc<FunnelPlan>, partials: bool) -> Self {
        Self {
            when: plan.compile_conditions(),
            plan,
            partials,
            values: Vec::new(),
            ids: FxHashMap::default(),
            users: FxHashMap::default(),
            open: BTreeMap::new(),
            finals: BTreeMap::new(),
            buf: String::new(),
            stored: 0,
            name_bytes: 0,
        }
    }

    fn intern(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.into());
        self.ids.insert(value.into(), id);
        id
    }

    /// Emits breakdown value `id` of final window `end` with its next revision.
    fn emit(&mut self, end: i64, id: u32, out: &mut Emit<'_>) {
        let window = self.finals.get_mut(&end).expect("emitting a kept window");
        let revision = match window.revisions.get(&id) {
            Some(r) => r + 1,
            None => 0,
        };
        window.revisions.insert(id, revision);
        let empty = Tally::new(self.plan.rules.steps);
        let tally = window.tallies.get(&id).unwrap_or(&empty);
        let key = &self.values[id as usize];
        if self.partials {
            let mut w = Writer::default();
            tally.write(&mut w);
            out.partial(key, window.start, end, revision, &w.finish());
        } else {
            let names = &self.plan.step_names;
            out.result_with(Some(key), window.start, end, revision, |v| {
                tally.write_values(names, v)
            });
        }
    }

    /// Emits every breakdown value of final window `end`, in value order.
    fn emit_all(&mut self, end: i64, out: &mut Emit<'_>) {
        let mut ids: Vec<u32> = self.finals[&end].tallies.keys().copied().collect();
        ids.sort_unstable_by(|a, b| self.values[*a as usize].cmp(&self.values[*b as usize]));
        for id in ids {
            self.emit(end, id, out);
        }
    }

    /// Re-evaluates `user` in final window `end`, whose units there were `old` before a late
    /// event; emits the values whose tally changed.
    fn revise(&mut self, user: &str, end: i64, old: &[UnitResult], out: &mut Emit<'_>) {
        let window = self.finals.get_mut(&end).expect("revising a kept window");
        let events = self.users.get(user).map_or(&[][..], Vec::as_slice);
        let new = units(events, window.start, end, &self.plan.rules);
        if old == new {
            return;
        }
        let steps = self.plan.rules.steps;
        let mut changed: Vec<u32> = Vec::new();
        for unit in old {
            window
                .tallies
                .get_mut(&unit.breakdown)
                .expect("counted before")
                .remove(unit);
            changed.push(unit.breakdown);
        }
        for unit in &new {
            window
                .tallies
                .entry(unit.breakdown)
                .or_insert_with(|| Tally::new(steps))
                .add(unit);
            changed.push(unit.breakdown);
        }
        changed.sort_unstable_by(|a, b| self.values[*a as usize].cmp(&self.values[*b as usize]));
        changed.dedup();
        for id in changed {
            self.emit(end, id, out);
        }
    }

    /// Makes window `(start, end)` final: evaluates every user, emits each value.
    fn finalize(&mut self, start: i64, end: i64, wm: i64, out: &mut Emit<'_>) {
        let steps = self.plan.rules.steps;
        let mut window = Final {
            start,
            ..Final::default()
        };
        for events in self.users.values() {
            for unit in &units(events, start, end, &self.plan.rules) {
                window
                    .tallies
                    .entry(unit.breakdown)
                    .or_insert_with(|| Tally::new(steps))
                    .add(unit);
            }
        }
        self.finals.insert(end, window);
        self.emit_all(end, out);
        if self.plan.final_at(end).saturating_add(self.plan.lateness) <= wm {
            self.finals.remove(&end);
        }
    }

    /// Drops events no kept window can use, and users left without events.
    fn prune(&mut self, wm: i64) {
        let plan = &self.plan;
        let (stored, name_bytes) = (&mut self.stored, &mut self.name_bytes);
        self.users.retain(|user, events| {
            let gone = events.partition_point(|e| plan.is_late(e.time, wm));
            events.drain(..gone);
            *stored -= gone;
            if events.is_empty() {
                *name_bytes -= user.len();
            }
            !events.is_empty()
        });
    }
}

impl TaskAnalytic for FunnelState {
    fn add(
        &mut self,
        user: &str,
        input: usize,
        event: &Event<'_>,
        wm: i64,
        out: &mut Emit<'_>,
    ) -> bool {
        let (steps, excluded) = self.plan.classify(input, event, &self.when);
        if !self.plan.stores(steps, excluded) {
            return true;
        }
        let t = event.time;
        if self.plan.is_late(t, wm) {
            return false;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let value = self.plan.breakdown_value(input, event, &mut buf);
        let breakdown = self.intern(value);
        let session = self.plan.session_of(input, event, &mut buf);
        self.buf = buf;
        let ev = Ev {
            time: t,
            steps,
            excluded,
            breakdown,
            session,
        };
        // The final windows within lateness the event can count in, with the user's units
        // there before it (a late event; none for an event in order).
        let plan = self.plan.clone();
        let mut revisions: Vec<(i64, Vec<UnitResult>)> = Vec::new();
        for (start, end) in plan.windows_touched(t) {
            let done = plan.final_at(end);
            if done > wm || done.saturating_add(plan.lateness) <= wm {
                continue;
            }
            // A final window without entries yet gets one from a late step-1 event.
            let entry = steps & 1 != 0 && start <= t && t < end;
            if !entry && !self.finals.contains_key(&end) {
                continue;
            }
            let before = self.users.get(user).map_or(&[][..], Vec::as_slice);
            revisions.push((end, units(before, start, end, &plan.rules)));
            self.finals.entry(end).or_insert_with(|| Final {
                start,
                ..Final::default()
            });
        }
        self.stored += 1;
        let events = match self.users.get_mut(user) {
            Some(events) => events,
            None => {
                self.name_bytes += user.len();
                self.users
                    .entry(user.into())
                    .or_insert_with(|| Vec::with_capacity(4))
            }
        };
        // Most events come in time order: an append, no search of the user's run.
        if events.last().is_none_or(|e| e.time <= t) {
            events.push(ev);
        } else {
            let at = events.partition_point(|e| e.time <= t);
            events.insert(at, ev);
        }
        if steps & 1 != 0 {
            for (start, end) in plan.windows_touched(t) {
                if plan.final_at(end) > wm && start <= t && t < end {
                    self.open.insert(end, start);
                }
            }
        }
        for (end, old) in revisions {
            self.revise(user, end, &old, out);
        }
        true
    }

    fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        let mut changed = false;
        while let Some((&end, &start)) = self.open.first_key_value() {
            if self.plan.final_at(end) > wm {
                break;
            }
            self.open.remove(&end);
            self.finalize(start, end, wm, out);
            changed = true;
        }
        let plan = &self.plan;
        let before = self.finals.len();
        self.finals
            .retain(|&end, _| plan.final_at(end).saturating_add(plan.lateness) > wm);
        if changed || self.finals.len() != before {
            self.prune(wm);
        }
    }

    fn capture(&self) -> Box<dyn AnalyticCapture> {
        let mut w = Writer::default();
        self.write(&mut w);
        Box::new(crate::analytics::Encoded(w.finish()))
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        let with_units = match r.u8()? {
            FUNNEL => false,
            FUNNEL_UNITS => true,
            _ => return Err(Refused::Kind),
        };
        let plan = &self.plan;
        let shape = [plan.size, plan.slide, plan.offset, plan.rules.steps as i64];
        for expected in shape {
            if r.i64()? != expected {
                return Err(Refused::Kind);
            }
        }
        for _ in 0..r.len_prefix()? {
            let value = r.str()?.to_owned();
            self.intern(&value);
        }
        let id = |r: &mut Reader<'_>, n: usize| -> Result<u32, DecodeError> {
            let id = r.u64()?;
            if id as usize >= n {
                return Err(DecodeError("a breakdown value beyond the table"));
            }
            Ok(id as u32)
        };
        let n = self.values.len();
        for _ in 0..r.len_prefix()? {
            let user: Box<str> = r.str()?.into();
            let mut events = Vec::new();
            for _ in 0..r.len_prefix()? {
                events.push(Ev {
                    time: r.i64()?,
                    steps: r.u64()? as u16,
                    excluded: r.u64()? as u16,
                    breakdown: id(r, n)?,
                    session: r.u64()?,
                });
            }
            self.stored += events.len();
            self.name_bytes += user.len();
            self.users.insert(user, events);
        }
        for _ in 0..r.len_prefix()? {
            let end = r.i64()?;
            self.open.insert(end, r.i64()?);
        }
        let steps = self.plan.rules.steps;
        for _ in 0..r.len_prefix()? {
            let end = r.i64()?;
            let mut window = Final {
                start: r.i64()?,
                ..Final::default()
            };
            for _ in 0..r.len_prefix()? {
                let v = id(r, n)?;
                window.revisions.insert(v, r.u64()? as u32);
            }
            if !with_units {
                for _ in 0..r.len_prefix()? {
                    let v = id(r, n)?;
                    window.tallies.insert(v, Tally::read(r, steps)?);
                }
                self.finals.insert(end, window);
                continue;
            }
            // The older format: each user's units, tallied here.
            for _ in 0..r.len_prefix()? {
                let _user = r.str()?;
                for _ in 0..r.len_prefix()? {
                    let breakdown = id(r, n)?;
                    let reached = r.u8()?;
                    if reached == 0 || reached as usize > steps {
                        return Err(DecodeError("a unit past the last step").into());
                    }
                    let times = (1..reached).map(|_| r.i64()).collect::<Result<_, _>>()?;
                    let unit = UnitResult {
                        breakdown,
                        reached,
                        times,
                    };
                    window
                        .tallies
                        .entry(breakdown)
                        .or_insert_with(|| Tally::new(steps))
                        .add(&unit);
                }
            }
            self.finals.insert(end, window);
        }
        Ok(())
    }

    fn stats(&self) -> WindowStats {
        let (events, keys) = (self.stored, self.name_bytes);
        let tallies: usize = self.finals.values().map(|f| f.tallies.len()).sum();
        WindowStats {
            keys: self.users.len(),
            windows: self.open.len() + self.finals.len(),
            bytes: events * std::mem::size_of::<Ev>()
                + keys
                + self.users.len() * 48
                + tallies * (64 + 24 * self.plan.rules.steps),
        }
    }
}

impl FunnelState {
    /// Appends the state: kind, window shape, value table, users' events, open windows, then
    /// each final window with its revisions and tallies. Maps are written in sorted order, so
    /// equal states encode equally.
    fn write(&self, w: &mut Writer) {
        w.u8(FUNNEL);
        let plan = &self.plan;
        for v in [plan.size, plan.slide, plan.offset, plan.rules.steps as i64] {
            w.i64(v);
        }
        w.len_prefix(self.values.len());
        for v in &self.values {
            w.str(v);
        }
        let mut users: Vec<(&Box<str>, &Vec<Ev>)> = self.users.iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        w.len_prefix(users.len());
        for (user, events) in users {
            w.str(user);
            w.len_prefix(events.len());
            for e in events {
                w.i64(e.time);
                w.u64(u64::from(e.steps));
                w.u64(u64::from(e.excluded));
                w.u64(u64::from(e.breakdown));
                w.u64(e.session);
            }
        }
        w.len_prefix(self.open.len());
        for (end, start) in &self.open {
            w.i64(*end);
            w.i64(*start);
        }
        w.len_prefix(self.finals.len());
        for (end, window) in &self.finals {
            w.i64(*end);
            w.i64(window.start);
            w.len_prefix(window.revisions.len());
            for (id, revision) in &window.revisions {
                w.u64(u64::from(*id));
                w.u64(u64::from(*revision));
            }
            w.len_prefix(window.tallies.len());
            for (id, tally) in &window.tallies {
                w.u64(u64::from(*id));
                tally.write(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::unit::{Order, Rules, UnitKind};
    use super::*;

    fn plan() -> Arc<FunnelPlan> {
        Arc::new(FunnelPlan {
            rules: Rules {
                steps: 2,
                order: Order::Ordered,
                conversion: 60_000,
                exclusions: Vec::new(),
                last_touch: false,
                unit: UnitKind::User,
            },
            step_names: vec!["viewed".into(), "bought".into()],
            step_types: vec![vec!["view".into()], vec!["purchase".into()]],
            step_when: vec![None, None],
            extra_names: vec![Arc::from(Vec::<String>::new())],
            exclusion_types: Vec::new(),
            breakdown: None,
            session: None,
            size: 3_600_000,
            slide: 3_600_000,
            offset: 0,
            lateness: 600_000,
            store_all: false,
        })
    }

    #[test]
    fn a_snapshot_of_the_older_format_with_units_restores_as_tallies() {
        // Kind 3: shape, values ["all"], no users, no open windows, one final window ending
        // at 1 h with revision 0 of value 0 and user u1's unit: 2 steps, 5 s to the second.
        let mut w = Writer::default();
        w.u8(FUNNEL_UNITS);
        for v in [3_600_000, 3_600_000, 0, 2] {
            w.i64(v);
        }
        w.len_prefix(1);
        w.str("all");
        w.len_prefix(0);
        w.len_prefix(0);
        w.len_prefix(1);
        w.i64(3_600_000);
        w.i64(0);
        w.len_prefix(1);
        w.u64(0);
        w.u64(0);
        w.len_prefix(1);
        w.str("u1");
        w.len_prefix(1);
        w.u64(0);
        w.u8(2);
        w.i64(5_000);
        let old = w.finish();
        let mut state = FunnelState::new(plan(), false);
        state.restore(&mut Reader::new(&old)).unwrap();
        let mut want = Tally::new(2);
        want.add(&UnitResult {
            breakdown: 0,
            reached: 2,
            times: vec![5_000],
        });
        let window = &state.finals[&3_600_000];
        assert_eq!(window.tallies.get(&0), Some(&want));
        assert_eq!(window.revisions.get(&0), Some(&0));
        // Written again in the current format, it restores to the same state.
        let mut w = Writer::default();
        state.write(&mut w);
        let now = w.finish();
        assert_eq!(now[0], FUNNEL);
        let mut again = FunnelState::new(plan(), false);
        again.restore(&mut Reader::new(&now)).unwrap();
        let mut w = Writer::default();
        again.write(&mut w);
        assert_eq!(w.finish(), now);
    }
}
