//! The `recommend` learner: decayed item-item co-occurrence and popularity, fed one complete
//! epoch of ended sessions at a time, in the driver's order (user, session end).
//!
//! Per epoch ending at `E`:
//! 1. *decay*: weights are stored in the units of a base time `B`; the weight at `E` is the
//!    stored value times `0.5^((E - B) / halfLife)`. At the first epoch at least a half-life
//!    after `B`, every stored value is multiplied by that factor, those below
//!    [`PRUNE_BELOW`] are dropped (and products left with nothing), and `B = E`;
//! 2. *recommend*, with the model before this epoch: per session, each of its last
//!    [`RECENT`] products adds its weight to each of its best [`CANDIDATES`]` · topK`
//!    neighbours; without the session's own products and the user's bought ones, the `topK`
//!    best by that sum (ties by product); a short list is filled from popularity; emitted
//!    when not empty;
//! 3. *learn*: each session adds 1 (at `E`) to the weight of every unordered pair of its
//!    products (stored both ways, identically) and to each product's popularity, and offers
//!    the grown weight to both products' best neighbours (kept exactly as weights grow;
//!    recomputed from all weights after a decay pass and after a restore);
//! 4. the version goes up; every product that got a pair this epoch has its `topK` best
//!    neighbours emitted, then a summary of the model.
//!
//! Only the sequence of epochs decides the floats: sums run in the session's product order,
//! lists are ranked by (score, product), the snapshot is written sorted by product.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::io::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{RecommendPlan, Session, CANDIDATES, PRUNE_BELOW, RECENT};
use crate::analytics::model::{write_json_f64, Learner, Observation};
use crate::analytics::Emit;
use crate::result::{json_string, rfc3339, write_json_str};
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::WindowStats;

/// One product of the model.
#[derive(Debug, Default)]
struct Product {
    name: Box<str>,
    /// A free slot (its id is in `free`).
    free: bool,
    /// Decayed count of sessions with it, in base units.
    popularity: f64,
    /// Decayed co-occurrence with other products (by id), in base units.
    neighbours: FxHashMap<u32, f64>,
    /// Its best [`CANDIDATES`] · `topK` neighbours with their stored weights, best first (by
    /// weight, then name): kept up to date as weights grow ([`CoOccurrence::offer`]: a weight
    /// outside it never shrinks while learning, so it is the exact top), recomputed from
    /// `neighbours` after a decay pass and a restore (never written to snapshots).
    best: Vec<(u32, f64)>,
}

/// The co-occurrence learner: see the module documentation.
#[derive(Debug)]
pub struct CoOccurrence {
    plan: Arc<RecommendPlan>,
    products: Vec<Product>,
    ids: FxHashMap<Box<str>, u32>,
    free: Vec<u32>,
    /// The time stored values are in the units of (`i64::MIN`: no epoch yet).
    base: i64,
    /// Unordered pairs held.
    pairs: usize,
    /// Model versions (epochs learned).
    version: u64,
}

/// The `k` best of `items` (score, product id), best first: by score descending, then by
/// product name (`name` of an id) ascending. Names are looked up only among equal scores.
fn top<'a>(mut items: Vec<(f64, u32)>, k: usize, name: impl Fn(u32) -> &'a str) -> Vec<(f64, u32)> {
    let by_score = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0);
    if k == 0 {
        return Vec::new();
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, by_score);
        let t = items[k - 1].0;
        let mut chosen: Vec<(f64, u32)> = Vec::with_capacity(k);
        let mut ties = Vec::new();
        for x in items {
            match x.0.total_cmp(&t) {
                Ordering::Greater => chosen.push(x),
                Ordering::Equal => ties.push(x),
                Ordering::Less => {}
            }
        }
        let need = k - chosen.len();
        if ties.len() > need {
            ties.select_nth_unstable_by(need - 1, |a, b| name(a.1).cmp(name(b.1)));
            ties.truncate(need);
        }
        chosen.extend(ties);
        items = chosen;
    }
    items.sort_unstable_by(|a, b| by_score(a, b).then_with(|| name(a.1).cmp(name(b.1))));
    items
}

impl CoOccurrence {
    /// A learner of `plan` with an empty model.
    pub fn new(plan: Arc<RecommendPlan>) -> Self {
        Self {
            plan,
            products: Vec::new(),
            ids: FxHashMap::default(),
            free: Vec::new(),
            base: i64::MIN,
            pairs: 0,
            version: 0,
        }
    }

