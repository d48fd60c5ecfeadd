//! Top-N rankings (`topN` analytics, "hot products"): the `n` keys of a window with the highest
//! value of one aggregate or ratio, as one result per window.
//!
//! A top-N analytic is computed per key and window like an `aggregate` analytic (by the
//! window state of `crate::window`, and over several tasks by the global stage's keyed merge,
//! [`super::merge`]); ranking is a step after firing. It happens where a window's key-windows
//! are complete: in the task when it holds every event (one partition), else at the global
//! stage. The ranking state is the window state itself — a late update re-ranks the window
//! from every key-window it still holds — so a top-N needs nothing in checkpoints of its own.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use tidemark_api::TopNAnalytic;

use super::keyed::{compile_group, compiled, KeyedPlan};
use super::merge::KeyedMerge;
use super::AnalyticPlan;
use super::{AnalyticCapture, Compiled, Emit, GlobalAnalytic, KindPlan, TaskAnalytic};
use crate::event::Event;
use crate::operators::{PlanError, SourcePlan};
pub use crate::result::Item;
use crate::window::accumulate::Value;
use crate::window::codec::Reader;
use crate::window::{Emission, Refused, WindowKind, WindowStats, Windows};

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

/// A compiled top-N: the keyed values it ranks, and how.
#[derive(Debug)]
pub struct TopNKind {
    keyed: KeyedPlan,
    top: TopNPlan,
}

impl KindPlan for TopNKind {
    fn kind(&self) -> &'static str {
        "topN"
    }

    fn task_state(&self, analytic: &AnalyticPlan, partials: bool) -> Box<dyn TaskAnalytic> {
        let mut windows = self.keyed.windows(analytic, partials);
        if !partials {
            let panes = windows.rank_revisions();
            debug_assert!(panes, "compile refuses top-N session windows");
        }
        Box::new(TopNState {
            windows,
            top: self.top.clone(),
            ranking: Vec::new(),
        })
    }

    fn global_state(&self, analytic: &AnalyticPlan) -> Box<dyn GlobalAnalytic> {
        Box::new(KeyedMerge::new(
            self.keyed.clone(),
            analytic.lateness,
            Some(self.top.clone()),
        ))
    }

    fn window_offset(&self) -> i64 {
        self.keyed.offset
    }

    fn always_global(&self) -> bool {
        true
    }

    fn top_n(&self) -> Option<&TopNPlan> {
        Some(&self.top)
    }
}

/// Compiles a `topN` analytic.
pub fn compile(
    top: &TopNAnalytic,
    path: &str,
    sources: &[SourcePlan],
) -> Result<Compiled, PlanError> {
    let agg = &top.aggregate;
    let keyed = compile_group(&agg.group, &agg.sources, None, path, sources)?;
    let rank = keyed
        .value_names
        .iter()
        .position(|n| n == &top.rank_by)
        .ok_or_else(|| PlanError::Reference {
            path: format!("{path}.topN.rankBy"),
            message: format!("unknown aggregate or ratio {:?}", top.rank_by),
        })?;
    let kind = TopNKind {
        keyed,
        top: TopNPlan {
            n: top.limit.max(1) as usize,
            rank,
            rank_name: top.rank_by.clone(),
        },
    };
    let filter = agg
        .filter
        .clone()
        .map(|f| (format!("{path}.topN.filter"), f));
    let compiled = compiled(
        Arc::new(kind),
        agg.sources.clone(),
        &agg.group,
        filter,
        path,
    )?;
    if matches!(compiled.window, WindowKind::Session { .. }) {
        return Err(PlanError::Reference {
            path: format!("{path}.topN.window.type"),
            message: "topN needs tumbling or sliding windows".into(),
        });
    }
    Ok(compiled)
}

/// A key-window result of a top-N analytic, before the ranking of its window.
#[derive(Debug)]
struct Ranked {
    start: i64,
    end: i64,
    /// Emitted by a late update (the window fired before): the window is re-ranked from every
    /// key-window the state holds, not from this step's results alone.
    late: bool,
    item: Item,
}

