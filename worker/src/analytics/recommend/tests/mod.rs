//! `recommend` against an oracle written apart from the engine ([`oracle`]).
//!
//! - this file: the sessions the tasks observe (products, bought products, epochs) equal the
//!   oracle's, for random out-of-order input within the allowed lateness, over one task and
//!   several, each restored from a snapshot mid-stream; the learner's undecayed pair and
//!   popularity counts equal the oracle's exactly, as do its recommendations and neighbour
//!   lists, across a restore of the learner; through the global stage, decayed neighbour
//!   weights equal the oracle's; results are byte-identical over 1, 2, 3 and 5 tasks with
//!   restores; the session and bought caps under shuffled input.
//! - [`quality`]: recall on planted bundles, and the measurements (ignored tests).

mod oracle;
mod quality;

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::cooccur::CoOccurrence;
use super::{compile_plan, RecommendPlan, Session};
use crate::analytics::model::tests::{
    emitting, manifest, plan_of, run_model, values, Ev, HOUR, MIN, PIPELINE, START,
};
use crate::analytics::model::{Learner, Observation};
use crate::engine::Task;
use crate::partials::Record;
use crate::plan::Plan;
use crate::result::Output;
use crate::window::codec::{Reader, Writer};
use oracle::{Rules, Sess, Want};

/// One configuration under test (durations in ms).
#[derive(Clone, Debug)]
struct Config {
    gap: i64,
    epoch: i64,
    lateness: i64,
    /// Only `view` is interest (else the default `view`, `add_to_cart`).
    views_only: bool,
    k: usize,
    half_life: i64,
}

const BASE: Config = Config {
    gap: 10 * MIN,
    epoch: 10 * MIN,
    lateness: 20 * MIN,
    views_only: false,
    k: 10,
    half_life: 12 * HOUR,
};

impl Config {
    fn manifest(&self) -> String {
        let views = if self.views_only {
            "\n        viewTypes: [view]"
        } else {
            ""
        };
        manifest(&format!(
            r#"    - name: recs
      recommend:
        sources: [events]
        epoch: {}m
        allowedLateness: {}m
        sessionGap: {}m
        halfLife: {}m
        topK: {}{views}"#,
            self.epoch / MIN,
            self.lateness / MIN,
            self.gap / MIN,
            self.half_life / MIN,
            self.k,
        ))
    }

    fn rules(&self) -> Rules {
        Rules {
            gap: self.gap,
            epoch: self.epoch,
            views: if self.views_only {
                vec!["view"]
            } else {
                vec!["view", "add_to_cart"]
            },
            k: self.k,
        }
    }
}

fn configs() -> impl Strategy<Value = Config> {
    (
        prop::sample::select(vec![10 * MIN, 30 * MIN]),
        prop::sample::select(vec![10 * MIN, HOUR]),
        prop::sample::select(vec![10 * MIN, 40 * MIN]),
        any::<bool>(),
        prop::sample::select(vec![1usize, 3, 10]),
    )
        .prop_map(|(gap, epoch, lateness, views_only, k)| Config {
            gap,
            epoch,
            lateness,
            views_only,
            k,
            ..BASE
        })
}

const KINDS: [&str; 7] = [
    "view",
    "view",
    "view",
    "add_to_cart",
    "click",
    "purchase",
    "add_to_cart",
];
/// Gaps between events, around the session gaps under test.
const GAPS: [i64; 7] = [0, MIN, 2 * MIN, 5 * MIN, 9 * MIN, 12 * MIN, 35 * MIN];

/// Events of up to 6 users over about 10 products, in arrival order: mostly in time order,
/// a fifth of them earlier by up to `lateness` less 30 s (so none is late).
fn events(lateness: i64) -> impl Strategy<Value = Vec<Ev>> {
    let steps = (lateness - 30_000) / 10_000;
    let one = (
        1u32..=6,
        0usize..KINDS.len(),
        0usize..GAPS.len(),
        0i64..30_000,
        0u32..10,
        0u32..100,
        0i64..=steps,
    );
    prop::collection::vec(one, 10..100).prop_map(|raw| {
        let mut clock = START;
        raw.into_iter()
            .map(|(user, kind, gap, jitter, product, late, delay)| {
                clock += GAPS[gap];
                let time = clock + jitter - if late < 20 { delay * 10_000 } else { 0 };
                Ev {
                    user,
                    time,
                    kind: KINDS[kind],
                    product,
                    price: 10.0,
                }
            })
            .collect()
    })
}

