//! A funnel's counts for one window and breakdown value: units per step and the exact
//! distribution of each step's time to convert, in whole seconds. Tallies add and subtract
//! units (a late event replaces a unit's old result), merge across tasks by summing, travel as
//! partials to the global stage, and finish into the result's `steps` list.

use std::collections::BTreeMap;

use super::unit::UnitResult;
use crate::result::{write_field, write_json_str, write_value};
use crate::window::accumulate::Value;
use crate::window::codec::{DecodeError, Reader, Writer};

/// Counts of one window and breakdown value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Units that reached step k (index k), for every step.
    pub units: Vec<u64>,
    /// For each step, seconds from entry to reaching it → units; step 0's is empty (always 0 s).
    pub seconds: Vec<BTreeMap<u64, u64>>,
}

impl Tally {
    /// An empty tally of a funnel with `steps` steps.
    pub fn new(steps: usize) -> Self {
        Self {
            units: vec![0; steps],
            seconds: vec![BTreeMap::new(); steps],
        }
    }

    /// Whether it counts no unit.
    pub fn is_empty(&self) -> bool {
        self.units.iter().all(|&u| u == 0)
    }

    /// Counts `unit` in.
    pub fn add(&mut self, unit: &UnitResult) {
        for k in 0..unit.reached as usize {
            self.units[k] += 1;
        }
        for (k, ms) in unit.times.iter().enumerate() {
            *self.seconds[k + 1].entry(seconds(*ms)).or_default() += 1;
        }
    }

    /// Counts `unit` out again (it was added before).
    pub fn remove(&mut self, unit: &UnitResult) {
        for k in 0..unit.reached as usize {
            self.units[k] -= 1;
        }
        for (k, ms) in unit.times.iter().enumerate() {
            let s = seconds(*ms);
            let held = self.seconds[k + 1]
                .get_mut(&s)
                .expect("a unit is removed only after it was added");
            *held -= 1;
            if *held == 0 {
                self.seconds[k + 1].remove(&s);
            }
        }
    }

    /// Adds `other` (another task's tally of the same window and value).
    pub fn merge(&mut self, other: &Tally) {
        for (a, b) in self.units.iter_mut().zip(&other.units) {
            *a += b;
        }
        for (a, b) in self.seconds.iter_mut().zip(&other.seconds) {
            for (s, n) in b {
                *a.entry(*s).or_default() += n;
            }
        }
    }

    /// Appends the tally (steps, units per step, then each step's distribution).
    pub fn write(&self, w: &mut Writer) {
        w.len_prefix(self.units.len());
        for &u in &self.units {
            w.u64(u);
        }
        for dist in &self.seconds {
            w.len_prefix(dist.len());
            for (s, n) in dist {
                w.u64(*s);
                w.u64(*n);
            }
        }
    }

    /// Reads what [`Tally::write`] wrote, for a funnel of `steps` steps.
    pub fn read(r: &mut Reader<'_>, steps: usize) -> Result<Self, DecodeError> {
        if r.len_prefix()? != steps {
            return Err(DecodeError("a funnel tally with another number of steps"));
        }
        let mut tally = Tally::new(steps);
        for u in &mut tally.units {
            *u = r.u64()?;
        }
        for dist in &mut tally.seconds {
            for _ in 0..r.len_prefix()? {
                let s = r.u64()?;
                dist.insert(s, r.u64()?);
            }
        }
        Ok(tally)
    }

    /// Appends the result's values: `entered`, `converted` and `steps`, the list in step order
    /// of `{step, units, conversion_rate, step_conversion_rate, drop_off,
    /// median_seconds_to_convert, p90_seconds_to_convert}`.
    pub fn write_values(&self, names: &[String], v: &mut Vec<u8>) {
        let entered = self.units.first().copied().unwrap_or(0);
        write_field(v, "entered");
        write_value(v, Value::Int(entered));
        write_field(v, "converted");
        write_value(v, Value::Int(self.units.last().copied().unwrap_or(0)));
        write_field(v, "steps");
        v.push(b'[');
        for (k, name) in names.iter().enumerate() {
            if k > 0 {
                v.push(b',');
            }
            let units = self.units[k];
            let previous = if k == 0 { units } else { self.units[k - 1] };
            v.extend_from_slice(b"{\"step\":");
            write_json_str(v, name);
            write_field(v, "units");
            write_value(v, Value::Int(units));
            write_field(v, "conversion_rate");
            write_value(v, rate(units, entered));
            write_field(v, "step_conversion_rate");
            write_value(v, rate(units, previous));
            write_field(v, "drop_off");
            write_value(v, Value::Int(previous.saturating_sub(units)));
            write_field(v, "median_seconds_to_convert");
            write_value(v, self.percentile(k, 0.5));
            write_field(v, "p90_seconds_to_convert");
            write_value(v, self.percentile(k, 0.9));
            v.push(b'}');
        }
        v.push(b']');
    }

    /// The nearest-rank `p` percentile of step `k`'s seconds to convert (0 for the first step),
    /// `null` when no unit reached it.
    pub fn percentile(&self, k: usize, p: f64) -> Value {
        let n = self.units[k];
        if n == 0 {
            return Value::Null;
        }
        if k == 0 {
            return Value::Int(0);
        }
        let rank = ((p * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (s, count) in &self.seconds[k] {
            seen += count;
            if seen >= rank {
                return Value::Int(*s);
            }
        }
        Value::Null
    }
}

/// Whole seconds of `ms` (rounded down).
fn seconds(ms: i64) -> u64 {
    (ms.max(0) / 1000) as u64
}

/// `part / whole`, `null` for an empty whole.
fn rate(part: u64, whole: u64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        Value::Float(part as f64 / whole as f64)
    }
}