    /// The id of `name`, made if new.
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let product = Product {
            name: name.into(),
            ..Product::default()
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.products[id as usize] = product;
                id
            }
            None => {
                self.products.push(product);
                (self.products.len() - 1) as u32
            }
        };
        self.ids.insert(name.into(), id);
        id
    }

    /// Step 1: decays stored values into the units of `end` when a half-life has passed.
    fn decay(&mut self, end: i64) {
        if self.base == i64::MIN {
            self.base = end;
            return;
        }
        let halves = (end - self.base) as f64 / self.plan.half_life;
        if halves < 1.0 {
            return;
        }
        let factor = (-halves).exp2();
        let mut pairs = 0;
        for (id, p) in self.products.iter_mut().enumerate() {
            if p.free {
                continue;
            }
            p.popularity *= factor;
            p.neighbours.retain(|_, w| {
                *w *= factor;
                *w >= PRUNE_BELOW
            });
            p.neighbours.shrink_to_fit();
            pairs += p.neighbours.len();
            if p.neighbours.is_empty() && p.popularity < PRUNE_BELOW {
                self.ids.remove(&p.name);
                *p = Product {
                    free: true,
                    ..Product::default()
                };
                self.free.push(id as u32);
            }
        }
        self.pairs = pairs / 2;
        self.base = end;
        for id in 0..self.products.len() as u32 {
            self.refresh(id);
        }
    }

    /// Offers `c`, whose weight as `id`'s neighbour grew to `w`, to `id`'s best neighbours.
    fn offer(&mut self, id: u32, c: u32, w: f64) {
        let limit = CANDIDATES * self.plan.top_k;
        let mut best = std::mem::take(&mut self.products[id as usize].best);
        let better = |a: (u32, f64), b: (u32, f64)| match a.1.total_cmp(&b.1) {
            Ordering::Equal => self.name(a.0) < self.name(b.0),
            o => o == Ordering::Greater,
        };
        let mut at = match best.iter().position(|(x, _)| *x == c) {
            Some(i) => {
                best[i].1 = w;
                i
            }
            None if best.len() < limit => {
                best.push((c, w));
                best.len() - 1
            }
            None => match best.last() {
                Some(last) if better((c, w), *last) => {
                    *best.last_mut().expect("a last") = (c, w);
                    best.len() - 1
                }
                _ => {
                    self.products[id as usize].best = best;
                    return;
                }
            },
        };
        while at > 0 && better(best[at], best[at - 1]) {
            best.swap(at, at - 1);
            at -= 1;
        }
        self.products[id as usize].best = best;
    }

    /// Recomputes `id`'s best neighbours.
    fn refresh(&mut self, id: u32) {
        let p = &self.products[id as usize];
        if p.free {
            return;
        }
        let all = p.neighbours.iter().map(|(c, w)| (*w, *c)).collect();
        let best = top(all, CANDIDATES * self.plan.top_k, |c| self.name(c))
            .into_iter()
            .map(|(w, c)| (c, w))
            .collect();
        self.products[id as usize].best = best;
    }

    /// The name of product `id`.
    fn name(&self, id: u32) -> &str {
        &self.products[id as usize].name
    }

    /// The factor that turns stored values into weights at `end`.
    fn scale(&self, end: i64) -> f64 {
        (-((end - self.base) as f64) / self.plan.half_life).exp2()
    }

    /// The best products by popularity, enough to fill any list after exclusions.
    fn popular(&self) -> Vec<(f64, u32)> {
        let k = self.plan.top_k;
        let all = self
            .products
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.free && p.popularity > 0.0)
            .map(|(id, p)| (p.popularity, id as u32))
            .collect();
        let enough = 2 * k + super::SESSION_PRODUCTS + super::BOUGHT_PRODUCTS;
        top(all, enough, |c| self.name(c))
    }

    /// Step 2 for one session: the list (stored score, product id) and how many came from
    /// co-occurrence.
    /// `scores` is scratch space: a score per product id (all 0 on entry and on return).
    fn recommend(
        &self,
        session: &Session,
        popular: &mut Option<Vec<(f64, u32)>>,
        scores: &mut Vec<f64>,
    ) -> (Vec<(f64, u32)>, usize) {
        let k = self.plan.top_k;
        let known = |p: &str| self.ids.get(p).copied();
        let ids: Vec<u32> = session.products.iter().filter_map(|p| known(p)).collect();
        let mut seen: Vec<u32> = session.bought.iter().filter_map(|p| known(p)).collect();
        seen.extend_from_slice(&ids);
        seen.sort_unstable();
        let excluded = |id: u32| seen.binary_search(&id).is_ok();
        let recent = session.products[session.products.len().saturating_sub(RECENT)..]
            .iter()
            .filter_map(|p| known(p));
        scores.resize(self.products.len(), 0.0);
        let mut scored: Vec<u32> = Vec::new();
        for id in recent {
            for (c, w) in &self.products[id as usize].best {
                let score = &mut scores[*c as usize];
                if *score == 0.0 {
                    scored.push(*c);
                }
                *score += *w;
            }
        }
        let candidates = scored
            .into_iter()
            .map(|c| (std::mem::take(&mut scores[c as usize]), c))
            .filter(|(_, c)| !excluded(*c))
            .collect();
        let mut list = top(candidates, k, |c| self.name(c));
        let from_pairs = list.len();
        if list.len() < k {
            let popular = popular.get_or_insert_with(|| self.popular());
            for (s, id) in popular.iter() {
                if list.len() == k {
                    break;
                }
                if !excluded(*id) && !list[..from_pairs].iter().any(|(_, c)| c == id) {
                    list.push((*s, *id));
                }
            }
        }
        (list, from_pairs)
    }

    /// Step 3 for one session: returns nothing, marks the products that got a pair.
    fn learn(&mut self, session: &Session, inflate: f64, touched: &mut Vec<u32>) {
        let mut ids: Vec<u32> = Vec::with_capacity(session.products.len());
        for p in &session.products {
            let id = self.intern(p);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        for (i, a) in ids.iter().enumerate() {
            self.products[*a as usize].popularity += inflate;
            for b in &ids[i + 1..] {
                let w = match self.products[*a as usize].neighbours.entry(*b) {
                    Entry::Occupied(mut w) => {
                        *w.get_mut() += inflate;
                        *w.get()
                    }
                    Entry::Vacant(w) => {
                        self.pairs += 1;
                        *w.insert(inflate)
                    }
                };
                let v = self.products[*b as usize]
                    .neighbours
                    .entry(*a)
                    .or_insert(0.0);
                *v += inflate;
                let v = *v;
                self.offer(*a, *b, w);
                self.offer(*b, *a, v);
            }
        }
        if ids.len() > 1 {
            touched.extend_from_slice(&ids);
        }
    }

    /// `id`'s `topK` best neighbours: (stored weight, product).
    fn neighbours(&self, id: u32) -> Vec<(f64, &str)> {
        let p = &self.products[id as usize];
        p.best
            .iter()
            .take(self.plan.top_k)
            .map(|(c, w)| (*w, self.name(*c)))
            .collect()
    }

    /// The weight of the pair (`a`, `b`) at the base time, for tests.
    #[cfg(test)]
    pub fn stored_weight(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.ids.get(a)?, self.ids.get(b)?);
        self.products[*a as usize].neighbours.get(b).copied()
    }

    /// Every pair with its stored weight (each once, `a < b`), sorted, for tests.
    #[cfg(test)]
    pub fn stored_pairs(&self) -> Vec<(String, String, f64)> {
        let mut all = Vec::new();
        for p in self.products.iter().filter(|p| !p.free) {
            for (c, w) in &p.neighbours {
                let other = &self.products[*c as usize].name;
                if p.name < *other {
                    all.push((p.name.to_string(), other.to_string(), *w));
                }
            }
        }
        all.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        all
    }

    /// Every product's stored popularity, sorted, for tests.
    #[cfg(test)]
    pub fn stored_popularity(&self) -> Vec<(String, f64)> {
        let mut all: Vec<(String, f64)> = self
            .products
            .iter()
            .filter(|p| !p.free)
            .map(|p| (p.name.to_string(), p.popularity))
            .collect();
        all.sort_by(|x, y| x.0.cmp(&y.0));
        all
    }

    /// Bytes the model's maps hold (capacity, not only entries).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u32, f64)>() + 1;
        let slots: usize = self
            .products
            .iter()
            .map(|p| {
                p.neighbours.capacity() * entry
                    + p.name.len()
                    + p.best.len() * std::mem::size_of::<(u32, f64)>()
            })
            .sum();
        slots
            + self.products.capacity() * std::mem::size_of::<Product>()
            + self.ids.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + self.ids.keys().map(|k| k.len()).sum::<usize>()
    }

    /// Unordered pairs held.
    pub fn pairs(&self) -> usize {
        self.pairs
    }
}

