//! The task side of `recommend`: each user's open sessions and bought products; a session
//! that has ended becomes an observation ([`super::Session`]) of the epoch at or after its end.
//!
//! **Sessions.** Any event of the user is activity; a session is a maximal run of the user's
//! events, in event time, with gaps below `sessionGap`. Out-of-order input is held as several
//! open *groups* (disjoint runs, at least a gap apart, sorted); an event joins every group it
//! is within a gap of (merging them) or starts one. A group ends once `complete` (every event
//! before it has arrived) reaches its last event + gap: no later event can touch it. Its
//! products are the distinct products of its events whose type is a view type, with their
//! first-interest time, kept as the [`SESSION_PRODUCTS`] earliest by (first interest,
//! product) — a bounded set that is exact under any arrival order, since a product's first
//! interest only gets earlier (the *last* N could not be kept exactly: a dropped product that
//! comes again would need its forgotten earlier time).
//!
//! **Bought products.** Purchases stay *pending* until `complete` passes them; a session
//! ending at `E` first settles the pending purchases before `E` (all of them have arrived,
//! since `E <= complete`). Settled products keep their latest purchase time, the
//! [`BOUGHT_PRODUCTS`] latest by (time, product) (exact: keys only grow); a session sees those
//! bought in `[E - BOUGHT_HORIZON, E)`. So an observation depends only on the user's events,
//! never on when the watermark passed or how the input was split into tasks.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{RecommendPlan, Session, BOUGHT_HORIZON, BOUGHT_PRODUCTS, SESSION, SESSION_PRODUCTS};
use crate::analytics::model::{Observation, Observer};
use crate::event::{Event, FieldValue};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// One open run of a user's events.
#[derive(Clone, Debug, PartialEq)]
struct Group {
    first: i64,
    last: i64,
    /// (first interest, product), sorted, distinct products, at most [`SESSION_PRODUCTS`].
    products: Vec<(i64, Box<str>)>,
}

impl Group {
    /// Notes interest in `product` at `t`.
    fn interest(&mut self, t: i64, product: &str) {
        let entry = match self.products.iter().position(|(_, p)| &**p == product) {
            Some(i) if self.products[i].0 <= t => return,
            Some(i) => self.products.remove(i),
            None => (t, product.into()),
        };
        let entry = (t, entry.1);
        let at = self.products.partition_point(|e| *e < entry);
        if at < SESSION_PRODUCTS {
            self.products.insert(at, entry);
            self.products.truncate(SESSION_PRODUCTS);
        }
    }

    /// Takes in `other`'s events.
    fn absorb(&mut self, other: Group) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        for (t, p) in other.products {
            self.interest(t, &p);
        }
    }
}

/// One user's state.
#[derive(Debug, Default)]
struct User {
    /// Open groups, sorted, each at least a gap from the next.
    groups: Vec<Group>,
    /// Settled bought products: (product, latest purchase), sorted by product.
    bought: Vec<(Box<str>, i64)>,
    /// Purchases not settled yet: (time, product), sorted, distinct.
    pending: Vec<(i64, Box<str>)>,
    /// The earliest wake-up scheduled for the user (`i64::MAX`: none).
    wake: i64,
}

impl User {
    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.bought.is_empty() && self.pending.is_empty()
    }

    /// When the user next needs attention, given its groups and pending purchases.
    fn next_event_wake(&self, gap: i64) -> i64 {
        let group = self
            .groups
            .first()
            .map_or(i64::MAX, |g| g.last.saturating_add(gap));
        let pending = self
            .pending
            .first()
            .map_or(i64::MAX, |(t, _)| t.saturating_add(1));
        group.min(pending)
    }

    /// [`User::next_event_wake`], and when its oldest bought product expires.
    fn next_wake(&self, gap: i64) -> i64 {
        let expiry = self
            .bought
            .iter()
            .map(|(_, t)| t.saturating_add(BOUGHT_HORIZON + 1))
            .min()
            .unwrap_or(i64::MAX);
        self.next_event_wake(gap).min(expiry)
    }

    /// Adds activity at `t`, with interest in `product` if any.
    fn activity(&mut self, t: i64, product: Option<&str>, gap: i64) {
        let lo = self
            .groups
            .partition_point(|g| g.last.saturating_add(gap) <= t);
        let hi = self
            .groups
            .partition_point(|g| g.first.saturating_sub(gap) < t);
        let group = if lo == hi {
            let g = Group {
                first: t,
                last: t,
                products: Vec::new(),
            };
            self.groups.insert(lo, g);
            &mut self.groups[lo]
        } else {
            let merged: Vec<Group> = self.groups.drain(lo + 1..hi).collect();
            let g = &mut self.groups[lo];
            for other in merged {
                g.absorb(other);
            }
            g.first = g.first.min(t);
            g.last = g.last.max(t);
            g
        };
        if let Some(p) = product {
            group.interest(t, p);
        }
    }

    /// Settles the pending purchases before `before`.
    fn settle(&mut self, before: i64) {
        let n = self.pending.partition_point(|(t, _)| *t < before);
        for (t, p) in self.pending.drain(..n) {
            match self.bought.binary_search_by(|(q, _)| (**q).cmp(&p)) {
                Ok(i) => self.bought[i].1 = self.bought[i].1.max(t),
                Err(i) => self.bought.insert(i, (p, t)),
            }
            if self.bought.len() > BOUGHT_PRODUCTS {
                let oldest = (0..self.bought.len())
                    .min_by(|a, b| {
                        let (pa, ta) = &self.bought[*a];
                        let (pb, tb) = &self.bought[*b];
                        (ta, pa).cmp(&(tb, pb))
                    })
                    .expect("products");
                self.bought.remove(oldest);
            }
        }
    }
}

