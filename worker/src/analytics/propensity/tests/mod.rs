//! Propensity against oracles written apart from the engine.
//!
//! - this file: the observations the learner receives (decisions with their features, and
//!   labelled examples) against a brute-force oracle over the raw event list, for random,
//!   out-of-order input within the allowed lateness, one task and several, restored from a
//!   snapshot mid-stream; identical result bytes over 1, 2, 3 and 5 tasks with restores, and
//!   the learner's per-epoch counts and per-user scores against the oracle's.
//! - [`learner`]: the FTRL learner — polynomial terms, AUC, one update by hand, exact
//!   snapshots, p = 0.5 before any example — and model quality on planted data against a
//!   reference logistic regression (Newton's method, in that file).

mod learner;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use super::read_example;
use crate::analytics::model::read_f64s;
use crate::analytics::model::tests::{manifest, plan_of, run_model, Ev, HOUR, MIN, START};
use crate::engine::Task;
use crate::partials::Record;
use crate::result::Output;
use crate::window::codec::Reader;

/// One propensity configuration under test (durations in ms).
#[derive(Clone, Debug)]
struct Config {
    epoch: i64,
    horizon: i64,
    window: i64,
    lateness: i64,
    degree: u32,
    /// Custom features (`events`, `revenue`, `recency_hours`, a cart ratio) instead of the
    /// defaults (`log(1 + x)` of views, carts, purchases).
    custom: bool,
}

const CUSTOM: &str = r#"
        features:
          - { name: n, expr: events }
          - { name: spend, expr: revenue }
          - { name: rec, expr: recency_hours }
          - { name: ratio, expr: "double(carts) / double(views + 1)" }"#;

impl Config {
    fn manifest(&self) -> String {
        manifest(&format!(
            r#"    - name: buyers
      propensity:
        sources: [events]
        epoch: {}m
        allowedLateness: {}m
        horizon: {}m
        window: {}m
        degree: {}{}"#,
            self.epoch / MIN,
            self.lateness / MIN,
            self.horizon / MIN,
            self.window / MIN,
            self.degree,
            if self.custom { CUSTOM } else { "" },
        ))
    }
}

fn configs() -> impl Strategy<Value = Config> {
    (
        prop::sample::select(vec![10 * MIN, 30 * MIN]),
        prop::sample::select(vec![15 * MIN, 30 * MIN, HOUR, 2 * HOUR]),
        prop::sample::select(vec![10 * MIN, 45 * MIN, 3 * HOUR]),
        prop::sample::select(vec![0, 5 * MIN]),
        1u32..=3,
        any::<bool>(),
    )
        .prop_map(
            |(epoch, horizon, window, lateness, degree, custom)| Config {
                epoch,
                horizon,
                window,
                lateness,
                degree,
                custom,
            },
        )
}

const KINDS: [&str; 5] = ["view", "view", "add_to_cart", "purchase", "click"];
const PRICES: [f64; 3] = [9.5, 20.0, 35.25];

/// Random events of up to 6 users over 5 hours (on the minute half the time: epoch ends,
/// horizons and windows met exactly), in arrival order: each up to `lateness` plus the
/// watermark's 10 s after its time, so none is late.
fn events(lateness: i64) -> impl Strategy<Value = Vec<Ev>> {
    let one = (
        0u32..6,
        0i64..300,
        (0i64..60_000, any::<bool>()),
        0usize..KINDS.len(),
        0usize..PRICES.len(),
        0i64..=lateness + 10_000,
    );
    prop::collection::vec(one, 1..120).prop_map(|raw| {
        let mut evs: Vec<(i64, usize, Ev)> = raw
            .into_iter()
            .enumerate()
            .map(|(i, (user, minute, (jitter, exact), kind, price, delay))| {
                let time = START + minute * MIN + if exact { 0 } else { jitter };
                let e = Ev {
                    user,
                    time,
                    kind: KINDS[kind],
                    product: 1,
                    price: PRICES[price],
                };
                (time + delay, i, e)
            })
            .collect();
        evs.sort_by_key(|(arrival, i, _)| (*arrival, *i));
        evs.into_iter().map(|(_, _, e)| e).collect()
    })
}

/// An observation's key: (epoch end, user, time, tag).
type Key = (i64, String, i64, u8);

/// An observation's payload, decoded: the label of an example, and the features.
type Payload = (Option<bool>, Vec<f64>);

fn decode(tag: u8, payload: &[u8]) -> Payload {
    match tag {
        0 => (None, read_f64s(&mut Reader::new(payload)).unwrap()),
        1 => {
            let (y, x) = read_example(payload).unwrap();
            (Some(y), x)
        }
        _ => panic!("unknown tag {tag}"),
    }
}

