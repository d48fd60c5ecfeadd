//! Intent patterns against a brute-force oracle written from `docs/patterns.md` (not from the
//! engine): one to three steps, repeated steps with and without `sameValue` (on the last and on
//! an earlier step), a `when` condition, with and without `within` and `notFollowedBy`, captured
//! fields, out-of-order input, late events within and past lateness, the timing of emission and
//! finality; one task, 2–5 tasks, and a restore mid-stream; plus worked examples.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::engine::Task;
use crate::event::Reason;
use crate::plan::Plan;
use crate::result::{Output, ResultRecord};

mod oracle;
use oracle::*;

const MIN: i64 = 60_000;
const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const OUT_OF_ORDER: i64 = 10_000;
const WITHIN: i64 = 20 * MIN;
const QUIET: i64 = 15 * MIN; // notFollowedBy.within

/// The steps of a configuration (see [`Config::steps`]): carted; viewed → carted; viewed →
/// clicked (maybe `when`) → carted; browsed (3 views of one category); browsed → carted;
/// viewed ×2 → carted ×2.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Cart,
    ViewCart,
    ViewClickCart,
    Browse,
    BrowseCart,
    Twice,
}

/// One pattern configuration under test.
#[derive(Clone, Debug)]
struct Config {
    shape: Shape,
    /// `within: 20m` on a one-step pattern (other shapes always have it).
    within: bool,
    /// `when: 'event.price > 50.0'` on the clicked step.
    pricey: bool,
    /// `notFollowedBy: { eventTypes: [purchase], within: 15m }`.
    absence: bool,
    lateness_min: i64,
}

struct Step {
    name: &'static str,
    kind: &'static str,
    times: usize,
    same: bool,
    pricey: bool,
}

fn step(name: &'static str, kind: &'static str, times: usize, same: bool, pricey: bool) -> Step {
    Step {
        name,
        kind,
        times,
        same,
        pricey,
    }
}

/// `text` when `on`.
fn when(on: bool, text: &str) -> &str {
    if on {
        text
    } else {
        ""
    }
}

impl Config {
    fn steps(&self) -> Vec<Step> {
        let carted = |times| step("carted", "add_to_cart", times, false, false);
        let viewed = |times| step("viewed", "view", times, false, false);
        let browsed = || step("browsed", "view", 3, true, false);
        let clicked = step("clicked", "click", 1, false, self.pricey);
        match self.shape {
            Shape::Cart => vec![carted(1)],
            Shape::ViewCart => vec![viewed(1), carted(1)],
            Shape::ViewClickCart => vec![viewed(1), clicked, carted(1)],
            Shape::Browse => vec![browsed()],
            Shape::BrowseCart => vec![browsed(), carted(1)],
            Shape::Twice => vec![viewed(2), carted(2)],
        }
    }

    fn within(&self) -> Option<i64> {
        (self.within || self.shape != Shape::Cart).then_some(WITHIN)
    }

    fn manifest(&self) -> String {
        let steps: String = self
            .steps()
            .iter()
            .map(|s| {
                let times = format!(", times: {}", s.times);
                format!(
                    "          - {{ name: {}, eventTypes: [{}]{}{}{} }}\n",
                    s.name,
                    s.kind,
                    when(s.times > 1, &times),
                    when(s.same, ", sameValue: category"),
                    when(s.pricey, ", when: 'event.price > 50.0'"),
                )
            })
            .collect();
        let within = when(self.within().is_some(), "within: 20m");
        let absence = when(
            self.absence,
            "notFollowedBy: { eventTypes: [purchase], within: 15m }",
        );
        format!(
            r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: {{ name: patterns }}
spec:
  sources:
    - name: events
      generator: {{}}
      fields: {{ extra: [channel, session_id] }}
  watermark: {{ maxOutOfOrderness: 10s, idleTimeout: 1h }}
  analytics:
    - name: intent
      pattern:
        sources: [events]
        steps:
{steps}        {within}
        {absence}
        capture: [product, price]
        allowedLateness: {lateness}m
  sinks:
    - name: out
      stdout: {{}}
"#,
            lateness = self.lateness_min,
        )
    }

    fn plan(&self, tasks: u32) -> Plan {
        let pipeline = tidemark_api::parse_manifest(&self.manifest()).unwrap();
        let problems = tidemark_api::validate(&pipeline.spec);
        assert!(problems.is_empty(), "{problems:?}");
        Plan::compile("patterns", &pipeline.spec)
            .unwrap()
            .for_tasks(tasks)
            .unwrap()
    }
}

