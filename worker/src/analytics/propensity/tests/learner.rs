//! The FTRL learner: its polynomial terms, AUC by rank against pair counting, one update
//! against the formulas worked by hand, exact snapshots, p = 0.5 before any example; and
//! model quality on planted data. The quality reference is an offline logistic regression on
//! the same degree-2 terms fitted by Newton's method (IRLS, in this file, with a 1e-9 ridge
//! for stability), independent of the learner's code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::Value;

use super::super::ftrl::{auc, sigmoid, Ftrl};
use super::super::{decision_payload, example_payload, read_example, terms, PropensityPlan};
use crate::analytics::model::tests::{
    emitting, manifest, observations, run_model, values, Ev, HOUR, START,
};
use crate::analytics::model::{Learner, Observation};
use crate::window::codec::{Reader, Writer};

fn propensity_manifest(extra: &str) -> String {
    manifest(&format!(
        r#"    - name: buyers
      propensity:
        sources: [events]
        epoch: 1h
        horizon: 1h
        window: 3h{extra}"#
    ))
}

/// The plan of the test pipeline's propensity analytic.
fn plan_for(m: &str) -> Arc<PropensityPlan> {
    let pipeline = tidemark_api::parse_manifest(m).unwrap();
    let sources = crate::plan::Plan::compile("shop", &pipeline.spec)
        .unwrap()
        .sources;
    let spec = pipeline.spec.analytics[0].propensity.as_ref().unwrap();
    Arc::new(
        super::super::plan(spec, "spec.analytics[0].propensity", &sources)
            .unwrap()
            .0,
    )
}

/// Runs `observations` as one epoch ending at `end` through `learner`: its results' JSON.
fn run_epoch(learner: &mut Ftrl, end: i64, observations: &[Observation]) -> Vec<Value> {
    values(&emitting("buyers", |e| learner.epoch(end, observations, e)))
}

fn observation(user: usize, tag: u8, payload: Vec<u8>) -> Observation {
    Observation {
        epoch: START + HOUR,
        user: format!("u{user:05}").into(),
        time: START,
        tag,
        payload,
    }
}

#[test]
fn terms_are_the_bias_and_every_monomial_up_to_the_degree() {
    assert_eq!(
        terms(2, 2),
        vec![vec![], vec![0], vec![1], vec![0, 0], vec![0, 1], vec![1, 1]]
    );
    assert_eq!(terms(3, 1).len(), 4);
    assert_eq!(terms(3, 2).len(), 10);
    assert_eq!(terms(3, 3).len(), 20);
    assert_eq!(terms(16, 3).len(), 969, "C(19, 3)");
    let plan = plan_for(&propensity_manifest(""));
    assert_eq!(
        plan.term_names[..5],
        [
            "bias",
            "log_views",
            "log_carts",
            "log_purchases",
            "log_views*log_views"
        ]
    );
    assert_eq!(plan.term_names[5], "log_views*log_carts");
    assert_eq!(
        (plan.alpha, plan.beta, plan.l1, plan.l2),
        (0.1, 1.0, 0.0, 1.0)
    );
}

proptest! {
    #[test]
    fn auc_by_rank_is_the_share_of_ordered_pairs(
        pairs in prop::collection::vec((0u8..6, any::<bool>()), 0..40),
    ) {
        let mut scored: Vec<(f64, bool)> = pairs.iter().map(|(s, y)| (f64::from(*s), *y)).collect();
        let (mut wins, mut n) = (0.0, 0.0);
        for (a, ya) in &scored {
            for (b, yb) in &scored {
                if *ya && !*yb {
                    n += 1.0;
                    wins += if a > b { 1.0 } else if a == b { 0.5 } else { 0.0 };
                }
            }
        }
        let want = (n > 0.0).then(|| wins / n);
        let got = auc(&mut scored);
        match (got, want) {
            (Some(g), Some(w)) => prop_assert!((g - w).abs() < 1e-12, "{} vs {}", g, w),
            (g, w) => prop_assert_eq!(g, w),
        }
    }
}

