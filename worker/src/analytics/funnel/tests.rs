//! Funnels against a brute-force oracle written from the documented rules (not from
//! `unit.rs`): every order mode, units by user and by session (field and gap), exclusions,
//! first- and last-touch breakdowns, sliding windows with an offset, out-of-order input, late
//! events within and past lateness; one task, 2–5 tasks through the global stage, and a
//! restore mid-stream.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::engine::Task;
use crate::global::GlobalStage;
use crate::plan::Plan;
use crate::result::{Output, ResultRecord};

/// One funnel configuration under test.
#[derive(Clone, Debug)]
struct Config {
    order: &'static str,
    unit: Unit,
    exclusion: bool,
    last_touch: bool,
    sliding: bool,
    lateness_min: i64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    User,
    Field,
    Gap,
}

const MIN: i64 = 60_000;
const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const CONVERSION: i64 = 20 * MIN;
const GAP: i64 = 7 * MIN;
const OUT_OF_ORDER: i64 = 10_000;

impl Config {
    fn manifest(&self) -> String {
        let unit = match self.unit {
            Unit::User => "unit: user".to_owned(),
            Unit::Field => "unit: session\n        session: { field: session_id }".to_owned(),
            Unit::Gap => "unit: session\n        session: { gap: 7m }".to_owned(),
        };
        let window = if self.sliding {
            "{ type: sliding, size: 1h, slide: 20m, offset: 5m }"
        } else {
            "{ type: tumbling, size: 1h, offset: 15m }"
        };
        let exclusions = if self.exclusion {
            "exclusions: [{ eventTypes: [refund], between: [clicked, purchased] }]"
        } else {
            ""
        };
        let attribution = if self.last_touch {
            "lastTouch"
        } else {
            "firstTouch"
        };
        format!(
            r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: {{ name: funnels }}
spec:
  sources:
    - name: events
      generator: {{}}
      fields: {{ extra: [channel, session_id] }}
  watermark: {{ maxOutOfOrderness: 10s, idleTimeout: 1h }}
  analytics:
    - name: checkout
      funnel:
        sources: [events]
        {unit}
        steps:
          - {{ name: viewed, eventTypes: [view] }}
          - {{ name: clicked, eventTypes: [click] }}
          - {{ name: carted, eventTypes: [add_to_cart] }}
          - {{ name: purchased, eventTypes: [purchase], when: 'event.price > 50.0' }}
        order: {order}
        conversionWindow: 20m
        breakdown: {{ field: channel, attribution: {attribution} }}
        {exclusions}
        window: {window}
        allowedLateness: {lateness}m
  sinks:
    - name: out
      stdout: {{}}
"#,
            order = self.order,
            lateness = self.lateness_min,
        )
    }

