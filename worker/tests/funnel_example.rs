//! `examples/funnel.yaml` on a generated clickstream with a planted incident (purchases succeed
//! a fifth as often from 2 h to 4 h): the funnel shows the collapse in those hours, not in
//! the others, and every window's steps are consistent.

#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn tidemark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
}

/// Per window start (hours from the generator's start): (carted, purchased) over all channels,
/// from the final revision of each result.
fn carted_and_purchased(results: &str) -> BTreeMap<i64, (u64, u64)> {
    let mut finals: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    for line in results.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = format!("{}/{}", v["key"], v["window"]["start"]);
        let revision = v["revision"].as_u64().unwrap();
        if finals.get(&key).is_none_or(|(r, _)| *r < revision) {
            finals.insert(key, (revision, v));
        }
    }
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let mut hours: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for (_, v) in finals.values() {
        let steps = v["steps"].as_array().unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
        assert_eq!(names, ["viewed", "clicked", "carted", "purchased"]);
        let units: Vec<u64> = steps.iter().map(|s| s["units"].as_u64().unwrap()).collect();
        assert!(
            units.windows(2).all(|w| w[0] >= w[1]),
            "a funnel narrows: {units:?}"
        );
        assert_eq!(v["entered"].as_u64(), Some(units[0]));
        assert_eq!(v["converted"].as_u64(), Some(units[3]));
        let window =
            chrono::DateTime::parse_from_rfc3339(v["window"]["start"].as_str().unwrap()).unwrap();
        let hour = (window - start).num_hours();
        let entry = hours.entry(hour).or_default();
        entry.0 += units[2];
        entry.1 += units[3];
    }
    hours
}

#[test]
fn the_funnel_example_shows_a_planted_purchase_incident_in_its_hours_only() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let out = dir.path().join("funnel.jsonl");
    let generated = tidemark()
        .args([
            "generate",
            "--events",
            "200000",
            "--users",
            "2000",
            "--time-step",
            "100ms",
        ])
        .args(["--incident", "purchase:0.2@2h..4h", "--out"])
        .arg(&events)
        .status()
        .unwrap();
    assert!(generated.success());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/funnel.yaml");
    let run = tidemark()
        .args(["run", "-q", "-f"])
        .arg(&example)
        .arg("--input")
        .arg(&events)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let hours = carted_and_purchased(&std::fs::read_to_string(&out).unwrap());
    // 200 000 events 100 ms apart: about 5.6 hours, windows 0 to 5.
    assert!(hours.len() >= 5, "{hours:?}");
    let rate = |h: i64| {
        let (carted, purchased) = hours[&h];
        assert!(carted > 200, "hour {h}: {carted} carted sessions");
        purchased as f64 / carted as f64
    };
    let normal: Vec<f64> = [0, 4].iter().map(|&h| rate(h)).collect();
    let incident: Vec<f64> = [2, 3].iter().map(|&h| rate(h)).collect();
    let usual = normal.iter().sum::<f64>() / normal.len() as f64;
    assert!(usual > 0.3, "carted sessions usually buy: {normal:?}");
    for (h, r) in [2, 3].iter().zip(&incident) {
        assert!(*r < 0.4 * usual, "hour {h}: {r} against {usual} usually");
    }
    for (h, r) in [0, 4].iter().zip(&normal) {
        assert!(*r > 0.75 * usual, "hour {h}: {r} against {usual}");
    }
}