/// The observations from the raw events, written from `docs/propensity.md`: at each epoch end
/// `E`, every user with an event in `[E - epoch, E)` has a decision with the features of its
/// events in the whole epochs of the window before `E`, and an example, labelled by a
/// purchase in `[E, E + horizon)`, in the epoch ending at or after `E + horizon`.
fn oracle(c: &Config, events: &[Ev]) -> BTreeMap<Key, Payload> {
    let end_of = |t: i64| (t.div_euclid(c.epoch) + 1) * c.epoch;
    let window = c.window.max(c.epoch);
    let reach = (window + c.epoch - 1) / c.epoch * c.epoch;
    let mut decisions: BTreeMap<(i64, u32), ()> = BTreeMap::new();
    for e in events {
        decisions.insert((end_of(e.time), e.user), ());
    }
    let mut want = BTreeMap::new();
    for &(end, user) in decisions.keys() {
        let mine: Vec<&Ev> = events.iter().filter(|e| e.user == user).collect();
        let seen: Vec<&&Ev> = mine
            .iter()
            .filter(|e| e.time >= end - reach && e.time < end)
            .collect();
        let count = |kind: &str| seen.iter().filter(|e| e.kind == kind).count() as f64;
        let (views, carts, purchases) = (count("view"), count("add_to_cart"), count("purchase"));
        let x = if c.custom {
            let bought = seen.iter().filter(|e| e.kind == "purchase");
            let revenue: f64 = bought.clone().map(|e| e.price).sum();
            let recency = bought.map(|e| end - e.time).min().unwrap_or(window);
            vec![
                seen.len() as f64,
                revenue,
                recency as f64 / HOUR as f64,
                carts / (views + 1.0),
            ]
        } else {
            vec![
                (1.0 + views).ln(),
                (1.0 + carts).ln(),
                (1.0 + purchases).ln(),
            ]
        };
        let label = mine
            .iter()
            .any(|e| e.kind == "purchase" && e.time >= end && e.time < end + c.horizon);
        let name = format!("u{user}");
        want.insert((end, name.clone(), end, 0), (None, x.clone()));
        let labelled = end_of(end + c.horizon - 1);
        want.insert((labelled, name, end, 1), (Some(label), x));
    }
    want
}

/// The observations `tasks` tasks (user `n` in task `n mod tasks`; planned for at least two,
/// so each emits its observations as partials) make of `events`, every task restored from a
/// snapshot after the first `cut` share of them; and the events dead-lettered.
fn observed(c: &Config, events: &[Ev], tasks: u32, cut: f64) -> (BTreeMap<Key, Payload>, usize) {
    let m = c.manifest();
    let plan = || plan_of(&m, tasks.max(2));
    let mut runs: Vec<Task> = (0..tasks)
        .map(|t| Task::new(plan(), 0).with_id(t))
        .collect();
    let mut outs: Vec<Output> = (0..tasks).map(|_| Output::default()).collect();
    let at = ((events.len() as f64 * cut) as usize).min(events.len());
    for e in &events[..at] {
        let t = (e.user % tasks) as usize;
        runs[t].route(&e.line(), 0, &mut outs[t]);
    }
    for (t, task) in runs.iter_mut().enumerate() {
        let snapshot = task.snapshot();
        let mut fresh = Task::new(plan(), 0).with_id(t as u32);
        fresh.restore(&snapshot).unwrap();
        assert_eq!(
            fresh.snapshot(),
            snapshot,
            "a restored task encodes as it was"
        );
        *task = fresh;
    }
    for e in &events[at..] {
        let t = (e.user % tasks) as usize;
        runs[t].route(&e.line(), 0, &mut outs[t]);
    }
    let mut got = BTreeMap::new();
    let mut dead = 0;
    for (task, out) in runs.iter_mut().zip(outs.iter_mut()) {
        task.finish(0, out);
        dead += out.dead_letters.len();
        for p in &out.partials {
            let Record::Partial(p) = Record::decode(&p.value).unwrap() else {
                continue;
            };
            let key = (p.end, p.key.to_owned(), p.start, p.block[0]);
            let value = decode(p.block[0], &p.block[1..]);
            assert!(got.insert(key, value).is_none(), "each observation once");
        }
    }
    (got, dead)
}