#[test]
fn one_update_follows_the_ftrl_proximal_formulas() {
    let plan = plan_for(&propensity_manifest("\n        degree: 1"));
    let mut learner = Ftrl::new(plan);
    let x = [2.0, 0.0, 1.0];
    assert_eq!(learner.predict(&x), 0.5, "all weights 0 before any example");
    let m = learner.learn(&x, true);
    assert_eq!(m, 0.0);
    // g = (0.5 - 1) * [1, 2, 0, 1]; z = g (w was 0); n = g²; w = -z / ((1 + |g|) / 0.1 + 1).
    let g = [-0.5, -1.0, 0.0, -0.5];
    let want: Vec<f64> = g
        .iter()
        .map(|g: &f64| -g / ((1.0 + g.abs()) / 0.1 + 1.0))
        .collect();
    let got = learner.weights();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-15, "{got:?} vs {want:?}");
    }
    // A second step: sigma = (sqrt(n + g²) - sqrt(n)) / alpha enters z.
    let w0 = got.clone();
    let p = sigmoid(w0[0] + 2.0 * w0[1] + w0[3]);
    learner.learn(&x, false);
    let g2: Vec<f64> = [1.0, 2.0, 0.0, 1.0].iter().map(|xi| p * xi).collect();
    for i in [0usize, 1, 3] {
        let n = g[i] * g[i] + g2[i] * g2[i];
        let sigma = (n.sqrt() - g[i].abs()) / 0.1;
        let z = g[i] + g2[i] - sigma * w0[i];
        let w = -z / ((1.0 + n.sqrt()) / 0.1 + 1.0);
        assert!((learner.weights()[i] - w).abs() < 1e-15, "term {i}");
    }
    assert_eq!(learner.weights()[2], 0.0, "a zero term is not learned");
}

#[test]
fn an_epoch_scores_with_the_updated_model_and_reports_it() {
    let plan = plan_for(&propensity_manifest(""));
    let mut learner = Ftrl::new(plan);
    // Decisions only: the default p = 0.5 of version 0.
    let first = run_epoch(
        &mut learner,
        START + HOUR,
        &[observation(1, 0, decision_payload(&[1.0, 0.0, 0.0]))],
    );
    assert_eq!(first[0]["record"], "score");
    assert_eq!(
        (
            first[0]["probability"].as_f64(),
            first[0]["model_version"].as_u64()
        ),
        (Some(0.5), Some(0))
    );
    assert_eq!(first[1]["record"], "model");
    assert!(
        first[1]["log_loss"].is_null()
            && first[1]["auc"].is_null()
            && first[1]["cumulative_auc"].is_null()
    );
    assert_eq!(first[1]["weights"]["bias"], 0.0);
    // Examples of one class: learned, AUC null; then a decision scored by the new model.
    let obs = vec![
        observation(1, 0, decision_payload(&[1.0, 0.0, 0.0])),
        observation(2, 1, example_payload(true, &[1.0, 1.0, 0.0])),
        observation(3, 1, example_payload(true, &[0.5, 1.0, 0.0])),
    ];
    let second = run_epoch(&mut learner, START + 2 * HOUR, &obs);
    assert_eq!(second.len(), 2);
    let model = &second[1];
    assert_eq!(
        (
            model["examples"].as_u64(),
            model["positives"].as_u64(),
            model["model_version"].as_u64()
        ),
        (Some(2), Some(2), Some(1))
    );
    assert!(model["auc"].is_null());
    assert!((model["log_loss"].as_f64().unwrap() - 0.5f64.ln().abs()).abs() > 0.0);
    let p = second[0]["probability"].as_f64().unwrap();
    assert_eq!(p, learner.predict(&[1.0, 0.0, 0.0]));
    assert!(p > 0.5, "positives raise the propensity: {p}");
    assert_eq!(second[0]["model_version"], 1);
    assert!(model["weights"]["bias"].as_f64().unwrap() > 0.0);
    assert_eq!(model["weights"].as_object().unwrap().len(), 10);
    let gauges: BTreeMap<String, f64> = learner.gauges().into_iter().collect();
    assert_eq!(gauges["model_version"], 1.0);
    assert_eq!(gauges["examples"], 2.0);
    assert_eq!(Some(gauges["log_loss"]), model["log_loss"].as_f64());
    assert_eq!(
        Some(gauges["cumulative_log_loss"]),
        model["cumulative_log_loss"].as_f64()
    );
    assert!(!gauges.contains_key("auc"), "one class: no AUC");
}

