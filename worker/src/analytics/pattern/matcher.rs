//! The pure rules of a pattern (`docs/patterns.md`): from a user's events in event-time order,
//! the completions (events of the last step whose steps are all found going back within
//! `within`) and, among them, the matches (with `notFollowedBy`: not cancelled and not replaced
//! within the quiet period; without: not within `within` of an earlier completion).

use rustc_hash::FxHashMap;

/// How a pattern matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Occurrences each step needs.
    pub times: Vec<u32>,
    /// Whether each step's occurrences share the `sameValue` field.
    pub same: Vec<bool>,
    /// Longest time from a match's first occurrence to its completion, ms.
    pub within: Option<i64>,
    /// The `notFollowedBy` quiet period, ms.
    pub absence: Option<i64>,
}

impl Rules {
    /// How far before a completion its own occurrences and the completions that can suppress
    /// it reach, plus the quiet period after it: the span of events a match depends on.
    pub fn reach(&self) -> i64 {
        2 * self.within.unwrap_or(1) + self.absence.unwrap_or(0)
    }

    /// The time a completion at `t` matches at.
    pub fn fire(&self, t: i64) -> i64 {
        t.saturating_add(self.absence.unwrap_or(0))
    }
}

/// One stored event of a user.
#[derive(Clone, Debug, PartialEq)]
pub struct Ev {
    /// Event time, ms.
    pub time: i64,
    /// Steps it matches, bit k for step k.
    pub steps: u8,
    /// It cancels (`notFollowedBy`).
    pub absent: bool,
    /// Hash of its `sameValue` field.
    pub same: u64,
    /// Its captured fields as a JSON object (events of the last step only).
    pub captured: Option<Box<str>>,
    /// Whether it completes the pattern, once known: [`UNKNOWN`], [`NO`] or [`YES`]. It depends
    /// on the events before it only, so it holds until an event is inserted before it.
    pub completes: u8,
}

/// [`Ev::completes`] not computed yet.
pub const UNKNOWN: u8 = 0;
/// [`Ev::completes`]: it does not complete the pattern.
pub const NO: u8 = 1;
/// [`Ev::completes`]: it completes the pattern.
pub const YES: u8 = 2;

/// A match found in a user's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Index of the completing event.
    pub at: usize,
    /// Completion time.
    pub completion: i64,
    /// The match's time: the completion's, or the end of its quiet period.
    pub fire: i64,
    /// Time of each step's first occurrence in the match.
    pub firsts: Vec<i64>,
}

/// Scratch space of the searches, reused between calls.
#[derive(Debug, Default)]
pub struct Scratch {
    counts: FxHashMap<u64, u32>,
}

/// The occurrences of the steps when `events[i]` completes the pattern: each step's first
/// occurrence's time (into `firsts`, when given), or false.
pub fn completion(
    events: &[Ev],
    i: usize,
    rules: &Rules,
    scratch: &mut Scratch,
    mut firsts: Option<&mut Vec<i64>>,
) -> bool {
    let n = rules.times.len();
    let e = &events[i];
    if e.steps & (1 << (n - 1)) == 0 {
        return false;
    }
    if let Some(f) = firsts.as_deref_mut() {
        f.clear();
        f.resize(n, 0);
    }
    let lo = rules.within.map_or(i64::MIN, |w| e.time - w);
    // The last step: `e` and the latest earlier occurrences (of `e`'s value with sameValue).
    let mut boundary = i;
    let mut count = 1;
    let mut j = i;
    while count < rules.times[n - 1] {
        if j == 0 || events[j - 1].time < lo {
            return false;
        }
        j -= 1;
        let x = &events[j];
        if x.steps & (1 << (n - 1)) != 0 && (!rules.same[n - 1] || x.same == e.same) {
            count += 1;
            boundary = j;
        }
    }
    if let Some(f) = firsts.as_deref_mut() {
        f[n - 1] = events[boundary].time;
    }
    for k in (0..n - 1).rev() {
        scratch.counts.clear();
        let mut found = None;
        let mut j = boundary;
        while j > 0 && events[j - 1].time >= lo {
            j -= 1;
            let x = &events[j];
            if x.steps & (1 << k) == 0 {
                continue;
            }
            let c = scratch
                .counts
                .entry(if rules.same[k] { x.same } else { 0 })
                .or_insert(0);
            *c += 1;
            if *c == rules.times[k] {
                found = Some(j);
                break;
            }
        }
        let Some(at) = found else {
            return false;
        };
        boundary = at;
        if let Some(f) = firsts.as_deref_mut() {
            f[k] = events[boundary].time;
        }
    }
    true
}

/// Whether `events[i]` completes the pattern, computed once and cached in the event.
pub fn completes(events: &mut [Ev], i: usize, rules: &Rules, scratch: &mut Scratch) -> bool {
    if events[i].completes == UNKNOWN {
        let yes = completion(events, i, rules, scratch, None);
        events[i].completes = if yes { YES } else { NO };
    }
    events[i].completes == YES
}

/// Whether the completion `events[i]` is a match: with `notFollowedBy`, no cancelling event
/// (times in `absent`, sorted) in `[t, t + A)` and no later completion before `t + A`; without,
/// no earlier completion less than `within` before it (at the same time without `within`).
fn is_match(
    events: &mut [Ev],
    absent: &[i64],
    i: usize,
    rules: &Rules,
    scratch: &mut Scratch,
) -> bool {
    let t = events[i].time;
    match rules.absence {
        Some(a) => {
            let end = t.saturating_add(a);
            let first = absent.partition_point(|x| *x < t);
            if absent.get(first).is_some_and(|x| *x < end) {
                return false;
            }
            let mut j = i + 1;
            while j < events.len() && events[j].time < end {
                if completes(events, j, rules, scratch) {
                    return false;
                }
                j += 1;
            }
            true
        }
        None => {
            let w = rules.within.unwrap_or(1);
            let mut j = i;
            while j > 0 && t - events[j - 1].time < w {
                j -= 1;
                if completes(events, j, rules, scratch) {
                    return false;
                }
            }
            true
        }
    }
}

/// The matches of `events` (sorted by time, ties in arrival order) whose time is in
/// `[from, to)`, in completion order, into `out`; returns the time of the first later
/// completion that the events so far do not rule out (a completion already cancelled or
/// replaced needs no wake-up), if any.
pub fn matches_between(
    events: &mut [Ev],
    absent: &[i64],
    rules: &Rules,
    from: i64,
    to: i64,
    scratch: &mut Scratch,
    out: &mut Vec<Found>,
) -> Option<i64> {
    out.clear();
    let shift = rules.absence.unwrap_or(0);
    let mut i = events.partition_point(|e| e.time.saturating_add(shift) < from);
    while i < events.len() {
        let t = events[i].time;
        let fire = rules.fire(t);
        if completes(events, i, rules, scratch) {
            if fire >= to {
                if is_match(events, absent, i, rules, scratch) {
                    return Some(fire);
                }
            } else if is_match(events, absent, i, rules, scratch) {
                let mut firsts = Vec::new();
                completion(events, i, rules, scratch, Some(&mut firsts));
                out.push(Found {
                    at: i,
                    completion: t,
                    fire,
                    firsts,
                });
            }
        }
        i += 1;
    }
    None
}