/// The results of a run, parsed: per window end, its model record, and its scores by user.
#[derive(Debug, Default, PartialEq)]
struct Parsed {
    models: BTreeMap<i64, Value>,
    scores: BTreeMap<(i64, String), (f64, u64)>,
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn parse(c: &Config, results: &[String]) -> Parsed {
    let mut parsed = Parsed::default();
    for line in results {
        let (key, value) = line.split_once('\t').unwrap();
        let v: Value = serde_json::from_str(value).unwrap();
        let (start, end) = (ms(&v["window"]["start"]), ms(&v["window"]["end"]));
        assert_eq!(end - start, c.epoch, "{v}");
        match v["record"].as_str().unwrap() {
            "score" => {
                let user = v["user"].as_str().unwrap().to_owned();
                assert_eq!(v["key"], user.as_str());
                assert!(key.starts_with(&format!("buyers/{user}/")), "{key}");
                let p = v["probability"].as_f64().unwrap();
                let version = v["model_version"].as_u64().unwrap();
                assert!(parsed.scores.insert((end, user), (p, version)).is_none());
            }
            "model" => {
                assert!(v.get("key").is_none());
                assert!(
                    parsed.models.insert(end, v).is_none(),
                    "one model per epoch"
                );
            }
            other => panic!("unknown record {other}"),
        }
    }
    parsed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_learner_receives_the_oracles_decisions_and_examples(
        c in configs(),
        events in (0i64..=1).prop_flat_map(|l| events(l * 5 * MIN)),
        tasks in prop::sample::select(vec![1u32, 2, 3]),
        cut in 0.0f64..1.0,
    ) {
        // Lateness covers the disorder the events were made with.
        let c = Config { lateness: 5 * MIN, ..c };
        let want = oracle(&c, &events);
        let (got, dead) = observed(&c, &events, tasks, cut);
        prop_assert_eq!(dead, 0);
        prop_assert_eq!(got.len(), want.len());
        for ((gk, gv), (wk, wv)) in got.iter().zip(&want) {
            prop_assert_eq!(gk, wk);
            prop_assert_eq!(gv, wv, "{:?}", gk);
        }
    }

    #[test]
    fn results_are_identical_over_one_to_five_tasks_with_restores_and_count_the_oracles(
        c in configs(),
        events in events(0),
        cut in 0.0f64..1.0,
        interleave in prop::collection::vec(0usize..5, 1..8),
    ) {
        let m = c.manifest();
        let (whole, dead) = run_model(&m, &events, 1, 1.0, &[0]);
        prop_assert_eq!(dead, 0);
        for tasks in [1u32, 2, 3, 5] {
            let (got, dead) = run_model(&m, &events, tasks, cut, &interleave);
            prop_assert_eq!(dead, 0);
            prop_assert_eq!(&got, &whole, "{} tasks", tasks);
        }
        // The learner scored each decision once and counted each epoch's examples.
        let parsed = parse(&c, &whole);
        let want = oracle(&c, &events);
        let decisions: Vec<(i64, String)> = want
            .keys()
            .filter(|k| k.3 == 0)
            .map(|k| (k.0, k.1.clone()))
            .collect();
        prop_assert_eq!(parsed.scores.keys().cloned().collect::<Vec<_>>(), decisions);
        let mut epochs: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        for (k, (label, _)) in &want {
            let e = epochs.entry(k.0).or_default();
            if let Some(y) = label {
                e.0 += 1;
                e.1 += u64::from(*y);
            }
        }
        let counts: BTreeMap<i64, (u64, u64)> = parsed
            .models
            .iter()
            .map(|(end, v)| (*end, (v["examples"].as_u64().unwrap(), v["positives"].as_u64().unwrap())))
            .collect();
        prop_assert_eq!(&counts, &epochs);
        // Versions count the epochs with examples; before the first, every score is 0.5.
        let mut version = 0;
        for (end, v) in &parsed.models {
            let (examples, _) = epochs[end];
            version += u64::from(examples > 0);
            prop_assert_eq!(v["model_version"].as_u64().unwrap(), version);
            if examples == 0 {
                prop_assert!(v["log_loss"].is_null() && v["auc"].is_null());
            }
        }
        for ((end, user), (p, v)) in &parsed.scores {
            prop_assert_eq!(*v, parsed.models[end]["model_version"].as_u64().unwrap(), "{}", user);
            if *v == 0 {
                prop_assert_eq!(*p, 0.5);
            }
        }
    }
}

#[test]
fn the_example_pipeline_plans() {
    let text = include_str!("../../../../../examples/propensity.yaml");
    let plan = plan_of(text, 2);
    assert_eq!((plan.sources.len(), plan.analytics.len()), (2, 1));
}