    fn plan(&self, tasks: u32) -> Plan {
        let pipeline = tidemark_api::parse_manifest(&self.manifest()).unwrap();
        let problems = tidemark_api::validate(&pipeline.spec);
        assert!(problems.is_empty(), "{problems:?}");
        Plan::compile("funnels", &pipeline.spec)
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
    price: f64,
    channel: Option<&'static str>,
    session: u8,
}

impl Ev {
    fn line(&self) -> Vec<u8> {
        let channel = self
            .channel
            .map_or(String::new(), |c| format!(r#","channel":"{c}""#));
        format!(
            r#"{{"type":"{}","user_id":"u{}","product_id":"p1","category":"toys","price":{:.2},"ts":{}{channel},"session_id":"s{}"}}"#,
            self.kind, self.user, self.price, self.time, self.session
        )
        .into_bytes()
    }
}

const KINDS: [&str; 6] = [
    "view",
    "click",
    "add_to_cart",
    "purchase",
    "refund",
    "search",
];
const CHANNELS: [Option<&str>; 4] = [Some("ads"), Some("mail"), Some("seo"), None];

/// Events over about 3 h by up to 6 users, in arrival order: mostly in time order, some later
/// by up to `delay_min` minutes.
fn events(delay_min: i64) -> impl Strategy<Value = Vec<Ev>> {
    let one = (
        0u8..6,
        0usize..KINDS.len(),
        1i64..90_000,
        0u32..100,
        0usize..CHANNELS.len(),
        0u8..3,
        0u32..100,
        0i64..=delay_min * MIN,
    );
    prop::collection::vec(one, 20..160).prop_map(|raw| {
        let mut clock = START;
        let out: Vec<Ev> = raw
            .into_iter()
            .map(|(user, kind, step, price, channel, session, late, delay)| {
                clock += step;
                let time = if late < 12 { clock - delay } else { clock };
                Ev {
                    user,
                    kind: KINDS[kind],
                    time: time.max(START),
                    price: f64::from(price) + 0.5,
                    channel: CHANNELS[channel],
                    session,
                }
            })
            .collect();
        out
    })
}

// ---------------------------------------------------------------------------------------------
// The oracle

/// A window's expected tally per breakdown value: units per step and seconds per step.
type Expected = BTreeMap<(i64, String), (Vec<u64>, Vec<Vec<u64>>)>;

fn step_of(e: &Ev, k: usize) -> bool {
    match k {
        0 => e.kind == "view",
        1 => e.kind == "click",
        2 => e.kind == "add_to_cart",
        _ => e.kind == "purchase" && e.price > 50.0,
    }
}

fn relevant(c: &Config, e: &Ev) -> bool {
    c.order == "strict"
        || c.unit == Unit::Gap
        || (0..4).any(|k| step_of(e, k))
        || (c.exclusion && e.kind == "refund")
}

/// Windows `(start, end)` of the configuration, covering the test's time range.
fn windows(c: &Config) -> Vec<(i64, i64)> {
    let (size, slide, offset) = if c.sliding {
        (60 * MIN, 20 * MIN, 5 * MIN)
    } else {
        (60 * MIN, 60 * MIN, 15 * MIN)
    };
    let mut out = Vec::new();
    let mut start = START - 2 * size + offset;
    while start < START + 12 * 3_600_000 {
        out.push((start, start + size));
        start += slide;
    }
    out
}

/// Which events each window sees, simulating one task's watermark: an event arriving at
/// watermark `wm` is late when every window containing it is final plus lateness; a window
/// sees the accepted events that arrived before it was dropped. Returns the windows' events
/// and the number of late events.
fn admitted(c: &Config, events: &[Ev]) -> (BTreeMap<(i64, i64), Vec<Ev>>, usize) {
    let lateness = c.lateness_min * MIN;
    let ws = windows(c);
    let mut seen: BTreeMap<(i64, i64), Vec<Ev>> = ws.iter().map(|w| (*w, Vec::new())).collect();
    let mut wm = i64::MIN;
    let mut max = i64::MIN;
    let mut late = 0;
    for e in events {
        if relevant(c, e) {
            let newest = ws
                .iter()
                .filter(|(s, end)| *s <= e.time && e.time < *end)
                .map(|w| w.1)
                .max()
                .unwrap();
            if newest + CONVERSION + lateness <= wm {
                late += 1;
            } else {
                for (w, list) in seen.iter_mut() {
                    if w.1 + CONVERSION + lateness > wm {
                        list.push(e.clone());
                    }
                }
            }
        }
        max = max.max(e.time);
        wm = wm.max(max - OUT_OF_ORDER);
    }
    (seen, late)
}

/// The expected tallies of every window, from the events each window saw.
fn oracle(c: &Config, events: &[Ev]) -> (Expected, usize) {
    let (seen, late) = admitted(c, events);
    let mut out: Expected = BTreeMap::new();
    for ((start, end), list) in seen {
        let mut list = list;
        list.sort_by_key(|e| e.time); // stable: arrival order within a time
        let users: BTreeSet<u8> = list.iter().map(|e| e.user).collect();
        for user in users {
            let mine: Vec<&Ev> = list.iter().filter(|e| e.user == user).collect();
            // Session index of each event (by gap), or its session field.
            let mut gap_session = Vec::with_capacity(mine.len());
            let mut s = 0;
            for (i, e) in mine.iter().enumerate() {
                if i > 0 && e.time - mine[i - 1].time > GAP {
                    s += 1;
                }
                gap_session.push(s);
            }
            let session = |i: usize| -> u64 {
                match c.unit {
                    Unit::User => 0,
                    Unit::Field => u64::from(mine[i].session),
                    Unit::Gap => gap_session[i],
                }
            };
            let mut entered: BTreeSet<u64> = BTreeSet::new();
            for i in 0..mine.len() {
                let e = mine[i];
                if e.time < start || e.time >= end || !step_of(e, 0) || !entered.insert(session(i))
                {
                    continue;
                }
                let later: Vec<&Ev> = (i + 1..mine.len())
                    .filter(|&j| session(j) == session(i))
                    .map(|j| mine[j])
                    .take_while(|x| x.time - e.time <= CONVERSION)
                    .collect();
                let (reached, times, last) = walk(c, e, &later);
                let channel = if c.last_touch {
                    last.channel
                } else {
                    e.channel
                };
                let key = (end, channel.unwrap_or("(none)").to_owned());
                let tally = out
                    .entry(key)
                    .or_insert_with(|| (vec![0; 4], vec![Vec::new(); 4]));
                for k in 0..reached {
                    tally.0[k] += 1;
                }
                for (k, t) in times.iter().enumerate() {
                    tally.1[k + 1].push((*t / 1000) as u64);
                }
            }
        }
    }
    (out, late)
}

/// How far a unit entering at `e` gets over its `later` events (same session, within the
/// conversion window): steps reached, ms to each later step, the event of the furthest step.
fn walk<'a>(c: &Config, e: &'a Ev, later: &[&'a Ev]) -> (usize, Vec<i64>, &'a Ev) {
    let mut have = [true, false, false, false];
    let mut reached = 1;
    let mut times = Vec::new();
    let mut last = e;
    for x in later {
        if reached == 4 {
            break;
        }
        // Exclusion: refund after clicked (1) was reached and before purchased (3).
        if c.exclusion && x.kind == "refund" && have[1] && !have[3] {
            break;
        }
        match c.order {
            "any" => {
                for (k, h) in have.iter_mut().enumerate() {
                    *h |= step_of(x, k);
                }
                let prefix = have.iter().take_while(|h| **h).count();
                if prefix > reached {
                    times.extend(std::iter::repeat_n(x.time - e.time, prefix - reached));
                    reached = prefix;
                    last = x;
                }
            }
            order => {
                if step_of(x, reached) {
                    have[reached] = true;
                    reached += 1;
                    times.push(x.time - e.time);
                    last = x;
                } else if order == "strict" {
                    break;
                }
            }
        }
    }
    (reached, times, last)
}

/// The same tallies read back from results: the final (highest) revision of each.
fn from_results(results: &[ResultRecord]) -> (Expected, BTreeMap<String, Vec<u64>>) {
    let mut finals: BTreeMap<String, (u64, serde_json::Value)> = BTreeMap::new();
    let mut revisions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in results {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let rev = v["revision"].as_u64().unwrap();
        revisions.entry(r.key.clone()).or_default().push(rev);
        if finals.get(&r.key).is_none_or(|(old, _)| *old < rev) {
            finals.insert(r.key.clone(), (rev, v));
        }
    }
    let mut out: Expected = BTreeMap::new();
    for (_, (_, v)) in finals {
        let end = chrono::DateTime::parse_from_rfc3339(v["window"]["end"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let steps = v["steps"].as_array().unwrap();
        let units: Vec<u64> = steps.iter().map(|s| s["units"].as_u64().unwrap()).collect();
        assert_eq!(v["entered"].as_u64(), Some(units[0]));
        assert_eq!(v["converted"].as_u64(), Some(units[3]));
        let medians = steps
            .iter()
            .map(|s| {
                s["median_seconds_to_convert"].as_u64().map_or(vec![], |m| {
                    vec![m, s["p90_seconds_to_convert"].as_u64().unwrap()]
                })
            })
            .collect();
        if units.iter().any(|&u| u > 0) {
            out.insert(
                (end, v["key"].as_str().unwrap().to_owned()),
                (units, medians),
            );
        }
    }
    (out, revisions)
}

/// The oracle's tallies in the shape of [`from_results`]: per step, [median, p90] seconds.
fn summarised(expected: Expected) -> Expected {
    expected
        .into_iter()
        .map(|(key, (units, seconds))| {
            let pct = |k: usize, p: f64| -> Vec<u64> {
                if units[k] == 0 {
                    return vec![];
                }
                if k == 0 {
                    return vec![0, 0];
                }
                let mut s = seconds[k].clone();
                s.sort_unstable();
                let at = |p: f64| s[((p * s.len() as f64).ceil() as usize).max(1) - 1];
                vec![at(0.5), at(p)]
            };
            let summary = (0..4).map(|k| pct(k, 0.9)).collect();
            (key, (units, summary))
        })
        .collect()
}

fn one_task(c: &Config, events: &[Ev]) -> (Vec<ResultRecord>, usize) {
    let mut task = Task::new(c.plan(1), 0);
    let mut out = Output::default();
    for e in events {
        task.route(&e.line(), 0, &mut out);
    }
    task.finish(0, &mut out);
    let late = out.dead_letters.len();
    (out.results, late)
}

fn assert_revisions_count_up(revisions: &BTreeMap<String, Vec<u64>>) {
    for (key, revs) in revisions {
        let want: Vec<u64> = (0..revs.len() as u64).collect();
        assert_eq!(revs, &want, "{key}: revisions 0, 1, 2, ... each once");
    }
}

fn configs() -> impl Strategy<Value = Config> {
    (
        prop::sample::select(vec!["ordered", "strict", "any"]),
        prop::sample::select(vec![Unit::User, Unit::Field, Unit::Gap]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![0i64, 30, 240]),
    )
        .prop_map(
            |(order, unit, exclusion, last_touch, sliding, lateness_min)| Config {
                order,
                unit,
                exclusion,
                last_touch,
                sliding,
                lateness_min,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn one_task_reports_what_the_oracle_computes(c in configs(), events in events(60)) {
        let (results, late) = one_task(&c, &events);
        let (want, want_late) = oracle(&c, &events);
        let (got, revisions) = from_results(&results);
        prop_assert_eq!(late, want_late, "late events dead-lettered");
        prop_assert_eq!(got, summarised(want));
        assert_revisions_count_up(&revisions);
    }

    #[test]
    fn two_to_five_tasks_through_the_global_stage_report_what_one_task_does(
        c in configs(),
        events in events(30),
        tasks in 2u32..=5,
        interleave in prop::collection::vec(0usize..5, 1..12),
    ) {
        // Lateness covers the disorder, so no task drops an event and the finals compare.
        let c = Config { lateness_min: 240, ..c };
        let (single, _) = one_task(&c, &events);
        let mut runs: Vec<Task> = (0..tasks).map(|t| Task::new(c.plan(tasks), 0).with_id(t)).collect();
        let mut streams: Vec<Vec<Vec<u8>>> = vec![Vec::new(); tasks as usize];
        for e in &events {
            let t = (e.user as u32 % tasks) as usize;
            let mut out = Output::default();
            runs[t].route(&e.line(), 0, &mut out);
            prop_assert!(out.results.is_empty(), "tasks of a funnel only emit partials");
            streams[t].extend(out.partials.into_iter().map(|p| p.value));
        }
        for (t, task) in runs.iter_mut().enumerate() {
            let mut out = Output::default();
            task.finish(0, &mut out);
            streams[t].extend(out.partials.into_iter().map(|p| p.value));
        }
        let mut stage = GlobalStage::new(c.plan(tasks), tasks);
        let mut out = Output::default();
        crate::global::tests::feed(&mut stage, &streams, &interleave, &mut out);
        prop_assert!(stage.finished());
        prop_assert_eq!(stage.counters().malformed + stage.counters().late, 0);
        let (got, revisions) = from_results(&out.results);
        prop_assert_eq!(got, from_results(&single).0);
        assert_revisions_count_up(&revisions);
        let (want, _) = oracle(&c, &events);
        prop_assert_eq!(from_results(&single).0, summarised(want));
    }

    #[test]
    fn a_task_restored_mid_stream_emits_what_an_uninterrupted_one_does(
        c in configs(),
        events in events(60),
        cut in 0.0f64..1.0,
    ) {
        let (whole, _) = one_task(&c, &events);
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
        let strip = |rs: &[ResultRecord]| -> Vec<(String, Vec<u8>)> {
            rs.iter().map(|r| (r.key.clone(), r.value.clone())).collect()
        };
        prop_assert_eq!(strip(&out.results), strip(&whole));
    }
}

#[test]
fn every_order_mode_counts_a_known_journey() {
    // u1: view, search, click, add_to_cart, purchase (60): ordered and any reach 4 steps,
    // strict stops at the search.
    let journey = [
        ("view", 0),
        ("search", 60),
        ("click", 120),
        ("add_to_cart", 180),
        ("purchase", 240),
    ];
    for (order, reached) in [("ordered", 4), ("any", 4), ("strict", 1)] {
        let c = Config {
            order,
            unit: Unit::User,
            exclusion: false,
            last_touch: false,
            sliding: false,
            lateness_min: 0,
        };
        let events: Vec<Ev> = journey
            .iter()
            .map(|(kind, s)| Ev {
                user: 1,
                kind,
                time: START + 20 * MIN + s * 1000,
                price: 60.5,
                channel: Some("ads"),
                session: 0,
            })
            .collect();
        let (results, _) = one_task(&c, &events);
        assert_eq!(results.len(), 1, "{order}");
        let v: serde_json::Value = serde_json::from_slice(&results[0].value).unwrap();
        assert_eq!(v["key"], "ads");
        assert_eq!(
            v["converted"].as_u64(),
            Some(u64::from(reached == 4)),
            "{order}"
        );
        let units: Vec<u64> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["units"].as_u64().unwrap())
            .collect();
        assert_eq!(
            units.iter().filter(|&&u| u == 1).count(),
            reached,
            "{order}: {units:?}"
        );
        if reached == 4 {
            assert_eq!(
                v["steps"][3]["median_seconds_to_convert"].as_u64(),
                Some(240)
            );
        }
    }
}
