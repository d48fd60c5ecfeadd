//! A brute-force oracle of `recommend`, written from `docs/recommendations.md` over the raw
//! event list (not from the engine): each user's events sorted and cut into sessions, the
//! sessions' products and the user's bought products, then pair and popularity counts, the
//! recommendations and neighbour lists of an undecayed model, and decayed weights.

use std::collections::{BTreeMap, BTreeSet};

use crate::analytics::model::tests::Ev;

const DAY: i64 = 86_400_000;

/// What the oracle needs of a configuration (ms).
#[derive(Clone, Debug)]
pub struct Rules {
    pub gap: i64,
    pub epoch: i64,
    pub views: Vec<&'static str>,
    pub k: usize,
}

/// One ended session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sess {
    pub epoch: i64,
    pub user: String,
    pub end: i64,
    pub products: Vec<String>,
    pub bought: Vec<String>,
}

/// Every session with a product of interest, sorted by (epoch, user, end).
pub fn sessions(rules: &Rules, events: &[Ev]) -> Vec<Sess> {
    let mut by_user: BTreeMap<String, Vec<&Ev>> = BTreeMap::new();
    for e in events {
        by_user.entry(format!("u{}", e.user)).or_default().push(e);
    }
    let mut all = Vec::new();
    for (user, mut evs) in by_user {
        evs.sort_by_key(|e| e.time);
        let mut runs: Vec<Vec<&Ev>> = Vec::new();
        for e in &evs {
            match runs.last_mut() {
                Some(run) if e.time - run.last().unwrap().time < rules.gap => run.push(e),
                _ => runs.push(vec![e]),
            }
        }
        for run in runs {
            let end = run.last().unwrap().time + rules.gap;
            let mut first: BTreeMap<String, i64> = BTreeMap::new();
            for e in run.iter().filter(|e| rules.views.contains(&e.kind)) {
                let t = first.entry(format!("p{}", e.product)).or_insert(e.time);
                *t = (*t).min(e.time);
            }
            if first.is_empty() {
                continue;
            }
            let mut order: Vec<(i64, String)> = first.into_iter().map(|(p, t)| (t, p)).collect();
            order.sort();
            order.truncate(50);
            let mut latest: BTreeMap<String, i64> = BTreeMap::new();
            for e in &evs {
                if e.kind == "purchase" && e.time < end && e.time >= end - 30 * DAY {
                    let t = latest.entry(format!("p{}", e.product)).or_insert(e.time);
                    *t = (*t).max(e.time);
                }
            }
            let mut recent: Vec<(i64, String)> = latest.into_iter().map(|(p, t)| (t, p)).collect();
            recent.sort_by(|a, b| b.cmp(a));
            recent.truncate(100);
            let mut bought: Vec<String> = recent.into_iter().map(|(_, p)| p).collect();
            bought.sort();
            let epoch = (end + rules.epoch - 1).div_euclid(rules.epoch) * rules.epoch;
            all.push(Sess {
                epoch,
                user: user.clone(),
                end,
                products: order.into_iter().map(|(_, p)| p).collect(),
                bought,
            });
        }
    }
    all.sort();
    all
}

/// Co-occurrence counts of unordered pairs (`a < b`), and popularity counts.
pub type Counts = (BTreeMap<(String, String), u64>, BTreeMap<String, u64>);

/// Counts `sessions` from scratch.
pub fn counts(sessions: &[Sess]) -> Counts {
    let mut pairs = BTreeMap::new();
    let mut popularity = BTreeMap::new();
    for s in sessions {
        for (i, a) in s.products.iter().enumerate() {
            *popularity.entry(a.clone()).or_insert(0) += 1;
            for b in &s.products[i + 1..] {
                let key = if a < b {
                    (a.clone(), b.clone())
                } else {
                    (b.clone(), a.clone())
                };
                *pairs.entry(key).or_insert(0) += 1;
            }
        }
    }
    (pairs, popularity)
}

/// An expected result of an undecayed model.
#[derive(Clone, Debug, PartialEq)]
pub enum Want {
    Rec {
        user: String,
        end: i64,
        products: Vec<(String, f64)>,
        from: &'static str,
        version: u64,
    },
    Neighbours {
        product: String,
        list: Vec<(String, f64)>,
        version: u64,
    },
}

fn ranked(mut items: Vec<(String, u64)>, k: usize) -> Vec<(String, u64)> {
    items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    items.truncate(k);
    items
}

