//! The oracle of the pattern tests, written from `docs/patterns.md` (not from the engine):
//! which events one task accepts against its watermark, and the matches they make, brute force.

use super::*;

/// A match as results report it: window end, `(step, first occurrence)`, captured fields.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Match {
    pub(super) end: i64,
    pub(super) steps: Vec<(String, i64)>,
    pub(super) captured: Value,
}

/// Matches by `(user, completion time)`.
pub(super) type Matches = BTreeMap<(String, i64), Match>;

pub(super) fn step_matches(s: &Step, e: &Ev) -> bool {
    e.kind == s.kind && (!s.pricey || e.price > 50.0)
}

pub(super) fn cancels(c: &Config, e: &Ev) -> bool {
    c.absence && e.kind == "purchase"
}

/// The events the task keeps, in arrival order, and the number dead-lettered as late: an event
/// that matches a step or `notFollowedBy` is late when its time plus the lateness is below the
/// watermark it arrives at (newest time so far minus 10 s); other events are ignored.
pub(super) fn admitted(c: &Config, events: &[Ev]) -> (Vec<Ev>, usize) {
    let steps = c.steps();
    let lateness = c.lateness_min * MIN;
    let mut wm: Option<i64> = None;
    let mut kept = Vec::new();
    let mut late = 0;
    for e in events {
        if steps.iter().any(|s| step_matches(s, e)) || cancels(c, e) {
            if wm.is_some_and(|w| e.time + lateness < w) {
                late += 1;
            } else {
                kept.push(e.clone());
            }
        }
        let candidate = e.time - OUT_OF_ORDER;
        wm = Some(wm.map_or(candidate, |w| w.max(candidate)));
    }
    (kept, late)
}

/// Whether `mine[i]` completes the pattern: going back from it, each step takes its latest
/// `times` occurrences (the last step's counting `mine[i]`) before the earliest occurrence of
/// the step after it, all at most `within` before `mine[i]`. With sameValue, the last step's
/// value is `mine[i]`'s; an earlier step tries every value and takes the one that completes
/// first going back (the latest `times`-th latest occurrence). Returns each step's first
/// occurrence.
pub(super) fn completion(
    steps: &[Step],
    within: Option<i64>,
    mine: &[&Ev],
    i: usize,
) -> Option<Vec<i64>> {
    let e = mine[i];
    let last = steps.len() - 1;
    if !step_matches(&steps[last], e) {
        return None;
    }
    let near = |x: &Ev| within.is_none_or(|w| e.time - x.time <= w);
    let mut at = vec![0; steps.len()];
    let mut bound = i + 1;
    for (k, s) in steps.iter().enumerate().rev() {
        let values: &[&str] = match (s.same, k == last) {
            (false, _) => &[""],
            (true, true) => &[e.category],
            (true, false) => &CATEGORIES,
        };
        let first = values
            .iter()
            .filter_map(|v| {
                (0..bound)
                    .rev()
                    .filter(|&j| step_matches(s, mine[j]) && near(mine[j]))
                    .filter(|&j| !s.same || mine[j].category == *v)
                    .nth(s.times - 1)
            })
            .max()?;
        bound = first;
        at[k] = mine[first].time;
    }
    Some(at)
}

/// The matches over every kept event, and the number of late events.
pub(super) fn oracle(c: &Config, events: &[Ev]) -> (Matches, usize) {
    let (kept, late) = admitted(c, events);
    let steps = c.steps();
    let within = c.within();
    let mut out = Matches::new();
    for user in 0..6u8 {
        let mut mine: Vec<&Ev> = kept.iter().filter(|e| e.user == user).collect();
        mine.sort_by_key(|e| e.time); // stable: arrival order within a time
        let completions: Vec<(i64, usize, Vec<i64>)> = (0..mine.len())
            .filter_map(|i| completion(&steps, within, &mine, i).map(|at| (mine[i].time, i, at)))
            .collect();
        for (j, (t, i, at)) in completions.iter().enumerate() {
            let t = *t;
            let end = if c.absence {
                let cancelled = mine
                    .iter()
                    .any(|x| cancels(c, x) && t <= x.time && x.time < t + QUIET);
                let replaced = completions[j + 1..].iter().any(|(u, ..)| *u < t + QUIET);
                if cancelled || replaced {
                    continue;
                }
                t + QUIET
            } else {
                let burst = completions[..j]
                    .iter()
                    .any(|(u, ..)| within.map_or(*u == t, |w| t - *u < w));
                if burst {
                    continue;
                }
                t
            };
            let e = mine[*i];
            let captured = json!({"product": e.product.map(|p| format!("p{p}")), "price": e.price});
            let names = steps.iter().map(|s| s.name.to_owned());
            let m = Match {
                end,
                steps: names.zip(at.iter().copied()).collect(),
                captured,
            };
            out.insert((format!("u{user}"), t), m);
        }
    }
    (out, late)
}
