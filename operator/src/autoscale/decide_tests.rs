//! Tests of the autoscaler's decisions: sizing, bounds, alignment, stabilization, cool-down and
//! refusals, over plain observations.

use proptest::prelude::*;
use rstest::rstest;
use tidemark_api::{AutoscalingPolicy, AutoscalingSpec, Duration};

use super::*;
use crate::autoscale::observe::WorkerLoad;

const MINUTE: i64 = 60_000;

fn spec() -> AutoscalingSpec {
    AutoscalingSpec {
        enabled: true,
        min_parallelism: 1,
        max_parallelism: 8,
        target_utilization_percent: 80,
        catch_up_duration: Duration::from_millis(100_000),
        scale_down_stabilization: Duration::from_millis(5 * MINUTE as u64),
        cooldown: Duration::from_millis(2 * MINUTE as u64),
        ..AutoscalingSpec::default()
    }
}

/// `workers` workers, each taking `rate` records/s at `busy` busy ratio, with `lag` records
/// behind growing by `growth` per second, over `tasks` tasks.
fn load(workers: usize, rate: f64, busy: f64, lag: f64, growth: f64, tasks: u32) -> Observation {
    Observation {
        processed_rate: rate * workers as f64,
        lag: Some(lag),
        lag_growth: growth,
        workers: (0..workers)
            .map(|i| WorkerLoad {
                instance: format!("w{i}"),
                processed_rate: rate,
                busy_ratio: busy,
            })
            .collect(),
        tasks: Some(tasks),
        ..Observation::default()
    }
}

fn ctx(spec: &AutoscalingSpec, current: i32, now_ms: i64) -> Context<'_> {
    Context {
        spec,
        current,
        now_ms,
        last_scale_ms: None,
        handoff_in_progress: false,
    }
}

#[test]
fn demand_over_measured_capacity_sizes_the_workers() {
    let spec = spec();
    // Two workers each take 10 000/s at 100 % busy: capacity 10 000/s per worker. The input
    // grows the lag by 12 000/s and 400 000 records are behind: demand 20 000 + 12 000 + 4 000
    // = 36 000/s; at 80 % of 10 000 per worker that is 4.5 → 5, aligned to 8 tasks → 8.
    let o = load(2, 10_000.0, 1.0, 400_000.0, 12_000.0, 8);
    let d = decide(&ctx(&spec, 2, 0), &o, &Recommendations::default());
    assert_eq!(d.kind, SCALE_UP);
    assert_eq!(d.desired, 8);
    assert_eq!(d.recommendation, Some(8));
    assert_eq!(d.demand, Some(36_000.0));
    assert_eq!(d.capacity_per_worker, Some(10_000.0));
    assert!(d.reason.contains("demand 36000 records/s"), "{}", d.reason);
    // Half as busy for the same work: twice the capacity, so 36 000 / 16 000 = 2.25 → 3 → 4.
    let o = load(2, 10_000.0, 0.5, 400_000.0, 12_000.0, 8);
    assert_eq!(
        decide(&ctx(&spec, 2, 0), &o, &Recommendations::default()).desired,
        4
    );
}

#[test]
fn a_pipeline_that_keeps_up_holds() {
    let spec = spec();
    let o = load(2, 10_000.0, 0.6, 0.0, 0.0, 8);
    let d = decide(&ctx(&spec, 2, 0), &o, &Recommendations::default());
    assert_eq!((d.kind, d.desired), (HOLD, 2));
}

#[rstest]
#[case::within_max(5, 8, 12, 6)]
#[case::a_divisor_already(4, 8, 12, 4)]
#[case::no_divisor_under_max(5, 5, 12, 4)]
#[case::no_divisor_under_max_odd(7, 7, 10, 5)]
#[case::prime_tasks(3, 8, 7, 7)]
#[case::prime_tasks_capped(3, 6, 7, 4)]
fn alignment_keeps_tasks_balanced(
    #[case] workers: i32,
    #[case] upper: i32,
    #[case] tasks: u32,
    #[case] aligned: i32,
) {
    assert_eq!(align(workers, upper, Some(tasks)), aligned);
}

