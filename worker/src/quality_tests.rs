//! Deduplication against a brute-force reading of its rule, and a task fed duplicates, skewed
//! clocks and malformed lines that accounts for every record, across a restore.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;
use crate::engine::Task;
use crate::event::{FieldValue, Reason};
use crate::plan::Plan;
use crate::result::Output;

fn event(id: &str, time: i64) -> Event<'static> {
    Event {
        time,
        user: Cow::Borrowed("u"),
        product: None,
        event_type: None,
        category: None,
        price: None,
        extra: vec![FieldValue::Str(Cow::Owned(id.to_owned()))],
    }
}

/// The rule read literally: a record is a duplicate when the last accepted record with its id
/// was, at the record's arrival, newer than the watermark minus the horizon and within the
/// horizon of it.
fn brute_force(records: &[(u8, i64, i64)], horizon: i64) -> Vec<bool> {
    let mut accepted: Vec<(u8, i64)> = Vec::new();
    let mut out = Vec::new();
    for &(id, t, wm) in records {
        let last = accepted.iter().rev().find(|(i, _)| *i == id);
        let dup = last.is_some_and(|&(_, t0)| t0 > wm - horizon && (t - t0).abs() <= horizon);
        if !dup {
            accepted.push((id, t));
        }
        out.push(dup);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn duplicates_are_exactly_those_the_rule_names(
        steps in prop::collection::vec((0u8..40, -600i64..600, 0i64..30), 1..3000),
        horizon in 1i64..300,
    ) {
        // Times jitter around a clock; the watermark trails the newest time by 100.
        let mut clock = 0;
        let mut max = i64::MIN;
        let records: Vec<(u8, i64, i64)> = steps
            .iter()
            .map(|&(id, jitter, advance)| {
                clock += advance;
                let t = clock + jitter;
                let wm = max.saturating_sub(100);
                max = max.max(t);
                (id, t, wm)
            })
            .collect();
        let mut dedup = Deduplicator::new(horizon);
        let got: Vec<bool> = records
            .iter()
            .map(|&(id, t, wm)| dedup.is_duplicate(Input::Extra(0), &event(&format!("e{id}"), t), wm))
            .collect();
        prop_assert_eq!(got, brute_force(&records, horizon));
    }
}

const PIPELINE: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: { name: quality }
spec:
  sources:
    - name: events
      generator: {}
      fields: { extra: [event_id] }
  watermark: { maxOutOfOrderness: 10s, idleTimeout: 1h }
  dataQuality:
    deduplicate: { field: event_id, horizon: 10m }
    maxFutureSkew: 5m
  analytics:
    - name: per_user
      aggregate:
        sources: [events]
        window: { type: tumbling, size: 1h }
        allowedLateness: 1d
        aggregates: [{ name: events, op: count }]
  sinks:
    - name: out
      stdout: {}
"#;

/// 2026-12-01: after every generated event time, before the skewed ones.
const WALL: i64 = 1_796_083_200_000;

fn lines() -> Vec<Vec<u8>> {
    let spec = tidemark_api::GeneratorSpec {
        events: Some(20_000),
        users: 300,
        duplicate_fraction: 0.05,
        clock_skew_fraction: 0.01,
        out_of_order_fraction: 0.1,
        ..Default::default()
    };
    let mut lines = crate::source::generator::Generator::lines(&spec);
    for i in (0..lines.len()).step_by(997) {
        lines.insert(i, b"{\"type\":\"view\",\"user_id\":".to_vec());
    }
    lines
}

fn run(lines: &[Vec<u8>], cut: Option<usize>) -> (Output, crate::engine::Counters) {
    let pipeline = tidemark_api::parse_manifest(PIPELINE).unwrap();
    let plan = || Plan::compile("quality", &pipeline.spec).unwrap();
    let mut task = Task::new(plan(), 0);
    task.set_wall_clock(WALL);
    let mut out = Output::default();
    for (i, line) in lines.iter().enumerate() {
        if Some(i) == cut {
            let mut restored = Task::new(plan(), 0);
            restored.restore(&task.snapshot()).unwrap();
            restored.set_wall_clock(WALL);
            task = restored;
        }
        task.route(line, 0, &mut out);
    }
    task.finish(0, &mut out);
    let counters = task.counters().clone();
    (out, counters)
}

#[test]
fn every_record_is_counted_once_as_valid_or_by_its_reason_across_a_restore() {
    let lines = lines();
    // Expected, from the raw lines: skewed ones by their time, duplicates as repeats of an
    // earlier accepted id (the generator repeats the record just before), malformed ones.
    let mut want_skew = 0;
    let mut want_dup = 0;
    let mut want_malformed = 0;
    let mut seen = std::collections::HashSet::new();
    for line in &lines {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            want_malformed += 1;
            continue;
        };
        if v["ts"].as_i64().unwrap() > WALL + 300_000 {
            want_skew += 1;
        } else if !seen.insert(v["event_id"].as_str().unwrap().to_owned()) {
            want_dup += 1;
        }
    }
    assert!(want_dup > 500 && want_skew > 100 && want_malformed > 10);
    let (out, counters) = run(&lines, None);
    let by = |reason: Reason| {
        counters
            .dead_letters
            .get(&("events".to_owned(), reason))
            .copied()
            .unwrap_or(0)
            + counters
                .dead_letters
                .get(&(String::new(), reason))
                .copied()
                .unwrap_or(0)
    };
    assert_eq!(by(Reason::ClockSkew), want_skew);
    assert_eq!(by(Reason::Duplicate), want_dup);
    assert_eq!(by(Reason::MalformedJson), want_malformed);
    let valid: u64 = out
        .results
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.value).unwrap())
        .fold(std::collections::BTreeMap::new(), |mut finals, v| {
            let key = format!("{}/{}", v["key"], v["window"]["start"]);
            finals.insert(key, v["events"].as_u64().unwrap());
            finals
        })
        .values()
        .sum();
    let dead: u64 = counters.dead_letters.values().sum();
    assert_eq!(
        valid + dead,
        lines.len() as u64,
        "valid + every reason = records in"
    );
    assert_eq!(
        dead,
        want_skew + want_dup + want_malformed,
        "no other reason"
    );
    // A restore mid-stream keeps the ids seen: the same dead letters and results.
    // (Counters belong to a task object: compare the dead-letter outputs instead.)
    let (restored, _) = run(&lines, Some(lines.len() / 2));
    let reasons = |o: &Output| {
        o.dead_letters
            .iter()
            .map(|d| (d.reason, d.raw.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(reasons(&restored), reasons(&out));
    let strip = |o: &Output| {
        o.results
            .iter()
            .map(|r| r.value.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&restored), strip(&out));
}