#[test]
fn a_learner_snapshot_round_trips_exactly() {
    let plan = plan_for(&propensity_manifest("\n        degree: 3"));
    let mut rng = Pcg64Mcg::seed_from_u64(3);
    let example = |rng: &mut Pcg64Mcg| {
        let x: Vec<f64> = (0..3).map(|_| rng.random_range(0.0..2.0)).collect();
        (x, rng.random_bool(0.3))
    };
    let mut a = Ftrl::new(plan.clone());
    let obs: Vec<Observation> = (0..200)
        .map(|i| {
            let (x, y) = example(&mut rng);
            observation(i, 1, example_payload(y, &x))
        })
        .collect();
    run_epoch(&mut a, START + HOUR, &obs);
    let mut w = Writer::default();
    a.write(&mut w);
    let bytes = w.finish();
    let mut b = Ftrl::new(plan);
    b.read(&mut Reader::new(&bytes)).unwrap();
    let mut again = Writer::default();
    b.write(&mut again);
    assert_eq!(again.finish(), bytes);
    let more: Vec<Observation> = (0..200)
        .map(|i| {
            let (x, y) = example(&mut rng);
            observation(
                i,
                (i % 2) as u8,
                if i % 2 == 0 {
                    decision_payload(&x)
                } else {
                    example_payload(y, &x)
                },
            )
        })
        .collect();
    let ra = run_epoch(&mut a, START + 2 * HOUR, &more);
    let rb = run_epoch(&mut b, START + 2 * HOUR, &more);
    assert_eq!(ra, rb);
    let bits = |l: &Ftrl| l.weights().iter().map(|w| w.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.gauges(), b.gauges());
    assert_eq!(a.gauges().len(), 6, "{:?}", a.gauges());
    assert!(
        Ftrl::new(plan_for(&propensity_manifest("")))
            .read(&mut Reader::new(&bytes))
            .is_err(),
        "another shape"
    );
}

// ---------------------------------------------------------------------------------------------
// Model quality

/// The planted propensity: logistic of a degree-2 polynomial of the default features
/// (log(1 + views), log(1 + carts), log(1 + purchases)) of the trailing 3 h.
fn planted_logit(x: &[f64]) -> f64 {
    let (v, c, p) = (x[0], x[1], x[2]);
    -2.2 + 0.6 * v + 1.4 * c - 0.8 * p - 0.3 * v * v + 0.5 * v * c - 0.5 * c * c + 0.6 * p * p
}

/// `users` users over `epochs` hourly epochs: each browses in an epoch with a chance of its
/// own; at each epoch end every user active in the epoch before buys in the next hour with
/// the planted propensity of its features (epoch = horizon = 1 h, so each purchase lies in
/// exactly one decision's horizon and labels follow the planted model exactly).
fn planted(users: u32, epochs: i64, seed: u64) -> Vec<Ev> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let rates: Vec<f64> = (0..users).map(|_| rng.random_range(0.05..0.6)).collect();
    let mut history: Vec<Vec<Ev>> = vec![Vec::new(); users as usize];
    for k in 0..epochs {
        let end = START + k * HOUR;
        for (u, evs) in history.iter_mut().enumerate() {
            if k > 0 && evs.iter().any(|e| e.time >= end - HOUR) {
                let seen: Vec<&Ev> = evs.iter().filter(|e| e.time >= end - 3 * HOUR).collect();
                let n = |kind: &str| seen.iter().filter(|e| e.kind == kind).count() as f64;
                let x = [
                    n("view").ln_1p(),
                    n("add_to_cart").ln_1p(),
                    n("purchase").ln_1p(),
                ];
                if rng.random_bool(sigmoid(planted_logit(&x))) {
                    let time = end + rng.random_range(0..HOUR);
                    evs.push(Ev {
                        user: u as u32,
                        time,
                        kind: "purchase",
                        product: 1,
                        price: 20.0,
                    });
                }
            }
            if rng.random_bool(rates[u]) {
                let views = rng.random_range(1..=8);
                let carts = rng.random_range(0..=3) * usize::from(rng.random_bool(0.5));
                for i in 0..views + carts {
                    let kind = if i < views { "view" } else { "add_to_cart" };
                    let time = end + rng.random_range(0..HOUR);
                    evs.push(Ev {
                        user: u as u32,
                        time,
                        kind,
                        product: 1,
                        price: 20.0,
                    });
                }
            }
        }
    }
    let mut all: Vec<Ev> = history.into_iter().flatten().collect();
    all.sort_by_key(|e| (e.time, e.user));
    all
}

/// The degree-2 terms of three features, written out.
fn reference_terms(x: &[f64]) -> [f64; 10] {
    let (a, b, c) = (x[0], x[1], x[2]);
    [1.0, a, b, c, a * a, a * b, a * c, b * b, b * c, c * c]
}

