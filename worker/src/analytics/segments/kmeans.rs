//! The segments learner: k-means over the users' current feature vectors, refined one
//! mini-batch (an epoch's observations) at a time, in a space standardised online, fed one
//! complete epoch at a time in a fixed order.
//!
//! The learner keeps each user's latest point and segment (the *population*; a user not
//! observed for the horizon leaves it). Per epoch, with the observations in the driver's order (a fixed hash of the user, then the user):
//! 1. the running mean and variance of each feature take the epoch's points (Welford);
//! 2. without centres yet: once an epoch has at least `k` distinct points, greedy k-means++
//!    picks them from that epoch with the plan's seed (before that, users get no segment:
//!    the documented default);
//! 3. each observed user goes to the nearest centre of the model so far (standardised
//!    Euclidean distance; ties to the lower index) — a user whose segment changed (or who had
//!    none) gets a result — and its point replaces its previous one;
//! 4. each centre becomes the mean of its members' current points (a Lloyd step over the
//!    population; the members' sums are kept up to date in the order of the observations, and
//!    of the users leaving, so they are the same bits at any parallelism); a centre without
//!    members (an empty cluster) moves to the epoch's point farthest from its own centre;
//! 5. the model version (centres in the features' own units, segment sizes, labels) is
//!    emitted.
//!
//! So the centres track the segments of the users as they are now, and with a stable
//! population converge to Lloyd's k-means of the users' current features.

use std::io::Write as _;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rustc_hash::FxHashMap;

use super::SegmentsPlan;
use crate::analytics::model::{read_f64s, write_f64s, write_json_f64, Learner, Observation};
use crate::analytics::Emit;
use crate::result::write_json_str;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// The k-means learner: see the module documentation.
#[derive(Debug)]
pub struct KMeans {
    plan: Arc<SegmentsPlan>,
    /// Points seen, and each feature's running mean and sum of squared deviations.
    seen: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// Centres in the features' units (empty until initialised).
    centres: Vec<Vec<f64>>,
    /// Model versions emitted.
    version: u64,
    /// Each user's segment, current point and the epoch it was last observed in.
    population: FxHashMap<Box<str>, Member>,
    /// Per centre, the sum of its members' points and their number.
    sums: Vec<Vec<f64>>,
    sizes: Vec<u64>,
    /// Bytes of the population's names (for `stats`).
    name_bytes: usize,
}

/// A user of the population.
#[derive(Clone, Debug, PartialEq)]
struct Member {
    segment: u32,
    point: Vec<f64>,
    seen: i64,
}

impl KMeans {
    /// A learner of `plan` with no model yet.
    pub fn new(plan: Arc<SegmentsPlan>) -> Self {
        let d = plan.features.names.len();
        Self {
            plan,
            seen: 0,
            mean: vec![0.0; d],
            m2: vec![0.0; d],
            centres: Vec::new(),
            version: 0,
            population: FxHashMap::default(),
            sums: Vec::new(),
            sizes: Vec::new(),
            name_bytes: 0,
        }
    }

    /// Each feature's scale: its standard deviation (1 when there is none yet).
    fn scales(&self) -> Vec<f64> {
        self.m2
            .iter()
            .map(|m2| {
                let sd = if self.seen > 1 {
                    (m2 / self.seen as f64).sqrt()
                } else {
                    0.0
                };
                if sd > 1e-12 {
                    sd
                } else {
                    1.0
                }
            })
            .collect()
    }

    /// The squared standardised distance of `x` from `c`.
    fn distance2(x: &[f64], c: &[f64], scales: &[f64]) -> f64 {
        x.iter()
            .zip(c)
            .zip(scales)
            .map(|((x, c), s)| ((x - c) / s).powi(2))
            .sum()
    }

    /// The nearest centre of `x`, and its squared distance.
    fn nearest(&self, x: &[f64], scales: &[f64]) -> (usize, f64) {
        let mut best = (0, f64::INFINITY);
        for (i, c) in self.centres.iter().enumerate() {
            let d = Self::distance2(x, c, scales);
            if d < best.1 {
                best = (i, d);
            }
        }
        best
    }

