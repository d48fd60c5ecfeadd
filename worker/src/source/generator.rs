//! The built-in clickstream generator: deterministic synthetic events with Zipf-skewed users and
//! products, sessions and funnel journeys, a configurable share of out-of-order events, opt-in
//! faults, and an event-time clock that can run faster than the wall clock.
//!
//! Events are the quickstart's JSON objects `{"type", "user_id", "product_id", "category",
//! "price", "ts"}` (`ts` in epoch milliseconds) with `session_id`, `campaign`, `channel` and
//! `event_id` after them. Each user browses in sessions (a new one after 30 minutes without an
//! event, with a channel and campaign of its own); within a session the event types follow a
//! journey: a view may lead to a click, a click to an add-to-cart, a cart to a purchase, each
//! with a chance that depends on the channel (a failed step is another view). Opt-in faults:
//! duplicated records, events stamped a year ahead (clock skew), and planted incidents in
//! which a step succeeds less often for a span of event time. An opt-in [`Response`] to an
//! action plants an effect for its uplift report. The same settings give the same events, byte
//! for byte.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rand_pcg::Pcg64Mcg;
use rustc_hash::FxHashMap;
use tidemark_api::GeneratorSpec;

/// Product categories, chosen per product.
pub const CATEGORIES: [&str; 8] = [
    "audio", "books", "fashion", "garden", "grocery", "home", "sports", "toys",
];

/// Event types of the journey, in funnel order.
const TYPES: [&str; 4] = ["view", "click", "add_to_cart", "purchase"];

/// Channels with their campaigns and the chance of each journey step (view → click, click →
/// cart, cart → purchase): paid social converts worst, email best.
const CHANNELS: [(&str, [&str; 2], [f64; 3]); 4] = [
    ("ads", ["spring_sale", "retarget"], [0.50, 0.40, 0.45]),
    ("email", ["newsletter", "win_back"], [0.60, 0.50, 0.60]),
    ("organic", ["none", "none"], [0.50, 0.40, 0.45]),
    ("social", ["influencer", "spring_sale"], [0.40, 0.30, 0.30]),
];

/// Chance that a session opens with a repeat purchase.
const REPEAT_PURCHASE: f64 = 0.05;

/// Inactivity after which a user's next event starts a new session.
const SESSION_GAP: i64 = 30 * 60_000;

/// How far ahead of the generator's clock a skewed event is stamped (plus up to a day).
const SKEW: i64 = 365 * 86_400_000;

/// A planted response to an `action` analytic (`docs/actions.md`): a user outside the
/// action's holdout group who adds a product to the cart comes back and buys it with extra
/// chance `lift`, between [`RESPONSE_DELAY`] after the cart — as if the coupon worked. The
/// action's uplift report should then show a positive uplift.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The pipeline's name (part of the holdout hash).
    pub pipeline: String,
    /// The action analytic's name.
    pub action: String,
    /// The action's holdout share, 0..1.
    pub holdout: f64,
    /// Extra chance of a purchase after a cart, 0..1.
    pub lift: f64,
}

/// When a responding user buys, after the cart (ms): after a 30-minute abandoned-cart quiet
/// period, within two hours.
pub const RESPONSE_DELAY: std::ops::Range<i64> = 40 * 60_000..120 * 60_000;

/// A user's current session.
#[derive(Clone, Copy, Debug)]
struct Visit {
    session: u64,
    last: i64,
    /// Steps of the journey done: 1 after a view, 2 after a click, 3 after a cart.
    stage: usize,
    channel: usize,
    campaign: usize,
}

