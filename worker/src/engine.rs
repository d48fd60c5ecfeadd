//! A task: one partition index of the pipeline's inputs, processed single-threaded.
//!
//! The task decodes records, routes them to sources, applies filters and derived fields, keys
//! them per analytic and feeds the window state; it tracks the watermark and emits results as
//! windows close. It owns no I/O: callers hand it records and drain its [`Output`].
//!
//! Order of effects per event (the window oracles assume it): the event is added at the
//! watermark before it, then the watermark moves and due windows fire.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::event::{Event, FieldValue, Reason, Rejection};
use crate::operators::{AnalyticPlan, Plan};
use crate::result::{DeadLetter, Encoder, Output};
use crate::watermark::Watermarks;
use crate::window::snapshot::WindowsSnapshot;
use crate::window::{Emission, WindowStats, Windows};

/// Version of the task snapshot encoding.
const SNAPSHOT_FORMAT: u16 = 1;

/// A task's state as it is checkpointed: window state per analytic (by name), the watermark and
/// each source's newest event time (by name). Source offsets belong to the checkpoint around it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TaskSnapshot {
    format: u16,
    analytics: Vec<(String, WindowsSnapshot)>,
    watermark: i64,
    max_times: Vec<(String, i64)>,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The bytes are not a task snapshot.
    #[error("failed to decode task snapshot")]
    Decode(#[from] postcard::Error),
    /// Written by a newer format.
    #[error(
        "failed to restore task snapshot of format {0}: this worker reads format {SNAPSHOT_FORMAT}"
    )]
    Format(u16),
    /// The analytic's window kind changed since the snapshot.
    #[error("failed to restore analytic {0:?}: its window kind differs from the snapshot's")]
    WindowKind(String),
}

/// Counts of what a task did, by source, analytic and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records received per source.
    pub records_in: Vec<u64>,
    /// Events dropped by a source or analytic filter, per source.
    pub filtered: Vec<u64>,
    /// Dead-lettered records per (source name or "", reason).
    pub dead_letters: BTreeMap<(String, Reason), u64>,
    /// Results emitted per analytic.
    pub results: Vec<u64>,
    /// Late events past lateness per analytic.
    pub late: Vec<u64>,
}

/// One task of a pipeline.
#[derive(Debug)]
pub struct Task {
    plan: Plan,
    windows: Vec<Windows>,
    watermarks: Watermarks,
    encoder: Encoder,
    counters: Counters,
    key_buf: String,
}

impl Task {
    /// A task running `plan`, started at processing time `now` (ms).
    pub fn new(plan: Plan, now: i64) -> Self {
        let windows = plan
            .analytics
            .iter()
            .map(|a| Windows::new(a.window, a.lateness, a.layout.clone(), a.require.clone()))
            .collect();
        let counters = Counters {
            records_in: vec![0; plan.sources.len()],
            filtered: vec![0; plan.sources.len()],
            dead_letters: BTreeMap::new(),
            results: vec![0; plan.analytics.len()],
            late: vec![0; plan.analytics.len()],
        };
        Self {
            watermarks: Watermarks::new(
                plan.sources.len(),
                plan.max_out_of_orderness,
                plan.idle_timeout,
                now,
            ),
            encoder: Encoder::new(&plan.pipeline),
            windows,
            plan,
            counters,
            key_buf: String::new(),
        }
    }

    /// The compiled plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What the task has counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The task's watermark (epoch ms; `i64::MIN` before any, `i64::MAX` at the end).
    pub fn watermark(&self) -> i64 {
        self.watermarks.current()
    }

    /// Sets the wall-clock time written as `emitted_at` into results from now on.
    pub fn set_wall_clock(&mut self, now_ms: i64) {
        self.encoder.set_now(now_ms);
    }

    /// The `emitted_at` text in use, for dead letters.
    pub fn now_text(&self) -> &str {
        self.encoder.now_text()
    }

    /// State held by all analytics.
    pub fn stats(&self) -> WindowStats {
        self.windows
            .iter()
            .map(Windows::stats)
            .fold(WindowStats::default(), |a, b| WindowStats {
                keys: a.keys + b.keys,
                windows: a.windows + b.windows,
                bytes: a.bytes + b.bytes,
            })
    }

    /// The task's state as bytes: window state, watermark, newest event time per source. Taken
    /// between records; the caller pairs it with the source offsets of the same moment.
    pub fn snapshot(&self) -> Vec<u8> {
        let snapshot = TaskSnapshot {
            format: SNAPSHOT_FORMAT,
            analytics: self
                .plan
                .analytics
                .iter()
                .zip(&self.windows)
                .map(|(a, w)| (a.name.clone(), w.snapshot()))
                .collect(),
            watermark: self.watermarks.current(),
            max_times: self
                .plan
                .sources
                .iter()
                .map(|s| s.name.clone())
                .zip(self.watermarks.max_times())
                .collect(),
        };
        postcard::to_allocvec(&snapshot).expect("serializing to a Vec cannot fail")
    }

