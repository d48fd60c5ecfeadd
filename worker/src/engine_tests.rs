//! Tasks: snapshots and captures restore exactly, old formats still restore, damaged or
//! mismatched snapshots are refused.

use super::*;
use crate::source::generator::Generator;

fn quickstart() -> Plan {
    let text = include_str!("../../examples/quickstart.yaml");
    let pipeline = tidemark_api::parse_manifest(text).unwrap();
    Plan::compile("quickstart", &pipeline.spec).unwrap()
}

fn events(n: u64) -> Vec<Vec<u8>> {
    let spec = tidemark_api::GeneratorSpec {
        events: Some(n),
        users: 300,
        time_step: tidemark_api::Duration::from_millis(1_000),
        ..Default::default()
    };
    Generator::lines(&spec)
}

fn run(task: &mut Task, events: &[Vec<u8>], out: &mut Output) {
    for e in events {
        task.route(e, 0, out);
    }
}

#[test]
fn a_task_restored_from_a_snapshot_continues_exactly_where_it_stopped() {
    let events = events(20_000);
    let (first, second) = events.split_at(7_919);
    let mut whole = Task::new(quickstart(), 0);
    let mut expected = Output::default();
    run(&mut whole, &events, &mut expected);
    whole.finish(0, &mut expected);

    let mut before = Task::new(quickstart(), 0);
    let mut got = Output::default();
    run(&mut before, first, &mut got);
    let bytes = before.snapshot();
    let mut after = Task::new(quickstart(), 0);
    after.restore(&bytes).unwrap();
    assert_eq!(after.watermark(), before.watermark());
    assert_eq!(after.stats().windows, before.stats().windows);
    drop(before);
    run(&mut after, second, &mut got);
    after.finish(0, &mut got);
    assert!(expected.results.len() > 1_000);
    assert_eq!(got.results, expected.results);
}

#[test]
fn a_capture_encoded_after_the_task_went_on_is_the_snapshot_of_its_moment() {
    fn send_static<T: Send + 'static>(value: T) -> T {
        value
    }
    let events = events(20_000);
    let (first, second) = events.split_at(7_919);
    let mut whole = Task::new(quickstart(), 0);
    let mut expected = Output::default();
    run(&mut whole, &events, &mut expected);
    whole.finish(0, &mut expected);

    let mut task = Task::new(quickstart(), 0);
    let mut got = Output::default();
    // Captures copy into the buffers of dropped ones: a small one first, then larger ones.
    run(&mut task, &first[..100], &mut got);
    drop(task.capture());
    run(&mut task, &first[100..], &mut got);
    let snapshot = task.snapshot();
    let capture = send_static(task.capture());
    // The task goes on to the end, which fires and drops all its state, before the capture
    // is encoded on another thread.
    let mut rest = Output::default();
    run(&mut task, second, &mut rest);
    task.finish(0, &mut rest);
    assert_eq!(task.stats().windows, 0);
    let mut all = got.results.clone();
    all.extend(rest.results.iter().cloned());
    assert_eq!(
        all, expected.results,
        "capturing changes nothing in the task"
    );
    let bytes = std::thread::spawn(move || capture.encode())
        .join()
        .expect("encoding does not panic");
    assert_eq!(bytes, snapshot);

    let mut after = Task::new(quickstart(), 0);
    after.restore(&bytes).unwrap();
    let mut resumed = Output::default();
    run(&mut after, second, &mut resumed);
    after.finish(0, &mut resumed);
    assert!(rest.results.len() > 1_000);
    assert_eq!(resumed.results, rest.results);
}

#[test]
fn a_format_1_snapshot_still_restores() {
    let events = events(20_000);
    let (first, second) = events.split_at(7_919);
    let mut before = Task::new(quickstart(), 0);
    let mut ignored = Output::default();
    run(&mut before, first, &mut ignored);
    let mut expected = Output::default();
    let mut from_v2 = Task::new(quickstart(), 0);
    from_v2.restore(&before.snapshot()).unwrap();
    run(&mut from_v2, second, &mut expected);
    from_v2.finish(0, &mut expected);

    let v1 = before.snapshot_v1();
    assert_eq!(v1[0], 1);
    let mut from_v1 = Task::new(quickstart(), 0);
    from_v1.restore(&v1).unwrap();
    assert_eq!(from_v1.snapshot(), before.snapshot());
    let mut got = Output::default();
    run(&mut from_v1, second, &mut got);
    from_v1.finish(0, &mut got);
    assert!(expected.results.len() > 1_000);
    assert_eq!(got.results, expected.results);
}

#[test]
fn corrupt_snapshots_are_refused_without_panicking() {
    let mut task = Task::new(quickstart(), 0);
    let mut out = Output::default();
    run(&mut task, &events(400), &mut out);
    let bytes = task.snapshot();
    assert!(task.stats().windows > 10);
    // A restore rebuilds the state from scratch whatever the task held, so one target task
    // serves every attempt.
    let mut target = Task::new(quickstart(), 0);
    for cut in 0..bytes.len() {
        assert!(target.restore(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(target.restore(&longer).is_err());
    for at in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[at / 8] ^= 1 << (at % 8);
        // Refused or restored (a flipped count or time is still a state): never a panic.
        let _ = target.restore(&flipped);
    }
    target.restore(&bytes).unwrap();
    assert_eq!(target.snapshot(), bytes);
    let mut newer = bytes.clone();
    newer[0] = 3;
    assert!(matches!(
        Task::new(quickstart(), 0).restore(&newer),
        Err(RestoreError::Format(3))
    ));
}

#[test]
fn a_changed_window_or_aggregate_is_refused() {
    let mut task = Task::new(quickstart(), 0);
    let mut out = Output::default();
    run(&mut task, &events(400), &mut out);
    let bytes = task.snapshot();
    let text = include_str!("../../examples/quickstart.yaml");
    let plan = |text: &str| {
        let pipeline = tidemark_api::parse_manifest(text).unwrap();
        Plan::compile("quickstart", &pipeline.spec).unwrap()
    };
    let longer = plan(&text.replace("size: 1h", "size: 2h"));
    assert!(matches!(
        Task::new(longer, 0).restore(&bytes),
        Err(RestoreError::WindowKind(name)) if name == "marketing_report"
    ));
    let more = plan(&text.replace(
        "          - { name: revenue, op: sum, field: price, source: purchases }",
        "          - { name: revenue, op: sum, field: price, source: purchases }\n          - { name: top, op: max, field: price, source: purchases }",
    ));
    assert!(matches!(
        Task::new(more, 0).restore(&bytes),
        Err(RestoreError::Layout(name)) if name == "marketing_report"
    ));
}

#[test]
fn garbage_is_not_restored_and_leaves_the_task_usable() {
    let mut task = Task::new(quickstart(), 0);
    assert!(task.restore(b"not a snapshot").is_err());
    let mut out = Output::default();
    run(&mut task, &events(100), &mut out);
    task.finish(0, &mut out);
    assert!(!out.results.is_empty());
}