/// `Sessions::stats` walks every user: it is recomputed on every this many calls (the
/// local runner asks after every batch of input) and the last figures returned in between.
const STATS_EVERY: u32 = 256;

/// The task side: see the module documentation.
#[derive(Debug)]
pub struct Sessions {
    plan: Arc<RecommendPlan>,
    users: FxHashMap<Box<str>, User>,
    /// Users by wake-up time; an entry not equal to the user's `wake` is stale.
    wakes: BTreeMap<i64, Vec<Box<str>>>,
    /// `stats` as last computed (it walks every user), and calls since: recomputed every
    /// [`STATS_EVERY`] calls.
    stats: Cell<(u32, WindowStats)>,
    /// The event's product as text (a buffer kept between events).
    product: String,
    /// Sessions ended without a product of interest (observed by no one).
    pub empty_sessions: u64,
}

impl Sessions {
    /// No users yet.
    pub fn new(plan: Arc<RecommendPlan>) -> Self {
        Self {
            plan,
            users: FxHashMap::default(),
            wakes: BTreeMap::new(),
            stats: Cell::new((0, WindowStats::default())),
            product: String::new(),
            empty_sessions: 0,
        }
    }

    /// Ends the groups of `user` (named `name`) that `complete` closes, settles and expires
    /// its purchases; counts sessions without products in `empty`.
    fn close(
        plan: &RecommendPlan,
        empty: &mut u64,
        name: &str,
        user: &mut User,
        complete: i64,
        out: &mut Vec<Observation>,
    ) {
        let (gap, plan) = (plan.gap, &plan.model);
        let closed = user
            .groups
            .partition_point(|g| g.last.saturating_add(gap) <= complete);
        let groups: Vec<Group> = user.groups.drain(..closed).collect();
        for g in groups {
            // Clamped so that the epoch's end is representable.
            let end = g.last.saturating_add(gap).min(i64::MAX - 2 * plan.epoch);
            user.settle(end);
            if g.products.is_empty() {
                *empty += 1;
                continue;
            }
            let from = end.saturating_sub(BOUGHT_HORIZON);
            let products: Vec<&str> = g.products.iter().map(|(_, p)| &**p).collect();
            let bought: Vec<&str> = user
                .bought
                .iter()
                .filter(|(_, t)| *t >= from)
                .map(|(p, _)| &**p)
                .collect();
            out.push(Observation {
                epoch: plan.epoch_end_at_or_after(end),
                user: name.into(),
                time: end,
                tag: SESSION,
                payload: Session::encode_from(&products, &bought),
            });
        }
        user.settle(complete);
        let reach = complete.saturating_sub(BOUGHT_HORIZON);
        user.bought.retain(|(_, t)| *t >= reach);
    }

    /// Schedules `name`'s next wake-up if it is earlier than the one scheduled.
    fn schedule(wakes: &mut BTreeMap<i64, Vec<Box<str>>>, name: &str, user: &mut User, at: i64) {
        if at < user.wake {
            user.wake = at;
            wakes.entry(at).or_default().push(name.into());
        }
    }
}

impl Observer for Sessions {
    fn add(&mut self, name: &str, input: usize, event: &Event<'_>) {
        let plan = &self.plan;
        let product = &mut self.product;
        product.clear();
        let has_product = match plan.model.product[input].read(event) {
            FieldValue::Null => false,
            value => value.write_key(product),
        };
        let interest = has_product
            && event
                .event_type
                .as_deref()
                .is_some_and(|ty| plan.view_types.iter().any(|v| v == ty));
        let bought = has_product && plan.model.purchase(input, event).is_some();
        let user = match self.users.get_mut(name) {
            Some(u) => u,
            None => self.users.entry(name.into()).or_insert_with(|| User {
                wake: i64::MAX,
                ..User::default()
            }),
        };
        let t = event.time;
        let product = self.product.as_str();
        user.activity(t, interest.then_some(product), plan.gap);
        if bought {
            let entry = (t, Box::<str>::from(product));
            if let Err(i) = user.pending.binary_search(&entry) {
                user.pending.insert(i, entry);
            }
        }
        let at = user.next_event_wake(plan.gap);
        Self::schedule(&mut self.wakes, name, user, at);
    }

