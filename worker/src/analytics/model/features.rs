//! Users' aggregates over a trailing horizon, kept per epoch, and the features computed from
//! them at an epoch's end: built-in (an aggregate by name) or a CEL expression over the
//! aggregates (`tidemark_api::UserFeature`). Shared by segments and propensity.
//!
//! A user's events are counted in one bucket per epoch; the aggregates at an epoch end `E`
//! sum the buckets of the epochs ending in `(E - horizon, E]` (the horizon in whole epochs).
//! A user is *active* in an epoch when it has an event in it; a user with no bucket left in
//! reach of a future epoch is forgotten.

use std::collections::BTreeMap;

use cel::{Context, Program, Value as CelValue};
use rustc_hash::FxHashMap;
use tidemark_api::{UserFeature, USER_AGGREGATES};

use super::ModelPlan;
use crate::event::Event;
use crate::operators::PlanError;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

const HOUR: f64 = 3_600_000.0;

/// One user's events in one epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    end: i64,
    events: u32,
    views: u32,
    carts: u32,
    purchases: u32,
    revenue: f64,
    /// First event's time.
    first: i64,
    /// Last purchase's time (`i64::MIN`: none).
    last_purchase: i64,
}

/// Whether two short byte strings are equal, compared inline (no call into `memcmp` for
/// the few bytes of an event type).
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A user's aggregates at an epoch end, in the order of [`USER_AGGREGATES`].
pub type Values = [f64; 7];

/// Users' epoch buckets: see the module documentation.
#[derive(Debug)]
pub struct Aggregates {
    horizon: i64,
    users: FxHashMap<Box<str>, Vec<Bucket>>,
    /// Users with a bucket in each epoch not yet taken (a bucket is made once: an event
    /// of an epoch already taken is late, never counted).
    active: BTreeMap<i64, Vec<Box<str>>>,
    /// Users to look at when the time comes: their buckets may have left every horizon.
    expiry: BTreeMap<i64, Vec<Box<str>>>,
    /// Epochs ending at or before this were taken.
    taken: i64,
    /// Buckets held, and the bytes of the users' names (for `stats`).
    buckets: usize,
    name_bytes: usize,
}

impl Aggregates {
    /// Empty aggregates over `horizon` ms.
    pub fn new(horizon: i64) -> Self {
        Self {
            horizon,
            users: FxHashMap::default(),
            active: BTreeMap::new(),
            expiry: BTreeMap::new(),
            taken: i64::MIN,
            buckets: 0,
            name_bytes: 0,
        }
    }

    /// Counts `user`'s event of input `input`.
    pub fn add(&mut self, plan: &ModelPlan, user: &str, input: usize, event: &Event<'_>) {
        let t = event.time;
        let end = plan.epoch_end(t);
        let buckets = match self.users.get_mut(user) {
            Some(b) => b,
            None => {
                self.name_bytes += user.len();
                self.users.entry(user.into()).or_default()
            }
        };
        // Most events go to the user's newest bucket.
        let at = match buckets.last() {
            Some(last) if last.end == end => buckets.len() - 1,
            _ => buckets.partition_point(|b| b.end < end),
        };
        if buckets.get(at).is_none_or(|b| b.end != end) {
            buckets.insert(
                at,
                Bucket {
                    end,
                    events: 0,
                    views: 0,
                    carts: 0,
                    purchases: 0,
                    revenue: 0.0,
                    first: t,
                    last_purchase: i64::MIN,
                },
            );
            self.buckets += 1;
            self.active.entry(end).or_default().push(user.into());
        }
        let b = &mut buckets[at];
        b.events += 1;
        b.first = b.first.min(t);
        let ty = event.event_type.as_deref().unwrap_or_default().as_bytes();
        if same(ty, b"view") {
            b.views += 1;
        } else if same(ty, b"add_to_cart") {
            b.carts += 1;
        }
        if let Some(value) = plan.purchase(input, event) {
            b.purchases += 1;
            b.revenue += value;
            b.last_purchase = b.last_purchase.max(t);
        }
    }

