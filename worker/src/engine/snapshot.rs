//! A task's snapshot: taking it ([`Task::capture`], [`Capture::encode`]) and loading it
//! ([`Task::restore`]) — format 2, and format 1 of earlier versions, which is still read. Each
//! analytic's state is a named section, so analytics added or removed between versions restore
//! empty or are skipped; the deduplication and quality-report states are sections too.

use super::{states_of, Task};
use crate::analytics::{AnalyticCapture, TaskAnalytic};
use crate::quality::{Deduplicator, QualityReport};
use crate::restore::RestoreError;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::snapshot::WindowsSnapshot;

/// Version of the task snapshot encoding written now. Format 1 (postcard, [`TaskSnapshotV1`])
/// is still read.
const SNAPSHOT_FORMAT: u16 = 2;

/// A task's state in snapshot format 1: window state per analytic (by name), the watermark and
/// each source's newest event time (by name). Source offsets belong to the checkpoint around it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TaskSnapshotV1 {
    format: u16,
    analytics: Vec<(String, WindowsSnapshot)>,
    watermark: i64,
    max_times: Vec<(String, i64)>,
}

/// A copy of a task's state taken by [`Task::capture`] between records, to be encoded with
/// [`Capture::encode`] on any thread while the task goes on processing.
///
/// It holds copies of the task's tables (key entries, accumulator chunks, timer lists), made
/// with a few large memory copies and no work per key, so taking it is a short pause. The
/// copies take about as much memory as the state itself. Dropped (after encoding), a capture
/// leaves its buffers to the task's next capture, which copies into memory that is already
/// mapped instead of paying the kernel's first-touch page faults: from the first capture on, a
/// task holds its state about twice.
#[derive(Debug)]
pub struct Capture {
    analytics: Vec<(String, Box<dyn AnalyticCapture>)>,
    watermark: i64,
    max_times: Vec<(String, i64)>,
}

impl Capture {
    /// The snapshot bytes (format 2) of the state at the capture: exactly what
    /// [`Task::snapshot`] returned at that moment, and what [`Task::restore`] reads.
    pub fn encode(mut self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(SNAPSHOT_FORMAT as u8);
        w.i64(self.watermark);
        w.len_prefix(self.max_times.len());
        for (name, time) in &self.max_times {
            w.str(name);
            w.i64(*time);
        }
        w.len_prefix(self.analytics.len());
        for (name, windows) in &mut self.analytics {
            w.str(name);
            w.section(|w| windows.encode(w));
        }
        w.finish()
    }
}

impl AnalyticCapture for QualityReport {
    fn encode(&mut self, w: &mut Writer) {
        self.write(w);
    }
}

impl AnalyticCapture for Deduplicator {
    fn encode(&mut self, w: &mut Writer) {
        self.write(w);
    }
}

/// Name of the snapshot section holding the deduplication state: not an analytic name (those
/// have no dots), so an older worker skips it as a removed analytic.
const DEDUP_SECTION: &str = "tidemark.dedup";
/// Name of the snapshot section holding the quality report's open windows (skipped the same way).
const REPORT_SECTION: &str = "tidemark.quality";

/// State per analytic, watermark and newest event time per source, as restored.
type RestoredState = (Vec<Box<dyn TaskAnalytic>>, i64, Vec<(String, i64)>);

impl Task {
    /// The task's state as bytes: window state, watermark, newest event time per source. Taken
    /// between records; the caller pairs it with the source offsets of the same moment. The
    /// same as `self.capture().encode()`; a caller that must not pause for the encoding takes
    /// the [`Task::capture`] and encodes it on another thread.
    pub fn snapshot(&self) -> Vec<u8> {
        self.capture().encode()
    }

    /// A copy of the task's state, taken between records, that encodes to the bytes
    /// [`Task::snapshot`] returns now. It is cheap on this thread (copies of the flat tables,
    /// no work per key) and independent of the task: the task may go on processing while
    /// another thread encodes it.
    pub fn capture(&self) -> Capture {
        let mut analytics: Vec<(String, Box<dyn AnalyticCapture>)> = self
            .plan
            .analytics
            .iter()
            .zip(&self.states)
            .map(|(a, s)| (a.name.clone(), s.capture()))
            .collect();
        if let Some(dedup) = &self.dedup {
            analytics.push((DEDUP_SECTION.to_owned(), Box::new((**dedup).clone())));
        }
        if let Some(report) = &self.quality_report {
            analytics.push((REPORT_SECTION.to_owned(), Box::new((**report).clone())));
        }
        Capture {
            analytics,
            watermark: self.watermarks.current(),
            max_times: self.max_times_by_source(),
        }
    }