#[test]
fn bounds_are_min_and_max_capped_by_the_task_count() {
    let mut spec = spec();
    assert_eq!(bounds(&spec, Some(4)), (1, 4));
    assert_eq!(bounds(&spec, None), (1, 8));
    spec.min_parallelism = 6;
    assert_eq!(
        bounds(&spec, Some(4)),
        (4, 4),
        "never more workers than tasks"
    );
}

#[test]
fn more_workers_than_tasks_are_never_asked_for() {
    let spec = spec();
    let o = load(1, 1_000.0, 1.0, 10_000_000.0, 50_000.0, 4);
    let d = decide(&ctx(&spec, 1, 0), &o, &Recommendations::default());
    assert_eq!(d.desired, 4);
    assert!(d.reason.contains("bounds 1..4"), "{}", d.reason);
}

#[test]
fn scaling_down_waits_for_a_whole_stabilization_window_of_lower_recommendations() {
    let spec = spec();
    let idle = load(4, 1_000.0, 0.1, 0.0, 0.0, 8);
    let mut history = Recommendations::default();
    let mut now = 0;
    // Four minutes of lower recommendations: not yet.
    while now < 5 * MINUTE {
        let d = decide(&ctx(&spec, 4, now), &idle, &history);
        assert_eq!((d.kind, d.desired), (HOLD, 4), "at {now} ms: {}", d.reason);
        assert!(d.reason.contains("stabilization window"), "{}", d.reason);
        history.record(now, d.recommendation.expect("a recommendation"), 5 * MINUTE);
        now += 30_000;
    }
    // Five minutes: the highest recommendation of the window rules.
    let d = decide(&ctx(&spec, 4, now), &idle, &history);
    assert_eq!((d.kind, d.desired), (SCALE_DOWN, 1), "{}", d.reason);
}

#[test]
fn one_busy_moment_in_the_window_keeps_the_workers() {
    let spec = spec();
    let idle = load(4, 1_000.0, 0.1, 0.0, 0.0, 8);
    let mut history = Recommendations::default();
    history.record(0, 1, 5 * MINUTE);
    history.record(2 * MINUTE, 4, 5 * MINUTE);
    history.record(4 * MINUTE, 1, 5 * MINUTE);
    let d = decide(&ctx(&spec, 4, 6 * MINUTE), &idle, &history);
    assert_eq!((d.kind, d.desired), (HOLD, 4), "{}", d.reason);
    // Once the busy moment leaves the window, the scale-down happens.
    let d = decide(&ctx(&spec, 4, 7 * MINUTE + 1), &idle, &history);
    assert_eq!((d.kind, d.desired), (SCALE_DOWN, 1), "{}", d.reason);
}

#[test]
fn a_refusal_restarts_the_stabilization_window() {
    let mut history = Recommendations::default();
    history.record(0, 1, 5 * MINUTE);
    history.record(5 * MINUTE, 1, 5 * MINUTE);
    assert_eq!(history.window_max(5 * MINUTE, 5 * MINUTE), Some(1));
    history.clear();
    history.record(6 * MINUTE, 1, 5 * MINUTE);
    assert_eq!(history.window_max(6 * MINUTE, 5 * MINUTE), None);
}

#[test]
fn no_two_scaling_actions_within_the_cool_down() {
    let spec = spec();
    let busy = load(2, 10_000.0, 1.0, 400_000.0, 12_000.0, 8);
    let mut c = ctx(&spec, 2, 10 * MINUTE);
    c.last_scale_ms = Some(9 * MINUTE);
    let d = decide(&c, &busy, &Recommendations::default());
    assert_eq!((d.kind, d.desired), (HOLD, 2));
    assert!(d.reason.contains("cool-down for 60s more"), "{}", d.reason);
    c.now_ms = 11 * MINUTE;
    assert_eq!(
        decide(&c, &busy, &Recommendations::default()).kind,
        SCALE_UP
    );
}

