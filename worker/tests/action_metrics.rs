//! `tidemark_actions_total` as `/metrics` exposes it, fed by a real task running the
//! abandoned-cart example: each outcome's count equals what the task's output says — action
//! records for `sent` and `holdout`, the uplift reports' refusals for `cooldown` and `budget`.
#![allow(clippy::unwrap_used)]

use tidemark_worker::engine::Task;
use tidemark_worker::metrics::{Metrics, TaskMetrics, ACTIONS_TOTAL};
use tidemark_worker::plan::Plan;
use tidemark_worker::result::Output;
use tidemark_worker::source::generator::Generator;

/// The value of `tidemark_actions_total{analytic="cart_coupon",outcome=...}`.
fn actions(text: &str, outcome: &str) -> Option<f64> {
    let prefix = format!("{ACTIONS_TOTAL}{{");
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(&prefix)?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.contains("analytic=\"cart_coupon\"")
            && labels.contains(&format!("outcome=\"{outcome}\"")))
        .then(|| value.parse().unwrap())
    })
}

#[test]
fn decisions_are_counted_by_outcome_as_the_output_has_them() {
    let text = include_str!("../../examples/abandoned-cart.yaml")
        .replace("maxActions: 200", "maxActions: 20")
        .replace("cooldown: 24h", "cooldown: 2h");
    let pipeline = tidemark_api::parse_manifest(&text).unwrap();
    let plan = Plan::compile("abandoned-cart", &pipeline.spec)
        .unwrap()
        .for_tasks(1)
        .unwrap();
    let mut task = Task::new(plan, 0);
    let metrics = Metrics::new("abandoned-cart").unwrap();
    let mut publisher = TaskMetrics::for_task(&metrics, 0, &task);
    let spec = tidemark_api::GeneratorSpec {
        events: Some(200_000),
        users: 5_000,
        ..tidemark_api::GeneratorSpec::default()
    };
    let mut out = Output::default();
    for (n, line) in Generator::lines(&spec).iter().enumerate() {
        task.route(line, 0, &mut out);
        if n % 50_000 == 0 {
            publisher.publish_task(&metrics, &task, 0);
        }
    }
    task.finish(0, &mut out);
    publisher.publish_task(&metrics, &task, 0);
    let (mut sent, mut holdout, mut cooldown, mut budget) = (0.0, 0.0, 0.0, 0.0);
    for r in &out.results {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        match v["record"].as_str() {
            Some("action") if v["outcome"] == "sent" => sent += 1.0,
            Some("action") if v["outcome"] == "holdout" => holdout += 1.0,
            Some("uplift") => {
                cooldown += v["refused_cooldown"].as_f64().unwrap();
                budget += v["refused_budget"].as_f64().unwrap();
            }
            _ => {}
        }
    }
    assert!(
        sent > 0.0 && holdout > 0.0 && cooldown > 0.0 && budget > 0.0,
        "every outcome happens: {sent} {holdout} {cooldown} {budget}"
    );
    let text = metrics.render();
    for (outcome, want) in [
        ("sent", sent),
        ("holdout", holdout),
        ("cooldown", cooldown),
        ("budget", budget),
    ] {
        assert_eq!(actions(&text, outcome), Some(want), "{outcome}");
    }
}
