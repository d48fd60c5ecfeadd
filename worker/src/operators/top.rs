//! Top-N rankings (`topN` analytics, "hot products"): the `n` keys of a window with the highest
//! value of one aggregate or ratio, as one result per window.
//!
//! A top-N analytic is computed per key and window like an `aggregate` analytic (by the
//! window state of `crate::window`, and over several tasks by the global stage of
//! `crate::global`); this module only ranks the finished key-windows of one window. Ranking
//! happens where a window's key-windows are complete: in the task when it holds every event
//! (one partition), else at the global stage. The ranking state is the window state itself —
//! a late update re-ranks the window from every key-window it still holds — so a top-N needs
//! nothing in checkpoints of its own.

use std::cmp::Ordering;

use crate::window::accumulate::Value;

/// How a top-N analytic ranks (compiled from `spec.analytics[i].topN`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopNPlan {
    /// Keys listed per window.
    pub n: usize,
    /// Index of the ranked value among the analytic's values (aggregates, then ratios).
    pub rank: usize,
    /// Its name, written as `rankBy` into results.
    pub rank_name: String,
}

/// One key-window of the window being ranked.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The key (a product, say).
    pub key: String,
    /// The key-window's revision (0 for its first result, then one more per update).
    pub revision: u32,
    /// Its ranked value.
    pub value: Value,
}

/// Highest value first; no value (`null`, e.g. an average of nothing) last; equal values by
/// key in byte order, so the ranking is a function of the values alone.
fn order(a: &Item, b: &Item) -> Ordering {
    let by_value = match (a.value, b.value) {
        (Value::Int(x), Value::Int(y)) => y.cmp(&x),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (x, y) => number(y).total_cmp(&number(x)),
    };
    by_value.then_with(|| a.key.cmp(&b.key))
}

fn number(value: Value) -> f64 {
    match value {
        Value::Int(i) => i as f64,
        Value::Float(f) => f,
        Value::Null => f64::NEG_INFINITY,
    }
}

/// Ranks `items` (every key-window of one window) and keeps the first `n`; returns the
/// window's top-N revision.
///
/// The revision is the sum of the key-windows' revisions. The window state of a top-N counts
/// a key-window that first appears after its window was ranked (a late event of a new key)
/// from revision 1, as if it had been there with nothing, and every other late update raises
/// one key-window's revision by one: so the first ranking of a window has revision 0, each
/// new ranking one more than the one before, and a restored task or stage, whose window state
/// holds the same revisions, continues the count without storing it.
pub fn rank(items: &mut Vec<Item>, n: usize) -> u32 {
    let results: u64 = items.iter().map(|i| u64::from(i.revision)).sum();
    if items.len() > n {
        items.select_nth_unstable_by(n, order);
        items.truncate(n);
    }
    items.sort_unstable_by(order);
    u32::try_from(results).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, revision: u32, value: Value) -> Item {
        Item {
            key: key.into(),
            revision,
            value,
        }
    }

    fn keys(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn the_highest_values_come_first_and_ties_go_by_key() {
        let mut items = vec![
            item("p3", 0, Value::Int(5)),
            item("p1", 0, Value::Int(7)),
            item("p2", 0, Value::Int(5)),
            item("p0", 0, Value::Int(1)),
        ];
        assert_eq!(rank(&mut items, 3), 0, "each key-window's first result");
        assert_eq!(keys(&items), ["p1", "p2", "p3"]);
    }

    #[test]
    fn sums_rank_as_numbers_and_missing_values_last() {
        let mut items = vec![
            item("a", 0, Value::Null),
            item("b", 1, Value::Float(-2.5)),
            item("c", 0, Value::Float(10.25)),
            item("d", 2, Value::Float(10.25)),
        ];
        assert_eq!(
            rank(&mut items, 10),
            3,
            "the key-windows' revisions: 0 + 1 + 0 + 2"
        );
        assert_eq!(keys(&items), ["c", "d", "b", "a"]);
    }

    #[test]
    fn a_late_update_raises_the_revision_by_one() {
        let window = |late: Option<(usize, u32)>, extra: bool| {
            let mut items: Vec<Item> = (0..5)
                .map(|k| item(&format!("k{k}"), 0, Value::Int(k as u64)))
                .collect();
            if let Some((k, revision)) = late {
                items[k].revision = revision;
            }
            if extra {
                // A key first seen after the window was ranked starts at revision 1.
                items.push(item("new", 1, Value::Int(9)));
            }
            rank(&mut items, 2)
        };
        let first = window(None, false);
        assert_eq!(first, 0);
        assert_eq!(window(Some((3, 1)), false), first + 1, "a key updated late");
        assert_eq!(
            window(Some((3, 1)), true),
            first + 2,
            "then a key new after the window closed"
        );
    }

    #[test]
    fn the_ranking_matches_a_full_sort_whatever_n_is() {
        let values: Vec<u64> = (0..200u64).map(|i| (i * 7919) % 37).collect();
        let all: Vec<Item> = values
            .iter()
            .enumerate()
            .map(|(k, &v)| item(&format!("k{k:03}"), 0, Value::Int(v)))
            .collect();
        let mut sorted = all.clone();
        let count = |i: &Item| match i.value {
            Value::Int(v) => v,
            _ => unreachable!("counts only"),
        };
        sorted.sort_by(|a, b| count(b).cmp(&count(a)).then(a.key.cmp(&b.key)));
        for n in [1, 2, 10, 37, 199, 200, 500] {
            let mut items = all.clone();
            rank(&mut items, n);
            assert_eq!(items, sorted[..n.min(200)], "n = {n}");
        }
    }
}
