//! A harness for the model kinds' tests: events as the generator source's JSON, a manifest
//! around one model analytic, and runs over 1–N tasks through the global stage with every
//! task and the stage restored from a snapshot mid-stream. Each kind's own tests
//! (`segments`, `propensity`, `recommend`) hold its oracles.

use crate::analytics::Emit;
use crate::engine::Task;
use crate::global::tests::feed;
use crate::global::GlobalStage;
use crate::partials::Record;
use crate::plan::Plan;
use crate::result::{Encoder, Output};

pub(crate) const MIN: i64 = 60_000;
pub(crate) const HOUR: i64 = 60 * MIN;
/// 2026-01-01T00:00:00Z.
pub(crate) const START: i64 = 1_767_225_600_000;
pub(crate) const PIPELINE: &str = "shop";

/// One input event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ev {
    pub user: u32,
    pub time: i64,
    pub kind: &'static str,
    pub product: u32,
    pub price: f64,
}

impl Ev {
    /// The event as the generator source writes it: user `u<n>`, product `p<n>`.
    pub fn line(&self) -> Vec<u8> {
        format!(
            r#"{{"type":"{}","user_id":"u{}","product_id":"p{}","category":"toys","price":{:.2},"ts":{}}}"#,
            self.kind, self.user, self.product, self.price, self.time
        )
        .into_bytes()
    }
}

/// A pipeline of one source `events` (10 s out-of-orderness) and `analytic`, a YAML list item
/// indented by four spaces (`- name: ...`).
pub(crate) fn manifest(analytic: &str) -> String {
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
{analytic}
  sinks:
    - name: out
      stdout: {{}}
"#
    )
}

/// The plan of `manifest` for `tasks` tasks; panics on any problem.
pub(crate) fn plan_of(manifest: &str, tasks: u32) -> Plan {
    let pipeline = tidemark_api::parse_manifest(manifest).expect("a manifest");
    let problems = tidemark_api::validate(&pipeline.spec);
    assert!(problems.is_empty(), "{problems:?}");
    Plan::compile(PIPELINE, &pipeline.spec)
        .expect("a plan")
        .for_tasks(tasks)
        .expect("a plan for the tasks")
}

