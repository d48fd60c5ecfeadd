//! A pattern's state in one task: each user's events within the pattern's reach of the
//! watermark, and the matches emitted that are not final yet.
//!
//! An event in order (at or after the watermark) is inserted; if it completes the pattern, its
//! user is woken when the watermark passes the match's time. An event behind the watermark
//! (late, within lateness) evaluates its user at once. Evaluating a user finds its matches
//! whose time is due now and was not final at the previous evaluation
//! ([`super::matcher::matches_between`]) and compares them with the ones emitted: a new match
//! is emitted with revision 0, a changed one with the next revision, one that no longer holds
//! is retracted. Whether an event completes the pattern is cached in the event, so a user's
//! evaluation costs what became due since the last one, not all of its events. A user whose
//! events all fell out of reach, with nothing pending, is dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::matcher::{matches_between, Ev, Found, Scratch, UNKNOWN};
use super::PatternPlan;
use crate::analytics::{AnalyticCapture, Emit, TaskAnalytic};
use crate::event::Event;
use crate::expr::Expr;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::{Refused, WindowStats};

/// Kind byte of a pattern's state in snapshots.
const PATTERN: u8 = 4;

/// A match emitted and not final yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    /// Completion time (with the user, the result's key).
    pub completion: i64,
    /// The match's time.
    pub fire: i64,
    /// Last revision emitted.
    pub revision: u32,
    /// The last revision was a retraction.
    pub retracted: bool,
    /// The values emitted (`steps` and `captured`), to tell a change.
    pub body: Box<str>,
    /// The captured fields (a JSON object), for actions.
    pub captured: Option<Box<str>>,
}

/// A match that became final (for `action` analytics).
#[derive(Clone, Debug, PartialEq)]
pub struct FinalMatch {
    /// The user.
    pub user: Box<str>,
    /// Completion time.
    pub completion: i64,
    /// The match's time.
    pub fire: i64,
    /// The captured fields (a JSON object).
    pub captured: Option<Box<str>>,
}

/// One user's state.
#[derive(Debug, Default)]
struct User {
    name: Box<str>,
    events: Vec<Ev>,
    /// Times of the events that cancel (`notFollowedBy`), sorted.
    absent: Vec<i64>,
    emitted: Vec<Emitted>,
    /// The watermark of the last evaluation: matches final then are settled.
    evaluated: i64,
    /// When the user must be evaluated next (`i64::MAX`: never).
    wake: i64,
}

/// A pattern's task state: see the module documentation.
#[derive(Debug)]
pub struct PatternState {
    plan: Arc<PatternPlan>,
    when: Vec<Vec<Option<Expr>>>,
    users: Vec<User>,
    ids: FxHashMap<Box<str>, u32>,
    free: Vec<u32>,
    /// Users to wake, by time; an entry whose time is not its user's `wake` is stale.
    queue: BinaryHeap<Reverse<(i64, u32)>>,
    found: Vec<Found>,
    scratch: Scratch,
    /// Events stored, over all users (for [`TaskAnalytic::stats`]).
    stored: usize,
    buf: String,
    /// For an action: matches are not emitted but collected here once final.
    finals: Option<Vec<FinalMatch>>,
}

impl PatternState {
    /// Empty state of `plan`.
    pub fn new(plan: Arc<PatternPlan>) -> Self {
        Self {
            when: plan.compile_conditions(),
            plan,
            users: Vec::new(),
            ids: FxHashMap::default(),
            free: Vec::new(),
            queue: BinaryHeap::new(),
            found: Vec::new(),
            scratch: Scratch::default(),
            stored: 0,
            buf: String::new(),
            finals: None,
        }
    }

    /// Empty state of `plan` that emits nothing and collects final matches instead
    /// ([`PatternState::take_finals`]).
    pub fn collecting(plan: Arc<PatternPlan>) -> Self {
        Self {
            finals: Some(Vec::new()),
            ..Self::new(plan)
        }
    }

    /// Whether `user` has events or matches in the state.
    pub fn holds(&self, user: &str) -> bool {
        self.ids.contains_key(user)
    }

