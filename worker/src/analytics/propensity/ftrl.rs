//! The propensity learner: logistic regression by FTRL-proximal (McMahan et al., 2013) on the
//! polynomial terms of the features (no standardisation: the terms as they are), fed one
//! complete epoch at a time in a fixed order.
//!
//! Per epoch, with the observations in the driver's order (a fixed hash of the user, then user, time, tag):
//! 1. each labelled example in order: predict `p` with the current weights and count its log
//!    loss and rank (test), then one FTRL-proximal update (train) — per coordinate `i` with
//!    gradient `g = (p - y) x_i`: `σ = (√(n + g²) - √n) / α`, `z += g - σ w`, `n += g²`, and
//!    `w = 0` when `|z| ≤ λ1`, else `-(z - sign(z) λ1) / ((β + √n) / α + λ2)`;
//! 2. the model version goes up when the epoch had an example (version 0: all weights 0, so
//!    `p = 0.5`);
//! 3. each decision is scored with the updated model: a `score` result per user;
//! 4. the `model` result: the version, the epoch's examples and positives, their log loss and
//!    AUC (exact, by rank, ties averaged; `null` with one class only), the cumulative log loss
//!    and AUC (from a histogram of the predictions' logits in bins of 0.01, pairs in one bin
//!    counting as ties), and the weights by term name.
//!
//! The gauges (`tidemark_model`): `model_version`, `examples`, the last epoch's `log_loss`
//! and `auc`, and `cumulative_log_loss` and `cumulative_auc`.

use std::io::Write as _;
use std::sync::Arc;

