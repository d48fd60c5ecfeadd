//! Actions against a brute-force oracle written from `docs/actions.md` and `docs/patterns.md`
//! (not from the engine): an abandoned-cart trigger, candidates decided per interval by score,
//! user and time under a cooldown, a budget and a keyed holdout; action records (ids, params,
//! expiry) and uplift reports (counts, rates, interval, revenue); out-of-order and late input;
//! one task, 1–5 tasks through the global stage, restores of a task and of the stage mid-stream;
//! the holdout share, and an uplift report around a planted effect.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::ActionPlan;
use crate::engine::Task;
use crate::global::tests::feed;
use crate::global::GlobalStage;
use crate::plan::Plan;
use crate::result::{Output, ResultRecord};

mod oracle;
use oracle::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const OUT_OF_ORDER: i64 = 10_000;
const QUIET: i64 = 10 * MIN; // notFollowedBy.within
const ATTRIBUTION: i64 = 30 * MIN; // conversion.within
const VALIDITY: i64 = HOUR;
const PIPELINE: &str = "shop";
const ACTION: &str = "cart_coupon";

/// One action configuration under test (durations in ms).
#[derive(Clone, Debug)]
struct Config {
    lateness: i64,
    cooldown: i64,
    budget: Option<(u32, i64)>,
    holdout_pct: u32,
    score: bool,
    every: i64,
    report: i64,
}

/// No cooldown, budget, holdout or score; decided every minute, reported hourly.
const BASE: Config = Config {
    lateness: 0,
    cooldown: 0,
    budget: None,
    holdout_pct: 0,
    score: false,
    every: MIN,
    report: HOUR,
};

impl Config {
    fn manifest(&self) -> String {
        let cooldown = match self.cooldown {
            0 => String::new(),
            c => format!("cooldown: {}m", c / MIN),
        };
        let budget = self.budget.map_or(String::new(), |(max, per)| {
            format!("budget: {{ maxActions: {max}, per: {}m }}", per / MIN)
        });
        let score = if self.score { "scoreBy: price" } else { "" };
        format!(
            r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: {{ name: {PIPELINE} }}
spec:
  sources:
    - name: events
      generator: {{}}
  watermark: {{ maxOutOfOrderness: 10s, idleTimeout: 1h }}
  analytics:
    - name: carts
      pattern:
        sources: [events]
        steps:
          - {{ name: carted, eventTypes: [add_to_cart] }}
        notFollowedBy: {{ eventTypes: [purchase], within: 10m }}
        capture: [product, price]
        allowedLateness: {lateness}m
    - name: {ACTION}
      action:
        trigger: carts
        action: coupon
        params: {{ code: "C-{{action_id}}", pct: "10", product: "{{product}}" }}
        validity: 1h
        {cooldown}
        {budget}
        holdoutPercent: {holdout}
        {score}
        decideEvery: {every}m
        conversion: {{ eventTypes: [purchase], within: 30m, revenue: price }}
        reportWindow: {report}m
  sinks:
    - name: out
      stdout: {{}}
"#,
            lateness = self.lateness / MIN,
            holdout = self.holdout_pct,
            every = self.every / MIN,
            report = self.report / MIN,
        )
    }

    fn plan(&self, tasks: u32) -> Plan {
        plan_of(&self.manifest(), tasks)
    }
}

fn plan_of(manifest: &str, tasks: u32) -> Plan {
    let pipeline = tidemark_api::parse_manifest(manifest).unwrap();
    let problems = tidemark_api::validate(&pipeline.spec);
    assert!(problems.is_empty(), "{problems:?}");
    Plan::compile(PIPELINE, &pipeline.spec)
        .unwrap()
        .for_tasks(tasks)
        .unwrap()
}

