//! An action's state in one task: the trigger pattern, evaluated for its final matches (the
//! candidates), and each user's recent conversions, from which a candidate's outcome is known
//! once the watermark passes its time plus the attribution window plus the lateness.
//! Candidates and outcomes go to the decisions ([`super::decide`]): in this task when it is the
//! only one, as partials for the global stage otherwise.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::io::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::decide::{Candidate, Decider, Group, Outcome};
use super::ActionPlan;
use crate::analytics::pattern::state::{write_opt, PatternState};
use crate::analytics::{AnalyticCapture, Emit, TaskAnalytic};
use crate::event::Event;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::{Refused, WindowStats};

/// Kind byte of an action's state in snapshots.
const ACTION: u8 = 5;
/// Block tags of the partials.
pub(super) const CANDIDATE: u8 = 1;
pub(super) const OUTCOME: u8 = 2;

/// An action's task state: see the module documentation.
#[derive(Debug)]
pub struct ActionState {
    plan: Arc<ActionPlan>,
    pattern: PatternState,
    /// Each user's conversions within reach: time and revenue, by time.
    conversions: FxHashMap<Box<str>, Vec<(i64, f64)>>,
    /// The conversions by time, to drop them when out of reach: first once no late
    /// completion can come before them, then (for users with pattern state or candidates)
    /// once no candidate can attribute them.
    expiry: BinaryHeap<Reverse<(i64, Box<str>)>>,
    /// Conversions kept for the candidates of their users, by time.
    attributable: BinaryHeap<Reverse<(i64, Box<str>)>>,
    /// Candidates waiting for their outcome, per user.
    attributing: FxHashMap<Box<str>, u32>,
    /// Candidates whose outcome is pending: (when it is known, user, time).
    waiting: BTreeSet<(i64, Box<str>, i64)>,
    /// The decisions, when this task is the only one.
    decider: Option<Decider>,
}

impl ActionState {
    /// Empty state of `plan`; `partials`: candidates and outcomes go to the global stage.
    pub fn new(plan: Arc<ActionPlan>, partials: bool) -> Self {
        Self {
            pattern: PatternState::collecting(plan.pattern.clone()),
            decider: (!partials).then(|| Decider::new(plan.clone())),
            plan,
            conversions: FxHashMap::default(),
            expiry: BinaryHeap::new(),
            attributable: BinaryHeap::new(),
            attributing: FxHashMap::default(),
            waiting: BTreeSet::new(),
        }
    }

    /// Hands on the pattern's new final matches, the outcomes now known, and (alone) decides.
    fn drain(&mut self, wm: i64, out: &mut Emit<'_>) {
        let plan = self.plan.clone();
        for m in self.pattern.take_finals() {
            let score = plan.score_by.as_ref().map_or(0.0, |field| {
                m.captured
                    .as_deref()
                    .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
                    .and_then(|v| v.get(field).and_then(serde_json::Value::as_f64))
                    .unwrap_or(0.0)
            });
            let c = Candidate {
                user: m.user,
                time: m.fire,
                completion: m.completion,
                score,
                captured: m.captured,
            };
            let due = c.time + plan.attribution + plan.lateness;
            self.waiting.insert((due, c.user.clone(), c.time));
            *self.attributing.entry(c.user.clone()).or_insert(0) += 1;
            match &mut self.decider {
                Some(d) => {
                    d.candidate(c);
                }
                None => {
                    let mut w = Writer::default();
                    w.u8(CANDIDATE);
                    w.i64(c.completion);
                    w.u64(c.score.to_bits());
                    write_opt(&mut w, c.captured.as_deref());
                    out.partial(&c.user, c.time, c.time, 0, &w.finish());
                }
            }
        }
        while let Some((due, _, _)) = self.waiting.first() {
            if *due > wm {
                break;
            }
            let (_, user, time) = self.waiting.pop_first().expect("a first candidate");
            let end = time + plan.attribution;
            let (mut converted, mut revenue) = (false, 0.0);
            for (t, r) in self.conversions.get(&user).map_or(&[][..], Vec::as_slice) {
                if (time..end).contains(t) {
                    converted = true;
                    revenue += r;
                }
            }
            if let Some(n) = self.attributing.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    self.attributing.remove(&user);
                }
            }
            let outcome = Outcome { converted, revenue };
            match &mut self.decider {
                Some(d) => {
                    d.outcome(&user, time, outcome);
                }
                None => {
                    let mut w = Writer::default();
                    w.u8(OUTCOME);
                    w.u8(u8::from(converted));
                    w.u64(revenue.to_bits());
                    out.partial(&user, time, time, 1, &w.finish());
                }
            }
        }
        // A conversion too old for a late completion before it matters only to users with
        // pattern state or candidates; past the attribution window, to nobody.
        let late = wm.saturating_sub(plan.lateness);
        while let Some(Reverse((t, _))) = self.expiry.peek() {
            if *t >= late {
                break;
            }
            let Reverse((t, user)) = self.expiry.pop().expect("a first conversion");
            if self.pattern.holds(&user) || self.attributing.contains_key(&user) {
                self.attributable.push(Reverse((t, user)));
            } else {
                self.forget(&user, late);
            }
        }
        let horizon = late.saturating_sub(plan.attribution);
        while let Some(Reverse((t, _))) = self.attributable.peek() {
            if *t >= horizon {
                break;
            }
            let Reverse((_, user)) = self.attributable.pop().expect("a first conversion");
            self.forget(&user, horizon);
        }
        if let Some(d) = &mut self.decider {
            d.advance(wm, out);
        }
    }
}