    /// Takes every epoch complete at `complete`, in order: calls `f` with these aggregates,
    /// the epoch's end and each user active in it (in no particular order), then forgets
    /// what no later epoch can reach.
    pub fn take_complete(&mut self, complete: i64, mut f: impl FnMut(&Self, i64, &str)) {
        while let Some(entry) = self.active.first_entry() {
            if *entry.key() > complete {
                break;
            }
            let (end, users) = entry.remove_entry();
            self.taken = end;
            for user in &users {
                f(self, end, user);
            }
            self.expiry
                .entry(end.saturating_add(self.horizon))
                .or_default()
                .extend(users);
        }
        self.expire(complete);
    }

    /// Forgets what no epoch after `complete` can reach.
    fn expire(&mut self, complete: i64) {
        let reach = complete.saturating_sub(self.horizon);
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() > complete {
                break;
            }
            for user in entry.remove() {
                if let Some(buckets) = self.users.get_mut(&user) {
                    let cut = buckets.partition_point(|b| b.end <= reach);
                    buckets.drain(..cut);
                    self.buckets -= cut;
                    if buckets.is_empty() {
                        self.users.remove(&user);
                        self.name_bytes -= user.len();
                    }
                }
            }
        }
    }

    /// `user`'s aggregates at epoch end `end`.
    pub fn values(&self, user: &str, end: i64) -> Values {
        let mut v = [0.0; 7];
        let (mut first, mut last_purchase) = (end, i64::MIN);
        let from = end.saturating_sub(self.horizon);
        for b in self.users.get(user).map_or(&[][..], Vec::as_slice) {
            if b.end <= from || b.end > end {
                continue;
            }
            v[0] += f64::from(b.events);
            v[1] += f64::from(b.views);
            v[2] += f64::from(b.carts);
            v[3] += f64::from(b.purchases);
            v[4] += b.revenue;
            first = first.min(b.first);
            last_purchase = last_purchase.max(b.last_purchase);
        }
        v[5] = if last_purchase == i64::MIN {
            self.horizon as f64 / HOUR
        } else {
            (end - last_purchase) as f64 / HOUR
        };
        v[6] = (end - first) as f64 / HOUR;
        v
    }

    /// Appends the state (users sorted, so equal states encode equally).
    pub fn write(&self, w: &mut Writer) {
        w.i64(self.taken);
        let mut users: Vec<(&Box<str>, &Vec<Bucket>)> = self.users.iter().collect();
        users.sort_unstable_by_key(|(u, _)| *u);
        w.len_prefix(users.len());
        for (user, buckets) in users {
            w.str(user);
            w.len_prefix(buckets.len());
            for b in buckets {
                w.i64(b.end);
                w.u64(u64::from(b.events));
                w.u64(u64::from(b.views));
                w.u64(u64::from(b.carts));
                w.u64(u64::from(b.purchases));
                w.u64(b.revenue.to_bits());
                w.i64(b.first);
                w.i64(b.last_purchase);
            }
        }
    }

    /// Loads what [`Aggregates::write`] wrote into these fresh aggregates.
    pub fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.taken = r.i64()?;
        let small = |x: u64| u32::try_from(x).map_err(|_| DecodeError("a count out of range"));
        for _ in 0..r.len_prefix()? {
            let user: Box<str> = r.str()?.into();
            let mut buckets = Vec::new();
            for _ in 0..r.len_prefix()? {
                buckets.push(Bucket {
                    end: r.i64()?,
                    events: small(r.u64()?)?,
                    views: small(r.u64()?)?,
                    carts: small(r.u64()?)?,
                    purchases: small(r.u64()?)?,
                    revenue: f64::from_bits(r.u64()?),
                    first: r.i64()?,
                    last_purchase: r.i64()?,
                });
            }
            for b in &buckets {
                if b.end > self.taken {
                    self.active.entry(b.end).or_default().push(user.clone());
                }
            }
            if let Some(b) = buckets.iter().rev().find(|b| b.end <= self.taken) {
                self.expiry
                    .entry(b.end.saturating_add(self.horizon))
                    .or_default()
                    .push(user.clone());
            }
            self.buckets += buckets.len();
            self.name_bytes += user.len();
            self.users.insert(user, buckets);
        }
        Ok(())
    }

    /// Sizes of the state.
    pub fn stats(&self) -> WindowStats {
        let waiting: usize = self.active.len() + self.expiry.len();
        WindowStats {
            keys: self.users.len(),
            windows: self.buckets,
            bytes: self.buckets * 56 + self.users.len() * 64 + 2 * self.name_bytes + waiting * 48,
        }
    }
}