    /// The matches that became final since the last call, in the order they did.
    pub fn take_finals(&mut self) -> Vec<FinalMatch> {
        self.finals.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn user_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let user = User {
            name: name.into(),
            evaluated: i64::MIN,
            wake: i64::MAX,
            ..User::default()
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.users[id as usize] = user;
                id
            }
            None => {
                self.users.push(user);
                (self.users.len() - 1) as u32
            }
        };
        self.ids.insert(name.into(), id);
        id
    }

    /// Wakes user `id` at `t` if that is earlier than planned.
    fn wake_at(&mut self, id: u32, t: i64) {
        let user = &mut self.users[id as usize];
        if t < user.wake {
            user.wake = t;
            self.queue.push(Reverse((t, id)));
        }
    }

    /// The time after which user `id`'s newest event is out of reach: it can be dropped.
    fn expiry(&self, id: u32) -> i64 {
        let newest = self.users[id as usize]
            .events
            .last()
            .map_or(i64::MIN, |e| e.time);
        newest
            .saturating_add(self.plan.lateness)
            .saturating_add(self.plan.rules.reach())
            .saturating_add(1)
    }

    /// Evaluates user `id` at watermark `wm`: emits what changed, drops what is final or out
    /// of reach, plans the next wake (or drops the user).
    fn evaluate(&mut self, id: u32, wm: i64, out: &mut Emit<'_>) {
        let plan = self.plan.clone();
        let lateness = plan.lateness;
        let mut found = std::mem::take(&mut self.found);
        let user = &mut self.users[id as usize];
        let quiet = self.finals.is_some();
        // Matches final at the previous evaluation are settled: look from there on.
        let from = user.evaluated.saturating_sub(lateness);
        let pending = matches_between(
            &mut user.events,
            &user.absent,
            &plan.rules,
            from,
            wm,
            &mut self.scratch,
            &mut found,
        );
        let mut next = pending.map_or(i64::MAX, |fire| fire.saturating_add(1));
        let mut seen = vec![false; user.emitted.len()];
        for m in &found {
            let body = render(&plan, &user.events, m);
            match user
                .emitted
                .iter()
                .position(|e| e.completion == m.completion)
            {
                Some(k) => {
                    seen[k] = true;
                    let e = &mut user.emitted[k];
                    if e.retracted || e.body != body || e.fire != m.fire {
                        e.revision += 1;
                        e.retracted = false;
                        e.fire = m.fire;
                        e.body = body;
                        e.captured.clone_from(&user.events[m.at].captured);
                        if !quiet {
                            emit(out, &user.name, e);
                        }
                    }
                }
                None => {
                    let e = Emitted {
                        completion: m.completion,
                        fire: m.fire,
                        revision: 0,
                        retracted: false,
                        body,
                        captured: user.events[m.at].captured.clone(),
                    };
                    if !quiet {
                        emit(out, &user.name, &e);
                    }
                    user.emitted.push(e);
                }
            }
        }
        for (k, e) in user.emitted.iter_mut().enumerate() {
            if k < seen.len() && !seen[k] && !e.retracted {
                e.revision += 1;
                e.retracted = true;
                if !quiet {
                    emit(out, &user.name, e);
                }
            }
        }
        self.found = found;
        let finals = &mut self.finals;
        user.emitted.retain(|e| {
            let keep = e.fire.saturating_add(lateness) >= wm;
            if let (false, false, Some(finals)) = (keep, e.retracted, finals.as_mut()) {
                finals.push(FinalMatch {
                    user: user.name.clone(),
                    completion: e.completion,
                    fire: e.fire,
                    captured: e.captured.clone(),
                });
            }
            keep
        });
        user.evaluated = wm;
        let horizon = wm
            .saturating_sub(lateness)
            .saturating_sub(plan.rules.reach());
        // Events out of reach are dropped once they are half of the user's (amortised: a
        // long run of a busy user is not moved at every evaluation); the searches skip them.
        let cut = user.events.partition_point(|e| e.time < horizon);
        if cut * 2 >= user.events.len() {
            self.stored -= cut;
            user.events.drain(..cut);
        }
        let cut = user.absent.partition_point(|t| *t < horizon);
        if cut * 2 >= user.absent.len() {
            user.absent.drain(..cut);
        }
        if user.events.is_empty() && user.emitted.is_empty() {
            let name = std::mem::take(&mut user.name);
            self.ids.remove(&name);
            self.users[id as usize] = User::default();
            self.free.push(id);
            return;
        }
        user.wake = i64::MAX;
        for e in &user.emitted {
            next = next.min(e.fire.saturating_add(lateness).saturating_add(1));
        }
        let expiry = self.expiry(id);
        self.wake_at(id, next.min(expiry));
    }
}