/// An observation as the tasks emit it: (epoch end, user, time, tag, payload).
type Obs = (i64, String, i64, u8, Vec<u8>);

/// The observations `tasks` tasks (planned for at least two, so they emit partials) make of
/// `events`, each task restored from its snapshot after the first `cut` share of them.
fn task_observations(manifest: &str, events: &[Ev], tasks: u32, cut: f64) -> Vec<Obs> {
    let plan = || plan_of(manifest, tasks.max(2));
    let mut runs: Vec<Task> = (0..tasks)
        .map(|t| Task::new(plan(), 0).with_id(t))
        .collect();
    let mut outs: Vec<Output> = (0..tasks).map(|_| Output::default()).collect();
    let at = (events.len() as f64 * cut) as usize;
    for (i, e) in events.iter().enumerate() {
        if i == at {
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
        }
        let t = (e.user % tasks) as usize;
        runs[t].route(&e.line(), 0, &mut outs[t]);
    }
    let mut all = Vec::new();
    for (task, out) in runs.iter_mut().zip(outs.iter_mut()) {
        task.finish(0, out);
        assert!(
            out.dead_letters.is_empty(),
            "no event is late: {:?}",
            out.dead_letters.first()
        );
        for p in &out.partials {
            if let Record::Partial(p) = Record::decode(&p.value).unwrap() {
                all.push((
                    p.end,
                    p.key.to_owned(),
                    p.start,
                    p.block[0],
                    p.block[1..].to_vec(),
                ));
            }
        }
    }
    all.sort();
    let n = all.len();
    all.dedup_by(|a, b| (a.0, &a.1, a.2, a.3) == (b.0, &b.1, b.2, b.3));
    assert_eq!(all.len(), n, "one observation per session");
    all
}

/// The observations as the oracle's sessions.
fn as_sessions(obs: &[Obs]) -> Vec<Sess> {
    let mut all: Vec<Sess> = obs
        .iter()
        .map(|(epoch, user, time, tag, payload)| {
            assert_eq!(*tag, super::SESSION);
            let s = Session::decode(payload).unwrap();
            let list = |v: Vec<Box<str>>| v.into_iter().map(String::from).collect();
            Sess {
                epoch: *epoch,
                user: user.clone(),
                end: *time,
                products: list(s.products),
                bought: list(s.bought),
            }
        })
        .collect();
    all.sort();
    all
}

/// The plan of `manifest`'s analytic, with weights that never decay when `undecayed`.
fn test_plan(manifest: &str, undecayed: bool) -> Arc<RecommendPlan> {
    let pipeline = tidemark_api::parse_manifest(manifest).unwrap();
    let sources = Plan::compile(PIPELINE, &pipeline.spec).unwrap().sources;
    let spec = pipeline.spec.analytics[0].recommend.as_ref().unwrap();
    let (mut plan, _) = compile_plan(spec, "spec.analytics[0].recommend", &sources).unwrap();
    if undecayed {
        plan.half_life = f64::INFINITY;
    }
    Arc::new(plan)
}

/// Calls `learner` for one epoch, returning its results' JSON values.
fn learn_epoch(learner: &mut CoOccurrence, end: i64, batch: &[Observation]) -> Vec<Value> {
    values(&emitting("recs", |e| learner.epoch(end, batch, e)))
}

/// Snapshots `learner` into a fresh one, checking that it encodes as it was.
fn restored(learner: &CoOccurrence, plan: &Arc<RecommendPlan>) -> CoOccurrence {
    let mut w = Writer::default();
    learner.write(&mut w);
    let bytes = w.finish();
    let mut fresh = CoOccurrence::new(plan.clone());
    fresh.read(&mut Reader::new(&bytes)).unwrap();
    let mut again = Writer::default();
    fresh.write(&mut again);
    assert_eq!(again.finish(), bytes, "a restored model encodes as it was");
    fresh
}

