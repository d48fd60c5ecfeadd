//! The quality report against a brute-force count written separately: random input of two
//! sources with malformed lines, missing and unreadable fields, duplicates, skewed and late
//! events goes through a real task (with and without a snapshot/restore mid-stream); an oracle
//! that applies the documented rules record by record says what every report record must hold.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde_json::Value;

use crate::engine::Task;
use crate::event::Reason;
use crate::plan::Plan;
use crate::result::Output;

const PIPELINE: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: { name: dq }
spec:
  sources:
    - { name: clicks, generator: {}, fields: { extra: [event_id] } }
    - { name: buys, generator: {}, fields: { extra: [event_id] } }
  watermark: { maxOutOfOrderness: 10s, idleTimeout: 1h }
  dataQuality:
    deduplicate: { field: event_id, horizon: 1h }
    maxFutureSkew: 5m
    report: { window: 10m, sink: quality }
  analytics:
    - name: per_user
      aggregate:
        sources: [clicks, buys]
        window: { type: tumbling, size: 1h }
        aggregates: [{ name: events, op: count }]
  sinks:
    - { name: out, stdout: {} }
    - { name: quality, stdout: {} }
"#;

const WALL: i64 = 1_796_083_200_000;
const T0: i64 = WALL - 3 * 86_400_000;
const OOO: i64 = 10_000;
const SKEW: i64 = 300_000;
const HORIZON: i64 = 3_600_000;
const WINDOW: i64 = 600_000;
const HOUR: i64 = 3_600_000;
const SOURCES: [&str; 2] = ["clicks", "buys"];

/// One input record: its source and line, and what the oracle needs of it.
#[derive(Clone, Debug)]
enum Rec {
    /// Not JSON, no user, unreadable time.
    Broken(Reason),
    /// An event with an id and a time.
    Event(String, i64),
}

impl Rec {
    fn line(&self) -> Vec<u8> {
        match self {
            Rec::Broken(Reason::MalformedJson) => b"{\"user_id\":".to_vec(),
            Rec::Broken(Reason::MissingField) => b"{\"ts\":5,\"event_id\":\"x\"}".to_vec(),
            Rec::Broken(_) => b"{\"user_id\":\"u\",\"ts\":\"yesterday\"}".to_vec(),
            Rec::Event(id, t) => format!(
                "{{\"user_id\":\"u{}\",\"ts\":{t},\"event_id\":\"{id}\"}}",
                t % 7
            )
            .into_bytes(),
        }
    }
}

/// Counts per (window start, source): records in, then one per reason of `Reason::ALL`.
type Counts = BTreeMap<(i64, String), [u64; 10]>;

/// The documented rules, applied record by record with plain data structures.
fn oracle(records: &[(usize, Rec)]) -> Counts {
    let mut max_t = [i64::MIN; 2];
    let mut wm = i64::MIN;
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut newest = i64::MIN;
    let mut counts = Counts::new();
    for (source, rec) in records {
        let (usable, outcome) = match rec {
            Rec::Broken(reason) => (None, Some(*reason)),
            Rec::Event(_, t) if *t - WALL > SKEW => (None, Some(Reason::ClockSkew)),
            Rec::Event(id, t) => {
                let dup = ids.get(id).is_some_and(|&t0| {
                    t0 > wm.saturating_sub(HORIZON) && (t - t0).abs() <= HORIZON
                });
                if dup {
                    (Some(*t), Some(Reason::Duplicate))
                } else {
                    ids.insert(id.clone(), *t);
                    let end = t.div_euclid(HOUR) * HOUR + HOUR;
                    let late = end <= wm;
                    max_t[*source] = max_t[*source].max(*t);
                    let low = max_t.iter().min().copied().unwrap_or(i64::MIN);
                    if low != i64::MIN {
                        wm = wm.max(low - OOO);
                    }
                    (Some(*t), late.then_some(Reason::Late))
                }
            }
        };
        let at = usable.unwrap_or(if newest == i64::MIN { WALL } else { newest });
        if let (Some(t), None | Some(Reason::Late)) = (usable, outcome) {
            newest = newest.max(t);
        }
        let start = at.max(wm).div_euclid(WINDOW) * WINDOW;
        let c = counts
            .entry((start, SOURCES[*source].to_owned()))
            .or_default();
        c[0] += 1;
        if let Some(reason) = outcome {
            let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
            c[1 + i] += 1;
        }
    }
    counts
}

/// Runs the records through a task (restored from its snapshot before record `cut`), returns
/// the report records' values in emission order.
fn run(records: &[(usize, Rec)], cut: Option<usize>) -> Vec<Vec<u8>> {
    let pipeline = tidemark_api::parse_manifest(PIPELINE).unwrap();
    let plan = || Plan::compile("dq", &pipeline.spec).unwrap();
    let mut task = Task::new(plan(), 0);
    task.set_wall_clock(WALL);
    let mut out = Output::default();
    for (i, (source, rec)) in records.iter().enumerate() {
        if Some(i) == cut {
            let mut restored = Task::new(plan(), 0);
            restored.restore(&task.snapshot()).unwrap();
            restored.set_wall_clock(WALL);
            task = restored;
        }
        task.process(*source, &rec.line(), 0, &mut out);
    }
    task.finish(0, &mut out);
    out.results
        .iter()
        .filter(|r| r.analytic == 1)
        .map(|r| r.value.clone())
        .collect()
}