    fn due(&mut self, complete: i64, out: &mut Vec<Observation>) {
        while let Some(entry) = self.wakes.first_entry() {
            if *entry.key() > complete {
                break;
            }
            let (t, names) = entry.remove_entry();
            for name in names {
                // One lookup per wake-up: the table is large, each probe a cache miss.
                let Some(user) = self.users.get_mut(&name) else {
                    continue;
                };
                if user.wake != t {
                    continue;
                }
                let plan = &self.plan;
                Self::close(plan, &mut self.empty_sessions, &name, user, complete, out);
                if user.is_empty() {
                    self.users.remove(&name);
                    continue;
                }
                user.wake = i64::MAX;
                let at = user.next_wake(plan.gap);
                Self::schedule(&mut self.wakes, &name, user, at);
            }
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u64(self.empty_sessions);
        let mut users: Vec<(&Box<str>, &User)> = self.users.iter().collect();
        users.sort_unstable_by_key(|(name, _)| *name);
        w.len_prefix(users.len());
        for (name, user) in users {
            w.str(name);
            w.len_prefix(user.groups.len());
            for g in &user.groups {
                w.i64(g.first);
                w.i64(g.last);
                w.len_prefix(g.products.len());
                for (t, p) in &g.products {
                    w.i64(*t);
                    w.str(p);
                }
            }
            w.len_prefix(user.bought.len());
            for (p, t) in &user.bought {
                w.str(p);
                w.i64(*t);
            }
            w.len_prefix(user.pending.len());
            for (t, p) in &user.pending {
                w.i64(*t);
                w.str(p);
            }
        }
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.empty_sessions = r.u64()?;
        let gap = self.plan.gap;
        for _ in 0..r.len_prefix()? {
            let name: Box<str> = r.str()?.into();
            let mut user = User {
                wake: i64::MAX,
                ..User::default()
            };
            for _ in 0..r.len_prefix()? {
                let (first, last) = (r.i64()?, r.i64()?);
                let mut products = Vec::new();
                for _ in 0..r.len_prefix()? {
                    products.push((r.i64()?, r.str()?.into()));
                }
                user.groups.push(Group {
                    first,
                    last,
                    products,
                });
            }
            for _ in 0..r.len_prefix()? {
                user.bought.push((r.str()?.into(), r.i64()?));
            }
            for _ in 0..r.len_prefix()? {
                user.pending.push((r.i64()?, r.str()?.into()));
            }
            let sorted = user.groups.windows(2).all(|w| w[0].last < w[1].first)
                && user.groups.iter().all(|g| {
                    g.first <= g.last
                        && g.products.len() <= SESSION_PRODUCTS
                        && g.products.is_sorted()
                })
                && user.bought.len() <= BOUGHT_PRODUCTS
                && user.bought.windows(2).all(|w| w[0].0 < w[1].0)
                && user.pending.windows(2).all(|w| w[0] < w[1]);
            if !sorted {
                return Err(DecodeError("a recommend user state out of order"));
            }
            let at = user.next_wake(gap);
            Self::schedule(&mut self.wakes, &name, &mut user, at);
            self.users.insert(name, user);
        }
        Ok(())
    }

    fn stats(&self) -> WindowStats {
        let (calls, last) = self.stats.get();
        if calls % STATS_EVERY != 0 {
            self.stats.set((calls + 1, last));
            return last;
        }
        let mut bytes = 0;
        let mut groups = 0;
        for (name, u) in &self.users {
            bytes += 96 + name.len();
            groups += u.groups.len();
            for g in &u.groups {
                bytes += 40 + g.products.iter().map(|(_, p)| 24 + p.len()).sum::<usize>();
            }
            bytes += u.bought.iter().map(|(p, _)| 24 + p.len()).sum::<usize>();
            bytes += u.pending.iter().map(|(_, p)| 24 + p.len()).sum::<usize>();
        }
        let waiting: usize = self.wakes.values().map(Vec::len).sum();
        bytes += self.wakes.len() * 48 + waiting * 24;
        let stats = WindowStats {
            keys: self.users.len(),
            windows: groups,
            bytes,
        };
        self.stats.set((calls.wrapping_add(1), stats));
        stats
    }
}
