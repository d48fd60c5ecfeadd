//! The oracle of the action tests, written from `docs/actions.md` and `docs/patterns.md` (not
//! from the engine): which events one task accepts, the pattern's final matches, the decisions
//! per interval, the action records and the uplift reports.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;

/// What a run reports, normalised: action records by (user, decision time); per report window
/// start the counts (candidates, sent, holdout, refused_cooldown, refused_budget,
/// converted_sent, converted_holdout) and the statistics (rate_sent, rate_holdout, uplift,
/// uplift_low, uplift_high, revenue_per_user_sent, revenue_per_user_holdout).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Got {
    pub(super) records: BTreeMap<(String, i64), Value>,
    pub(super) reports: BTreeMap<i64, [u64; 7]>,
    pub(super) stats: BTreeMap<i64, [Option<f64>; 7]>,
}

#[rustfmt::skip]
pub(super) const COUNTS: [&str; 7] = [
    "candidates", "sent", "holdout", "refused_cooldown", "refused_budget", "converted_sent",
    "converted_holdout",
];
#[rustfmt::skip]
pub(super) const STATS: [&str; 7] = [
    "rate_sent", "rate_holdout", "uplift", "uplift_low", "uplift_high",
    "revenue_per_user_sent", "revenue_per_user_holdout",
];

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Group {
    Sent = 1,
    Holdout = 2,
    Cooldown = 3,
    Budget = 4,
}

/// A final match of the pattern.
#[derive(Clone, Debug)]
pub(super) struct Cand {
    pub(super) user: String,
    pub(super) time: i64,
    pub(super) completion: i64,
    pub(super) score: f64,
    pub(super) product: u8,
}

pub(super) fn sha(parts: &[&[u8]]) -> [u8; 32] {
    parts
        .iter()
        .fold(Sha256::new(), |h, p| h.chain_update(p))
        .finalize()
        .into()
}

/// The documented holdout rule: SHA-256 of `pipeline \0 action \0holdout\0 user`, its first 8
/// bytes big-endian below `pct`% of 2^64.
pub(super) fn oracle_holdout(user: &str, pct: u32) -> bool {
    let d = sha(&[
        PIPELINE.as_bytes(),
        &[0],
        ACTION.as_bytes(),
        b"\0holdout\0",
        user.as_bytes(),
    ]);
    let x = u64::from_be_bytes(d[..8].try_into().unwrap());
    u128::from(x) * 100 < u128::from(pct) << 64
}

/// The documented id: the first 16 bytes, in hex, of SHA-256 of `pipeline \0 action \0 user \0
/// time` (i64 big-endian).
pub(super) fn oracle_id(user: &str, time: i64) -> String {
    let d = sha(&[
        PIPELINE.as_bytes(),
        &[0],
        ACTION.as_bytes(),
        &[0],
        user.as_bytes(),
        &[0],
        &time.to_be_bytes(),
    ]);
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The events one task accepts, in arrival order: a cart or purchase whose time plus the
/// lateness is below the watermark (newest time before it minus 10 s) is dead-lettered.
pub(super) fn accepted(c: &Config, events: &[Ev]) -> Vec<Ev> {
    let mut wm = i64::MIN;
    let mut out = Vec::new();
    for e in events {
        if e.kind == "view" || e.time + c.lateness >= wm {
            out.push(e.clone());
        }
        wm = wm.max(e.time - OUT_OF_ORDER);
    }
    out
}

/// The pattern's matches: a cart at `t` with no purchase in `[t, t + 10m)` and no later cart
/// (event order, ties by arrival) before `t + 10m`; its time is `t + 10m`.
pub(super) fn candidates(c: &Config, by_user: &BTreeMap<String, Vec<&Ev>>) -> Vec<Cand> {
    let mut out = Vec::new();
    for (user, list) in by_user {
        for (i, e) in list.iter().enumerate() {
            let end = e.time + QUIET;
            let cancelled = list
                .iter()
                .any(|x| x.kind == "purchase" && (e.time..end).contains(&x.time));
            let superseded = list[i + 1..]
                .iter()
                .any(|x| x.kind == "add_to_cart" && x.time < end);
            if e.kind == "add_to_cart" && !cancelled && !superseded {
                out.push(Cand {
                    user: user.clone(),
                    time: end,
                    completion: e.time,
                    score: if c.score { e.price } else { 0.0 },
                    product: e.product,
                });
            }
        }
    }
    out
}

/// Decisions per interval of time, each interval by score (desc), user, time: cooldown, then
/// budget (holdouts count), then holdout, else sent.
pub(super) fn decide(c: &Config, cands: Vec<Cand>) -> Vec<(Cand, Group)> {
    let mut intervals: BTreeMap<i64, Vec<Cand>> = BTreeMap::new();
    for x in cands {
        intervals
            .entry(x.time.div_euclid(c.every))
            .or_default()
            .push(x);
    }
    let mut made: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut used: BTreeMap<i64, u32> = BTreeMap::new();
    let mut out = Vec::new();
    for (_, mut list) in intervals {
        list.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.user.cmp(&b.user))
                .then(a.time.cmp(&b.time))
        });
        for x in list {
            let mine = made.entry(x.user.clone()).or_default();
            let slot = c.budget.map(|(max, per)| (max, x.time.div_euclid(per)));
            let group = if mine.iter().any(|t| (x.time - t).abs() < c.cooldown) {
                Group::Cooldown
            } else if slot.is_some_and(|(max, k)| used.get(&k).copied().unwrap_or(0) >= max) {
                Group::Budget
            } else {
                if let Some((_, k)) = slot {
                    *used.entry(k).or_default() += 1;
                }
                mine.push(x.time);
                if oracle_holdout(&x.user, c.holdout_pct) {
                    Group::Holdout
                } else {
                    Group::Sent
                }
            };
            out.push((x, group));
        }
    }
    out
}

