//! The clock-skew distribution: how far ahead of the runner's wall clock event times are, per
//! source, for every decoded event ahead of it at all (rejected for clock skew or not).
//!
//! A task counts into [`SkewCounts`] (plain cumulative bucket counts, no locks, part of its
//! `Counters`); the worker's metrics publisher adds each task's growth into one
//! [`SkewHistogram`], a Prometheus collector exposing `tidemark_clock_skew_seconds` as a
//! histogram with a `source` label. Counting buckets in the task and publishing deltas keeps
//! the per-event cost to an array increment and makes the exposed sum exact (a Prometheus
//! `Histogram` can only be fed single observations).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// Name of the histogram.
pub const CLOCK_SKEW_SECONDS: &str = "tidemark_clock_skew_seconds";

/// Upper bounds of the buckets, seconds (`+Inf` follows).
pub const SKEW_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0,
];

/// Events ahead of the wall clock, by bucket (not cumulative; the last is `+Inf`), and the sum
/// of their leads in ms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkewCounts {
    /// Count per bucket of [`SKEW_BUCKETS`], then `+Inf`.
    pub buckets: [u64; SKEW_BUCKETS.len() + 1],
    /// Sum of the leads, ms.
    pub sum_ms: u64,
}

impl SkewCounts {
    /// Counts an event `lead_ms` ahead of the wall clock (positive).
    pub fn observe(&mut self, lead_ms: i64) {
        let seconds = lead_ms as f64 / 1000.0;
        let i = SKEW_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(SKEW_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_ms = self.sum_ms.saturating_add(lead_ms.unsigned_abs());
    }

    /// Events counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What grew from `before` to `self`; everything of `self` when something went down (a
    /// task rebuilt from a checkpoint counts from zero again).
    pub fn since(&self, before: &SkewCounts) -> SkewCounts {
        let reset = self.sum_ms < before.sum_ms
            || self.buckets.iter().zip(&before.buckets).any(|(a, b)| a < b);
        if reset {
            return self.clone();
        }
        let mut d = SkewCounts {
            sum_ms: self.sum_ms - before.sum_ms,
            ..SkewCounts::default()
        };
        for (i, slot) in d.buckets.iter_mut().enumerate() {
            *slot = self.buckets[i] - before.buckets[i];
        }
        d
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &SkewCounts) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
    }
}

/// `tidemark_clock_skew_seconds{source}`: the worker's sum of its tasks' [`SkewCounts`].
#[derive(Clone, Debug)]
pub struct SkewHistogram {
    desc: Desc,
    by_source: Arc<Mutex<BTreeMap<String, SkewCounts>>>,
}

impl SkewHistogram {
    /// The collector (the registry adds its common `pipeline` label).
    pub fn new() -> prometheus::Result<Self> {
        let desc = Desc::new(
            CLOCK_SKEW_SECONDS.to_owned(),
            "Seconds event times were ahead of the wall clock, for events ahead of it.".to_owned(),
            vec!["source".to_owned()],
            std::collections::HashMap::new(),
        )?;
        Ok(Self {
            desc,
            by_source: Arc::default(),
        })
    }

    /// Creates `source`'s series at zero.
    pub fn touch(&self, source: &str) {
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(source.to_owned()).or_default();
    }

    /// Adds `delta` to `source`'s series.
    pub fn add(&self, source: &str, delta: &SkewCounts) {
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(source.to_owned()).or_default().add(delta);
    }
}

impl Collector for SkewHistogram {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics = Vec::with_capacity(map.len());
        for (source, counts) in map.iter() {
            let mut cumulative = 0;
            let buckets = SKEW_BUCKETS
                .iter()
                .zip(&counts.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut h = Histogram::default();
            h.set_bucket(buckets);
            h.set_sample_count(counts.count());
            h.set_sample_sum(counts.sum_ms as f64 / 1000.0);
            let mut label = LabelPair::default();
            label.set_name("source".to_owned());
            label.set_value(source.clone());
            let mut m = Metric::default();
            m.set_label(vec![label]);
            m.set_histogram(h);
            metrics.push(m);
        }
        let mut family = MetricFamily::default();
        family.set_name(CLOCK_SKEW_SECONDS.to_owned());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}