/// A test event.
#[derive(Clone, Debug)]
struct Ev {
    user: u8,
    kind: &'static str,
    time: i64,
    product: Option<u8>,
    category: &'static str,
    price: f64,
}

impl Ev {
    fn line(&self) -> Vec<u8> {
        let product = self
            .product
            .map_or(String::new(), |p| format!(r#","product_id":"p{p}""#));
        format!(
            r#"{{"type":"{}","user_id":"u{}"{product},"category":"{}","price":{:.2},"ts":{}}}"#,
            self.kind, self.user, self.category, self.price, self.time
        )
        .into_bytes()
    }
}

const KINDS: [&str; 6] = ["view", "view", "click", "add_to_cart", "purchase", "search"];
const CATEGORIES: [&str; 3] = ["toys", "books", "garden"];
/// Users and categories drawn unevenly, so that some users are busy enough to match.
const USERS: [u8; 9] = [0, 0, 0, 1, 1, 2, 3, 4, 5];
const CATEGORY_DRAW: [usize; 4] = [0, 0, 1, 2];
/// Steps of the clock in units of 10 s: times on a 30 s grid (delays on a 10 s one), so that
/// ties and the bounds of `within`, `notFollowedBy` and lateness are hit exactly.
const STEPS: [i64; 9] = [0, 3, 6, 6, 6, 9, 12, 12, 12];
const TICK: i64 = 10_000;

/// A drawn event: (user, kind), (product, category, price), (clock step, delay) in ticks.
type Raw = ((u8, usize), (u8, usize, u32), (i64, i64));

/// Events over about 3 h by up to 6 users, in arrival order: mostly in time order, some later
/// (about 12 %) by up to `delay_min` minutes.
fn events(delay_min: i64) -> impl Strategy<Value = Vec<Ev>> {
    let delay = prop_oneof![22 => Just(0), 3 => 0..=delay_min * 6];
    let one = (
        (prop::sample::select(&USERS[..]), 0usize..KINDS.len()),
        (0u8..5, prop::sample::select(&CATEGORY_DRAW[..]), 0u32..100),
        (prop::sample::select(&STEPS[..]), delay),
    );
    prop::collection::vec(one, 20..160).prop_map(|raw| {
        let mut clock = START;
        let event = |raw: Raw| {
            let ((user, kind), (product, category, price), (step, delay)) = raw;
            clock += step * TICK;
            Ev {
                user,
                kind: KINDS[kind],
                time: (clock - delay * TICK).max(START),
                product: (product < 4).then_some(product),
                category: CATEGORIES[category],
                price: f64::from(price) + 0.5,
            }
        };
        raw.into_iter().map(event).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Reading results back

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

fn parse(r: &ResultRecord) -> Value {
    assert_eq!(r.analytic, 0);
    serde_json::from_slice(&r.value).unwrap()
}

/// The final (highest) revision of each Kafka key, without retracted ones, and the revisions
/// each key was emitted with.
fn finals(results: &[ResultRecord]) -> (Matches, BTreeMap<String, Vec<u64>>) {
    let mut last: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    let mut revisions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in results {
        let v = parse(r);
        let rev = v["revision"].as_u64().unwrap();
        revisions.entry(r.key.clone()).or_default().push(rev);
        if last.get(&r.key).is_none_or(|(old, _)| *old < rev) {
            last.insert(r.key.clone(), (rev, v));
        }
    }
    let mut out = Matches::new();
    for (key, (_, v)) in last {
        assert_eq!(v["pipeline"], "patterns");
        assert_eq!(v["analytic"], "intent");
        if v["retracted"].as_bool().unwrap() {
            continue;
        }
        let user = v["key"].as_str().unwrap().to_owned();
        // Like every window's key: the completion time (`window.start`) in RFC 3339.
        let start = &v["window"]["start"];
        assert_eq!(key, format!("intent/{user}/{}", start.as_str().unwrap()));
        let start = ms(start);
        let steps = v["steps"].as_array().unwrap();
        let steps = steps
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), ms(&s["at"])))
            .collect();
        let m = Match {
            end: ms(&v["window"]["end"]),
            steps,
            captured: v["captured"].clone(),
        };
        out.insert((user, start), m);
    }
    (out, revisions)
}

fn assert_revisions_count_up(revisions: &BTreeMap<String, Vec<u64>>) {
    for (key, revs) in revisions {
        let want: Vec<u64> = (0..revs.len() as u64).collect();
        assert_eq!(revs, &want, "{key}: revisions 0, 1, 2, ... each once");
    }
}

fn late_letters(out: &Output) -> usize {
    let late = out.dead_letters.iter().filter(|d| d.reason == Reason::Late);
    let late = late.count();
    assert_eq!(late, out.dead_letters.len(), "only late events");
    late
}

/// One task over `events`: results before `finish`, all results, late events. Checks on the
/// way that no result is emitted before the watermark passes its time, and no revision after
/// the match is final.
fn one_task(c: &Config, events: &[Ev]) -> (Vec<ResultRecord>, Vec<ResultRecord>, usize) {
    let lateness = c.lateness_min * MIN;
    let mut task = Task::new(c.plan(1), 0);
    let mut out = Output::default();
    let mut wm = i64::MIN;
    for e in events {
        let before = out.results.len();
        task.route(&e.line(), 0, &mut out);
        let wm_before = wm;
        wm = wm.max(e.time - OUT_OF_ORDER);
        for r in &out.results[before..] {
            let v = parse(r);
            let Some(end) = v["window"]["end"].as_str().map(|_| ms(&v["window"]["end"])) else {
                continue;
            };
            assert!(end <= wm, "{}: emitted at watermark {wm}", r.key);
            if v["revision"].as_u64() != Some(0) {
                assert!(end + lateness >= wm_before, "{}: revised when final", r.key);
            }
        }
    }
    let early = out.results.clone();
    task.finish(0, &mut out);
    let late = late_letters(&out);
    (early, out.results, late)
}

fn texts(results: &[ResultRecord]) -> Vec<(String, String)> {
    let text = |r: &ResultRecord| String::from_utf8(r.value.clone()).unwrap();
    results.iter().map(|r| (r.key.clone(), text(r))).collect()
}

/// The results of a task snapshotted after `events[..at]`, restored into a fresh task (which
/// encodes its state as it was) and run to the end.
fn restored(c: &Config, events: &[Ev], at: usize) -> Vec<(String, String)> {
    let mut first = Task::new(c.plan(1), 0);
    let mut out = Output::default();
    for e in &events[..at] {
        first.route(&e.line(), 0, &mut out);
    }
    let snapshot = first.snapshot();
    let mut second = Task::new(c.plan(1), 0);
    second.restore(&snapshot).unwrap();
    assert_eq!(
        second.snapshot(),
        snapshot,
        "a restored state encodes as it was"
    );
    for e in &events[at..] {
        second.route(&e.line(), 0, &mut out);
    }
    second.finish(0, &mut out);
    texts(&out.results)
}

const SHAPES: [Shape; 6] = [
    Shape::Cart,
    Shape::ViewCart,
    Shape::ViewClickCart,
    Shape::Browse,
    Shape::BrowseCart,
    Shape::Twice,
];

fn configs() -> impl Strategy<Value = Config> {
    (
        prop::sample::select(&SHAPES[..]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![0i64, 30, 240]),
    )
        .prop_map(|(shape, within, pricey, absence, lateness)| Config {
            pricey,
            ..config(shape, within, absence, lateness)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn one_task_reports_what_the_oracle_computes(c in configs(), events in events(60)) {
        let (early, results, late) = one_task(&c, &events);
        let (want, want_late) = oracle(&c, &events);
        let (got, revisions) = finals(&results);
        prop_assert_eq!(late, want_late, "late events dead-lettered");
        prop_assert_eq!(&got, &want);
        assert_revisions_count_up(&revisions);
        // Matches final by the last watermark were emitted, as they end, before `finish`.
        let wm = events.iter().map(|e| e.time).max().unwrap() - OUT_OF_ORDER;
        let lateness = c.lateness_min * MIN;
        let settled = |mut m: Matches| {
            m.retain(|_, m| m.end + lateness < wm);
            m
        };
        prop_assert_eq!(settled(finals(&early).0), settled(want), "final before finish");
    }

    #[test]
    fn two_to_five_tasks_report_what_one_task_does(
        c in configs(),
        events in events(60),
        tasks in 2u32..=5,
    ) {
        // Lateness covers the disorder, so no task drops an event and the finals compare.
        let c = Config { lateness_min: 240, ..c };
        let (_, single, _) = one_task(&c, &events);
        let mut runs: Vec<Task> =
            (0..tasks).map(|t| Task::new(c.plan(tasks), 0).with_id(t)).collect();
        let mut out = Output::default();
        for e in &events {
            runs[(u32::from(e.user) % tasks) as usize].route(&e.line(), 0, &mut out);
        }
        for task in &mut runs {
            task.finish(0, &mut out);
        }
        prop_assert!(out.partials.is_empty(), "patterns need no global stage");
        prop_assert_eq!(late_letters(&out), 0);
        let (got, revisions) = finals(&out.results);
        prop_assert_eq!(&got, &finals(&single).0);
        assert_revisions_count_up(&revisions);
        prop_assert_eq!(got, oracle(&c, &events).0);
    }

    #[test]
    fn a_task_restored_mid_stream_emits_what_an_uninterrupted_one_does(
        c in configs(),
        events in events(60),
        cut in 0.0f64..1.0,
    ) {
        let (_, whole, _) = one_task(&c, &events);
        let got = restored(&c, &events, (events.len() as f64 * cut) as usize);
        let want = texts(&whole);
        let per_key = |rs: &[(String, String)]| {
            let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
            rs.iter().for_each(|(k, v)| by.entry(k.clone()).or_default().push(v.clone()));
            by
        };
        prop_assert_eq!(per_key(&got), per_key(&want), "per key");
        prop_assert_eq!(got, want, "and across keys");
    }
}

// ---------------------------------------------------------------------------------------------
// Worked examples

fn config(shape: Shape, within: bool, absence: bool, lateness_min: i64) -> Config {
    let pricey = false;
    Config {
        shape,
        within,
        pricey,
        absence,
        lateness_min,
    }
}

/// `(retracted, revision)` of a result.
fn status(v: &Value) -> (Option<bool>, Option<u64>) {
    (v["retracted"].as_bool(), v["revision"].as_u64())
}

/// Events of `u1` from a script of `<kind><seconds>`: `c` add_to_cart, `p` purchase, `t`, `b`,
/// `g` a view of toys, books, garden; `s` a search by `u2` (moves the watermark).
fn script(text: &str) -> Vec<Ev> {
    let event = |token: &str| {
        let (kind, s) = token.split_at(1);
        let (user, kind, category) = match kind {
            "c" => (1, "add_to_cart", "toys"),
            "p" => (1, "purchase", "toys"),
            "t" => (1, "view", "toys"),
            "b" => (1, "view", "books"),
            "g" => (1, "view", "garden"),
            _ => (2, "search", "toys"),
        };
        let time = START + s.parse::<i64>().unwrap() * 1000;
        let (product, price) = (Some(7), 19.5);
        Ev {
            user,
            kind,
            time,
            product,
            category,
            price,
        }
    };
    text.split_whitespace().map(event).collect()
}

/// A worked example: config, script, late events, matches as (completion s, end s, each
/// step's first s).
type Case = (
    Config,
    &'static str,
    usize,
    &'static [(i64, i64, &'static [i64])],
);

#[test]
fn worked_examples_bounds_and_ties_are_as_documented() {
    use Shape::*;
    let cfg = |shape, within, absence| config(shape, within, absence, 0);
    #[rustfmt::skip]
    let cases: [Case; 17] = [
        // An abandoned cart cancelled by a purchase within 15m.
        (cfg(Cart, false, true), "c600 p1200 s7200", 0, &[]),
        // Three views of one category match (from the first of the latest three); of three
        // categories, they do not.
        (cfg(Browse, true, false), "t60 b120 t180 t240", 0, &[(240, 240, &[60])]),
        (cfg(Browse, true, false), "t60 b120 g180", 0, &[]),
        // A completion exactly `within` after the previous one is a new match; a chain of
        // completions less than `within` apart (longer than the state kept) is one match.
        (cfg(Cart, true, false), "c0 c1200", 0, &[(0, 0, &[0]), (1200, 1200, &[1200])]),
        (cfg(Cart, true, false), "c0 c1140 c2280 c3420 c4560", 0, &[(0, 0, &[0])]),
        // Without `within`, only a completion at the same time is the same match.
        (cfg(Cart, false, false), "c0 c0 c30", 0, &[(0, 0, &[0]), (30, 30, &[30])]),
        // A purchase at the cart's time cancels it, even arriving first; one at t + 15m does not.
        (cfg(Cart, false, true), "p60 c60", 0, &[]),
        (cfg(Cart, false, true), "c60 p960", 0, &[(60, 960, &[60])]),
        // A cart less than 15m after an earlier one replaces it; one exactly 15m after does not.
        (cfg(Cart, false, true), "c0 c840 c1680 c2520", 0, &[(2520, 3420, &[2520])]),
        (cfg(Cart, false, true), "c0 c900", 0, &[(0, 900, &[0]), (900, 1800, &[900])]),
        // Every occurrence at most `within` before the completion; ties in arrival order.
        (cfg(ViewCart, true, false), "t0 c1200", 0, &[(1200, 1200, &[0, 1200])]),
        (cfg(ViewCart, true, false), "t0 c1230", 0, &[]),
        (cfg(ViewCart, true, false), "c60 t60", 0, &[]),
        (cfg(ViewCart, true, false), "t60 c60", 0, &[(60, 60, &[60, 60])]),
        // The latest occurrences: the view right before the cart.
        (cfg(ViewCart, true, false), "t0 t60 c120", 0, &[(120, 120, &[60, 120])]),
        // sameValue on an earlier step: the value whose 3 views complete first going back.
        (cfg(BrowseCart, true, false), "t0 b60 t120 b180 t240 b300 c360", 0,
            &[(360, 360, &[60, 360])]),
        // An event exactly `allowedLateness` behind the watermark (20:00) is kept.
        (cfg(Cart, false, false), "s1210 c1200 c1190", 1, &[(1200, 1200, &[1200])]),
    ];
    for (c, text, want_late, want) in cases {
        let events = script(text);
        let (_, results, late) = one_task(&c, &events);
        let secs = |t: i64| (t - START) / 1000;
        let got: Vec<(i64, i64, Vec<i64>)> = finals(&results)
            .0
            .into_iter()
            .map(|((_, start), m)| {
                let at = m.steps.iter().map(|(_, t)| secs(*t)).collect();
                (secs(start), secs(m.end), at)
            })
            .collect();
        let want: Vec<(i64, i64, Vec<i64>)> = want
            .iter()
            .map(|(s, e, at)| (*s, *e, at.to_vec()))
            .collect();
        assert_eq!((late, got), (want_late, want), "{c:?}: {text}");
        assert_eq!(
            oracle(&c, &events).0,
            finals(&results).0,
            "{text}: the oracle"
        );
    }
}

#[test]
fn an_abandoned_cart_matches_when_the_user_stays_quiet() {
    // A cart at 10:00, a purchase after the quiet period; the watermark passes 10:25 at 26:00.
    let (early, results, _) = one_task(
        &config(Shape::Cart, false, true, 0),
        &script("c600 p1560 s2400"),
    );
    assert_eq!(early.len(), 1, "emitted once the watermark passes 10:25");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].key, "intent/u1/2026-01-01T00:10:00Z");
    let v = parse(&results[0]);
    let window = json!({"start": "2026-01-01T00:10:00Z", "end": "2026-01-01T00:25:00Z"});
    assert_eq!((&v["key"], &v["window"]), (&json!("u1"), &window));
    assert_eq!(v["steps"][0]["name"], "carted");
    assert_eq!(ms(&v["steps"][0]["at"]), START + 10 * MIN);
    assert_eq!(v["captured"], json!({"product": "p7", "price": 19.5}));
    assert_eq!(status(&v), (Some(false), Some(0)));
}

