//! The built-in clickstream generator: deterministic synthetic events with Zipf-skewed users and
//! products, a configurable share of out-of-order events, and an event-time clock that can run
//! faster than the wall clock.
//!
//! Events are the quickstart's JSON objects
//! `{"type", "user_id", "product_id", "category", "price", "ts"}` (`ts` in epoch milliseconds).
//! The same settings give the same events, byte for byte.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rand_pcg::Pcg64Mcg;
use tidemark_api::GeneratorSpec;

/// Product categories, chosen per product.
pub const CATEGORIES: [&str; 8] = [
    "audio", "books", "fashion", "garden", "grocery", "home", "sports", "toys",
];

/// Event types with their weights in percent.
const TYPES: [(&str, u32); 4] = [
    ("view", 55),
    ("click", 28),
    ("add_to_cart", 11),
    ("purchase", 6),
];

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
}

impl Generator {
    /// A generator with `spec`'s settings.
    pub fn new(spec: &GeneratorSpec) -> Self {
        let zipf = |n: u64| {
            Zipf::new(n.max(1) as f64, spec.skew.max(0.0)).expect("n >= 1 and skew >= 0 are valid")
        };
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
        }
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
        self.clock += self.step;
        let user = self.users.sample(&mut self.rng) as u64;
        self.user = user;
        let product = self.products.sample(&mut self.rng) as u64;
        let mut pick = self.rng.random_range(0..100u32);
        let kind = TYPES
            .iter()
            .find(|(_, weight)| {
                let hit = pick < *weight;
                pick = pick.saturating_sub(*weight);
                hit
            })
            .map_or("view", |(name, _)| name);
        let time = if self.out_of_order > 0.0 && self.rng.random_bool(self.out_of_order) {
            // Never before the start: the first window is the start's.
            (self.clock - self.rng.random_range(0..=self.max_delay)).max(self.start)
        } else {
            self.clock
        };
        let mix = product.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let category = CATEGORIES[(mix >> 59) as usize % CATEGORIES.len()];
        let cents = 199 + (mix >> 20) % 49_800;
        let _ = write!(
            out,
            r#"{{"type":"{kind}","user_id":"u{user}","product_id":"p{product}","category":"{category}","price":{}.{:02},"ts":{time}}}"#,
            cents / 100,
            cents % 100
        );
        Some(kind)
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