/// The recommendations and neighbour lists an undecayed model emits, epoch by epoch.
pub fn undecayed(rules: &Rules, sessions: &[Sess]) -> Vec<Want> {
    let mut epochs: BTreeMap<i64, Vec<&Sess>> = BTreeMap::new();
    for s in sessions {
        epochs.entry(s.epoch).or_default().push(s);
    }
    let mut learned: Vec<Sess> = Vec::new();
    let mut out = Vec::new();
    for (version, batch) in epochs.values().enumerate() {
        let (pairs, popularity) = counts(&learned);
        let weight = |a: &str, b: &str| {
            let key = if a < b {
                (a.to_owned(), b.to_owned())
            } else {
                (b.to_owned(), a.to_owned())
            };
            pairs.get(&key).copied().unwrap_or(0)
        };
        for s in batch {
            let excluded: BTreeSet<&String> = s.products.iter().chain(&s.bought).collect();
            // Each of the last 5 products adds its best 2·topK neighbours, before exclusions.
            let recent = &s.products[s.products.len().saturating_sub(5)..];
            let mut scores: BTreeMap<String, u64> = BTreeMap::new();
            for r in recent {
                let all: Vec<(String, u64)> = popularity
                    .keys()
                    .filter(|c| *c != r)
                    .map(|c| (c.clone(), weight(r, c)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                for (c, n) in ranked(all, 2 * rules.k) {
                    *scores.entry(c).or_insert(0) += n;
                }
            }
            let scores = scores
                .into_iter()
                .filter(|(c, _)| !excluded.contains(c))
                .collect();
            let mut list = ranked(scores, rules.k);
            let from_pairs = list.len();
            let popular: Vec<(String, u64)> = popularity
                .iter()
                .filter(|(p, _)| !excluded.contains(p))
                .map(|(p, n)| (p.clone(), *n))
                .collect();
            for (p, n) in ranked(popular, usize::MAX) {
                if list.len() >= rules.k {
                    break;
                }
                if !list.iter().any(|(q, _)| *q == p) {
                    list.push((p, n));
                }
            }
            if list.is_empty() {
                continue;
            }
            let from = if from_pairs == list.len() {
                "cooccurrence"
            } else if from_pairs == 0 {
                "popularity"
            } else {
                "mixed"
            };
            out.push(Want::Rec {
                user: s.user.clone(),
                end: s.end,
                products: list.into_iter().map(|(p, n)| (p, n as f64)).collect(),
                from,
                version: version as u64,
            });
        }
        learned.extend(batch.iter().map(|s| (*s).clone()));
        let (pairs, _) = counts(&learned);
        let touched: BTreeSet<&String> = batch
            .iter()
            .filter(|s| s.products.len() > 1)
            .flat_map(|s| &s.products)
            .collect();
        for p in touched {
            let all: Vec<(String, u64)> = pairs
                .iter()
                .filter_map(|((a, b), n)| {
                    (a == p)
                        .then(|| (b.clone(), *n))
                        .or_else(|| (b == p).then(|| (a.clone(), *n)))
                })
                .collect();
            out.push(Want::Neighbours {
                product: p.clone(),
                list: ranked(all, rules.k)
                    .into_iter()
                    .map(|(q, n)| (q, n as f64))
                    .collect(),
                version: version as u64 + 1,
            });
        }
    }
    out
}

/// Each product's neighbours' weights right after each epoch, decayed with half-life `h`:
/// (epoch, product) → neighbour → weight, for the products that got a pair in the epoch.
pub fn decayed(sessions: &[Sess], h: f64) -> BTreeMap<(i64, String), BTreeMap<String, f64>> {
    let epochs: BTreeSet<i64> = sessions.iter().map(|s| s.epoch).collect();
    let mut out = BTreeMap::new();
    for e in epochs {
        let touched: BTreeSet<&String> = sessions
            .iter()
            .filter(|s| s.epoch == e && s.products.len() > 1)
            .flat_map(|s| &s.products)
            .collect();
        for p in touched {
            let mut weights: BTreeMap<String, f64> = BTreeMap::new();
            for s in sessions
                .iter()
                .filter(|s| s.epoch <= e && s.products.contains(p))
            {
                let w = 0.5f64.powf((e - s.epoch) as f64 / h);
                for q in s.products.iter().filter(|q| *q != p) {
                    *weights.entry(q.clone()).or_insert(0.0) += w;
                }
            }
            out.insert((e, p.clone()), weights);
        }
    }
    out
}