/// The values of match `m`: `"steps":[...],"captured":{...}` (without the leading comma).
fn render(plan: &PatternPlan, events: &[Ev], m: &Found) -> Box<str> {
    let mut v: Vec<u8> = Vec::with_capacity(96);
    v.extend_from_slice(b"\"steps\":[");
    for (k, (name, at)) in plan.step_names.iter().zip(&m.firsts).enumerate() {
        if k > 0 {
            v.push(b',');
        }
        v.extend_from_slice(b"{\"name\":");
        crate::result::write_json_str(&mut v, name);
        let at = chrono::DateTime::from_timestamp_millis(*at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let _ = write!(v, ",\"at\":\"{at}\"}}");
    }
    v.push(b']');
    if let Some(captured) = &events[m.at].captured {
        v.extend_from_slice(b",\"captured\":");
        v.extend_from_slice(captured.as_bytes());
    }
    String::from_utf8(v)
        .expect("JSON written from strings")
        .into_boxed_str()
}

/// Emits `e` of `user`.
fn emit(out: &mut Emit<'_>, user: &str, e: &Emitted) {
    out.result_with(Some(user), e.completion, e.fire, e.revision, |v| {
        if e.retracted {
            v.extend_from_slice(b",\"retracted\":true");
        } else {
            v.push(b',');
            v.extend_from_slice(e.body.as_bytes());
            v.extend_from_slice(b",\"retracted\":false");
        }
    });
}

impl TaskAnalytic for PatternState {
    fn add(
        &mut self,
        user: &str,
        input: usize,
        event: &Event<'_>,
        wm: i64,
        out: &mut Emit<'_>,
    ) -> bool {
        let class = self.plan.classify(input, event, &self.when);
        if class.steps == 0 && !class.absent {
            return true;
        }
        let t = event.time;
        if t.saturating_add(self.plan.lateness) < wm {
            return false;
        }
        let last = 1u8 << (self.plan.rules.times.len() - 1);
        let mut buf = std::mem::take(&mut self.buf);
        let same = self.plan.same_of(input, event, &mut buf);
        self.buf = buf;
        let captured = if class.steps & last != 0 {
            self.plan.captured(input, event)
        } else {
            None
        };
        let id = self.user_id(user);
        let within = self.plan.rules.within.unwrap_or(0);
        let state = &mut self.users[id as usize];
        let ev = Ev {
            time: t,
            steps: class.steps,
            absent: class.absent,
            same,
            captured,
            completes: UNKNOWN,
        };
        let events = &mut state.events;
        self.stored += 1;
        if events.last().is_none_or(|e| e.time <= t) {
            events.push(ev);
        } else {
            let at = events.partition_point(|e| e.time <= t);
            events.insert(at, ev);
            // The events that can look back at it complete differently now, maybe.
            for e in &mut events[at + 1..] {
                if e.time > t.saturating_add(within) {
                    break;
                }
                e.completes = UNKNOWN;
            }
        }
        if class.absent {
            let at = state.absent.partition_point(|x| *x <= t);
            state.absent.insert(at, t);
        }
        if t < wm {
            self.evaluate(id, wm, out);
        } else {
            let fire = if class.steps & last != 0 {
                self.plan.rules.fire(t).saturating_add(1)
            } else {
                i64::MAX
            };
            let expiry = self.expiry(id);
            self.wake_at(id, fire.min(expiry));
        }
        true
    }

    fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        // Users due, by wake time then name: the order does not depend on the ids, which a
        // restore assigns anew.
        let mut due: Vec<(i64, u32)> = Vec::new();
        while let Some(&Reverse((t, id))) = self.queue.peek() {
            if t > wm {
                break;
            }
            self.queue.pop();
            if self.users[id as usize].wake == t {
                self.users[id as usize].wake = i64::MAX;
                due.push((t, id));
            }
        }
        let users = &self.users;
        due.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| users[a.1 as usize].name.cmp(&users[b.1 as usize].name))
        });
        for (_, id) in due {
            self.evaluate(id, wm, out);
        }
    }

    fn capture(&self) -> Box<dyn AnalyticCapture> {
        let mut w = Writer::default();
        self.write(&mut w);
        Box::new(crate::analytics::Encoded(w.finish()))
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        if r.u8()? != PATTERN || r.u64()? != self.plan.rules.times.len() as u64 {
            return Err(Refused::Kind);
        }
        for _ in 0..r.len_prefix()? {
            let name = r.str()?.to_owned();
            let id = self.user_id(&name);
            let evaluated = r.i64()?;
            let wake = r.i64()?;
            let mut events = Vec::new();
            for _ in 0..r.len_prefix()? {
                let time = r.i64()?;
                let steps = r.u8()?;
                let absent = r.u8()? != 0;
                let same = r.u64()?;
                let captured = read_opt(r)?;
                events.push(Ev {
                    time,
                    steps,
                    absent,
                    same,
                    captured,
                    completes: UNKNOWN,
                });
            }
            let mut emitted = Vec::new();
            for _ in 0..r.len_prefix()? {
                emitted.push(Emitted {
                    completion: r.i64()?,
                    fire: r.i64()?,
                    revision: u32::try_from(r.u64()?)
                        .map_err(|_| DecodeError("a revision beyond u32"))?,
                    retracted: r.u8()? != 0,
                    body: r.str()?.into(),
                    captured: read_opt(r)?,
                });
            }
            let user = &mut self.users[id as usize];
            user.absent = events.iter().filter(|e| e.absent).map(|e| e.time).collect();
            self.stored += events.len();
            user.events = events;
            user.emitted = emitted;
            user.evaluated = evaluated;
            if wake != i64::MAX {
                self.wake_at(id, wake);
            }
        }
        Ok(())
    }

    fn stats(&self) -> WindowStats {
        // Kept in constant time (it is asked for often): events counted as they come and go,
        // names at an estimated 16 bytes, emitted matches not counted (few, short-lived);
        // "windows" are the wake-ups planned.
        let live = self.ids.len();
        WindowStats {
            keys: live,
            windows: self.queue.len(),
            bytes: self.stored * std::mem::size_of::<Ev>()
                + self.users.len() * std::mem::size_of::<User>()
                + live * (48 + 2 * 16),
        }
    }
}