impl Learner for CoOccurrence {
    fn epoch(&mut self, end: i64, observations: &[Observation], out: &mut Emit<'_>) {
        let start = end - self.plan.model.epoch;
        self.decay(end);
        let scale = self.scale(end);
        let inflate = 1.0 / scale;
        let sessions: Vec<(&Observation, Session)> = observations
            .iter()
            .filter(|o| o.tag == super::SESSION)
            .filter_map(|o| Session::decode(&o.payload).ok().map(|s| (o, s)))
            .collect();
        let mut popular = None;
        let mut scores = Vec::new();
        for (o, session) in &sessions {
            let (list, from_pairs) = self.recommend(session, &mut popular, &mut scores);
            if list.is_empty() {
                continue;
            }
            let from = match from_pairs {
                n if n == list.len() => "cooccurrence",
                0 => "popularity",
                _ => "mixed",
            };
            out.result_with(Some(&o.user), start, end, 0, |v| {
                v.extend_from_slice(b",\"record\":\"recommendation\",\"user\":");
                write_json_str(v, &o.user);
                let _ = write!(
                    v,
                    ",\"session_end\":{},\"products\":[",
                    json_string(&rfc3339(o.time))
                );
                for (i, (s, id)) in list.iter().enumerate() {
                    if i > 0 {
                        v.push(b',');
                    }
                    v.extend_from_slice(b"{\"product\":");
                    write_json_str(v, self.name(*id));
                    v.extend_from_slice(b",\"score\":");
                    write_json_f64(v, s * scale);
                    v.push(b'}');
                }
                let _ = write!(
                    v,
                    "],\"from\":\"{from}\",\"model_version\":{}",
                    self.version
                );
            });
        }
        let mut touched = Vec::new();
        for (_, session) in &sessions {
            self.learn(session, inflate, &mut touched);
        }
        self.version += 1;
        touched.sort_unstable();
        touched.dedup();
        touched.sort_unstable_by(|a, b| self.name(*a).cmp(self.name(*b)));
        for id in touched {
            let name = &self.products[id as usize].name;
            let list = self.neighbours(id);
            out.result_with(Some(name), start, end, 0, |v| {
                v.extend_from_slice(b",\"record\":\"neighbours\",\"product\":");
                write_json_str(v, name);
                v.extend_from_slice(b",\"neighbours\":[");
                for (i, (w, other)) in list.iter().enumerate() {
                    if i > 0 {
                        v.push(b',');
                    }
                    v.extend_from_slice(b"{\"product\":");
                    write_json_str(v, other);
                    v.extend_from_slice(b",\"weight\":");
                    write_json_f64(v, w * scale);
                    v.push(b'}');
                }
                let _ = write!(v, "],\"model_version\":{}", self.version);
            });
        }
        let products = self.ids.len();
        out.result_with(None, start, end, 0, |v| {
            let _ = write!(
                v,
                ",\"record\":\"model\",\"model_version\":{},\"sessions\":{},\"products\":{products},\"pairs\":{}",
                self.version,
                sessions.len(),
                self.pairs
            );
        });
    }