/// A deterministic event generator.
#[derive(Debug)]
pub struct Generator {
    rng: Pcg64Mcg,
    users: Zipf<f64>,
    products: Zipf<f64>,
    clock: i64,
    start: i64,
    step: i64,
    out_of_order: f64,
    max_delay: i64,
    remaining: Option<u64>,
    user: u64,
    seed: u64,
    visits: FxHashMap<u64, Visit>,
    sessions: u64,
    events: u64,
    duplicates: f64,
    skew: f64,
    /// (step index 1..=3, factor, from, to) in absolute event time.
    incidents: Vec<(usize, f64, i64, i64)>,
    /// The last record and its type, for duplicates.
    last: (Vec<u8>, &'static str),
    /// The planted response, and the purchases it has scheduled: (time, user, product).
    response: Option<Response>,
    responses: BinaryHeap<Reverse<(i64, u64, u64)>>,
}

impl Generator {
    /// A generator with `spec`'s settings.
    pub fn new(spec: &GeneratorSpec) -> Self {
        let zipf = |n: u64| {
            Zipf::new(n.max(1) as f64, spec.skew.max(0.0)).expect("n >= 1 and skew >= 0 are valid")
        };
        let incidents = spec
            .incidents
            .iter()
            .filter_map(|i| {
                let step = TYPES.iter().position(|t| *t == i.step).filter(|s| *s > 0)?;
                let from = spec.start_time.saturating_add(i.from.millis_i64());
                Some((
                    step,
                    i.factor,
                    from,
                    spec.start_time.saturating_add(i.to.millis_i64()),
                ))
            })
            .collect();
        Self {
            rng: Pcg64Mcg::seed_from_u64(spec.seed),
            users: zipf(spec.users),
            products: zipf(spec.products),
            clock: spec.start_time,
            start: spec.start_time,
            step: spec.time_step.millis_i64().max(1),
            out_of_order: spec.out_of_order_fraction.clamp(0.0, 1.0),
            max_delay: spec.max_delay.millis_i64(),
            remaining: spec.events,
            user: 0,
            seed: spec.seed,
            visits: FxHashMap::default(),
            sessions: 0,
            events: 0,
            duplicates: spec.duplicate_fraction.clamp(0.0, 1.0),
            skew: spec.clock_skew_fraction.clamp(0.0, 1.0),
            incidents,
            last: (Vec::new(), "view"),
            response: None,
            responses: BinaryHeap::new(),
        }
    }

    /// Plants `response`.
    pub fn respond(mut self, response: Response) -> Self {
        self.response = Some(response);
        self
    }

    /// Every event of a bounded `spec` (`events` set), one JSON line each, in order.
    pub fn lines(spec: &GeneratorSpec) -> Vec<Vec<u8>> {
        let mut generator = Self::new(spec);
        let mut out = Vec::new();
        let mut line = Vec::new();
        while generator.next_into(&mut line).is_some() {
            out.push(std::mem::take(&mut line));
        }
        out
    }

    /// Appends the next event as a JSON object (no newline) to `out` and returns its type;
    /// `None` once the configured number of events has been produced.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Option<&'static str> {
        if let Some(remaining) = &mut self.remaining {
            if *remaining == 0 {
                return None;
            }
            *remaining -= 1;
        }
        if self.duplicates > 0.0 && !self.last.0.is_empty() && self.rng.random_bool(self.duplicates)
        {
            out.extend_from_slice(&self.last.0);
            return Some(self.last.1);
        }
        self.clock += self.step;
        let due = self.responses.peek().is_some_and(|r| r.0 .0 <= self.clock);
        let (user, product, kind, visit) = if due {
            let Reverse((_, user, product)) = self.responses.pop().expect("a due response");
            self.user = user;
            let visit = self.visit(user);
            (user, product, "purchase", visit)
        } else {
            let user = self.users.sample(&mut self.rng) as u64;
            self.user = user;
            let product = self.products.sample(&mut self.rng) as u64;
            let visit = self.visit(user);
            let kind = self.journey(visit);
            if kind == "add_to_cart" {
                self.plant(user, product);
            }
            (user, product, kind, visit)
        };
        let mut time = if self.out_of_order > 0.0 && self.rng.random_bool(self.out_of_order) {
            // Never before the start: the first window is the start's.
            (self.clock - self.rng.random_range(0..=self.max_delay)).max(self.start)
        } else {
            self.clock
        };
        if self.skew > 0.0 && self.rng.random_bool(self.skew) {
            time = self.clock + SKEW + self.rng.random_range(0..86_400_000);
        }
        let mix = product.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let category = CATEGORIES[(mix >> 59) as usize % CATEGORIES.len()];
        let cents = 199 + (mix >> 20) % 49_800;
        let (channel, campaigns, _) = CHANNELS[visit.channel];
        let start = out.len();
        self.events += 1;
        let _ = write!(
            out,
            r#"{{"type":"{kind}","user_id":"u{user}","product_id":"p{product}","category":"{category}","price":{}.{:02},"ts":{time},"session_id":"s{}","campaign":"{}","channel":"{channel}","event_id":"e{}-{}"}}"#,
            cents / 100,
            cents % 100,
            visit.session,
            campaigns[visit.campaign],
            self.seed,
            self.events,
        );
        self.last = (out[start..].to_vec(), kind);
        Some(kind)
    }

