//! `recommend` quality on planted data, and the measurements (ignored tests, run with
//! `--run-ignored only` in release mode): the learner's time per epoch of about 10k sessions,
//! model bytes per product pair, observer bytes per user.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::{restored, test_plan, Config, BASE};
use crate::analytics::model::tests::{emitting, run_model, Ev, HOUR, MIN, START};
use crate::analytics::model::{Learner, Observation, Observer};
use crate::analytics::recommend::cooccur::CoOccurrence;
use crate::analytics::recommend::observer::Sessions;
use crate::analytics::recommend::Session;
use crate::event::Event;
use crate::window::codec::Writer;

const BUNDLES: u32 = 50;
const BUNDLE: u32 = 4;
/// Noise products: ids from here on.
const NOISE: u32 = BUNDLES * BUNDLE;

/// Views of `products` by `user` from `at`, a minute apart.
fn views(user: u32, at: i64, products: &[u32], out: &mut Vec<Ev>) {
    for (i, p) in products.iter().enumerate() {
        out.push(Ev {
            user,
            time: at + i as i64 * MIN,
            kind: "view",
            product: *p,
            price: 10.0,
        });
    }
}

/// 3000 training sessions over 24 h (3 of a bundle's 4 products and one noise product, in
/// random order, some followed by a purchase), then 500 held-out sessions of new users who
/// view 2 products of a bundle: recall@10 of the bundle's other 2 products.
#[test]
fn recall_at_10_on_planted_bundles_is_at_least_0_8() {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
    let mut events = Vec::new();
    for user in 0..1500u32 {
        for session in 0..2i64 {
            let at = START + session * 12 * HOUR + rng.random_range(0..11 * HOUR);
            let b = rng.random_range(0..BUNDLES);
            let mut products: Vec<u32> = (0..BUNDLE).map(|j| b * BUNDLE + j).collect();
            products.shuffle(&mut rng);
            products.truncate(3);
            products.push(NOISE + rng.random_range(0..200));
            products.shuffle(&mut rng);
            views(user, at, &products, &mut events);
            if rng.random_bool(0.3) {
                events.push(Ev {
                    user,
                    time: at + 5 * MIN,
                    kind: "purchase",
                    product: products[0],
                    price: 10.0,
                });
            }
        }
    }
    let mut held_out = BTreeMap::new();
    for i in 0..500u32 {
        let user = 100_000 + i;
        let at = START + 25 * HOUR + rng.random_range(0..HOUR);
        let b = rng.random_range(0..BUNDLES);
        let mut products: Vec<u32> = (0..BUNDLE).map(|j| b * BUNDLE + j).collect();
        products.shuffle(&mut rng);
        views(user, at, &products[..2], &mut events);
        let rest: BTreeSet<String> = products[2..].iter().map(|p| format!("p{p}")).collect();
        held_out.insert(format!("u{user}"), rest);
    }
    events.sort_by_key(|e| e.time);
    let c = Config {
        lateness: 10 * MIN,
        half_life: 7 * 24 * HOUR,
        ..BASE
    };
    let (results, dead) = run_model(&c.manifest(), &events, 1, 0.5, &[0]);
    assert_eq!(dead, 0);
    let (mut hits, mut wanted, mut lists) = (0, 0, 0);
    for r in &results {
        let v: Value = serde_json::from_str(r.split_once('\t').unwrap().1).unwrap();
        if v["record"] != "recommendation" {
            continue;
        }
        let Some(rest) = held_out.get(v["user"].as_str().unwrap()) else {
            continue;
        };
        let got: BTreeSet<String> = v["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["product"].as_str().unwrap().to_owned())
            .collect();
        assert!(got.len() <= 10);
        hits += rest.intersection(&got).count();
        wanted += rest.len();
        lists += 1;
    }
    assert_eq!(
        lists,
        held_out.len(),
        "every held-out session is recommended to"
    );
    let recall = hits as f64 / wanted as f64;
    eprintln!("recall@10 on planted bundles: {recall:.3} ({hits}/{wanted})");
    assert!(recall >= 0.8, "recall@10 {recall}");
}

/// A product of a Zipf-like catalogue of `n`: rank `⌊n^u⌋` for uniform `u`.
fn zipf(rng: &mut impl Rng, n: u32) -> u32 {
    ((n as f64).powf(rng.random::<f64>()) as u32).min(n - 1)
}

#[test]
#[ignore = "a measurement: cargo nextest run --release -p tidemark-worker --lib recommend --run-ignored only --no-capture"]
fn measure_learner_epoch_time_and_bytes_per_pair() {
    let c = Config {
        half_life: 2 * HOUR,
        ..BASE
    };
    let plan = test_plan(&c.manifest(), false);
    let mut learner = CoOccurrence::new(plan.clone());
    let mut rng = rand_pcg::Pcg64::seed_from_u64(3);
    let (sessions, epochs, catalogue) = (10_000, 30, 50_000);
    let mut times = Vec::new();
    let mut outputs = 0;
    for e in 0..epochs {
        let end = START + (e + 1) * c.epoch;
        let mut batch: Vec<Observation> = (0..sessions)
            .map(|i| {
                let n = rng.random_range(2..=8);
                let mut products: Vec<Box<str>> = Vec::new();
                while products.len() < n {
                    let p: Box<str> = format!("p{}", zipf(&mut rng, catalogue)).into();
                    if !products.contains(&p) {
                        products.push(p);
                    }
                }
                let bought = vec![format!("p{}", zipf(&mut rng, catalogue)).into()];
                Observation {
                    epoch: end,
                    user: format!("u{e}-{i}").into(),
                    time: end - 1,
                    tag: 0,
                    payload: Session { products, bought }.encode(),
                }
            })
            .collect();
        batch.sort_by(|a, b| a.user.cmp(&b.user));
        let at = Instant::now();
        let out = emitting("recs", |e| learner.epoch(end, &batch, e));
        times.push(at.elapsed().as_secs_f64() * 1e3);
        outputs += out.results.len();
    }
    let mut w = Writer::default();
    learner.write(&mut w);
    let snapshot = w.finish().len();
    let at = Instant::now();
    let _ = restored(&learner, &plan);
    let restore_ms = at.elapsed().as_secs_f64() * 1e3;
    let pairs = learner.pairs();
    let stats = learner.stats();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "{sessions} sessions per epoch, {epochs} epochs, catalogue {catalogue}: epoch time \
         median {:.1} ms, max {:.1} ms (first {:.1}, last {:.1}); {outputs} results",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        times[0],
        times[times.len() - 1]
    );
    eprintln!(
        "model: {} products, {pairs} pairs, {} heap bytes = {:.1} bytes per pair; snapshot \
         {snapshot} bytes = {:.1} per pair, written and restored in {restore_ms:.1} ms",
        stats.keys,
        stats.bytes,
        stats.bytes as f64 / pairs as f64,
        snapshot as f64 / pairs as f64
    );
}