fn configs() -> impl Strategy<Value = Config> {
    let budget = prop_oneof![
        Just(None),
        (1u32..=4, prop::sample::select(vec![10 * MIN, HOUR])).prop_map(Some),
    ];
    (
        prop::sample::select(vec![0, 30 * MIN]),
        prop::sample::select(vec![0, 20 * MIN, 2 * HOUR]),
        budget,
        prop::sample::select(vec![0u32, 25, 50]),
        any::<bool>(),
        prop::sample::select(vec![MIN, 5 * MIN]),
    )
        .prop_map(
            |(lateness, cooldown, budget, holdout_pct, score, every)| Config {
                lateness,
                cooldown,
                budget,
                holdout_pct,
                score,
                every,
                report: HOUR,
            },
        )
}

/// A test event.
#[derive(Clone, Debug)]
struct Ev {
    user: u32,
    kind: &'static str,
    time: i64,
    product: u8,
    price: f64,
}

impl Ev {
    fn new(user: u32, kind: &'static str, time: i64, product: u8, price: f64) -> Self {
        Self {
            user,
            kind,
            time,
            product,
            price,
        }
    }

    fn name(&self) -> String {
        format!("u{}", self.user)
    }

    fn line(&self) -> Vec<u8> {
        format!(
            r#"{{"type":"{}","user_id":"{}","product_id":"p{}","category":"toys","price":{:.2},"ts":{}}}"#,
            self.kind,
            self.name(),
            self.product,
            self.price,
            self.time
        )
        .into_bytes()
    }
}

const KINDS: [&str; 4] = ["view", "add_to_cart", "add_to_cart", "purchase"];
const PRICES: [f64; 4] = [9.5, 20.0, 20.0, 35.25];

/// Users, named so that their order as strings is not their numeric order.
const USERS: [u32; 8] = [1, 2, 3, 10, 11, 20, 30, 100];
/// Gaps between events: on a minute grid (ties, and exact cooldowns, quiet periods and
/// attribution windows); half the events are off the grid by up to 30 s.
const GAPS: [i64; 6] = [0, MIN, MIN, 2 * MIN, 3 * MIN, 5 * MIN];