    /// The newest event time of each source, by source name (for snapshots).
    fn max_times_by_source(&self) -> Vec<(String, i64)> {
        self.plan
            .sources
            .iter()
            .map(|s| s.name.clone())
            .zip(self.watermarks.max_times())
            .collect()
    }

    /// Loads a [`Task::snapshot`] (format 2, or format 1 of earlier versions) into this new
    /// task. Analytics and sources are matched by name: ones added since the snapshot start
    /// empty, removed ones are dropped. Fails, leaving the task unchanged, if the bytes do not
    /// decode or an analytic's window or aggregates changed; corrupt bytes are an error, never a
    /// panic.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let (format, rest) = postcard::take_from_bytes::<u16>(bytes)?;
        let (windows, watermark, max_times) = match format {
            1 => self.restore_v1(bytes)?,
            2 => self.restore_v2(rest)?,
            other => return Err(RestoreError::Format(other)),
        };
        self.states = windows;
        // The global stage keeps the highest watermark it heard: telling it again is harmless.
        self.reported = (i64::MIN, false);
        let max_times: Vec<i64> = self
            .plan
            .sources
            .iter()
            .map(|s| {
                max_times
                    .iter()
                    .find(|(n, _)| n == &s.name)
                    .map_or(i64::MIN, |(_, t)| *t)
            })
            .collect();
        self.watermarks.restore(watermark, &max_times);
        Ok(())
    }

    fn fresh_windows(&self) -> Vec<Box<dyn TaskAnalytic>> {
        states_of(&self.plan)
    }

    /// Reads format 2: format byte (already read), watermark, (source, newest event time)
    /// pairs, then per analytic its name and a length-prefixed section of window state.
    fn restore_v2(&mut self, bytes: &[u8]) -> Result<RestoredState, RestoreError> {
        let mut r = Reader::new(bytes);
        let watermark = r.i64()?;
        let n = r.len_prefix()?;
        let mut max_times = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?.to_owned();
            max_times.push((name, r.i64()?));
        }
        let mut windows = self.fresh_windows();
        let mut seen = vec![false; windows.len()];
        let mut dedup_state = None;
        let mut report_state = None;
        for _ in 0..r.len_prefix()? {
            let name = r.str()?;
            let mut section = r.section()?;
            if name == DEDUP_SECTION {
                if let Some(horizon) = self.plan.quality.dedup.as_ref().map(|(_, h)| *h) {
                    let mut dedup = Deduplicator::new(horizon);
                    dedup.read(&mut section)?;
                    section.finish()?;
                    dedup_state = Some(dedup);
                }
                continue;
            }
            if name == REPORT_SECTION {
                if let Some(report) = &self.quality_report {
                    let mut restored = (**report).clone();
                    restored.read(&mut section)?;
                    section.finish()?;
                    report_state = Some(restored);
                }
                continue;
            }
            if let Some(i) = self.plan.analytics.iter().position(|a| a.name == name) {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(DecodeError("an analytic appears twice").into());
                }
                windows[i]
                    .restore(&mut section)
                    .and_then(|()| Ok(section.finish()?))
                    .map_err(|refused| RestoreError::refused(name, refused))?;
            }
        }
        r.finish()?;
        if let Some(dedup) = dedup_state {
            self.dedup = Some(Box::new(dedup));
        }
        if let Some(report) = report_state {
            self.quality_report = Some(Box::new(report));
        }
        Ok((windows, watermark, max_times))
    }

    fn restore_v1(&self, bytes: &[u8]) -> Result<RestoredState, RestoreError> {
        let snapshot: TaskSnapshotV1 = postcard::from_bytes(bytes)?;
        let mut windows = self.fresh_windows();
        let mut seen = vec![false; windows.len()];
        for (name, state) in &snapshot.analytics {
            if let Some(i) = self.plan.analytics.iter().position(|a| &a.name == name) {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(DecodeError("an analytic appears twice").into());
                }
                windows[i]
                    .restore_v1(state)
                    .map_err(|refused| RestoreError::refused(name, refused))?;
            }
        }
        Ok((windows, snapshot.watermark, snapshot.max_times))
    }

    /// The task's state in snapshot format 1, as versions before format 2 wrote it.
    #[cfg(test)]
    pub(super) fn snapshot_v1(&self) -> Vec<u8> {
        let snapshot = TaskSnapshotV1 {
            format: 1,
            analytics: self
                .plan
                .analytics
                .iter()
                .zip(&self.states)
                .filter_map(|(a, s)| Some((a.name.clone(), s.snapshot_v1()?)))
                .collect(),
            watermark: self.watermarks.current(),
            max_times: self.max_times_by_source(),
        };
        postcard::to_allocvec(&snapshot).expect("serializing to a Vec cannot fail")
    }
}
