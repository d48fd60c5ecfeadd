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

use crate::analytics::{Emit, TaskAnalytic};
use crate::event::{Event, FieldValue, Reason, Rejection};
use crate::partials::Progress;
use crate::plan::{AnalyticPlan, Plan};
use crate::privacy::{PseudonymBuf, PSEUDONYM_LEN};
use crate::quality::{Deduplicator, QualityReport, SkewCounts};
pub use crate::restore::RestoreError;
use crate::result::{DeadLetter, Encoder, InternalRecord, Output};
use crate::watermark::Watermarks;
use crate::window::WindowStats;

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
    /// Partials emitted for the global stage per analytic.
    pub partials: Vec<u64>,
    /// Events ahead of the wall clock per source, by how far (`crate::quality::skew`).
    pub clock_skew: Box<[SkewCounts]>,
}

/// One task of a pipeline.
#[derive(Debug)]
pub struct Task {
    plan: Plan,
    /// Per analytic, its kind's state (`crate::analytics`).
    states: Vec<Box<dyn TaskAnalytic>>,
    watermarks: Watermarks,
    encoder: Encoder,
    counters: Counters,
    key_buf: String,
    /// The task's id (its partition), written into its partials.
    id: u32,
    /// Whether the plan has a global analytic: the task then tells the global stage its progress.
    global: bool,
    /// The last progress mark emitted for the global stage: (watermark, idle).
    reported: (i64, bool),
    /// Ids seen, when the pipeline deduplicates.
    dedup: Option<Box<Deduplicator>>,
    /// The wall clock its runner last gave the task (epoch ms), for the clock-skew check;
    /// none (tests, replays without one): no check.
    wall_clock: Option<i64>,
    /// The quality report's open windows, when the pipeline asks for one.
    quality_report: Option<Box<QualityReport>>,
}

/// Fresh state of every analytic of `plan`.
fn states_of(plan: &Plan) -> Vec<Box<dyn TaskAnalytic>> {
    plan.analytics
        .iter()
        .map(|a| a.kind.task_state(a, a.global))
        .collect()
}

/// Where analytic `a` of a task emits, borrowed from the task's fields for one call.
fn emit_for<'a>(
    a: usize,
    analytic: &'a AnalyticPlan,
    task: u32,
    encoder: &'a mut Encoder,
    counters: &'a mut Counters,
    out: &'a mut Output,
) -> Emit<'a> {
    Emit {
        analytic: a,
        name: &analytic.name,
        task,
        encoder,
        results: &mut counters.results[a],
        partials: &mut counters.partials[a],
        out,
    }
}

impl Task {
    /// A task running `plan`, started at processing time `now` (ms).
    pub fn new(plan: Plan, now: i64) -> Self {
        let states = states_of(&plan);
        let global = plan.has_global();
        let dedup = plan
            .quality
            .dedup
            .as_ref()
            .map(|(_, h)| Box::new(Deduplicator::new(*h)));
        let counters = Counters {
            records_in: vec![0; plan.sources.len()],
            filtered: vec![0; plan.sources.len()],
            dead_letters: BTreeMap::new(),
            results: vec![0; plan.analytics.len()],
            late: vec![0; plan.analytics.len()],
            partials: vec![0; plan.analytics.len()],
            clock_skew: vec![SkewCounts::default(); plan.sources.len()].into(),
        };
        let report = plan.quality.report.as_ref().map(|r| {
            let names: Vec<String> = plan.sources.iter().map(|s| s.name.clone()).collect();
            Box::new(QualityReport::new(r, plan.analytics.len(), &names))
        });
        Self {
            watermarks: Watermarks::new(
                plan.sources.len(),
                plan.max_out_of_orderness,
                plan.idle_timeout,
                now,
            ),
            encoder: Encoder::new(&plan.pipeline),
            states,
            plan,
            counters,
            key_buf: String::new(),
            id: 0,
            global,
            reported: (i64::MIN, false),
            dedup,
            wall_clock: None,
            quality_report: report,
        }
    }

    /// The same task with id `id` (its partition), written into its partials.
    pub fn with_id(mut self, id: u32) -> Self {
        self.id = id;
        self
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
        self.wall_clock = Some(now_ms);
        self.encoder.set_now(now_ms);
    }

    /// The `emitted_at` text in use, for dead letters.
    pub fn now_text(&self) -> &str {
        self.encoder.now_text()
    }

    /// State held by all analytics.
    pub fn stats(&self) -> WindowStats {
        self.states
            .iter()
            .map(|s| s.stats())
            .fold(WindowStats::default(), |a, b| WindowStats {
                keys: a.keys + b.keys,
                windows: a.windows + b.windows,
                bytes: a.bytes + b.bytes,
            })
    }

    /// Decisions of each analytic by outcome (actions; zeros for the other kinds).
    pub fn decisions(&self) -> Vec<[u64; 4]> {
        self.states.iter().map(|s| s.decisions()).collect()
    }

    /// Gauges of each analytic's model by measure (models learned in this task; empty for
    /// the rest).
    pub fn model_gauges(&self) -> Vec<Vec<(String, f64)>> {
        self.states.iter().map(|s| s.model_gauges()).collect()
    }