use super::{read_example, PropensityPlan, DECISION, EXAMPLE};
use crate::analytics::model::{read_f64s, write_f64s, write_json_f64, Learner, Observation};
use crate::analytics::Emit;
use crate::result::write_json_str;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// Lowest logit of the cumulative histogram (lower ones count in its first bin).
const LOGIT_MIN: f64 = -10.0;
/// Width of a histogram bin, in logits.
const BIN: f64 = 0.01;
/// Bins of the cumulative histogram: logits `[-10, 10)` (higher ones in the last bin).
const BINS: usize = 2000;

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The logistic function.
pub fn sigmoid(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

/// The log loss of margin `m` (logit of the prediction) for label `y`.
pub fn log_loss(m: f64, y: bool) -> f64 {
    if y {
        softplus(-m)
    } else {
        softplus(m)
    }
}

/// The AUC of `(score, label)` pairs by rank, ties averaged; `None` with one class only.
pub fn auc(pairs: &mut [(f64, bool)]) -> Option<f64> {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|(_, y)| *y).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j, averaged.
        let rank = (i + 1 + j) as f64 / 2.0;
        let tied = pairs[i..j].iter().filter(|(_, y)| *y).count();
        rank_sum += rank * tied as f64;
        i = j;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// The FTRL-proximal learner: see the module documentation.
#[derive(Debug)]
pub struct Ftrl {
    plan: Arc<PropensityPlan>,
    /// FTRL's per-term state.
    z: Vec<f64>,
    n: Vec<f64>,
    /// Model versions made (0: no example yet).
    version: u64,
    /// Examples and positives learned, and their summed log loss.
    examples: u64,
    positives: u64,
    loss: f64,
    /// Per logit bin of the predictions: [negatives, positives].
    histogram: Vec<[u64; 2]>,
    /// The log loss and AUC of the last epoch with examples (for the gauges).
    last: [Option<f64>; 2],
}

impl Ftrl {
    /// A learner of `plan` with all weights 0.
    pub fn new(plan: Arc<PropensityPlan>) -> Self {
        let t = plan.terms.len();
        Self {
            plan,
            z: vec![0.0; t],
            n: vec![0.0; t],
            version: 0,
            examples: 0,
            positives: 0,
            loss: 0.0,
            histogram: vec![[0; 2]; BINS],
            last: [None; 2],
        }
    }

    /// The polynomial terms of features `x`.
    pub fn expand(&self, x: &[f64]) -> Vec<f64> {
        self.plan
            .terms
            .iter()
            .map(|t| t.iter().map(|j| x[*j]).product())
            .collect()
    }

    /// The weight of term `i`.
    fn weight(&self, i: usize) -> f64 {
        let (z, n) = (self.z[i], self.n[i]);
        let p = &self.plan;
        if z.abs() <= p.l1 {
            0.0
        } else {
            -(z - z.signum() * p.l1) / ((p.beta + n.sqrt()) / p.alpha + p.l2)
        }
    }

    /// The weights by term.
    pub fn weights(&self) -> Vec<f64> {
        (0..self.z.len()).map(|i| self.weight(i)).collect()
    }

    /// The margin (logit) of terms `phi` under weights `w`.
    fn margin(w: &[f64], phi: &[f64]) -> f64 {
        w.iter().zip(phi).map(|(w, x)| w * x).sum()
    }

    /// The predicted probability of features `x`.
    pub fn predict(&self, x: &[f64]) -> f64 {
        sigmoid(Self::margin(&self.weights(), &self.expand(x)))
    }

    /// One FTRL-proximal step on terms `phi` with prediction `p` and label `y`.
    fn update(&mut self, w: &[f64], phi: &[f64], p: f64, y: bool) {
        let residual = p - f64::from(u8::from(y));
        for (i, x) in phi.iter().enumerate() {
            if *x == 0.0 {
                continue;
            }
            let g = residual * x;
            let sigma = ((self.n[i] + g * g).sqrt() - self.n[i].sqrt()) / self.plan.alpha;
            self.z[i] += g - sigma * w[i];
            self.n[i] += g * g;
        }
    }

    /// Predicts then learns labelled example `(y, x)`: its margin before learning.
    pub fn learn(&mut self, x: &[f64], y: bool) -> f64 {
        let phi = self.expand(x);
        let w = self.weights();
        let m = Self::margin(&w, &phi);
        self.update(&w, &phi, sigmoid(m), y);
        m
    }

    /// The bin of margin `m` in the cumulative histogram.
    fn bin(m: f64) -> usize {
        let b = ((m - LOGIT_MIN) / BIN).floor();
        if b.is_nan() || b < 0.0 {
            0
        } else {
            (b as usize).min(BINS - 1)
        }
    }

    /// The cumulative AUC from the histogram; `None` with one class only.
    fn cumulative_auc(&self) -> Option<f64> {
        let negatives = self.examples - self.positives;
        if self.positives == 0 || negatives == 0 {
            return None;
        }
        let (mut below, mut wins) = (0u64, 0.0);
        for [neg, pos] in &self.histogram {
            wins += *pos as f64 * (below as f64 + *neg as f64 / 2.0);
            below += neg;
        }
        Some(wins / (self.positives as f64 * negatives as f64))
    }
}

/// Writes `x` as JSON, `null` when absent.
fn write_json_opt(v: &mut Vec<u8>, x: Option<f64>) {
    match x {
        Some(x) => write_json_f64(v, x),
        None => v.extend_from_slice(b"null"),
    }
}

impl Learner for Ftrl {
    fn epoch(&mut self, end: i64, observations: &[Observation], out: &mut Emit<'_>) {
        let d = self.plan.features.names.len();
        let mut tested: Vec<(f64, bool)> = Vec::new();
        let mut loss = 0.0;
        for o in observations.iter().filter(|o| o.tag == EXAMPLE) {
            let Ok((y, x)) = read_example(&o.payload) else {
                continue;
            };
            if x.len() != d {
                continue;
            }
            let m = self.learn(&x, y);
            let l = log_loss(m, y);
            loss += l;
            self.loss += l;
            self.examples += 1;
            self.positives += u64::from(y);
            self.histogram[Self::bin(m)][usize::from(y)] += 1;
            tested.push((m, y));
        }
        if !tested.is_empty() {
            self.version += 1;
        }
        let start = end - self.plan.model.epoch;
        let w = self.weights();
        let version = self.version;
        for o in observations.iter().filter(|o| o.tag == DECISION) {
            let Ok(x) = read_f64s(&mut Reader::new(&o.payload)) else {
                continue;
            };
            if x.len() != d {
                continue;
            }
            let p = sigmoid(Self::margin(&w, &self.expand(&x)));
            out.result_with(Some(&o.user), start, end, 0, |v| {
                v.extend_from_slice(b",\"record\":\"score\",\"user\":");
                write_json_str(v, &o.user);
                v.extend_from_slice(b",\"probability\":");
                write_json_f64(v, p);
                let _ = write!(v, ",\"model_version\":{version}");
            });
        }
        let examples = tested.len();
        let positives = tested.iter().filter(|(_, y)| *y).count();
        let epoch_loss = (examples > 0).then(|| loss / examples as f64);
        let epoch_auc = auc(&mut tested);
        if examples > 0 {
            self.last = [epoch_loss, epoch_auc];
        }
        let cumulative_loss = (self.examples > 0).then(|| self.loss / self.examples as f64);
        let cumulative_auc = self.cumulative_auc();
        let names = &self.plan.term_names;
        out.result_with(None, start, end, 0, |v| {
            let _ = write!(
                v,
                ",\"record\":\"model\",\"model_version\":{version},\"examples\":{examples},\
                 \"positives\":{positives},\"log_loss\":"
            );
            write_json_opt(v, epoch_loss);
            v.extend_from_slice(b",\"auc\":");
            write_json_opt(v, epoch_auc);
            v.extend_from_slice(b",\"cumulative_log_loss\":");
            write_json_opt(v, cumulative_loss);
            v.extend_from_slice(b",\"cumulative_auc\":");
            write_json_opt(v, cumulative_auc);
            v.extend_from_slice(b",\"weights\":{");
            for (i, (name, w)) in names.iter().zip(&w).enumerate() {
                if i > 0 {
                    v.push(b',');
                }
                write_json_str(v, name);
                v.push(b':');
                write_json_f64(v, *w);
            }
            v.push(b'}');
        });
    }

    fn write(&self, w: &mut Writer) {
        write_f64s(w, &self.z);
        write_f64s(w, &self.n);
        w.u64(self.version);
        w.u64(self.examples);
        w.u64(self.positives);
        w.u64(self.loss.to_bits());
        let used: Vec<(usize, &[u64; 2])> = self
            .histogram
            .iter()
            .enumerate()
            .filter(|(_, c)| c[0] + c[1] > 0)
            .collect();
        w.len_prefix(used.len());
        for (b, [neg, pos]) in used {
            w.u64(b as u64);
            w.u64(*neg);
            w.u64(*pos);
        }
        for x in self.last {
            match x {
                Some(x) => {
                    w.u8(1);
                    w.u64(x.to_bits());
                }
                None => w.u8(0),
            }
        }
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let t = self.plan.terms.len();
        self.z = read_f64s(r)?;
        self.n = read_f64s(r)?;
        if self.z.len() != t || self.n.len() != t {
            return Err(DecodeError("a propensity model of another shape"));
        }
        self.version = r.u64()?;
        self.examples = r.u64()?;
        self.positives = r.u64()?;
        self.loss = f64::from_bits(r.u64()?);
        for _ in 0..r.len_prefix()? {
            let b = usize::try_from(r.u64()?)
                .ok()
                .filter(|b| *b < BINS)
                .ok_or(DecodeError("a histogram bin out of range"))?;
            self.histogram[b] = [r.u64()?, r.u64()?];
        }
        for x in &mut self.last {
            *x = match r.u8()? {
                0 => None,
                _ => Some(f64::from_bits(r.u64()?)),
            };
        }
        Ok(())
    }

    fn gauges(&self) -> Vec<(String, f64)> {
        let cumulative_loss = (self.examples > 0).then(|| self.loss / self.examples as f64);
        let measures = [
            ("model_version", Some(self.version as f64)),
            ("examples", Some(self.examples as f64)),
            ("log_loss", self.last[0]),
            ("auc", self.last[1]),
            ("cumulative_log_loss", cumulative_loss),
            ("cumulative_auc", self.cumulative_auc()),
        ];
        measures
            .into_iter()
            .filter_map(|(name, x)| Some((name.to_owned(), x?)))
            .collect()
    }

    fn stats(&self) -> WindowStats {
        let used = self.histogram.iter().filter(|c| c[0] + c[1] > 0).count();
        WindowStats {
            keys: 0,
            windows: self.z.len(),
            bytes: self.z.len() * 16 + BINS * 16 + used * 24,
        }
    }
}
