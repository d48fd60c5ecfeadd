//! Data quality checks a task makes of every decoded event before any analytic sees it:
//! duplicates by an event id within a horizon of event time, and clock skew (an event time
//! ahead of the wall clock). Rejected events go to the dead letters with their reason; this
//! module only decides. The quality report lives in [`report`], the clock-skew histogram in
//! [`skew`]; docs/data-quality.md describes all three.
//!
//! **Duplicates, exactly.** A record is a duplicate when the last record with the same id that
//! was not a duplicate is still remembered and lies within the horizon of it: `|t − t₀| ≤
//! horizon`. An id is remembered while `t₀ > W − horizon`, `W` the task's watermark when the
//! record arrives; older entries are swept now and then, but a lookup treats an expired entry
//! as absent, so when the sweep runs changes nothing. Ids are kept as 64-bit hashes (FxHash of
//! the id's text): two different ids collide with odds of about n²/2⁶⁵ for n ids held — for a
//! million ids, one in 37 million. A horizon shorter than the out-of-orderness plus the allowed
//! lateness lets a very late duplicate through to the analytics.

use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap};

pub mod report;
pub mod skew;

pub use report::{QualityReport, ReportPlan};
pub use skew::{SkewCounts, SkewHistogram};

use crate::event::{Event, FieldValue};
use crate::window::accumulate::Input;
use crate::window::codec::{DecodeError, Reader, Writer};

/// The compiled checks of `spec.dataQuality`.
#[derive(Clone, Debug, Default)]
pub struct QualityPlan {
    /// Deduplication: the id field's accessor per source (none: the source has no such field
    /// and its events pass), and the horizon in ms.
    pub dedup: Option<(Vec<Option<Input>>, i64)>,
    /// Largest lead of event time over the wall clock, ms.
    pub max_future_skew: i64,
    /// The quality report, when the pipeline asks for one.
    pub report: Option<ReportPlan>,
}

/// Ids seen, by hash, with the event time of the last one accepted.
#[derive(Clone, Debug, Default)]
pub struct Deduplicator {
    horizon: i64,
    ids: FxHashMap<u64, i64>,
    /// Size after the last sweep: the next sweep runs when the table has doubled.
    swept: usize,
    buf: String,
}

impl Deduplicator {
    /// Empty state with `horizon` (ms).
    pub fn new(horizon: i64) -> Self {
        Self {
            horizon,
            ..Self::default()
        }
    }

    /// Whether `event`, whose id `field` reads, is a duplicate at watermark `wm`; remembers it
    /// when it is not. Events without the id pass.
    pub fn is_duplicate(&mut self, field: Input, event: &Event<'_>, wm: i64) -> bool {
        // The hash of the id's text: a string's own bytes (no copy), other values as written
        // as a key, so `7` and `"7"` are one id.
        let hash = match field.read(event) {
            FieldValue::Str(s) => FxBuildHasher.hash_one(s.as_bytes()),
            FieldValue::Null => return false,
            other => {
                self.buf.clear();
                other.write_key(&mut self.buf);
                FxBuildHasher.hash_one(self.buf.as_bytes())
            }
        };
        let t = event.time;
        let oldest = wm.saturating_sub(self.horizon);
        match self.ids.get_mut(&hash) {
            Some(t0) if *t0 > oldest && t.abs_diff(*t0) <= self.horizon.unsigned_abs() => true,
            Some(t0) => {
                *t0 = t;
                false
            }
            None => {
                self.ids.insert(hash, t);
                if self.ids.len() > 2 * self.swept + 1024 {
                    self.ids.retain(|_, t0| *t0 > oldest);
                    self.swept = self.ids.len();
                }
                false
            }
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held by the table (entries and control bytes).
    pub fn bytes(&self) -> usize {
        self.ids.capacity() * (std::mem::size_of::<(u64, i64)>() + 1)
    }

    /// Appends the remembered ids (sorted, so equal states encode equally).
    pub fn write(&self, w: &mut Writer) {
        let mut ids: Vec<(u64, i64)> = self.ids.iter().map(|(h, t)| (*h, *t)).collect();
        ids.sort_unstable();
        w.i64(self.horizon);
        w.len_prefix(ids.len());
        for (h, t) in ids {
            w.u64(h);
            w.i64(t);
        }
    }

    /// Loads what [`Deduplicator::write`] wrote; a snapshot of another horizon keeps its ids
    /// under this one.
    pub fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let _horizon = r.i64()?;
        for _ in 0..r.len_prefix()? {
            let h = r.u64()?;
            self.ids.insert(h, r.i64()?);
        }
        self.swept = self.ids.len();
        Ok(())
    }
}

#[cfg(test)]
#[path = "quality_tests.rs"]
mod tests;