    fn write(&self, w: &mut Writer) {
        w.i64(self.base);
        w.u64(self.version);
        let mut order: Vec<u32> = self.ids.values().copied().collect();
        order.sort_unstable_by(|a, b| {
            self.products[*a as usize]
                .name
                .cmp(&self.products[*b as usize].name)
        });
        let mut rank = vec![u32::MAX; self.products.len()];
        for (r, id) in order.iter().enumerate() {
            rank[*id as usize] = r as u32;
        }
        w.len_prefix(order.len());
        for (r, id) in order.iter().enumerate() {
            let p = &self.products[*id as usize];
            w.str(&p.name);
            w.u64(p.popularity.to_bits());
            // Each pair once, from its product of lower rank.
            let mut later: Vec<(u32, f64)> = p
                .neighbours
                .iter()
                .map(|(c, w)| (rank[*c as usize], *w))
                .filter(|(c, _)| *c as usize > r)
                .collect();
            later.sort_unstable_by_key(|(c, _)| *c);
            w.len_prefix(later.len());
            for (c, weight) in later {
                w.u64(u64::from(c));
                w.u64(weight.to_bits());
            }
        }
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.base = r.i64()?;
        self.version = r.u64()?;
        let n = r.len_prefix()?;
        let mut pairs = Vec::new();
        for i in 0..n {
            let name = r.str()?;
            if self.ids.contains_key(name) {
                return Err(DecodeError("a product twice in a recommend model"));
            }
            let id = self.intern(name);
            self.products[id as usize].popularity = f64::from_bits(r.u64()?);
            for _ in 0..r.len_prefix()? {
                let c = r.u64()?;
                let weight = f64::from_bits(r.u64()?);
                if c as usize >= n || c as usize <= i {
                    return Err(DecodeError("a recommend pair out of range"));
                }
                pairs.push((i as u32, c as u32, weight));
            }
        }
        for (a, b, weight) in pairs {
            self.products[a as usize].neighbours.insert(b, weight);
            self.products[b as usize].neighbours.insert(a, weight);
            self.pairs += 1;
        }
        for id in 0..n as u32 {
            self.refresh(id);
        }
        Ok(())
    }

    fn gauges(&self) -> Vec<(String, f64)> {
        vec![
            ("model_version".to_owned(), self.version as f64),
            ("pairs".to_owned(), self.pairs as f64),
            ("products".to_owned(), self.ids.len() as f64),
        ]
    }

    fn stats(&self) -> WindowStats {
        WindowStats {
            keys: self.ids.len(),
            windows: self.pairs,
            bytes: self.heap_bytes(),
        }
    }
}