    /// Greedy k-means++ over `points` with the plan's seed; false when they hold fewer than
    /// `k` distinct points.
    fn initialise(&mut self, points: &[Vec<f64>], scales: &[f64]) -> bool {
        let k = self.plan.k;
        let mut distinct: Vec<&Vec<f64>> = points.iter().collect();
        distinct.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        distinct.dedup();
        if distinct.len() < k {
            return false;
        }
        let mut rng = Pcg64Mcg::seed_from_u64(self.plan.seed);
        let first = rng.random_range(0..points.len());
        self.centres = vec![points[first].clone()];
        let mut d2: Vec<f64> = points
            .iter()
            .map(|x| Self::distance2(x, &points[first], scales))
            .collect();
        let tries = 2 + (k as f64).ln() as usize;
        while self.centres.len() < k {
            let total: f64 = d2.iter().sum();
            let mut best: Option<(f64, usize)> = None;
            for _ in 0..tries {
                let mut target = rng.random::<f64>() * total;
                let mut pick = d2.len() - 1;
                for (i, d) in d2.iter().enumerate() {
                    if target < *d {
                        pick = i;
                        break;
                    }
                    target -= d;
                }
                if d2[pick] == 0.0 {
                    // Rounding landed on an existing centre: the farthest point instead.
                    pick = (0..d2.len())
                        .max_by(|a, b| d2[*a].total_cmp(&d2[*b]).then(b.cmp(a)))
                        .expect("points");
                }
                let potential: f64 = points
                    .iter()
                    .zip(&d2)
                    .map(|(x, d)| d.min(Self::distance2(x, &points[pick], scales)))
                    .sum();
                if best.is_none_or(|(p, _)| potential < p) {
                    best = Some((potential, pick));
                }
            }
            let (_, pick) = best.expect("at least one try");
            for (x, d) in points.iter().zip(d2.iter_mut()) {
                *d = d.min(Self::distance2(x, &points[pick], scales));
            }
            self.centres.push(points[pick].clone());
        }
        true
    }

    /// Takes `m`'s point out of its centre's sum.
    fn leave(&mut self, m: &Member) {
        let c = m.segment as usize;
        self.sizes[c] -= 1;
        for (s, x) in self.sums[c].iter_mut().zip(&m.point) {
            *s -= x;
        }
    }

    /// Adds point `x` to centre `c`'s sum.
    fn join(&mut self, c: usize, x: &[f64]) {
        self.sizes[c] += 1;
        for (s, x) in self.sums[c].iter_mut().zip(x) {
            *s += x;
        }
    }

    /// The centres' names by the label rule.
    fn labels(&self) -> Vec<Option<String>> {
        let Some((by, names)) = &self.plan.labels else {
            return vec![None; self.centres.len()];
        };
        let mut order: Vec<usize> = (0..self.centres.len()).collect();
        order.sort_by(|a, b| {
            self.centres[*b][*by]
                .total_cmp(&self.centres[*a][*by])
                .then(a.cmp(b))
        });
        let mut labels = vec![None; self.centres.len()];
        for (rank, c) in order.into_iter().enumerate() {
            labels[c] = Some(names[rank].clone());
        }
        labels
    }

    /// The centres (in the features' units), for tests.
    #[cfg(test)]
    pub fn centres(&self) -> &[Vec<f64>] {
        &self.centres
    }
}

impl Learner for KMeans {
    fn epoch(&mut self, end: i64, observations: &[Observation], out: &mut Emit<'_>) {
        let mut users = Vec::with_capacity(observations.len());
        let mut points = Vec::with_capacity(observations.len());
        for o in observations {
            let Ok(x) = read_f64s(&mut Reader::new(&o.payload)) else {
                continue;
            };
            if x.len() != self.mean.len() {
                continue;
            }
            self.seen += 1;
            for (j, v) in x.iter().enumerate() {
                let delta = v - self.mean[j];
                self.mean[j] += delta / self.seen as f64;
                self.m2[j] += delta * (v - self.mean[j]);
            }
            users.push(&o.user);
            points.push(x);
        }
        let scales = self.scales();
        if self.centres.is_empty() && !self.initialise(&points, &scales) {
            return;
        }
        let start = end - self.plan.model.epoch;
        let assigned: Vec<(usize, f64)> = points.iter().map(|x| self.nearest(x, &scales)).collect();
        let labels = self.labels();
        if self.sums.is_empty() {
            self.sums = vec![vec![0.0; self.mean.len()]; self.centres.len()];
            self.sizes = vec![0; self.centres.len()];
        }
        for ((user, x), (c, d2)) in users.iter().zip(&points).zip(&assigned) {
            let member = Member {
                segment: *c as u32,
                point: x.clone(),
                seen: end,
            };
            let old = match self.population.get_mut(user.as_ref()) {
                Some(m) => Some(std::mem::replace(m, member)),
                None => {
                    self.name_bytes += user.len();
                    self.population.insert((*user).clone(), member);
                    None
                }
            };
            if let Some(old) = &old {
                self.leave(old);
            }
            self.join(*c, x);
            let previous = old.map(|m| m.segment);
            if previous == Some(*c as u32) {
                continue;
            }
            out.result_with(Some(user), start, end, 0, |v| {
                v.extend_from_slice(b",\"record\":\"segment\",\"user\":");
                write_json_str(v, user);
                let _ = write!(v, ",\"segment\":{c}");
                if let Some(label) = &labels[*c] {
                    v.extend_from_slice(b",\"label\":");
                    write_json_str(v, label);
                }
                v.extend_from_slice(b",\"previous\":");
                match previous {
                    Some(p) => {
                        let _ = write!(v, "{p}");
                    }
                    None => v.extend_from_slice(b"null"),
                }
                v.extend_from_slice(b",\"distance\":");
                write_json_f64(v, d2.sqrt());
                let _ = write!(v, ",\"model_version\":{}", self.version);
            });
        }
        let horizon = self.plan.horizon;
        let mut gone: Vec<Box<str>> = self
            .population
            .iter()
            .filter(|(_, m)| m.seen <= end - horizon)
            .map(|(u, _)| u.clone())
            .collect();
        gone.sort_unstable();
        for user in gone {
            if let Some(m) = self.population.remove(&user) {
                self.name_bytes -= user.len();
                self.leave(&m);
            }
        }
        let sizes = self.sizes.clone();
        for (c, (sum, n)) in self.sums.iter().zip(&sizes).enumerate() {
            if *n > 0 {
                self.centres[c] = sum.iter().map(|s| s / *n as f64).collect();
            } else if !points.is_empty() {
                let far = (0..points.len())
                    .max_by(|a, b| {
                        let da = Self::distance2(&points[*a], &self.centres[c], &scales);
                        let db = Self::distance2(&points[*b], &self.centres[c], &scales);
                        da.total_cmp(&db).then(b.cmp(a))
                    })
                    .expect("points");
                self.centres[c] = points[far].clone();
            }
        }
        self.version += 1;
        let labels = self.labels();
        let names = &self.plan.features.names;
        out.result_with(None, start, end, 0, |v| {
            let _ = write!(
                v,
                ",\"record\":\"model\",\"model_version\":{},\"observations\":{},\"centroids\":[",
                self.version,
                points.len()
            );
            for (c, centre) in self.centres.iter().enumerate() {
                if c > 0 {
                    v.push(b',');
                }
                let _ = write!(v, "{{\"segment\":{c},\"size\":{}", sizes[c]);
                if let Some(label) = &labels[c] {
                    v.extend_from_slice(b",\"label\":");
                    write_json_str(v, label);
                }
                v.extend_from_slice(b",\"features\":{");
                for (j, (name, x)) in names.iter().zip(centre).enumerate() {
                    if j > 0 {
                        v.push(b',');
                    }
                    write_json_str(v, name);
                    v.push(b':');
                    write_json_f64(v, *x);
                }
                v.extend_from_slice(b"}}");
            }
            v.push(b']');
        });
    }