/// The report's statistics from its counts and revenue, as `docs/actions.md` defines them.
pub(super) fn stats(n: &[u64; 7], revenue: [f64; 2]) -> [Option<f64>; 7] {
    let (ns, nh, cs, ch) = (n[1] as f64, n[2] as f64, n[5] as f64, n[6] as f64);
    let ps = (n[1] > 0).then(|| cs / ns);
    let ph = (n[2] > 0).then(|| ch / nh);
    let both = ps.zip(ph);
    let uplift = both.map(|(a, b)| a - b);
    let half = both.map(|(a, b)| 1.96 * (a * (1.0 - a) / ns + b * (1.0 - b) / nh).sqrt());
    [
        ps,
        ph,
        uplift,
        uplift.zip(half).map(|(u, h)| u - h),
        uplift.zip(half).map(|(u, h)| u + h),
        (n[1] > 0).then(|| revenue[0] / ns),
        (n[2] > 0).then(|| revenue[1] / nh),
    ]
}

pub(super) fn oracle(c: &Config, events: &[Ev]) -> Got {
    let kept = accepted(c, events);
    let mut by_user: BTreeMap<String, Vec<&Ev>> = BTreeMap::new();
    for e in kept.iter().filter(|e| e.kind != "view") {
        by_user.entry(e.name()).or_default().push(e);
    }
    for list in by_user.values_mut() {
        list.sort_by_key(|e| e.time); // stable: arrival order within a time
    }
    let mut got = Got::default();
    let mut revenue: BTreeMap<i64, [f64; 2]> = BTreeMap::new();
    for (x, group) in decide(c, candidates(c, &by_user)) {
        let window = x.time.div_euclid(c.report) * c.report;
        let counts = got.reports.entry(window).or_default();
        counts[0] += 1;
        counts[group as usize] += 1;
        if !matches!(group, Group::Sent | Group::Holdout) {
            continue;
        }
        let bought: Vec<f64> = by_user[&x.user]
            .iter()
            .filter(|e| e.kind == "purchase" && (x.time..x.time + ATTRIBUTION).contains(&e.time))
            .map(|e| e.price)
            .collect();
        if !bought.is_empty() {
            counts[group as usize + 4] += 1;
        }
        revenue.entry(window).or_default()[group as usize - 1] += bought.iter().sum::<f64>();
        let id = oracle_id(&x.user, x.time);
        let (outcome, params) = match group {
            Group::Sent => (
                "sent",
                json!({"code": format!("C-{id}"), "pct": 10, "product": format!("p{}", x.product)}),
            ),
            _ => ("holdout", json!({})),
        };
        let record = json!({
            "action_id": id, "outcome": outcome, "action": "coupon", "pattern": "carts",
            "matched_at": x.completion, "score": x.score, "params": params,
            "expires_at": x.time + VALIDITY, "end": x.time + VALIDITY,
        });
        got.records.insert((x.user, x.time), record);
    }
    for (window, counts) in &got.reports {
        let r = revenue.get(window).copied().unwrap_or_default();
        got.stats.insert(*window, stats(counts, r));
    }
    got
}