/// Feeds `obs` to a fresh learner epoch by epoch as the driver does, restoring it from a
/// snapshot before epoch number `restore_at`; returns it and its results.
fn learn_all(
    plan: &Arc<RecommendPlan>,
    obs: &[Obs],
    restore_at: usize,
) -> (CoOccurrence, Vec<Value>) {
    let mut epochs: BTreeMap<i64, Vec<Observation>> = BTreeMap::new();
    for (epoch, user, time, tag, payload) in obs {
        epochs.entry(*epoch).or_default().push(Observation {
            epoch: *epoch,
            user: user.as_str().into(),
            time: *time,
            tag: *tag,
            payload: payload.clone(),
        });
    }
    let mut learner = CoOccurrence::new(plan.clone());
    let mut results = Vec::new();
    for (i, (end, batch)) in epochs.iter().enumerate() {
        if i == restore_at {
            learner = restored(&learner, plan);
        }
        results.extend(learn_epoch(&mut learner, *end, batch));
    }
    (learner, results)
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn list(v: &Value, weight: &str) -> Vec<(String, f64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let p = x["product"].as_str().unwrap().to_owned();
            (p, x[weight].as_f64().unwrap())
        })
        .collect()
}

/// The recommendation and neighbour records among `results`, as the oracle's.
fn as_wants(results: &[Value]) -> Vec<Want> {
    let version = |v: &Value| v["model_version"].as_u64().unwrap();
    results
        .iter()
        .filter_map(|v| match v["record"].as_str().unwrap() {
            "recommendation" => Some(Want::Rec {
                user: v["user"].as_str().unwrap().to_owned(),
                end: ms(&v["session_end"]),
                products: list(&v["products"], "score"),
                from: match v["from"].as_str().unwrap() {
                    "cooccurrence" => "cooccurrence",
                    "popularity" => "popularity",
                    "mixed" => "mixed",
                    other => panic!("from {other}"),
                },
                version: version(v),
            }),
            "neighbours" => Some(Want::Neighbours {
                product: v["product"].as_str().unwrap().to_owned(),
                list: list(&v["neighbours"], "weight"),
                version: version(v),
            }),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sessions_counts_and_lists_equal_the_oracle_over_tasks_and_restores(
        (c, events) in configs().prop_flat_map(|c| (Just(c.clone()), events(c.lateness))),
        tasks in 1u32..=4,
        cut in 0.0f64..1.0,
        restore_at in 0usize..12,
    ) {
        let manifest = c.manifest();
        let obs = task_observations(&manifest, &events, tasks, cut);
        let want = oracle::sessions(&c.rules(), &events);
        prop_assert_eq!(&as_sessions(&obs), &want);

        let plan = test_plan(&manifest, true);
        let (learner, results) = learn_all(&plan, &obs, restore_at);
        let (pairs, popularity) = oracle::counts(&want);
        let got_pairs: Vec<(String, String, f64)> = learner.stored_pairs();
        let want_pairs: Vec<(String, String, f64)> =
            pairs.into_iter().map(|((a, b), n)| (a, b, n as f64)).collect();
        prop_assert_eq!(got_pairs, want_pairs, "raw co-occurrence counts");
        let want_pop: Vec<(String, f64)> =
            popularity.into_iter().map(|(p, n)| (p, n as f64)).collect();
        prop_assert_eq!(learner.stored_popularity(), want_pop);
        prop_assert_eq!(as_wants(&results), oracle::undecayed(&c.rules(), &want));
    }

    #[test]
    fn decayed_neighbour_weights_through_the_global_stage_equal_the_oracle(
        c in configs(),
        events in events(10 * MIN),
        tasks in 1u32..=5,
        cut in 0.0f64..1.0,
        interleave in prop::collection::vec(0usize..5, 1..8),
    ) {
        let c = Config { lateness: 10 * MIN, k: 100, ..c };
        let (results, dead) = run_model(&c.manifest(), &events, tasks, cut, &interleave);
        prop_assert_eq!(dead, 0);
        let sessions = oracle::sessions(&c.rules(), &events);
        let want = oracle::decayed(&sessions, c.half_life as f64);
        let mut got = BTreeMap::new();
        for r in &results {
            let v: Value = serde_json::from_str(r.split_once('\t').unwrap().1).unwrap();
            if v["record"] == "neighbours" {
                let weights: BTreeMap<String, f64> =
                    list(&v["neighbours"], "weight").into_iter().collect();
                let key = (ms(&v["window"]["end"]), v["product"].as_str().unwrap().to_owned());
                prop_assert!(got.insert(key, weights).is_none(), "one list per product and epoch");
            }
        }
        prop_assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (key, w) in &want {
            let g = &got[key];
            prop_assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>());
            for (q, x) in w {
                prop_assert!((g[q] - x).abs() <= 1e-9 * x, "{:?} {}: {} vs {}", key, q, g[q], x);
            }
        }
    }

    #[test]
    fn results_are_identical_bytes_over_one_two_three_and_five_tasks_with_restores(
        events in events(BASE.lateness),
        cut in 0.0f64..1.0,
        interleave in prop::collection::vec(0usize..5, 1..8),
    ) {
        let c = Config { half_life: HOUR, k: 3, ..BASE };
        let manifest = c.manifest();
        let (want, dead) = run_model(&manifest, &events, 1, 0.0, &[0]);
        prop_assert_eq!(dead, 0);
        for tasks in [1, 2, 3, 5] {
            let (got, _) = run_model(&manifest, &events, tasks, cut, &interleave);
            prop_assert_eq!(&got, &want, "{} tasks", tasks);
        }
        for r in &want {
            let v: Value = serde_json::from_str(r.split_once('\t').unwrap().1).unwrap();
            if v["record"] == "recommendation" {
                let scores: Vec<f64> = list(&v["products"], "score").iter().map(|x| x.1).collect();
                prop_assert!(!scores.is_empty() && scores.len() <= c.k);
                if v["from"] == "cooccurrence" {
                    prop_assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{}", v);
                }
            }
        }
    }
}

#[test]
fn session_and_bought_caps_hold_under_shuffled_input() {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
    let c = Config {
        lateness: 40 * MIN,
        gap: 30 * MIN,
        ..BASE
    };
    let mut events = Vec::new();
    for user in 1..=3u32 {
        let mut t = START + i64::from(user) * MIN;
        // 150 purchases of 120 products, then a session of views of 80 products (some
        // twice), each a few seconds apart.
        for i in 0..150u32 {
            t += rng.random_range(1_000..20_000);
            let product = 1000 + (i * 7 + user) % 120;
            events.push(Ev {
                user,
                time: t,
                kind: "purchase",
                product,
                price: 5.0,
            });
        }
        t += HOUR;
        for i in 0..120u32 {
            t += rng.random_range(1_000..20_000);
            let product = (i * 13 + user) % 80;
            events.push(Ev {
                user,
                time: t,
                kind: "view",
                product,
                price: 5.0,
            });
        }
    }
    // Arrival order: by time plus a random delay of up to 5 minutes (well within the
    // lateness): most events arrive out of order.
    events.sort_by_cached_key(|e| e.time + rng.random_range(0..5 * MIN));
    let want = oracle::sessions(&c.rules(), &events);
    assert_eq!(want.len(), 3);
    assert!(want
        .iter()
        .all(|s| s.products.len() == 50 && s.bought.len() == 100));
    for tasks in [1, 3] {
        let got = as_sessions(&task_observations(&c.manifest(), &events, tasks, 0.4));
        assert_eq!(got, want, "{tasks} tasks");
    }
}

#[test]
fn the_example_pipeline_plans_and_a_zero_half_life_is_refused() {
    let text = include_str!("../../../../../examples/recommendations.yaml");
    let plan = plan_of(text, 2);
    assert_eq!((plan.sources.len(), plan.analytics.len()), (2, 1));
    let zero = BASE.manifest().replace("halfLife: 720m", "halfLife: 0s");
    let pipeline = tidemark_api::parse_manifest(&zero).unwrap();
    let err = Plan::compile(PIPELINE, &pipeline.spec).unwrap_err();
    assert!(err.to_string().contains("halfLife"), "{err}");
}