/// The report records as counts, checking each record's own arithmetic on the way.
fn counts_of(values: &[Vec<u8>]) -> Counts {
    let mut counts = Counts::new();
    for value in values {
        let v: Value = serde_json::from_slice(value).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339(v["window"]["start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        let mut c = [0u64; 10];
        c[0] = v["records_in"].as_u64().unwrap();
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let r = &v["reasons"][reason.as_str()];
            c[1 + i] = r["count"].as_u64().unwrap();
            let share = r["share"].as_f64().unwrap();
            assert!((share - c[1 + i] as f64 / c[0] as f64).abs() < 1e-12);
        }
        let valid = v["valid"]["count"].as_u64().unwrap();
        assert_eq!(
            valid + c[1..].iter().sum::<u64>(),
            c[0],
            "valid + each reason = in"
        );
        assert_eq!(v["lag_ms"]["count"].as_u64().unwrap(), valid);
        let key = (start, v["source"].as_str().unwrap().to_owned());
        assert!(
            counts.insert(key, c).is_none(),
            "one record per source and window"
        );
    }
    counts
}

fn records() -> impl Strategy<Value = Vec<(usize, Rec)>> {
    prop::collection::vec(
        (
            0usize..2,
            0u8..20,
            0i64..90_000,
            -40_000i64..40_000,
            0usize..64,
        ),
        1..400,
    )
    .prop_map(|steps| {
        let mut clock = T0;
        let mut sent: Vec<(String, i64)> = Vec::new();
        steps
            .into_iter()
            .map(|(source, kind, advance, jitter, pick)| {
                clock += advance;
                let rec = match kind {
                    0 => Rec::Broken(Reason::MalformedJson),
                    1 => Rec::Broken(Reason::MissingField),
                    2 => Rec::Broken(Reason::InvalidTime),
                    3 if !sent.is_empty() => {
                        let (id, t) = sent[pick % sent.len()].clone();
                        Rec::Event(id, t)
                    }
                    4 => Rec::Event(format!("s{}", sent.len()), WALL + SKEW + 1 + jitter.abs()),
                    5 => Rec::Event(format!("l{}", sent.len()), clock - 2 * HOUR + jitter),
                    6 => Rec::Event(format!("a{}", sent.len()), WALL + jitter.abs() % SKEW),
                    _ => Rec::Event(format!("e{}", sent.len()), clock + jitter),
                };
                if let Rec::Event(id, t) = &rec {
                    sent.push((id.clone(), *t));
                }
                (source, rec)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_report_counts_every_record_once_by_source_window_and_fate(
        records in records(),
        cut in 0usize..400,
    ) {
        let want = oracle(&records);
        let got = run(&records, None);
        prop_assert_eq!(counts_of(&got), want.clone());
        let total: u64 = want.values().map(|c| c[0]).sum();
        prop_assert_eq!(total, records.len() as u64);
        // Restored mid-stream: the same records, byte for byte (nothing lost or doubled).
        let restored = run(&records, Some(cut % records.len()));
        prop_assert_eq!(restored, got);
    }
}

#[test]
fn a_report_record_has_the_documented_shape() {
    let records = vec![
        (0, Rec::Event("a".into(), T0 + 1_000)),
        (0, Rec::Event("a".into(), T0 + 1_000)),
        (0, Rec::Broken(Reason::MalformedJson)),
        (0, Rec::Event("b".into(), WALL + SKEW + 60_000)),
        (1, Rec::Event("c".into(), T0 + 2_000)),
    ];
    let got = run(&records, None);
    assert_eq!(got.len(), 2);
    let v: Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(v["pipeline"], "dq");
    assert_eq!(v["report"], "quality");
    assert_eq!(v["source"], "clicks");
    assert_eq!(v["task"], 0);
    assert_eq!(v["records_in"], 4);
    assert_eq!(v["valid"]["count"], 1);
    assert_eq!(v["valid"]["share"], 0.25);
    assert_eq!(v["reasons"]["duplicate"]["count"], 1);
    assert_eq!(v["reasons"]["malformed_json"]["count"], 1);
    assert_eq!(v["reasons"]["clock_skew"]["count"], 1);
    assert_eq!(v["reasons"].as_object().unwrap().len(), Reason::ALL.len());
    // Lag: the wall clock minus the event time, within the sketch's 1 % accuracy.
    let lag = v["lag_ms"]["p50"].as_f64().unwrap();
    let want = (WALL - T0 - 1_000) as f64;
    assert!((lag - want).abs() <= want * 0.011, "{lag} vs {want}");
    // The sketch merges: a consumer adds the tasks' sketches for quantiles over all of them.
    let sketch: sketches_ddsketch::DDSketch =
        serde_json::from_value(v["lag_ms"]["sketch"].clone()).unwrap();
    assert_eq!(sketch.count(), 1);
}

#[test]
fn records_go_to_the_report_sink_under_a_deterministic_key() {
    let pipeline = tidemark_api::parse_manifest(PIPELINE).unwrap();
    let mut task = Task::new(Plan::compile("dq", &pipeline.spec).unwrap(), 0).with_id(3);
    task.set_wall_clock(WALL);
    let mut out = Output::default();
    task.process(1, &Rec::Event("z".into(), T0 + 5).line(), 0, &mut out);
    task.finish(0, &mut out);
    let keys: Vec<&str> = out
        .results
        .iter()
        .filter(|r| r.analytic == 1)
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(keys, ["quality/buys/3/2026-11-28T00:00:00Z"]);
    let mut skew = task.counters().clock_skew.clone();
    assert_eq!(skew.iter().map(|s| s.count()).sum::<u64>(), 0);
    task.process(0, &Rec::Event("y".into(), WALL + 2_000).line(), 0, &mut out);
    skew.clone_from(&task.counters().clock_skew);
    assert_eq!(skew[0].count(), 1, "an event 2 s ahead is counted");
    assert_eq!(skew[0].sum_ms, 2_000);
}