#[test]
fn nothing_is_decided_while_a_hand_off_moves_state() {
    let spec = spec();
    let busy = load(2, 10_000.0, 1.0, 400_000.0, 12_000.0, 8);
    let mut c = ctx(&spec, 2, 0);
    c.handoff_in_progress = true;
    let d = decide(&c, &busy, &Recommendations::default());
    assert_eq!((d.kind, d.desired), (HOLD, 2));
    assert!(d.reason.contains("hand-off"), "{}", d.reason);
}

#[test]
fn new_bounds_apply_at_once() {
    let mut spec = spec();
    spec.max_parallelism = 2;
    let o = load(4, 1_000.0, 0.9, 0.0, 0.0, 8);
    let mut c = ctx(&spec, 4, 0);
    c.last_scale_ms = Some(0);
    let d = decide(&c, &o, &Recommendations::default());
    assert_eq!((d.kind, d.desired), (SCALE_DOWN, 2), "{}", d.reason);
}

#[test]
fn the_lag_threshold_policy_wants_a_worker_per_threshold_of_lag() {
    let mut spec = spec();
    spec.policy = AutoscalingPolicy::LagThreshold;
    spec.lag_threshold = 10_000;
    let o = load(1, 0.0, 0.0, 25_000.0, 0.0, 6);
    let d = decide(&ctx(&spec, 1, 0), &o, &Recommendations::default());
    // 25 000 / 10 000 → 3, a divisor of 6.
    assert_eq!((d.kind, d.desired), (SCALE_UP, 3), "{}", d.reason);
    assert_eq!(d.demand, None);
}

#[test]
fn idle_workers_with_nothing_behind_need_the_fewest_workers() {
    let spec = spec();
    let o = load(2, 0.0, 0.0, 0.0, 0.0, 8);
    let d = decide(&ctx(&spec, 2, 0), &o, &Recommendations::default());
    assert_eq!(d.recommendation, Some(1));
    assert!(d.reason.contains("no load"), "{}", d.reason);
}

#[test]
fn lag_without_busy_time_is_refused_rather_than_guessed() {
    let spec = spec();
    let o = load(2, 0.0, 0.0, 50_000.0, 100.0, 8);
    let d = decide(&ctx(&spec, 2, 0), &o, &Recommendations::default());
    assert_eq!((d.kind, d.desired), (NO_DATA, 2));
    assert!(d.refused());
    assert!(
        d.reason.contains("capacity cannot be measured"),
        "{}",
        d.reason
    );
}

#[test]
fn no_lag_series_is_no_data() {
    let spec = spec();
    let o = Observation::default();
    let d = decide(&ctx(&spec, 3, 0), &o, &Recommendations::default());
    assert_eq!((d.kind, d.desired), (NO_DATA, 3));
    assert!(d.reason.contains("tidemark_source_lag"), "{}", d.reason);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_decision_stays_within_bounds_and_divides_the_tasks_when_it_can(
        workers in 1usize..8,
        rate in 0.0f64..100_000.0,
        busy in 0.0f64..1.0,
        lag in 0.0f64..10_000_000.0,
        growth in -50_000.0f64..50_000.0,
        tasks in 1u32..64,
        min in 1i32..6,
        extra in 0i32..10,
        current in 1i32..16,
        lag_policy in any::<bool>(),
    ) {
        let mut spec = spec();
        spec.min_parallelism = min;
        spec.max_parallelism = min + extra;
        if lag_policy {
            spec.policy = AutoscalingPolicy::LagThreshold;
        }
        let o = load(workers, rate, busy, lag, growth, tasks);
        let d = decide(&ctx(&spec, current, 0), &o, &Recommendations::default());
        let (lower, upper) = bounds(&spec, Some(tasks));
        if let Some(r) = d.recommendation {
            prop_assert!((lower..=upper).contains(&r), "{r} outside {lower}..{upper}");
            let has_divisor = (r..=upper).any(|n| tasks % n as u32 == 0);
            if has_divisor {
                prop_assert_eq!(tasks % r as u32, 0, "{} does not divide {}", r, tasks);
            }
            prop_assert!((lower..=upper).contains(&d.desired) || d.desired == current);
        } else {
            prop_assert_eq!(d.desired, current);
        }
    }
}