    fn write(&self, w: &mut Writer) {
        w.u64(self.seen);
        write_f64s(w, &self.mean);
        write_f64s(w, &self.m2);
        w.len_prefix(self.centres.len());
        for c in &self.centres {
            write_f64s(w, c);
        }
        w.u64(self.version);
        w.len_prefix(self.sums.len());
        for (sum, n) in self.sums.iter().zip(&self.sizes) {
            write_f64s(w, sum);
            w.u64(*n);
        }
        let mut users: Vec<(&Box<str>, &Member)> = self.population.iter().collect();
        users.sort_unstable_by_key(|(u, _)| *u);
        w.len_prefix(users.len());
        for (user, m) in users {
            w.str(user);
            w.u64(u64::from(m.segment));
            write_f64s(w, &m.point);
            w.i64(m.seen);
        }
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let d = self.mean.len();
        self.seen = r.u64()?;
        self.mean = read_f64s(r)?;
        self.m2 = read_f64s(r)?;
        for _ in 0..r.len_prefix()? {
            self.centres.push(read_f64s(r)?);
        }
        self.version = r.u64()?;
        for _ in 0..r.len_prefix()? {
            self.sums.push(read_f64s(r)?);
            self.sizes.push(r.u64()?);
        }
        for _ in 0..r.len_prefix()? {
            let user: Box<str> = r.str()?.into();
            self.name_bytes += user.len();
            let segment =
                u32::try_from(r.u64()?).map_err(|_| DecodeError("a segment out of range"))?;
            let point = read_f64s(r)?;
            let seen = r.i64()?;
            self.population.insert(
                user,
                Member {
                    segment,
                    point,
                    seen,
                },
            );
        }
        let k = self.plan.k;
        let bad_centre = self.centres.iter().any(|c| c.len() != d);
        if self.mean.len() != d
            || self.m2.len() != d
            || bad_centre
            || !(self.centres.is_empty() || self.centres.len() == k)
            || self.sums.len() != self.sizes.len()
            || !(self.sums.is_empty() || self.sums.len() == k)
            || self.sums.iter().any(|s| s.len() != d)
            || self
                .population
                .values()
                .any(|m| m.segment as usize >= k || m.point.len() != d)
        {
            return Err(DecodeError("a k-means model of another shape"));
        }
        Ok(())
    }

    fn gauges(&self) -> Vec<(String, f64)> {
        let labels = self.labels();
        let mut g = vec![("model_version".to_owned(), self.version as f64)];
        for (c, n) in self.sizes.iter().enumerate() {
            let name = labels[c].clone().unwrap_or_else(|| c.to_string());
            g.push((format!("size_{name}"), *n as f64));
        }
        g
    }

    fn stats(&self) -> WindowStats {
        let d = self.mean.len();
        WindowStats {
            keys: self.population.len(),
            windows: self.centres.len(),
            bytes: self.population.len() * (72 + 8 * d)
                + self.name_bytes
                + self.centres.len() * (d * 16 + 48),
        }
    }
}
