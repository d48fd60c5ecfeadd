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
}

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

/// The occurrences of the steps when `events[i]` completes the pattern: each step's first
/// occurrence's time, or `None`.
pub fn completion(events: &[Ev], i: usize, rules: &Rules) -> Option<Vec<i64>> {
    let n = rules.times.len();
    let e = &events[i];
    if e.steps & (1 << (n - 1)) == 0 {
        return None;
    }
    let lo = rules.within.map_or(i64::MIN, |w| e.time - w);
    let mut firsts = vec![0; n];
    // The last step: `e` and the latest earlier occurrences (of `e`'s value with sameValue).
    let mut boundary = i;
    let mut count = 1;
    let mut j = i;
    while count < rules.times[n - 1] {
        if j == 0 || events[j - 1].time < lo {
            return None;
        }
        j -= 1;
        let x = &events[j];
        if x.steps & (1 << (n - 1)) != 0 && (!rules.same[n - 1] || x.same == e.same) {
            count += 1;
            boundary = j;
        }
    }
    firsts[n - 1] = events[boundary].time;
    let mut counts: FxHashMap<u64, u32> = FxHashMap::default();
    for k in (0..n - 1).rev() {
        counts.clear();
        let mut found = None;
        let mut j = boundary;
        while j > 0 && events[j - 1].time >= lo {
            j -= 1;
            let x = &events[j];
            if x.steps & (1 << k) == 0 {
                continue;
            }
            let c = counts
                .entry(if rules.same[k] { x.same } else { 0 })
                .or_insert(0);
            *c += 1;
            if *c == rules.times[k] {
                found = Some(j);
                break;
            }
        }
        boundary = found?;
        firsts[k] = events[boundary].time;
    }
    Some(firsts)
}

/// Every match in `events` (sorted by time, ties in arrival order), in completion order.
pub fn matches(events: &[Ev], rules: &Rules, out: &mut Vec<Found>) {
    out.clear();
    let completions: Vec<(usize, Vec<i64>)> = (0..events.len())
        .filter_map(|i| completion(events, i, rules).map(|f| (i, f)))
        .collect();
    for (c, (i, firsts)) in completions.iter().enumerate() {
        let t = events[*i].time;
        let keep = match rules.absence {
            Some(a) => {
                let end = t.saturating_add(a);
                let from = events.partition_point(|x| x.time < t);
                let cancelled = events[from..]
                    .iter()
                    .take_while(|x| x.time < end)
                    .any(|x| x.absent);
                let replaced = completions
                    .get(c + 1)
                    .is_some_and(|(j, _)| events[*j].time < end);
                !cancelled && !replaced
            }
            None => {
                let w = rules.within.unwrap_or(1);
                c == 0 || t - events[completions[c - 1].0].time >= w
            }
        };
        if keep {
            out.push(Found {
                at: *i,
                completion: t,
                fire: rules.fire(t),
                firsts: firsts.clone(),
            });
        }
    }
}
