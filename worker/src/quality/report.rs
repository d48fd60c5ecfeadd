//! The data-quality report (`spec.dataQuality.report`, docs/data-quality.md): per source and
//! tumbling window of event time, the records a task received, how many were valid and how many
//! were rejected for each [`Reason`], and the event-time lag of the valid ones.
//!
//! Owns the report's state (open windows), the rule that places a record in a window, the
//! record's JSON and the snapshot section. Does not decide a record's fate: the task tells it
//! (the first dead letter the record caused, or none).
//!
//! **Which window.** A record with a usable event time `t` (decoded, not rejected for clock skew)
//! counts in the window of `max(t, F)`, `F` the watermark the report last closed windows at: a
//! record whose own window was already reported counts in the first open one, so every record
//! is counted exactly once and no report is revised. A record without a usable time (it did not
//! decode, or its time is ahead of the wall clock) counts at its *arrival*: the newest event time
//! of the records counted valid or late so far (those that moved the watermark), or, before
//! any, the runner's wall clock.
//!
//! **Lag** is the runner's wall clock when the record was processed minus its event time (0 for
//! an event slightly ahead), for valid records, in a DDSketch (relative accuracy 1 %): exact to
//! merge, so reports of several tasks combine by merging their sketches.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use sketches_ddsketch::{Config, DDSketch};

use crate::event::Reason;
use crate::result::{json_string, rfc3339, ResultRecord};
use crate::window::codec::{DecodeError, Reader, Writer};

/// `source` of records no source accepted (routing by event type failed).
pub const UNROUTED: &str = "unrouted";

/// Number of reasons a record can be rejected for.
const REASONS: usize = Reason::ALL.len();

/// The compiled `spec.dataQuality.report`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportPlan {
    /// Window size, ms (positive).
    pub window: i64,
    /// Name of the sink that receives the report.
    pub sink: String,
}

/// One source's counts in one window.
#[derive(Clone)]
pub struct Tally {
    /// Records received.
    pub records_in: u64,
    /// Records rejected, by reason in [`Reason::ALL`] order.
    pub reasons: [u64; REASONS],
    /// Event-time lag of the valid records, ms.
    pub lag: DDSketch,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            records_in: 0,
            reasons: [0; REASONS],
            lag: DDSketch::new(Config::defaults()),
        }
    }
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tally")
            .field("records_in", &self.records_in)
            .field("reasons", &self.reasons)
            .field("lag_samples", &self.lag.count())
            .finish()
    }
}

impl Tally {
    /// Records that were not rejected.
    pub fn valid(&self) -> u64 {
        self.records_in - self.reasons.iter().sum::<u64>()
    }
}

/// The report state of one task: open windows per source.
#[derive(Clone, Debug)]
pub struct QualityReport {
    window: i64,
    /// The `ResultRecord::analytic` index the report's records carry (one past the analytics),
    /// by which sinks route them.
    route: usize,
    /// Report names: the sources in plan order, then [`UNROUTED`].
    sources: Vec<String>,
    /// Open windows: (window start, source index) → counts.
    open: BTreeMap<(i64, usize), Tally>,
    /// Windows ending at or before this were reported.
    frontier: i64,
    /// Newest event time of a record counted valid or late (`i64::MIN`: none yet).
    newest: i64,
}

impl QualityReport {
    /// An empty report over `sources` (plan order) whose records carry analytic index `route`.
    pub fn new(plan: &ReportPlan, route: usize, sources: &[String]) -> Self {
        let mut sources = sources.to_vec();
        sources.push(UNROUTED.to_owned());
        Self {
            window: plan.window.max(1),
            route,
            sources,
            open: BTreeMap::new(),
            frontier: i64::MIN,
            newest: i64::MIN,
        }
    }

    /// The index of [`UNROUTED`] among the report's sources.
    pub fn unrouted(&self) -> usize {
        self.sources.len() - 1
    }

    /// The open windows (for tests and the snapshot).
    pub fn open(&self) -> &BTreeMap<(i64, usize), Tally> {
        &self.open
    }

    /// Counts one record of `source`: its event time if it decoded, its fate (`None`: valid)
    /// and the runner's wall clock (epoch ms).
    pub fn count(&mut self, source: usize, time: Option<i64>, outcome: Option<Reason>, wall: i64) {
        let usable = time.filter(|_| outcome != Some(Reason::ClockSkew));
        let at = match usable {
            Some(t) => t,
            None if self.newest != i64::MIN => self.newest,
            None => wall,
        };
        if let (Some(t), None | Some(Reason::Late)) = (usable, outcome) {
            self.newest = self.newest.max(t);
        }
        let at = at.max(self.frontier).min(i64::MAX - self.window);
        let start = at.div_euclid(self.window) * self.window;
        let tally = self.open.entry((start, source)).or_default();
        tally.records_in += 1;
        match outcome {
            Some(reason) => {
                let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
                tally.reasons[i] += 1;
            }
            None => {
                if let Some(t) = time {
                    tally.lag.add(wall.saturating_sub(t).max(0) as f64);
                }
            }
        }
    }