    /// Processes one record of source `source` received at processing time `now`.
    pub fn process(&mut self, source: usize, raw: &[u8], now: i64, out: &mut Output) {
        let mark = out.dead_letters.len();
        self.counters.records_in[source] += 1;
        let time = match self.plan.sources[source].decoder.decode(raw) {
            Ok(event) => {
                let time = event.time;
                self.process_event(source, event, raw, now, out);
                Some(time)
            }
            Err(rejection) => {
                self.dead_letter(Some(source), rejection, raw, out);
                None
            }
        };
        self.tally(Some(source), time, mark, now, out);
    }

    /// Counts a record in the quality report (when there is one): of `source` (none:
    /// unrouted), with event time `time` if it decoded, its fate the first dead letter it
    /// caused after `mark` in `out` (none: valid).
    fn tally(
        &mut self,
        source: Option<usize>,
        time: Option<i64>,
        mark: usize,
        now: i64,
        out: &Output,
    ) {
        let Some(report) = &mut self.quality_report else {
            return;
        };
        let source = source.unwrap_or_else(|| report.unrouted());
        let outcome = out.dead_letters.get(mark).map(|d| d.reason);
        report.count(source, time, outcome, self.wall_clock.unwrap_or(now));
    }

    /// Processes one record whose source is chosen by its event type: the first source (in spec
    /// order) whose `eventTypes` include it. Records of no source's type are dead-lettered.
    pub fn route(&mut self, raw: &[u8], now: i64, out: &mut Output) {
        let mark = out.dead_letters.len();
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
                    let time = event.time;
                    self.process_event(source, event, raw, now, out);
                    return self.tally(Some(source), Some(time), mark, now, out);
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
        self.tally(None, None, mark, now, out);
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
        event: Event<'_>,
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
        // Data quality, before anything else sees the event: a clock ahead of the wall clock
        // would drag the watermark into the future; a duplicate would count twice.
        if let Some(wall) = self.wall_clock {
            let lead = event.time.saturating_sub(wall);
            if lead > 0 {
                self.counters.clock_skew[source].observe(lead);
            }
            if lead > self.plan.quality.max_future_skew {
                let detail = format!("event time is {} s ahead of the wall clock", lead / 1000);
                let rejection = Rejection::new(Reason::ClockSkew, detail);
                return self.dead_letter(Some(source), rejection, raw, out);
            }
        }
        if let (Some(dedup), Some((fields, _))) = (&mut self.dedup, &self.plan.quality.dedup) {
            if let Some(field) = fields[source] {
                if dedup.is_duplicate(field, &event, self.watermarks.current()) {
                    let detail = "its id was seen within the deduplication horizon".to_owned();
                    let rejection = Rejection::new(Reason::Duplicate, detail);
                    return self.dead_letter(Some(source), rejection, raw, out);
                }
            }
        }
        // From here on the event's user is its pseudonym, when the pipeline pseudonymises:
        // derived fields, filters, keys and state never see the raw id. The pseudonym lives
        // in this stack buffer, so the event (shortened to its lifetime) allocates nothing.
        let mut pseudonym: PseudonymBuf = [0; PSEUDONYM_LEN];
        let mut event = event;
        if let Some(p) = &self.plan.pseudonymizer {
            event.user = Cow::Borrowed(p.pseudonym(&event.user, &mut pseudonym));
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
                let mut out = emit_for(
                    a,
                    analytic,
                    self.id,
                    &mut self.encoder,
                    &mut self.counters,
                    out,
                );
                self.states[a].add(key, local, &event, wm, &mut out)
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
        for (a, state) in self.states.iter_mut().enumerate() {
            let analytic = &self.plan.analytics[a];
            let mut out = emit_for(
                a,
                analytic,
                self.id,
                &mut self.encoder,
                &mut self.counters,
                out,
            );
            state.advance(wm, &mut out);
        }
        if let Some(report) = &mut self.quality_report {
            let (pipeline, at) = (&self.plan.pipeline, self.encoder.now_text());
            report.advance(wm, pipeline, self.id, at, &mut out.results);
        }
        self.report(false, out);
    }

    /// Tells the global stage (when the plan has global analytics) the task's watermark once
    /// it closes a window of one of them, or whether the task turned idle or active: a progress
    /// mark after the partials it emitted before.
    fn report(&mut self, idle: bool, out: &mut Output) {
        if !self.global {
            return;
        }
        let wm = self.watermarks.current();
        let (last, was_idle) = self.reported;
        let closes = self
            .plan
            .analytics
            .iter()
            .any(|a| a.global && a.closes_between(last, wm));
        if !closes && idle == was_idle {
            return;
        }
        self.reported = (wm, idle);
        let progress = Progress {
            task: self.id,
            watermark: wm,
            idle,
        };
        out.partials.push(InternalRecord {
            key: format!("progress/{}", self.id),
            value: progress.encode(),
        });
    }

    /// Re-evaluates idle inputs at processing time `now`, emitting what a moved watermark makes due.
    pub fn tick(&mut self, now: i64, out: &mut Output) {
        if let Some(wm) = self.watermarks.tick(now) {
            self.advance(wm, out);
        }
        if self.global {
            let idle = self.watermarks.all_idle(now);
            if idle != self.reported.1 {
                self.report(idle, out);
            }
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

mod snapshot;

pub use snapshot::Capture;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