/// How one feature is computed.
enum Source {
    /// An aggregate, by its index in [`USER_AGGREGATES`].
    Aggregate(usize),
    /// `ln(1 + aggregate)`.
    Log1p(usize),
    /// A CEL expression over the aggregates.
    Cel(Program),
}

/// A model's features, compiled.
pub struct Features {
    /// Names, in order.
    pub names: Vec<String>,
    sources: Vec<Source>,
    context: Context<'static, 'static>,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Features {
    /// Compiles `features` at `path`; without any, the aggregates named `default`, each as
    /// it is or as `log(1 + x)` when `log` is set.
    pub fn compile(
        features: &[UserFeature],
        default: &[&str],
        log: bool,
        path: &str,
    ) -> Result<Self, PlanError> {
        let mut context = Context::default();
        context
            .add_function("log", |x: f64| x.ln())
            .expect("a root context takes functions");
        context
            .add_function("sqrt", |x: f64| x.sqrt())
            .expect("a root context takes functions");
        let mut names = Vec::new();
        let mut sources = Vec::new();
        if features.is_empty() {
            for name in default {
                let i = USER_AGGREGATES
                    .iter()
                    .position(|a| a == name)
                    .expect("a default feature is an aggregate");
                if log {
                    sources.push(Source::Log1p(i));
                    names.push(format!("log_{name}"));
                } else {
                    sources.push(Source::Aggregate(i));
                    names.push((*name).to_owned());
                }
            }
        }
        for (j, f) in features.iter().enumerate() {
            names.push(f.name.clone());
            match USER_AGGREGATES.iter().position(|a| *a == f.expr.trim()) {
                Some(i) => sources.push(Source::Aggregate(i)),
                None => sources.push(Source::Cel(Program::compile(&f.expr).map_err(|e| {
                    PlanError::Reference {
                        path: format!("{path}.features[{j}].expr"),
                        message: e.to_string().lines().next().unwrap_or_default().to_owned(),
                    }
                })?)),
            }
        }
        Ok(Self {
            names,
            sources,
            context,
        })
    }

    /// The features of aggregates `v`; an expression that fails or gives no finite number
    /// gives 0 and counts in `errors`.
    pub fn compute(&self, v: &Values, errors: &mut u64) -> Vec<f64> {
        let mut scope = None;
        self.sources
            .iter()
            .map(|s| match s {
                Source::Aggregate(i) => v[*i],
                Source::Log1p(i) => (1.0 + v[*i]).ln(),
                Source::Cel(program) => {
                    let scope = scope.get_or_insert_with(|| {
                        let mut scope = self.context.new_inner_scope();
                        for (name, x) in USER_AGGREGATES.iter().zip(v) {
                            if name.ends_with("hours") || *name == "revenue" {
                                scope.add_variable_from_value(*name, *x);
                            } else {
                                scope.add_variable_from_value(*name, *x as i64);
                            }
                        }
                        scope
                    });
                    let x = match program.execute(scope) {
                        Ok(CelValue::Float(f)) => f,
                        Ok(CelValue::Int(i)) => i as f64,
                        Ok(CelValue::UInt(u)) => u as f64,
                        _ => f64::NAN,
                    };
                    if x.is_finite() {
                        x
                    } else {
                        *errors += 1;
                        0.0
                    }
                }
            })
            .collect()
    }
}