#[test]
fn a_late_purchase_within_lateness_retracts_a_reported_cart() {
    // The match (10:25) is emitted at watermark 29:50; the purchase at 20:00 arrives then,
    // within 30m of lateness (a retraction), or past 0m (a dead letter).
    let events = script("c600 s1800 p1200");
    let (early, results, late) = one_task(&config(Shape::Cart, false, true, 30), &events);
    assert_eq!(
        (late, early.len()),
        (0, 2),
        "the retraction follows the purchase"
    );
    assert_eq!(results[0].key, results[1].key);
    assert_eq!(status(&parse(&results[0])), (Some(false), Some(0)));
    assert_eq!(status(&parse(&results[1])), (Some(true), Some(1)));
    let (_, results, late) = one_task(&config(Shape::Cart, false, true, 0), &events);
    assert_eq!((late, results.len()), (1, 1));
}

#[test]
fn a_restored_task_emits_in_the_order_of_an_uninterrupted_one() {
    // u1 then u0 cart at 0:00; the search moves the watermark past both.
    let mut events = script("c0 c0 s600");
    events[1].user = 0;
    let c = config(Shape::Cart, false, false, 0);
    let whole = texts(&one_task(&c, &events).1);
    for at in 0..=events.len() {
        assert_eq!(
            restored(&c, &events, at),
            whole,
            "restored after {at} events"
        );
    }
}