/// A top-N's state in a task: its keyed windows, and the key-windows of this step waiting for
/// their window's ranking. Over several tasks it only emits partials; the stage ranks.
#[derive(Debug)]
struct TopNState {
    windows: Windows,
    top: TopNPlan,
    ranking: Vec<Ranked>,
}

/// The window-state callback of a top-N: partials, or key-windows to rank.
fn collector<'e, 'o>(
    out: &'e mut Emit<'o>,
    ranking: &'e mut Vec<Ranked>,
    rank: usize,
    late: bool,
) -> impl FnMut(&Emission<'_>) + use<'e, 'o> {
    move |e| match e.partial {
        Some(block) => out.partial(e.key, e.start, e.end, e.revision, block),
        None => ranking.push(Ranked {
            start: e.start,
            end: e.end,
            late,
            item: Item {
                key: e.key.to_owned(),
                revision: e.revision,
                value: e.values[rank],
            },
        }),
    }
}

impl TopNState {
    /// Ranks the windows whose key-windows this step emitted, one result per window. A window
    /// that fired in this step has all its key-windows among them (a window fires for every
    /// key at one watermark); one a late event updated is re-ranked from every key-window of
    /// it the state still holds.
    fn rank(&mut self, out: &mut Emit<'_>) {
        if self.ranking.is_empty() {
            return;
        }
        let mut windows: BTreeMap<i64, (i64, bool, Vec<Item>)> = BTreeMap::new();
        for ranked in self.ranking.drain(..) {
            let window = windows
                .entry(ranked.end)
                .or_insert((ranked.start, false, Vec::new()));
            window.1 |= ranked.late;
            window.2.push(ranked.item);
        }
        let top = &self.top;
        for (end, (start, late, mut items)) in windows {
            if late {
                items.clear();
                self.windows.fired_window(end, &mut |e: &Emission<'_>| {
                    items.push(Item {
                        key: e.key.to_owned(),
                        revision: e.revision,
                        value: e.values[top.rank],
                    })
                });
            }
            emit_ranking(out, top, start, end, items);
        }
    }
}

/// Ranks `items`, every key-window of window `[start, end)`, and emits the window's result.
pub fn emit_ranking(
    out: &mut Emit<'_>,
    top: &TopNPlan,
    start: i64,
    end: i64,
    mut items: Vec<Item>,
) {
    let revision = rank(&mut items, top.n);
    let record = out.encoder.encode_top(
        out.analytic,
        out.name,
        &top.rank_name,
        start,
        end,
        &items,
        revision,
    );
    *out.results += 1;
    out.out.results.push(record);
}

impl TaskAnalytic for TopNState {
    fn add(
        &mut self,
        key: &str,
        input: usize,
        event: &Event<'_>,
        wm: i64,
        out: &mut Emit<'_>,
    ) -> bool {
        let accepted = {
            let mut emit = collector(out, &mut self.ranking, self.top.rank, true);
            self.windows.add(key, input, event, wm, &mut emit)
        };
        self.rank(out);
        accepted
    }

    fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        {
            let mut emit = collector(out, &mut self.ranking, self.top.rank, false);
            self.windows.advance(wm, &mut emit);
        }
        self.rank(out);
    }

    fn capture(&self) -> Box<dyn AnalyticCapture> {
        Box::new(self.windows.capture())
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        self.windows.restore_from(r)
    }

    fn restore_v1(
        &mut self,
        snapshot: &crate::window::snapshot::WindowsSnapshot,
    ) -> Result<(), Refused> {
        self.windows.restore(snapshot)
    }

    #[cfg(test)]
    fn snapshot_v1(&self) -> Option<crate::window::snapshot::WindowsSnapshot> {
        Some(self.windows.snapshot())
    }

    fn stats(&self) -> WindowStats {
        self.windows.stats()
    }
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