    /// Loads a [`Task::snapshot`] into this new task. Analytics and sources are matched by name:
    /// ones added since the snapshot start empty, removed ones are dropped. Fails, leaving the
    /// task unchanged, if the bytes do not decode or an analytic's window kind changed.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let snapshot: TaskSnapshot = postcard::from_bytes(bytes)?;
        if snapshot.format > SNAPSHOT_FORMAT {
            return Err(RestoreError::Format(snapshot.format));
        }
        let mut restored: Vec<Windows> = self
            .plan
            .analytics
            .iter()
            .map(|a| Windows::new(a.window, a.lateness, a.layout.clone(), a.require.clone()))
            .collect();
        for (name, state) in &snapshot.analytics {
            if let Some(i) = self.plan.analytics.iter().position(|a| &a.name == name) {
                if !restored[i].restore(state) {
                    return Err(RestoreError::WindowKind(name.clone()));
                }
            }
        }
        self.windows = restored;
        let max_times: Vec<i64> = self
            .plan
            .sources
            .iter()
            .map(|s| {
                snapshot
                    .max_times
                    .iter()
                    .find(|(n, _)| n == &s.name)
                    .map_or(i64::MIN, |(_, t)| *t)
            })
            .collect();
        self.watermarks.restore(snapshot.watermark, &max_times);
        Ok(())
    }

    /// Processes one record of source `source` received at processing time `now`.
    pub fn process(&mut self, source: usize, raw: &[u8], now: i64, out: &mut Output) {
        self.counters.records_in[source] += 1;
        match self.plan.sources[source].decoder.decode(raw) {
            Ok(event) => self.process_event(source, event, raw, now, out),
            Err(rejection) => self.dead_letter(Some(source), rejection, raw, out),
        }
    }

    /// Processes one record whose source is chosen by its event type: the first source (in spec
    /// order) whose `eventTypes` include it. Records of no source's type are dead-lettered.
    pub fn route(&mut self, raw: &[u8], now: i64, out: &mut Output) {
        // One decode per record when the sources share a field mapping (the usual case); a
        // source with another mapping decodes again. No allocation per record.
        let mut cached: Option<(usize, Result<Event<'_>, Rejection>)> = None;
        let mut first_error = None;
        for source in 0..self.plan.sources.len() {
            let group = self.plan.sources[source].decode_group;
            if cached.as_ref().is_none_or(|(g, _)| *g != group) {
                cached = Some((group, self.plan.sources[group].decoder.decode(raw)));
            }
            match cached.take() {
                Some((_, Ok(event))) if accepts(&self.plan.sources[source].event_types, &event) => {
                    self.counters.records_in[source] += 1;
                    return self.process_event(source, event, raw, now, out);
                }
                Some((_, Err(rejection))) => {
                    first_error.get_or_insert_with(|| rejection.clone());
                    cached = Some((group, Err(rejection)));
                }
                other => cached = other,
            }
        }
        let rejection = first_error.unwrap_or_else(|| {
            Rejection::new(Reason::UnexpectedType, "no source carries this event type")
        });
        self.dead_letter(None, rejection, raw, out);
    }

    fn dead_letter(
        &mut self,
        source: Option<usize>,
        rejection: Rejection,
        raw: &[u8],
        out: &mut Output,
    ) {
        let name = source.map(|s| self.plan.sources[s].name.as_str());
        record_dead_letter(&mut self.counters, name, rejection, raw, out);
    }

    fn process_event(
        &mut self,
        source: usize,
        mut event: Event<'_>,
        raw: &[u8],
        now: i64,
        out: &mut Output,
    ) {
        let plan = &self.plan.sources[source];
        if !accepts(&plan.event_types, &event) {
            let rejection = Rejection::new(
                Reason::UnexpectedType,
                format!("source {:?} does not carry this event type", plan.name),
            );
            return self.dead_letter(Some(source), rejection, raw, out);
        }
        for expr in &plan.derive {
            match expr.derive(&event) {
                Ok(value) => event.extra.push(value),
                Err(err) => {
                    return self.dead_letter(
                        Some(source),
                        Rejection::new(Reason::ExpressionError, err.to_string()),
                        raw,
                        out,
                    )
                }
            }
        }
        let name = plan.name.as_str();
        if !passes(
            plan.filter.as_ref(),
            &mut self.counters,
            source,
            name,
            &event,
            raw,
            out,
        ) {
            return;
        }
        let wm = self.watermarks.current();
        for c in 0..self.plan.sources[source].consumers.len() {
            let (a, local) = self.plan.sources[source].consumers[c];
            let analytic = &self.plan.analytics[a];
            let name = self.plan.sources[source].name.as_str();
            if !passes(
                analytic.filter.as_ref(),
                &mut self.counters,
                source,
                name,
                &event,
                raw,
                out,
            ) {
                continue;
            }
            let key_value = analytic.key[local].read(&event);
            let key: &str = match &key_value {
                FieldValue::Str(Cow::Borrowed(s)) => s,
                FieldValue::Str(Cow::Owned(s)) => s,
                other => {
                    self.key_buf.clear();
                    if !other.write_key(&mut self.key_buf) {
                        let detail = format!(
                            "key field {:?} of analytic {:?} is missing",
                            analytic.key_field, analytic.name
                        );
                        self.dead_letter(
                            Some(source),
                            Rejection::new(Reason::MissingField, detail),
                            raw,
                            out,
                        );
                        continue;
                    }
                    &self.key_buf
                }
            };
            let accepted = {
                let mut emit = emitter(
                    a,
                    analytic,
                    &mut self.encoder,
                    &mut self.counters.results,
                    out,
                );
                self.windows[a].add(key, local, &event, wm, &mut emit)
            };
            if !accepted {
                self.counters.late[a] += 1;
                let detail = format!(
                    "later than the allowed lateness of analytic {:?}",
                    analytic.name
                );
                self.dead_letter(Some(source), Rejection::new(Reason::Late, detail), raw, out);
            }
        }
        if let Some(wm) = self.watermarks.observe(source, event.time, now) {
            self.advance(wm, out);
        }
    }

    fn advance(&mut self, wm: i64, out: &mut Output) {
        for (a, windows) in self.windows.iter_mut().enumerate() {
            let analytic = &self.plan.analytics[a];
            windows.advance(
                wm,
                &mut emitter(
                    a,
                    analytic,
                    &mut self.encoder,
                    &mut self.counters.results,
                    out,
                ),
            );
        }
    }

    /// Re-evaluates idle inputs at processing time `now`, emitting what a moved watermark makes due.
    pub fn tick(&mut self, now: i64, out: &mut Output) {
        if let Some(wm) = self.watermarks.tick(now) {
            self.advance(wm, out);
        }
    }

    /// Marks source `source` as ended (end of a file).
    pub fn finish_source(&mut self, source: usize, now: i64, out: &mut Output) {
        if let Some(wm) = self.watermarks.finish(source, now) {
            self.advance(wm, out);
        }
    }

    /// Ends every source: the watermark goes to the end of time and every window closes.
    pub fn finish(&mut self, now: i64, out: &mut Output) {
        for source in 0..self.plan.sources.len() {
            self.finish_source(source, now, out);
        }
    }
}