/// Events over about 3–4 h by 1 to 8 users, in arrival order: mostly in time order, some
/// earlier by up to `delay_min` minutes (in steps of 10 s, the watermark's lag).
fn events(delay_min: i64) -> impl Strategy<Value = Vec<Ev>> {
    let one = (
        0usize..USERS.len(),
        0usize..KINDS.len(),
        (0usize..GAPS.len(), 0i64..30_000, any::<bool>()),
        0u8..4,
        0usize..PRICES.len(),
        0u32..100,
        prop_oneof![0i64..=2, 0i64..=delay_min * 6],
    );
    let all = (1..=USERS.len(), prop::collection::vec(one, 20..100));
    all.prop_map(|(users, raw)| {
        let mut clock = START;
        raw.into_iter()
            .map(
                |(user, kind, (gap, jitter, exact), product, price, late, delay)| {
                    clock += GAPS[gap];
                    let time = clock + if exact { 0 } else { jitter };
                    let time = time - if late < 15 { delay * 10_000 } else { 0 };
                    let user = USERS[user % users];
                    Ev::new(user, KINDS[kind], time, product, PRICES[price])
                },
            )
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Runs and their output

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// The action's records and reports, each checked against its Kafka key and emitted once.
fn parse(c: &Config, results: &[ResultRecord]) -> Got {
    let mut got = Got::default();
    for r in results {
        let v: Value = serde_json::from_slice(&r.value).unwrap();
        if v["analytic"] != ACTION {
            continue;
        }
        assert_eq!(v["revision"], 0, "{v}");
        let (start, end) = (ms(&v["window"]["start"]), ms(&v["window"]["end"]));
        let start_text = v["window"]["start"].as_str().unwrap();
        if v["record"] == "action" {
            let user = v["key"].as_str().unwrap().to_owned();
            assert_eq!(v["user"], user.as_str());
            assert_eq!(r.key, format!("{ACTION}/{user}/{start_text}"));
            let record = json!({
                "action_id": v["action_id"], "outcome": v["outcome"], "action": v["action"],
                "pattern": v["pattern"], "matched_at": ms(&v["matched_at"]),
                "score": v["score"].as_f64(), "params": v["params"],
                "expires_at": ms(&v["expires_at"]), "end": end,
            });
            let old = got.records.insert((user, start), record);
            assert!(old.is_none(), "one record per decision: {v}");
        } else {
            assert_eq!(v["record"], "uplift", "{v}");
            assert_eq!(r.key, format!("{ACTION}/{start_text}"));
            assert_eq!(end - start, c.report);
            let counts = COUNTS.map(|n| v[n].as_u64().unwrap());
            let old = got.reports.insert(start, counts);
            assert!(old.is_none(), "one report: {v}");
            got.stats.insert(start, STATS.map(|n| v[n].as_f64()));
        }
    }
    got
}

fn assert_stats_close(got: &Got, want: &Got) {
    assert_eq!(
        got.stats.keys().collect::<Vec<_>>(),
        want.stats.keys().collect::<Vec<_>>()
    );
    for (window, w) in &want.stats {
        for (k, (a, b)) in got.stats[window].iter().zip(w).enumerate() {
            let close = match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-4,
                _ => a == b,
            };
            assert!(close, "window {window} {}: {a:?} vs {b:?}", STATS[k]);
        }
    }
}

/// No user has two decisions within the cooldown; no budget interval has too many.
fn assert_limits(c: &Config, got: &Got) {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut used: BTreeMap<i64, u32> = BTreeMap::new();
    for (user, t) in got.records.keys() {
        if let Some(prev) = last.insert(user, *t) {
            assert!(
                t - prev >= c.cooldown,
                "{user}: decisions at {prev} and {t}"
            );
        }
        if let Some((max, per)) = c.budget {
            let n = used.entry(t.div_euclid(per)).or_default();
            *n += 1;
            assert!(*n <= max, "budget interval of {t}: {n} > {max}");
        }
    }
}

fn one_task(c: &Config, events: &[Ev]) -> Output {
    let mut task = Task::new(c.plan(1), 0);
    let mut out = Output::default();
    for e in events {
        task.route(&e.line(), 0, &mut out);
    }
    task.finish(0, &mut out);
    assert!(out.partials.is_empty(), "one task decides itself");
    out
}

/// Runs `events` as `tasks` tasks split by user: their results, and each task's partials.
fn task_streams(c: &Config, events: &[Ev], tasks: u32) -> (Vec<ResultRecord>, Vec<Vec<Vec<u8>>>) {
    let mut runs: Vec<Task> = (0..tasks)
        .map(|t| Task::new(c.plan(tasks), 0).with_id(t))
        .collect();
    let mut outs: Vec<Output> = (0..tasks).map(|_| Output::default()).collect();
    for e in events {
        let t = (e.user % tasks) as usize;
        runs[t].route(&e.line(), 0, &mut outs[t]);
    }
    let mut results = Vec::new();
    let mut streams = Vec::new();
    for (task, mut out) in runs.iter_mut().zip(outs) {
        task.finish(0, &mut out);
        assert!(out.dead_letters.is_empty(), "lateness covers the disorder");
        results.append(&mut out.results);
        streams.push(out.partials.into_iter().map(|p| p.value).collect());
    }
    (results, streams)
}

/// `events` over `tasks` tasks, their partials fed to the global stage by `interleave`.
fn global_run(c: &Config, events: &[Ev], tasks: u32, interleave: &[usize]) -> Vec<ResultRecord> {
    if tasks == 1 {
        return one_task(c, events).results;
    }
    let (mut results, streams) = task_streams(c, events, tasks);
    let mut stage = GlobalStage::new(c.plan(tasks), tasks);
    let mut out = Output::default();
    feed(&mut stage, &streams, interleave, &mut out);
    assert!(stage.finished());
    assert_eq!(stage.counters().malformed + stage.counters().late, 0);
    results.append(&mut out.results);
    results
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn one_task_decides_and_reports_what_the_oracle_does(c in configs(), events in events(40)) {
        let out = one_task(&c, &events);
        let got = parse(&c, &out.results);
        let want = oracle(&c, &events);
        let dropped = events.len() - accepted(&c, &events).len();
        // Each late cart or purchase is dead-lettered by the pattern and by the action.
        let ours = out.dead_letters.iter().filter(|d| d.detail.contains(ACTION)).count();
        prop_assert_eq!((ours, out.dead_letters.len()), (dropped, 2 * dropped));
        prop_assert_eq!(&got.records, &want.records);
        prop_assert_eq!(&got.reports, &want.reports);
        assert_stats_close(&got, &want);
        assert_limits(&c, &got);
    }

    #[test]
    fn one_to_five_tasks_through_the_global_stage_decide_what_one_task_does(
        c in configs(),
        events in events(4),
        tasks in 1u32..=5,
        interleave in prop::collection::vec(0usize..5, 1..12),
    ) {
        // Lateness covers the disorder, so no task drops an event.
        let c = Config { lateness: 30 * MIN, ..c };
        let single = parse(&c, &one_task(&c, &events).results);
        let got = parse(&c, &global_run(&c, &events, tasks, &interleave));
        prop_assert_eq!(&got.records, &single.records, "ids and outcomes whatever the tasks");
        prop_assert_eq!(&got.reports, &single.reports);
        assert_stats_close(&got, &single);
        let want = oracle(&c, &events);
        prop_assert_eq!(&single.records, &want.records);
        prop_assert_eq!(&single.reports, &want.reports);
    }

    #[test]
    fn a_task_or_the_stage_restored_mid_stream_emits_what_an_uninterrupted_one_does(
        c in configs(),
        events in events(4),
        cut in 0.0f64..1.0,
        interleave in prop::collection::vec(0usize..3, 1..8),
    ) {
        let whole = one_task(&c, &events);
        let at = (events.len() as f64 * cut) as usize;
        let mut first = Task::new(c.plan(1), 0);
        let mut out = Output::default();
        for e in &events[..at] {
            first.route(&e.line(), 0, &mut out);
        }
        let snapshot = first.snapshot();
        let mut second = Task::new(c.plan(1), 0);
        second.restore(&snapshot).unwrap();
        prop_assert_eq!(second.snapshot(), snapshot, "a restored state encodes as it was");
        for e in &events[at..] {
            second.route(&e.line(), 0, &mut out);
        }
        second.finish(0, &mut out);
        // The action's records in the same order; the pattern's (of other users at one time)
        // may come in another order.
        let strip = |rs: &[ResultRecord], ours: bool| -> Vec<(bool, String)> {
            let text = |r: &ResultRecord| String::from_utf8_lossy(&r.value).into_owned();
            let mut all: Vec<_> =
                rs.iter().map(|r| (!r.key.starts_with(ACTION), text(r))).collect();
            if ours {
                all.retain(|(other, _)| !other);
            } else {
                all.sort();
            }
            all
        };
        for ours in [true, false] {
            prop_assert_eq!(strip(&out.results, ours), strip(&whole.results, ours));
        }

        // The global stage of three tasks, restored after a share of every task's partials.
        let c = Config { lateness: 30 * MIN, ..c };
        let tasks = 3;
        let (_, streams) = task_streams(&c, &events, tasks);
        let mut whole = GlobalStage::new(c.plan(tasks), tasks);
        let mut want = Output::default();
        feed(&mut whole, &streams, &interleave, &mut want);
        let split = |s: &Vec<Vec<u8>>| (s.len() as f64 * cut) as usize;
        let head: Vec<Vec<Vec<u8>>> = streams.iter().map(|s| s[..split(s)].to_vec()).collect();
        let tail: Vec<Vec<Vec<u8>>> = streams.iter().map(|s| s[split(s)..].to_vec()).collect();
        let mut first = GlobalStage::new(c.plan(tasks), tasks);
        let mut got = Output::default();
        feed(&mut first, &head, &interleave, &mut got);
        let bytes = first.snapshot();
        let mut second = GlobalStage::new(c.plan(tasks), tasks);
        second.restore(&bytes).unwrap();
        prop_assert_eq!(second.snapshot(), bytes);
        // Task 1 restarts from an older checkpoint: its head comes again.
        let mut tail = tail;
        tail[1].splice(0..0, head[1].iter().cloned());
        feed(&mut second, &tail, &interleave, &mut got);
        prop_assert!(second.finished());
        prop_assert_eq!(parse(&c, &got.results), parse(&c, &want.results));
    }
}

/// An [`ActionPlan`] of the test pipeline with holdout share `share`.
fn action_plan(share: f64) -> ActionPlan {
    let manifest = tidemark_api::parse_manifest(&BASE.manifest()).unwrap();
    let sources = Plan::compile(PIPELINE, &manifest.spec).unwrap().sources;
    let spec = manifest.spec.analytics[0].pattern.as_ref().unwrap();
    let pattern = crate::analytics::pattern::compile_plan(
        "carts",
        spec,
        "spec.analytics[0].pattern",
        &sources,
    )
    .unwrap();
    ActionPlan {
        pipeline: PIPELINE.into(),
        name: ACTION.into(),
        pattern: Arc::new(pattern),
        kind: "coupon",
        params: BTreeMap::new(),
        reason: String::new(),
        validity: VALIDITY,
        cooldown: 0,
        budget: None,
        holdout: share,
        score_by: None,
        every: MIN,
        conversion_types: vec!["purchase".into()],
        attribution: ATTRIBUTION,
        revenue: Vec::new(),
        report: HOUR,
        lateness: 0,
    }
}

#[test]
fn the_holdout_share_is_the_configured_one_and_the_documented_hash() {
    for pct in [10u32, 50] {
        let plan = action_plan(f64::from(pct) / 100.0);
        let n = 100_000;
        let mut held = 0;
        for i in 0..n {
            let user = format!("user-{i}");
            let h = plan.in_holdout(&user);
            assert_eq!(h, oracle_holdout(&user, pct), "{user}: the documented hash");
            held += usize::from(h);
        }
        let share = held as f64 / f64::from(n);
        assert!(
            (share - f64::from(pct) / 100.0).abs() < 0.01,
            "{pct}%: {share}"
        );
    }
}

/// 4000 users, each with one abandoned cart over 22 h, buying within the attribution window
/// with probability `treated` when sent the action and `control` when held out.
fn planted(treated: f64, control: f64, seed: u64) -> (Config, Vec<Ev>) {
    let c = Config {
        holdout_pct: 50,
        every: HOUR,
        report: 24 * HOUR,
        ..BASE
    };
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut events = Vec::new();
    for user in 0..4000u32 {
        let cart = START + i64::from(user) * 20_000;
        let ev = |kind, time| Ev::new(user, kind, time, 1, 20.0);
        events.push(ev("add_to_cart", cart));
        let held = oracle_holdout(&format!("u{user}"), 50);
        if rng.random_bool(if held { control } else { treated }) {
            let after = rng.random_range(1_000..ATTRIBUTION - 1_000);
            events.push(ev("purchase", cart + QUIET + after));
        }
    }
    events.sort_by_key(|e| e.time);
    (c, events)
}

#[test]
fn the_uplift_interval_covers_a_planted_effect_and_no_effect() {
    for (treated, control, effect) in [(0.5, 0.3, 0.2), (0.3, 0.3, 0.0)] {
        let (c, events) = planted(treated, control, 42);
        let got = parse(&c, &one_task(&c, &events).results);
        let want = oracle(&c, &events);
        assert_eq!(got.reports, want.reports);
        assert_stats_close(&got, &want);
        let (&start, counts) = got.reports.iter().next().unwrap();
        assert_eq!(got.reports.len(), 1, "one report window");
        assert_eq!(counts[0], 4000);
        assert_eq!(counts[1] + counts[2], 4000, "no refusals");
        let [_, _, _, low, high, _, _] = got.stats[&start].map(Option::unwrap);
        assert!(low <= effect && effect <= high, "{effect}: [{low}, {high}]");
        if effect > 0.0 {
            assert!(low > 0.0, "an effect of 0.2 over 4000 users: {low}");
        }
    }
}

/// Templates: `{user}`, `{pattern}` and captured fields are replaced, other text is kept as
/// written, and a value that is a number after replacement is written as a JSON number; a
/// missing `scoreBy` field scores 0.
#[test]
fn templates_fill_params_and_reason_and_records_stay_json() {
    let c = Config {
        score: true,
        ..BASE
    };
    let manifest = c.manifest().replace(
        r#"params: { code: "C-{action_id}", pct: "10", product: "{product}" }"#,
        r#"params: { sku: "{product}", who: "{user}", half: ".5", brace: "x{", price: "{price}" }
        reason: "{pattern} left {product} {""#,
    );
    let mut task = Task::new(plan_of(&manifest, 1), 0);
    let mut out = Output::default();
    for (user, price) in [("u1", r#","price":20.00"#), ("u2", "")] {
        let line = format!(
            r#"{{"type":"add_to_cart","user_id":"{user}","product_id":"007"{price},"ts":{START}}}"#
        );
        task.route(line.as_bytes(), 0, &mut out);
    }
    task.finish(0, &mut out);
    let records: Vec<Value> = out
        .results
        .iter()
        .filter(|r| r.key.starts_with(ACTION) && r.key.contains("/u"))
        .map(|r| {
            let text = String::from_utf8_lossy(&r.value);
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        })
        .collect();
    assert_eq!(records.len(), 2);
    let u1 = &records[0];
    assert_eq!(u1["score"].as_f64(), Some(20.0));
    assert_eq!(records[1]["score"].as_f64(), Some(0.0), "no price: score 0");
    assert_eq!(u1["params"]["who"], "u1");
    assert_eq!(u1["params"]["price"].as_f64(), Some(20.0));
    // Only text that is a JSON number becomes one: a zero-padded SKU or `.5` stays text.
    assert_eq!(u1["params"]["sku"], "007");
    assert_eq!(u1["params"]["half"], ".5");
    assert_eq!(u1["params"]["brace"], "x{");
    assert_eq!(u1["reason"], "carts left 007 {");
}

/// Exact boundaries: a decision exactly the cooldown after another is allowed, one less is
/// refused; an event exactly at the watermark is accepted; a purchase at the decision time
/// converts, one exactly the attribution window after it does not.
#[test]
fn boundaries_are_where_the_docs_put_them() {
    let c = Config {
        cooldown: 20 * MIN,
        ..BASE
    };
    let at = |m: i64| START + m * MIN;
    let events = [
        Ev::new(1, "add_to_cart", at(0), 1, 20.0), // decided at 10m: sent, converts
        Ev::new(1, "add_to_cart", at(20), 1, 20.0), // at 30m: sent, converts
        Ev::new(1, "purchase", at(30), 1, 20.0),
        Ev::new(1, "add_to_cart", at(39), 1, 20.0), // at 49m: cooldown
        Ev::new(2, "view", at(70), 1, 20.0),
        Ev::new(2, "add_to_cart", at(70) - OUT_OF_ORDER, 1, 20.0), // at 80m - 10s: sent
        Ev::new(2, "purchase", at(80) - OUT_OF_ORDER + ATTRIBUTION, 1, 20.0),
    ];
    let out = one_task(&c, &events);
    assert!(out.dead_letters.is_empty());
    let got = parse(&c, &out.results);
    assert_eq!(got, oracle(&c, &events));
    assert_eq!(got.reports[&START], [3, 2, 0, 1, 0, 2, 0]);
    assert_eq!(got.reports[&(START + HOUR)], [1, 1, 0, 0, 0, 0, 0]);
}