    /// Writes the report of every window ending at or before `watermark` to `out` (in order of
    /// window start, then source), for task `task` of `pipeline`, `emitted_at` the wall clock's
    /// RFC 3339 text.
    pub fn advance(
        &mut self,
        watermark: i64,
        pipeline: &str,
        task: u32,
        emitted_at: &str,
        out: &mut Vec<ResultRecord>,
    ) {
        if watermark <= self.frontier {
            return;
        }
        self.frontier = watermark;
        while let Some(entry) = self.open.first_entry() {
            let (start, source) = *entry.key();
            if start.saturating_add(self.window) > watermark {
                break;
            }
            let tally = entry.remove();
            let name = &self.sources[source];
            out.push(ResultRecord {
                analytic: self.route,
                key: format!("quality/{name}/{task}/{}", rfc3339(start)),
                value: record_json(pipeline, name, task, start, self.window, &tally, emitted_at),
            });
        }
    }

    /// Appends the state: frontier, newest event time, then per open window its start, source name, counts and
    /// lag sketch.
    pub fn write(&self, w: &mut Writer) {
        w.i64(self.frontier);
        w.i64(self.newest);
        w.len_prefix(self.open.len());
        for ((start, source), tally) in &self.open {
            w.i64(*start);
            w.str(&self.sources[*source]);
            w.u64(tally.records_in);
            w.len_prefix(REASONS);
            for (reason, count) in Reason::ALL.iter().zip(tally.reasons) {
                w.str(reason.as_str());
                w.u64(count);
            }
            let sketch = postcard::to_allocvec(&tally.lag).unwrap_or_default();
            w.len_prefix(sketch.len());
            w.raw(&sketch);
        }
    }

    /// Loads what [`QualityReport::write`] wrote. Sources are matched by name (a removed
    /// source's windows are dropped); so are reasons.
    pub fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.frontier = r.i64()?;
        self.newest = r.i64()?;
        self.open.clear();
        for _ in 0..r.len_prefix()? {
            let start = r.i64()?;
            let source = r.str()?;
            let mut tally = Tally {
                records_in: r.u64()?,
                ..Tally::default()
            };
            for _ in 0..r.len_prefix()? {
                let reason = r.str()?;
                let count = r.u64()?;
                if let Some(i) = Reason::ALL.iter().position(|x| x.as_str() == reason) {
                    tally.reasons[i] = count;
                }
            }
            let n = r.len_prefix()?;
            tally.lag = postcard::from_bytes(r.raw(n)?)
                .map_err(|_| DecodeError("a quality report's lag sketch does not decode"))?;
            if let Some(i) = self.sources.iter().position(|s| s == source) {
                self.open.insert((start, i), tally);
            }
        }
        Ok(())
    }
}

/// The JSON value of one report record.
fn record_json(
    pipeline: &str,
    source: &str,
    task: u32,
    start: i64,
    window: i64,
    tally: &Tally,
    emitted_at: &str,
) -> Vec<u8> {
    let records_in = tally.records_in;
    let share = |n: u64| {
        if records_in == 0 {
            0.0
        } else {
            n as f64 / records_in as f64
        }
    };
    let mut v = Vec::with_capacity(1024);
    let _ = write!(
        v,
        "{{\"pipeline\":{},\"report\":\"quality\",\"source\":{},\"task\":{task},\
         \"window\":{{\"start\":\"{}\",\"end\":\"{}\"}},\"records_in\":{records_in},\
         \"valid\":{{\"count\":{},\"share\":{}}},\"reasons\":{{",
        json_string(pipeline),
        json_string(source),
        rfc3339(start),
        rfc3339(start.saturating_add(window)),
        tally.valid(),
        share(tally.valid()),
    );
    for (i, (reason, count)) in Reason::ALL.iter().zip(tally.reasons).enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(
            v,
            "{comma}\"{}\":{{\"count\":{count},\"share\":{}}}",
            reason.as_str(),
            share(count)
        );
    }
    let quantile = |q: f64| match tally.lag.quantile(q) {
        Ok(Some(ms)) => format!("{}", ms.round() as i64),
        _ => "null".to_owned(),
    };
    let sketch = serde_json::to_string(&tally.lag).unwrap_or_else(|_| "null".to_owned());
    let _ = write!(
        v,
        "}},\"lag_ms\":{{\"count\":{},\"p50\":{},\"p99\":{},\"sketch\":{sketch}}},\
         \"revision\":0,\"emitted_at\":{}}}",
        tally.lag.count(),
        quantile(0.5),
        quantile(0.99),
        json_string(emitted_at),
    );
    v
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