    /// Schedules `user`'s responding purchase of `product` after a cart, if they respond.
    fn plant(&mut self, user: u64, product: u64) {
        let Some(r) = &self.response else {
            return;
        };
        let name = format!("u{user}");
        let held = crate::analytics::action::in_holdout(&r.pipeline, &r.action, r.holdout, &name);
        if !held && self.rng.random_bool(r.lift.clamp(0.0, 1.0)) {
            let at = self.clock + self.rng.random_range(RESPONSE_DELAY);
            self.responses.push(Reverse((at, user, product)));
        }
    }

    /// The session of `user` at the clock: the current one, or a new one after the gap.
    fn visit(&mut self, user: u64) -> Visit {
        let clock = self.clock;
        match self.visits.get(&user) {
            Some(v) if clock - v.last <= SESSION_GAP => *v,
            _ => {
                self.sessions += 1;
                let channel = self.rng.random_range(0..CHANNELS.len());
                Visit {
                    session: self.sessions,
                    last: clock,
                    stage: 0,
                    channel,
                    campaign: self.rng.random_range(0..2),
                }
            }
        }
    }

    /// The next event type of `visit`'s journey, and the visit moved on.
    fn journey(&mut self, mut visit: Visit) -> &'static str {
        let next = visit.stage;
        let kind = if next == 0 {
            // A session opens with a view, or now and then with a repeat purchase (a returning
            // buyer ordering again straight from a link) that enters no funnel.
            visit.stage = 1;
            if self.rng.random_bool(REPEAT_PURCHASE) {
                "purchase"
            } else {
                "view"
            }
        } else {
            let mut chance = CHANNELS[visit.channel].2[next - 1];
            for &(step, factor, from, to) in &self.incidents {
                if step == next && (from..to).contains(&self.clock) {
                    chance *= factor;
                }
            }
            if self.rng.random_bool(chance.clamp(0.0, 1.0)) {
                visit.stage = if next == 3 { 1 } else { next + 1 };
                TYPES[next]
            } else {
                visit.stage = 1;
                "view"
            }
        };
        visit.last = self.clock;
        self.visits.insert(self.user, visit);
        kind
    }

    /// The user of the last event (`user_id` is `u` followed by it): the Kafka key that keeps a
    /// user's clicks and purchases in the same partition of their topics.
    pub fn user(&self) -> u64 {
        self.user
    }

    /// Event time of the generator's clock (the newest in-order event).
    pub fn clock(&self) -> i64 {
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(spec: &GeneratorSpec) -> Vec<String> {
        let mut generator = Generator::new(spec);
        let mut out = Vec::new();
        let mut lines = Vec::new();
        while generator.next_into(&mut out).is_some() {
            lines.push(String::from_utf8(std::mem::take(&mut out)).unwrap());
        }
        lines
    }

    #[test]
    fn the_same_settings_give_the_same_events_and_the_count_is_exact() {
        let spec = GeneratorSpec {
            events: Some(500),
            ..GeneratorSpec::default()
        };
        let a = lines(&spec);
        assert_eq!(a.len(), 500);
        assert_eq!(a, lines(&spec));
        let other = lines(&GeneratorSpec { seed: 7, ..spec });
        assert_ne!(a, other);
    }

    #[test]
    fn events_have_the_quickstart_shape_and_bounded_disorder() {
        let spec = GeneratorSpec {
            events: Some(2_000),
            out_of_order_fraction: 0.3,
            ..GeneratorSpec::default()
        };
        let mut max = i64::MIN;
        let mut purchases = 0;
        for line in lines(&spec) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let ts = v["ts"].as_i64().unwrap();
            assert!(
                ts >= max.saturating_sub(spec.max_delay.millis_i64()),
                "disorder within max_delay"
            );
            max = max.max(ts);
            assert!(v["user_id"].as_str().unwrap().starts_with('u'));
            assert!(v["price"].as_f64().unwrap() > 0.0);
            purchases += usize::from(v["type"] == "purchase");
        }
        assert!(
            (60..=180).contains(&purchases),
            "about 6% purchases, got {purchases}"
        );
    }
}
