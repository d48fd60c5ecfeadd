//! Segments against oracles written apart from the engine: the features each user is
//! observed with (a brute-force RFM over the raw events), identical results over 1–5 tasks
//! with restores mid-stream, and, on users with three planted behaviours, the adjusted Rand
//! index against the planted labels and the centres against a reference Lloyd's k-means (a
//! pure-Rust implementation in this file, best of 10 seeded k-means++ starts) on the same
//! feature matrix: every user's last observed features.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::Value;

use crate::analytics::model::read_f64s;
use crate::analytics::model::tests::{manifest, observations, run_model, Ev, HOUR, MIN, START};
use crate::window::codec::Reader;

fn segments_manifest(k: u32, epoch_min: i64, horizon_h: i64) -> String {
    manifest(&format!(
        r#"    - name: segs
      segments:
        sources: [events]
        epoch: {epoch_min}m
        k: {k}
        seed: 7
        horizon: {horizon_h}h
        labels: {{ by: revenue, names: [{names}] }}"#,
        names = (0..k)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Random events of up to 8 users over 6 hours, each up to 10 s out of order.
fn events() -> impl Strategy<Value = Vec<Ev>> {
    let one = (0u32..8, 0i64..6 * HOUR, 0usize..3, 0u32..20, 1u32..500);
    prop::collection::vec(one, 1..120)
        .prop_flat_map(|raw| {
            let n = raw.len();
            (Just(raw), prop::collection::vec(0i64..10_000, n))
        })
        .prop_map(|(raw, jitter)| {
            let mut evs: Vec<(i64, Ev)> = raw
                .into_iter()
                .zip(jitter)
                .map(|((user, t, kind, product, price), j)| {
                    let time = START + t;
                    (
                        time + j,
                        Ev {
                            user,
                            time,
                            kind: ["view", "add_to_cart", "purchase"][kind],
                            product,
                            price: f64::from(price),
                        },
                    )
                })
                .collect();
            // Arrival order: by time plus a jitter below the out-of-orderness.
            evs.sort_by_key(|(arrival, e)| (*arrival, e.user));
            evs.into_iter().map(|(_, e)| e).collect()
        })
}

/// The RFM features of every user active in each epoch, from the raw events: (epoch end,
/// user, [recency hours, purchases, revenue]).
fn rfm_oracle(events: &[Ev], epoch: i64, horizon: i64) -> Vec<(i64, String, Vec<f64>)> {
    let mut active: BTreeMap<(i64, u32), ()> = BTreeMap::new();
    for e in events {
        let end = (e.time.div_euclid(epoch) + 1) * epoch;
        active.insert((end, e.user), ());
    }
    active
        .keys()
        .map(|&(end, user)| {
            let bought: Vec<&Ev> = events
                .iter()
                .filter(|e| e.user == user && e.kind == "purchase")
                .filter(|e| e.time >= end - horizon && e.time < end)
                .collect();
            let last = bought.iter().map(|e| e.time).max();
            let recency = last.map_or(horizon, |t| end - t) as f64 / HOUR as f64;
            let revenue: f64 = bought.iter().map(|e| e.price).sum();
            (
                end,
                format!("u{user}"),
                vec![recency, bought.len() as f64, revenue],
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn each_active_user_is_observed_with_the_rfm_of_its_horizon(events in events()) {
        let m = segments_manifest(3, 30, 2);
        let mut got: Vec<(i64, String, Vec<f64>)> = observations(&m, &events)
            .into_iter()
            .map(|(epoch, user, time, tag, payload)| {
                assert_eq!((time, tag), (epoch, 0));
                (epoch, user, read_f64s(&mut Reader::new(&payload)).unwrap())
            })
            .collect();
        got.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut want = rfm_oracle(&events, 30 * MIN, 2 * HOUR);
        want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!((g.0, &g.1), (w.0, &w.1));
            prop_assert!(g.2.iter().zip(&w.2).all(|(a, b)| close(*a, *b)), "{:?} vs {:?}", g, w);
        }
    }

    #[test]
    fn results_are_identical_over_one_to_five_tasks_with_restores(
        events in events(),
        tasks in prop::sample::select(vec![1u32, 2, 3, 5]),
        cut in 0.0f64..1.0,
        interleave in prop::collection::vec(0usize..5, 1..8),
    ) {
        let m = segments_manifest(2, 30, 2);
        let (whole, dead) = run_model(&m, &events, 1, 0.0, &[0]);
        prop_assert_eq!(dead, 0);
        let (got, dead) = run_model(&m, &events, tasks, cut, &interleave);
        prop_assert_eq!(dead, 0);
        prop_assert_eq!(got, whole);
    }
}

/// Users of three planted behaviours over four days: 0 buys often and much, 1 sometimes and
/// little, 2 only browses.
fn planted(users: u32, seed: u64) -> (Vec<Ev>, BTreeMap<String, usize>) {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut evs = Vec::new();
    let mut truth = BTreeMap::new();
    for user in 0..users {
        let group = (user % 3) as usize;
        truth.insert(format!("u{user}"), group);
        // Chance in six that an event is a purchase, and the purchases' value.
        let (chance, price) = match group {
            0 => (3, 300.0),
            1 => (1, 40.0),
            _ => (0, 0.0),
        };
        let mut t = rng.random_range(0..HOUR);
        while t < 96 * HOUR {
            let buy = rng.random_range(0..6) < chance;
            let (kind, p) = if buy {
                ("purchase", price * rng.random_range(0.8..1.2))
            } else {
                ("view", 0.0)
            };
            evs.push(Ev {
                user,
                time: START + t,
                kind,
                product: rng.random_range(0..50),
                price: (p * 100.0f64).round() / 100.0,
            });
            t += rng.random_range(20 * MIN..100 * MIN);
        }
    }
    evs.sort_by_key(|e| (e.time, e.user));
    (evs, truth)
}

/// Adjusted Rand index of two labelings of the same items.
fn adjusted_rand(a: &[usize], b: &[usize]) -> f64 {
    let choose2 = |n: f64| n * (n - 1.0) / 2.0;
    let mut table: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let (mut rows, mut cols): (BTreeMap<usize, f64>, BTreeMap<usize, f64>) = Default::default();
    for (x, y) in a.iter().zip(b) {
        *table.entry((*x, *y)).or_default() += 1.0;
        *rows.entry(*x).or_default() += 1.0;
        *cols.entry(*y).or_default() += 1.0;
    }
    let index: f64 = table.values().map(|n| choose2(*n)).sum();
    let sa: f64 = rows.values().map(|n| choose2(*n)).sum();
    let sb: f64 = cols.values().map(|n| choose2(*n)).sum();
    let expected = sa * sb / choose2(a.len() as f64);
    (index - expected) / ((sa + sb) / 2.0 - expected)
}

/// Lloyd's k-means on standardised `rows` (best inertia of 10 seeded k-means++ starts):
/// the centres in the rows' units.
fn lloyd(rows: &[Vec<f64>], k: usize) -> Vec<Vec<f64>> {
    let d = rows[0].len();
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let sd: Vec<f64> = (0..d)
        .map(|j| {
            let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
            if v > 0.0 {
                v.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let z: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| (0..d).map(|j| (r[j] - mean[j]) / sd[j]).collect())
        .collect();
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let mut best: Option<(f64, Vec<Vec<f64>>)> = None;
    for start in 0..10u64 {
        let mut rng = Pcg64Mcg::seed_from_u64(1000 + start);
        let mut centres = vec![z[rng.random_range(0..z.len())].clone()];
        while centres.len() < k {
            let d2: Vec<f64> = z
                .iter()
                .map(|x| {
                    centres
                        .iter()
                        .map(|c| dist(x, c))
                        .fold(f64::INFINITY, f64::min)
                })
                .collect();
            let mut target = rng.random::<f64>() * d2.iter().sum::<f64>();
            let pick = d2
                .iter()
                .position(|v| {
                    target -= v;
                    target < 0.0
                })
                .unwrap_or(0);
            centres.push(z[pick].clone());
        }
        let mut inertia = 0.0;
        for _ in 0..100 {
            let mut sums = vec![vec![0.0; d]; k];
            let mut counts = vec![0.0; k];
            inertia = 0.0;
            for x in &z {
                let (c, dd) = centres
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i, dist(x, c)))
                    .fold((0, f64::INFINITY), |b, e| if e.1 < b.1 { e } else { b });
                inertia += dd;
                counts[c] += 1.0;
                for j in 0..d {
                    sums[c][j] += x[j];
                }
            }
            for c in 0..k {
                if counts[c] > 0.0 {
                    centres[c] = sums[c].iter().map(|s| s / counts[c]).collect();
                }
            }
        }
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, centres));
        }
    }
    let (_, centres) = best.unwrap();
    centres
        .iter()
        .map(|c| (0..d).map(|j| c[j] * sd[j] + mean[j]).collect())
        .collect()
}

#[test]
fn planted_segments_are_found_and_the_centres_match_lloyds_on_the_same_rows() {
    let m = segments_manifest(3, 60, 24);
    let (events, truth) = planted(300, 11);
    let (results, dead) = run_model(&m, &events, 3, 0.5, &[0, 1, 2]);
    assert_eq!(dead, 0);
    let mut segment: BTreeMap<String, usize> = BTreeMap::new();
    let mut centres = Vec::new();
    for r in &results {
        let v: Value = serde_json::from_str(r.split_once('\t').unwrap().1).unwrap();
        match v["record"].as_str() {
            Some("segment") => {
                segment.insert(
                    v["user"].as_str().unwrap().into(),
                    v["segment"].as_u64().unwrap() as usize,
                );
            }
            Some("model") => {
                centres = v["centroids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let f = &c["features"];
                        vec![
                            f["recency_hours"].as_f64().unwrap(),
                            f["purchases"].as_f64().unwrap(),
                            f["revenue"].as_f64().unwrap(),
                        ]
                    })
                    .collect();
            }
            _ => panic!("an unknown record {v}"),
        }
    }
    let users: Vec<&String> = truth.keys().collect();
    let planted: Vec<usize> = users.iter().map(|u| truth[*u]).collect();
    let found: Vec<usize> = users.iter().map(|u| segment[*u]).collect();
    let ari = adjusted_rand(&planted, &found);
    assert!(ari >= 0.9, "adjusted Rand index {ari}");

    // The feature matrix: each user's last observed features.
    let mut last: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for o in observations(&m, &events) {
        last.insert(o.1, read_f64s(&mut Reader::new(&o.4)).unwrap());
    }
    let rows: Vec<Vec<f64>> = last.into_values().collect();
    let reference = lloyd(&rows, 3);
    let n = rows.len() as f64;
    for c in &centres {
        let r = reference
            .iter()
            .min_by(|a, b| {
                let da: f64 = a.iter().zip(c).map(|(x, y)| (x - y).powi(2)).sum();
                let db: f64 = b.iter().zip(c).map(|(x, y)| (x - y).powi(2)).sum();
                da.total_cmp(&db)
            })
            .unwrap();
        for j in 0..3 {
            let mean = rows.iter().map(|x| x[j]).sum::<f64>() / n;
            let sd = (rows.iter().map(|x| (x[j] - mean).powi(2)).sum::<f64>() / n).sqrt();
            let tolerance = 0.05 * r[j].abs().max(sd);
            assert!(
                (c[j] - r[j]).abs() <= tolerance,
                "centre {c:?} vs Lloyd's {r:?} (feature {j})"
            );
        }
    }
}

/// The learner's time per epoch of 10 000 observations (k = 4, three features), with 100 000
/// users in the population: `cargo test --release -p tidemark-worker --lib merge_time -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn merge_time_per_epoch() {
    use crate::analytics::model::tests::emitting;
    use crate::analytics::model::{write_f64s, Learner, Observation};
    use crate::window::codec::Writer;

    let plan = std::sync::Arc::new(super::SegmentsPlan {
        model: crate::analytics::model::ModelPlan {
            epoch: HOUR,
            lateness: 0,
            purchase_types: vec!["purchase".into()],
            revenue: Vec::new(),
            product: Vec::new(),
        },
        k: 4,
        seed: 7,
        horizon: 24 * HOUR,
        features: crate::analytics::model::features::Features::compile(
            &[],
            &["recency_hours", "purchases", "revenue"],
            false,
            "a",
        )
        .unwrap(),
        labels: None,
    });
    let mut learner = super::kmeans::KMeans::new(plan);
    let mut rng = Pcg64Mcg::seed_from_u64(3);
    let mut times = Vec::new();
    for epoch in 1..=20i64 {
        let mut batch: Vec<Observation> = (0..10_000)
            .map(|_| {
                let user = rng.random_range(0..100_000u32);
                let mut w = Writer::default();
                let g = user % 3;
                let x = [
                    f64::from(g) * 10.0 + rng.random::<f64>(),
                    f64::from(3 - g) * 5.0 + rng.random::<f64>(),
                    f64::from(g) * 100.0 + rng.random::<f64>(),
                ];
                write_f64s(&mut w, &x);
                Observation {
                    epoch: epoch * HOUR,
                    user: format!("u{user}").into(),
                    time: epoch * HOUR,
                    tag: 0,
                    payload: w.finish(),
                }
            })
            .collect();
        batch.sort_by(|a, b| a.user.cmp(&b.user));
        batch.dedup_by(|a, b| a.user == b.user);
        let started = std::time::Instant::now();
        emitting("segs", |e| learner.epoch(epoch * HOUR, &batch, e));
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let stats = learner.stats();
    eprintln!(
        "segments learner: {:.2} ms per epoch of ~10 000 observations (median of 20), population {} users, {} bytes ({:.0} per user)",
        times[10],
        stats.keys,
        stats.bytes,
        stats.bytes as f64 / stats.keys as f64
    );
}