/// Offline logistic regression by Newton's method (IRLS) to convergence.
fn irls(rows: &[[f64; 10]], labels: &[bool]) -> [f64; 10] {
    let mut beta = [0.0; 10];
    for _ in 0..100 {
        let mut h = [[0.0; 10]; 10];
        let mut grad = [0.0; 10];
        for (x, y) in rows.iter().zip(labels) {
            let p = sigmoid(x.iter().zip(&beta).map(|(a, b)| a * b).sum());
            let w = p * (1.0 - p);
            for i in 0..10 {
                grad[i] += (f64::from(u8::from(*y)) - p) * x[i];
                for j in 0..10 {
                    h[i][j] += w * x[i] * x[j];
                }
            }
        }
        for (i, row) in h.iter_mut().enumerate() {
            row[i] += 1e-9;
        }
        // Solve h · step = grad by Gaussian elimination with partial pivoting.
        let mut a: Vec<Vec<f64>> = (0..10)
            .map(|i| {
                let mut r = h[i].to_vec();
                r.push(grad[i]);
                r
            })
            .collect();
        for col in 0..10 {
            let pivot = (col..10)
                .max_by(|p, q| a[*p][col].abs().total_cmp(&a[*q][col].abs()))
                .unwrap();
            a.swap(col, pivot);
            let (top, rest) = a.split_at_mut(col + 1);
            let pivot_row = &top[col];
            for row in rest {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
        let mut step = [0.0; 10];
        for i in (0..10).rev() {
            let s: f64 = (i + 1..10).map(|k| a[i][k] * step[k]).sum();
            step[i] = (a[i][10] - s) / a[i][i];
        }
        for (b, s) in beta.iter_mut().zip(&step) {
            *b += s;
        }
        if step.iter().map(|s| s * s).sum::<f64>() < 1e-20 {
            break;
        }
    }
    beta
}

/// Expected calibration error over 10 equal-width bins of the predictions.
fn ece(predictions: &[(f64, bool)]) -> f64 {
    let mut bins = [(0.0, 0.0, 0.0); 10];
    for (p, y) in predictions {
        let b = ((p * 10.0) as usize).min(9);
        bins[b].0 += 1.0;
        bins[b].1 += p;
        bins[b].2 += f64::from(u8::from(*y));
    }
    let n = predictions.len() as f64;
    bins.iter()
        .filter(|b| b.0 > 0.0)
        .map(|(k, p, y)| k / n * (p / k - y / k).abs())
        .sum()
}

#[test]
fn on_planted_data_prequential_auc_is_within_002_of_offline_logistic_regression_and_calibrated() {
    let m = propensity_manifest("");
    let events = planted(1500, 48, 11);
    // The examples the learner receives, in its order: by epoch, then the user's hash, the
    // user and time.
    type Key = (i64, u64, String, i64);
    let mut examples: BTreeMap<Key, (bool, Vec<f64>)> = BTreeMap::new();
    for (epoch, user, time, tag, payload) in observations(&m, &events) {
        if tag == 1 {
            let hash = crate::analytics::model::driver::user_hash(&user);
            examples.insert((epoch, hash, user, time), read_example(&payload).unwrap());
        }
    }
    // Replayed through the learner: each example's prediction before it is learned.
    let plan = plan_for(&m);
    let mut ftrl = Ftrl::new(plan);
    let mut tested: Vec<(i64, f64, bool, Vec<f64>)> = Vec::new();
    for ((epoch, ..), (y, x)) in &examples {
        let margin = ftrl.learn(x, *y);
        tested.push((*epoch, margin, *y, x.clone()));
    }
    // The replay is what the engine's learner did: the same AUC per epoch.
    let (results, dead) = run_model(&m, &events, 1, 1.0, &[0]);
    assert_eq!(dead, 0);
    let mut checked = 0;
    for line in &results {
        let v: Value = serde_json::from_str(line.split_once('\t').unwrap().1).unwrap();
        if v["record"] != "model" || v["auc"].is_null() {
            continue;
        }
        let end = chrono::DateTime::parse_from_rfc3339(v["window"]["end"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let mut epoch: Vec<(f64, bool)> = tested
            .iter()
            .filter(|t| t.0 == end)
            .map(|t| (t.1, t.2))
            .collect();
        assert_eq!(v["examples"].as_u64().unwrap() as usize, epoch.len());
        assert!((v["auc"].as_f64().unwrap() - auc(&mut epoch).unwrap()).abs() < 1e-12);
        checked += 1;
    }
    assert!(checked > 40, "{checked} epochs checked");

    // After a warm-up of the first quarter of the examples.
    let warm = tested.len() / 4;
    let rows: Vec<[f64; 10]> = tested.iter().map(|t| reference_terms(&t.3)).collect();
    let labels: Vec<bool> = tested.iter().map(|t| t.2).collect();
    let beta = irls(&rows, &labels);
    let mut online: Vec<(f64, bool)> = tested[warm..].iter().map(|t| (t.1, t.2)).collect();
    let mut offline: Vec<(f64, bool)> = rows[warm..]
        .iter()
        .zip(&labels[warm..])
        .map(|(x, y)| (x.iter().zip(&beta).map(|(a, b)| a * b).sum(), *y))
        .collect();
    let mut truth: Vec<(f64, bool)> = tested[warm..]
        .iter()
        .map(|t| (planted_logit(&t.3), t.2))
        .collect();
    let positives = labels.iter().filter(|y| **y).count();
    let (online_auc, offline_auc) = (auc(&mut online).unwrap(), auc(&mut offline).unwrap());
    let calibration = ece(&tested[warm..]
        .iter()
        .map(|t| (sigmoid(t.1), t.2))
        .collect::<Vec<_>>());
    eprintln!(
        "{} examples ({positives} positive): prequential AUC {online_auc:.4}, offline {offline_auc:.4}, \
         planted {:.4}; ECE {calibration:.4}; offline weights {beta:?}",
        tested.len(),
        auc(&mut truth).unwrap()
    );
    assert!(tested.len() > 10_000, "{}", tested.len());
    assert!(
        (online_auc - offline_auc).abs() <= 0.02,
        "{online_auc} vs {offline_auc}"
    );
    assert!(calibration <= 0.05, "ECE {calibration}");
}

/// Merge time per epoch of ~10k examples and 1k decisions, and the observer's bytes per user.
#[test]
#[ignore = "a measurement: cargo test --release -- --ignored --nocapture propensity"]
fn measure_learner_epoch_time_and_observer_bytes_per_user() {
    let m = propensity_manifest("");
    let plan = plan_for(&m);
    let mut rng = Pcg64Mcg::seed_from_u64(5);
    let mut learner = Ftrl::new(plan.clone());
    let mut times = Vec::new();
    for e in 0..10 {
        let mut obs: Vec<Observation> = (0..11_000)
            .map(|i| {
                let x: Vec<f64> = (0..3).map(|_| rng.random_range(0.0..3.0)).collect();
                let y = rng.random_bool(sigmoid(planted_logit(&x)));
                let (tag, payload) = if i < 10_000 {
                    (1, example_payload(y, &x))
                } else {
                    (0, decision_payload(&x))
                };
                observation(i, tag, payload)
            })
            .collect();
        obs.sort_by(|a, b| (&a.user, a.tag).cmp(&(&b.user, b.tag)));
        let started = Instant::now();
        run_epoch(&mut learner, START + (e + 1) * HOUR, &obs);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "learner: 10k examples + 1k decisions per epoch: median {:.2} ms (min {:.2})",
        times[5], times[0]
    );

    use crate::analytics::model::ModelKind;
    let events = planted(2000, 30, 9);
    let defaults = manifest(
        r#"    - name: buyers
      propensity:
        sources: [events]
        horizon: 1h"#,
    );
    for (name, m) in [
        ("1 h epochs, 3 h window", m),
        ("defaults: 10 m epochs, 24 h window", defaults),
    ] {
        let mut observer = super::super::Propensity(plan_for(&m)).observer();
        let mut out = Vec::new();
        let mut peak = (0, 0);
        let mut next = START;
        for e in &events {
            if e.time >= next {
                observer.due(e.time - 10_000, &mut out);
                let s = observer.stats();
                if s.bytes > peak.0 {
                    peak = (s.bytes, s.keys);
                }
                next = e.time + HOUR / 6;
            }
            let user = format!("u{}", e.user);
            let event = crate::event::Event {
                time: e.time,
                user: user.as_str().into(),
                product: Some("p1".into()),
                event_type: Some(e.kind.into()),
                category: None,
                price: Some(e.price),
                extra: Vec::new(),
            };
            observer.add(&user, 0, &event);
        }
        eprintln!(
            "observer ({name}, 1 h horizon): peak {} bytes for {} users: {:.0} bytes per user",
            peak.0,
            peak.1,
            peak.0 as f64 / peak.1 as f64
        );
    }
}