impl PatternState {
    /// Appends the state: kind, step count, then each user (by name) with its evaluation
    /// watermark, wake time, events and emitted matches. Equal states encode equally.
    fn write(&self, w: &mut Writer) {
        w.u8(PATTERN);
        w.u64(self.plan.rules.times.len() as u64);
        let mut ids: Vec<(&Box<str>, &u32)> = self.ids.iter().collect();
        ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
        w.len_prefix(ids.len());
        for (name, &id) in ids {
            let user = &self.users[id as usize];
            w.str(name);
            w.i64(user.evaluated);
            w.i64(user.wake);
            w.len_prefix(user.events.len());
            for e in &user.events {
                w.i64(e.time);
                w.u8(e.steps);
                w.u8(u8::from(e.absent));
                w.u64(e.same);
                write_opt(w, e.captured.as_deref());
            }
            w.len_prefix(user.emitted.len());
            for e in &user.emitted {
                w.i64(e.completion);
                w.i64(e.fire);
                w.u64(u64::from(e.revision));
                w.u8(u8::from(e.retracted));
                w.str(&e.body);
                write_opt(w, e.captured.as_deref());
            }
        }
    }
}

/// Appends an optional string: a 0 byte, or a 1 byte and the string.
pub(crate) fn write_opt(w: &mut Writer, s: Option<&str>) {
    match s {
        None => w.u8(0),
        Some(s) => {
            w.u8(1);
            w.str(s);
        }
    }
}

/// Reads what [`write_opt`] wrote.
pub(crate) fn read_opt(r: &mut Reader<'_>) -> Result<Option<Box<str>>, DecodeError> {
    Ok(match r.u8()? {
        0 => None,
        _ => Some(r.str()?.into()),
    })
}