/// Counts a rejected record and queues it for the dead-letter output.
fn record_dead_letter(
    counters: &mut Counters,
    source: Option<&str>,
    rejection: Rejection,
    raw: &[u8],
    out: &mut Output,
) {
    let name = source.map(str::to_owned);
    *counters
        .dead_letters
        .entry((name.clone().unwrap_or_default(), rejection.reason))
        .or_default() += 1;
    out.dead_letters.push(DeadLetter {
        source: name,
        reason: rejection.reason,
        detail: rejection.detail,
        raw: raw.to_vec(),
    });
}

/// Whether `event` of source `source` (named `name`) passes `filter` (none passes everything).
/// A failing filter counts the event as filtered; an evaluation error dead-letters it. Either
/// way the answer is false.
fn passes(
    filter: Option<&crate::expr::Expr>,
    counters: &mut Counters,
    source: usize,
    name: &str,
    event: &Event<'_>,
    raw: &[u8],
    out: &mut Output,
) -> bool {
    match filter.map(|f| f.matches(event)) {
        None | Some(Ok(true)) => true,
        Some(Ok(false)) => {
            counters.filtered[source] += 1;
            false
        }
        Some(Err(err)) => {
            let rejection = Rejection::new(Reason::ExpressionError, err.to_string());
            record_dead_letter(counters, Some(name), rejection, raw, out);
            false
        }
    }
}

/// Whether a source with `types` carries `event`.
fn accepts(types: &[String], event: &Event<'_>) -> bool {
    types.is_empty()
        || event
            .event_type
            .as_deref()
            .is_some_and(|t| types.iter().any(|x| x == t))
}

fn emitter<'a>(
    a: usize,
    analytic: &'a AnalyticPlan,
    encoder: &'a mut Encoder,
    results: &'a mut [u64],
    out: &'a mut Output,
) -> impl FnMut(&Emission<'_>) + 'a {
    move |emission| {
        results[a] += 1;
        out.results
            .push(encoder.encode(a, &analytic.name, &analytic.value_names, emission));
    }
}

#[cfg(test)]
mod tests {
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
        let mut generator = Generator::new(&spec);
        let mut out = Vec::new();
        let mut line = Vec::new();
        while generator.next_into(&mut line).is_some() {
            out.push(std::mem::take(&mut line));
        }
        out
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
    fn garbage_is_not_restored_and_leaves_the_task_usable() {
        let mut task = Task::new(quickstart(), 0);
        assert!(task.restore(b"not a snapshot").is_err());
        let mut out = Output::default();
        run(&mut task, &events(100), &mut out);
        task.finish(0, &mut out);
        assert!(!out.results.is_empty());
    }
}