impl ActionState {
    /// Drops `user`'s conversions before `horizon`.
    fn forget(&mut self, user: &str, horizon: i64) {
        if let Some(list) = self.conversions.get_mut(user) {
            let cut = list.partition_point(|(t, _)| *t < horizon);
            list.drain(..cut);
            if list.is_empty() {
                self.conversions.remove(user);
            }
        }
    }
}

impl TaskAnalytic for ActionState {
    fn add(
        &mut self,
        user: &str,
        input: usize,
        event: &Event<'_>,
        wm: i64,
        out: &mut Emit<'_>,
    ) -> bool {
        let t = event.time;
        let converts = event
            .event_type
            .as_deref()
            .is_some_and(|ty| self.plan.conversion_types.iter().any(|c| c == ty));
        let mut accepted = true;
        if converts {
            if t.saturating_add(self.plan.lateness) < wm {
                accepted = false;
            } else {
                let revenue = self.plan.revenue[input]
                    .and_then(|f| f.read(event).as_f64())
                    .unwrap_or(0.0);
                let list = match self.conversions.get_mut(user) {
                    Some(list) => list,
                    None => self.conversions.entry(user.into()).or_default(),
                };
                let at = list.partition_point(|(x, _)| *x <= t);
                list.insert(at, (t, revenue));
                self.expiry.push(Reverse((t, user.into())));
            }
        }
        accepted &= self.pattern.add(user, input, event, wm, out);
        if t < wm {
            self.drain(wm, out);
        }
        accepted
    }

    fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        self.pattern.advance(wm, out);
        self.drain(wm, out);
    }

    fn capture(&self) -> Box<dyn AnalyticCapture> {
        let mut w = Writer::default();
        w.u8(ACTION);
        self.pattern.capture().encode(&mut w);
        let users: BTreeSet<&Box<str>> = self.conversions.keys().collect();
        w.len_prefix(users.len());
        for user in users {
            w.str(user);
            let list = &self.conversions[user];
            w.len_prefix(list.len());
            for (t, r) in list {
                w.i64(*t);
                w.u64(r.to_bits());
            }
        }
        w.len_prefix(self.waiting.len());
        for (due, user, time) in &self.waiting {
            w.i64(*due);
            w.str(user);
            w.i64(*time);
        }
        match &self.decider {
            Some(d) => {
                w.u8(1);
                d.write(&mut w);
            }
            None => w.u8(0),
        }
        Box::new(crate::analytics::Encoded(w.finish()))
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        if r.u8()? != ACTION {
            return Err(Refused::Kind);
        }
        self.pattern.restore(r)?;
        for _ in 0..r.len_prefix()? {
            let user: Box<str> = r.str()?.into();
            let list: Vec<(i64, f64)> = (0..r.len_prefix()?)
                .map(|_| Ok((r.i64()?, f64::from_bits(r.u64()?))))
                .collect::<Result<_, DecodeError>>()?;
            for (t, _) in &list {
                self.expiry.push(Reverse((*t, user.clone())));
            }
            self.conversions.insert(user, list);
        }
        for _ in 0..r.len_prefix()? {
            let due = r.i64()?;
            let user: Box<str> = r.str()?.into();
            *self.attributing.entry(user.clone()).or_insert(0) += 1;
            self.waiting.insert((due, user, r.i64()?));
        }
        match (r.u8()?, &mut self.decider) {
            (1, Some(d)) => d.read(r)?,
            (0, None) => {}
            _ => return Err(Refused::Kind),
        }
        Ok(())
    }

    fn decisions(&self) -> [u64; 4] {
        self.decider.as_ref().map_or([0; 4], |d| d.counts)
    }

    fn stats(&self) -> WindowStats {
        let p = self.pattern.stats();
        let conversions: usize = self
            .conversions
            .values()
            .map(|l| 16 * l.capacity() + 64)
            .sum::<usize>()
            + (self.expiry.len() + self.attributable.len()) * 40
            + self.attributing.len() * 48;
        let (waiting, reports) = self.decider.as_ref().map_or((0, 0), Decider::sizes);
        WindowStats {
            keys: p.keys,
            windows: p.windows + reports,
            bytes: p.bytes + conversions + (self.waiting.len() + waiting) * 96,
        }
    }
}

/// Writes the action record of candidate `c` decided `group` (sent or holdout).
pub(super) fn write_record(plan: &ActionPlan, c: &Candidate, group: Group, out: &mut Emit<'_>) {
    let id = plan.action_id(&c.user, c.time);
    let captured: serde_json::Map<String, serde_json::Value> = c
        .captured
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let fill = |template: &str| -> String {
        let mut s = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            s.push_str(&rest[..open]);
            let name = &rest[open + 1..open + close];
            match name {
                "user" => s.push_str(&c.user),
                "action_id" => s.push_str(&id),
                "pattern" => s.push_str(&plan.pattern.name),
                other => match captured.get(other) {
                    Some(serde_json::Value::String(v)) => s.push_str(v),
                    Some(serde_json::Value::Null) | None => {}
                    Some(v) => s.push_str(&v.to_string()),
                },
            }
            rest = &rest[open + close + 1..];
        }
        s.push_str(rest);
        s
    };
    let rfc = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    let expires = c.time.saturating_add(plan.validity);
    out.result_with(Some(&c.user), c.time, expires, 0, |v| {
        v.extend_from_slice(b",\"record\":\"action\",\"action_id\":");
        crate::result::write_json_str(v, &id);
        v.extend_from_slice(b",\"user\":");
        crate::result::write_json_str(v, &c.user);
        let _ = write!(
            v,
            ",\"action\":\"{}\",\"outcome\":\"{}\",\"pattern\":",
            plan.kind,
            group.as_str()
        );
        crate::result::write_json_str(v, &plan.pattern.name);
        let _ = write!(v, ",\"matched_at\":\"{}\",\"score\":", rfc(c.completion));
        if c.score.is_finite() {
            let _ = write!(v, "{}", c.score);
        } else {
            v.extend_from_slice(b"0");
        }
        v.extend_from_slice(b",\"reason\":");
        crate::result::write_json_str(v, &fill(&plan.reason));
        v.extend_from_slice(b",\"params\":{");
        if group == Group::Sent {
            for (k, (name, template)) in plan.params.iter().enumerate() {
                if k > 0 {
                    v.push(b',');
                }
                crate::result::write_json_str(v, name);
                v.push(b':');
                // A JSON number as written (`10`, `0.5`) stays one; `007` or `.5` stay text.
                let value = fill(template);
                match serde_json::from_str::<serde_json::Number>(&value) {
                    Ok(_) => v.extend_from_slice(value.as_bytes()),
                    Err(_) => crate::result::write_json_str(v, &value),
                }
            }
        }
        let _ = write!(v, "}},\"expires_at\":\"{}\"", rfc(expires));
    });
}