/// What `f` emits as analytic `name` (a learner's epoch, a driver's advance).
pub(crate) fn emitting(name: &str, f: impl FnOnce(&mut Emit<'_>)) -> Output {
    let (mut encoder, mut out) = (Encoder::new(PIPELINE), Output::default());
    let (mut results, mut partials) = (0, 0);
    f(&mut Emit {
        analytic: 0,
        name,
        task: 0,
        encoder: &mut encoder,
        results: &mut results,
        partials: &mut partials,
        out: &mut out,
    });
    out
}

/// The JSON values of `out`'s results.
pub(crate) fn values(out: &Output) -> Vec<serde_json::Value> {
    out.results
        .iter()
        .map(|r| serde_json::from_slice(&r.value).expect("a JSON result"))
        .collect()
}

/// A result as `key<TAB>value`.
fn text(r: &crate::result::ResultRecord) -> String {
    format!("{}\t{}", r.key, String::from_utf8_lossy(&r.value))
}

/// Runs `events` in order over `tasks` tasks (user `n` in task `n mod tasks`); after the
/// first `cut` share of them every task — and, over several tasks, the stage, fed the
/// partials so far interleaved by `interleave` — is snapshotted and replaced by a fresh one
/// restored from it. Returns the results in emission order, and how many events were
/// dead-lettered.
pub(crate) fn run_model(
    manifest: &str,
    events: &[Ev],
    tasks: u32,
    cut: f64,
    interleave: &[usize],
) -> (Vec<String>, usize) {
    let plan = || plan_of(manifest, tasks);
    let mut runs: Vec<Task> = (0..tasks)
        .map(|t| Task::new(plan(), 0).with_id(t))
        .collect();
    let mut outs: Vec<Output> = (0..tasks).map(|_| Output::default()).collect();
    let at = ((events.len() as f64 * cut) as usize).min(events.len());
    let mut stage = (tasks > 1).then(|| GlobalStage::new(plan(), tasks));
    let mut stage_out = Output::default();
    let mut results = Vec::new();
    let mut dead = 0;
    let mut drain = |outs: &mut Vec<Output>,
                     stage: &mut Option<GlobalStage>,
                     stage_out: &mut Output,
                     results: &mut Vec<String>| {
        let streams: Vec<Vec<Vec<u8>>> = outs
            .iter_mut()
            .map(|o| {
                results.extend(o.results.drain(..).map(|r| text(&r)));
                dead += o.dead_letters.len();
                o.dead_letters.clear();
                o.partials.drain(..).map(|p| p.value).collect()
            })
            .collect();
        if let Some(stage) = stage {
            feed(stage, &streams, interleave, stage_out);
            results.extend(stage_out.results.drain(..).map(|r| text(&r)));
        } else {
            assert!(
                streams.iter().all(Vec::is_empty),
                "one task emits no partials"
            );
        }
    };
    for e in &events[..at] {
        let t = (e.user % tasks) as usize;
        runs[t].route(&e.line(), 0, &mut outs[t]);
    }
    drain(&mut outs, &mut stage, &mut stage_out, &mut results);
    for (t, task) in runs.iter_mut().enumerate() {
        let snapshot = task.snapshot();
        let mut fresh = Task::new(plan(), 0).with_id(t as u32);
        fresh.restore(&snapshot).expect("a task snapshot restores");
        assert_eq!(
            fresh.snapshot(),
            snapshot,
            "a restored task encodes as it was"
        );
        *task = fresh;
    }
    if let Some(s) = &mut stage {
        let snapshot = s.snapshot();
        let mut fresh = GlobalStage::new(plan(), tasks);
        fresh.restore(&snapshot).expect("a stage snapshot restores");
        assert_eq!(
            fresh.snapshot(),
            snapshot,
            "a restored stage encodes as it was"
        );
        *s = fresh;
    }
    for e in &events[at..] {
        let t = (e.user % tasks) as usize;
        runs[t].route(&e.line(), 0, &mut outs[t]);
    }
    for (task, out) in runs.iter_mut().zip(outs.iter_mut()) {
        task.finish(0, out);
    }
    drain(&mut outs, &mut stage, &mut stage_out, &mut results);
    if let Some(s) = &stage {
        assert!(s.finished(), "every task's input ended");
        let c = s.counters();
        assert_eq!(
            (c.malformed, c.late),
            (0, 0),
            "no partial is damaged or late"
        );
    }
    (results, dead)
}

/// The observations one task makes of `events` (all of them, in order), decoded from its
/// partials: (epoch end, user, time, tag, payload), in emission order.
pub(crate) fn observations(manifest: &str, events: &[Ev]) -> Vec<(i64, String, i64, u8, Vec<u8>)> {
    // Planned for two tasks, a task emits its observations as partials.
    let mut task = Task::new(plan_of(manifest, 2), 0);
    let mut out = Output::default();
    for e in events {
        task.route(&e.line(), 0, &mut out);
    }
    task.finish(0, &mut out);
    out.partials
        .iter()
        .filter_map(
            |p| match Record::decode(&p.value).expect("a partials record") {
                Record::Partial(p) => Some((
                    p.end,
                    p.key.to_owned(),
                    p.start,
                    p.block[0],
                    p.block[1..].to_vec(),
                )),
                Record::Progress(_) => None,
            },
        )
        .collect()
}

mod driver {
    use super::super::driver::Driver;
    use super::super::{Learner, Observation};
    use super::emitting;
    use crate::analytics::{Emit, Merge};
    use crate::window::codec::{DecodeError, Reader, Writer};
    use crate::window::WindowStats;

    /// An observation as the log keeps it: user, time, tag, payload.
    type Seen = (String, i64, u8, Vec<u8>);

    /// A learner that writes down what it was given (and, in snapshots, how many epochs).
    #[derive(Debug, Default)]
    struct Log(Vec<(i64, Vec<Seen>)>, u64);

    impl Learner for Log {
        fn epoch(&mut self, end: i64, observations: &[Observation], _out: &mut Emit<'_>) {
            let got = observations
                .iter()
                .map(|o| (o.user.to_string(), o.time, o.tag, o.payload.clone()))
                .collect();
            self.0.push((end, got));
        }
        fn write(&self, w: &mut Writer) {
            w.u64(self.0.len() as u64 + self.1);
        }
        fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
            self.1 = r.u64()?;
            Ok(())
        }
        fn stats(&self) -> WindowStats {
            WindowStats::default()
        }
    }

    fn obs(epoch: i64, user: &str, time: i64, payload: u8) -> Observation {
        Observation {
            epoch,
            user: user.into(),
            time,
            tag: 0,
            payload: vec![payload],
        }
    }

    #[test]
    fn epochs_are_learned_in_order_once_complete_with_replays_ignored_and_late_ones_refused() {
        let mut d = Driver::new(Box::<Log>::default(), 5);
        // Arrival order is not key order.
        assert_eq!(d.observe(obs(20, "b", 20, 1)), Merge::Merged);
        assert_eq!(d.observe(obs(10, "z", 10, 2)), Merge::Merged);
        assert_eq!(d.observe(obs(10, "a", 10, 3)), Merge::Merged);
        assert_eq!(d.observe(obs(10, "a", 10, 3)), Merge::Stale, "a replay");
        assert_eq!(
            d.observe(obs(10, "a", 10, 4)),
            Merge::Merged,
            "a revision replaces"
        );
        emitting("m", |e| d.advance(14, e));
        assert_eq!(d.epochs, 0, "epoch 10 completes at 10 + lateness 5");
        emitting("m", |e| d.advance(15, e));
        assert_eq!(d.epochs, 1);
        assert_eq!(d.observe(obs(10, "c", 10, 5)), Merge::Late);
        let mut w = Writer::default();
        d.write(&mut w);
        let bytes = w.finish();
        let mut restored = Driver::new(Box::<Log>::default(), 5);
        restored.read(&mut Reader::new(&bytes)).unwrap();
        let mut again = Writer::default();
        restored.write(&mut again);
        assert_eq!(again.finish(), bytes, "a restored driver encodes as it was");
        assert_eq!(restored.observe(obs(10, "c", 10, 5)), Merge::Late);
        emitting("m", |e| d.advance(i64::MAX, e));
        assert_eq!(d.epochs, 2);
        let log = format!("{d:?}");
        assert!(
            log.contains(
                r#"(10, [("a", 10, 0, [4]), ("z", 10, 0, [2])]), (20, [("b", 20, 0, [1])])"#
            ),
            "{log}"
        );
    }
}