#[test]
#[ignore = "a measurement: cargo nextest run --release -p tidemark-worker --lib recommend --run-ignored only --no-capture"]
fn measure_observer_bytes_per_user() {
    let c = BASE;
    let plan = test_plan(&c.manifest(), false);
    let mut observer = Sessions::new(plan);
    let mut rng = rand_pcg::Pcg64::seed_from_u64(4);
    let users = 100_000u32;
    // Each user: 3 purchases settled an hour ago, then an open session of 6 views.
    for phase in 0..2 {
        for u in 0..users {
            let user = format!("user-{u:06}");
            let (kind, n, base) = if phase == 0 {
                ("purchase", 3, START)
            } else {
                ("view", 6, START + HOUR)
            };
            for i in 0..n {
                let product = format!("product-{}", zipf(&mut rng, 50_000));
                let event = Event {
                    time: base + i * 10_000,
                    user: Cow::Borrowed(&user),
                    product: Some(Cow::Owned(product)),
                    event_type: Some(Cow::Borrowed(kind)),
                    category: None,
                    price: Some(10.0),
                    extra: Vec::new(),
                };
                observer.add(&user, 0, &event);
            }
        }
        let mut out = Vec::new();
        observer.due(START + HOUR, &mut out);
    }
    let stats = observer.stats();
    let mut w = Writer::default();
    observer.write(&mut w);
    eprintln!(
        "observer: {} users, {} open sessions, {} bytes = {:.0} bytes per user (estimate); \
         snapshot {:.0} bytes per user",
        stats.keys,
        stats.windows,
        stats.bytes,
        stats.bytes as f64 / f64::from(users),
        w.finish().len() as f64 / f64::from(users)
    );
}
