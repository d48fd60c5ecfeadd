//! The uplift report of an action over one report window: candidates and what became of them,
//! conversions and revenue within the attribution window in the treated and holdout groups,
//! and the uplift (difference of conversion rates) with a 95 % confidence interval.

use std::io::Write as _;

use crate::window::codec::{DecodeError, Reader, Writer};

/// What a report window has counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Candidates decided.
    pub candidates: u64,
    /// Sent an action.
    pub sent: u64,
    /// Kept back as holdout.
    pub holdout: u64,
    /// Refused by the cooldown.
    pub cooldown: u64,
    /// Refused by the budget.
    pub budget: u64,
    /// Sent, then converted within the attribution window.
    pub converted_sent: u64,
    /// Held out, then converted within the attribution window.
    pub converted_holdout: u64,
    /// Revenue of the sent group within the attribution window.
    pub revenue_sent: f64,
    /// Revenue of the holdout group within the attribution window.
    pub revenue_holdout: f64,
}

/// A difference of two proportions with its 95 % confidence interval (Wald, unpooled).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Uplift {
    /// Conversion rate of the treated group.
    pub treated: f64,
    /// Conversion rate of the holdout group.
    pub holdout: f64,
    /// `treated - holdout`.
    pub diff: f64,
    /// Lower bound of the interval.
    pub low: f64,
    /// Upper bound of the interval.
    pub high: f64,
}

/// The uplift of `x1` conversions among `n1` treated over `x0` among `n0` held out; `None`
/// when a group is empty.
pub fn two_proportion(x1: u64, n1: u64, x0: u64, n0: u64) -> Option<Uplift> {
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let (p1, p0) = (x1 as f64 / n1 as f64, x0 as f64 / n0 as f64);
    let se = (p1 * (1.0 - p1) / n1 as f64 + p0 * (1.0 - p0) / n0 as f64).sqrt();
    let diff = p1 - p0;
    Some(Uplift {
        treated: p1,
        holdout: p0,
        diff,
        low: diff - 1.959_963_984_540_054 * se,
        high: diff + 1.959_963_984_540_054 * se,
    })
}

impl Tally {
    /// The report's values: `,"record":"uplift",...`.
    pub fn write_values(&self, v: &mut Vec<u8>) {
        let _ = write!(
            v,
            ",\"record\":\"uplift\",\"candidates\":{},\"sent\":{},\"holdout\":{},\
             \"refused_cooldown\":{},\"refused_budget\":{},\"converted_sent\":{},\
             \"converted_holdout\":{}",
            self.candidates,
            self.sent,
            self.holdout,
            self.cooldown,
            self.budget,
            self.converted_sent,
            self.converted_holdout
        );
        let num = |v: &mut Vec<u8>, name: &str, x: Option<f64>| {
            let _ = match x.filter(|x| x.is_finite()) {
                Some(x) => write!(v, ",\"{name}\":{x}"),
                None => write!(v, ",\"{name}\":null"),
            };
        };
        let rate = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
        num(v, "rate_sent", rate(self.converted_sent, self.sent));
        num(
            v,
            "rate_holdout",
            rate(self.converted_holdout, self.holdout),
        );
        let u = two_proportion(
            self.converted_sent,
            self.sent,
            self.converted_holdout,
            self.holdout,
        );
        num(v, "uplift", u.map(|u| u.diff));
        num(v, "uplift_low", u.map(|u| u.low));
        num(v, "uplift_high", u.map(|u| u.high));
        let per = |r: f64, n: u64| (n > 0).then(|| r / n as f64);
        num(
            v,
            "revenue_per_user_sent",
            per(self.revenue_sent, self.sent),
        );
        num(
            v,
            "revenue_per_user_holdout",
            per(self.revenue_holdout, self.holdout),
        );
    }

    /// Appends the tally.
    pub fn write(&self, w: &mut Writer) {
        for n in [
            self.candidates,
            self.sent,
            self.holdout,
            self.cooldown,
            self.budget,
            self.converted_sent,
            self.converted_holdout,
        ] {
            w.u64(n);
        }
        w.u64(self.revenue_sent.to_bits());
        w.u64(self.revenue_holdout.to_bits());
    }

    /// Reads what [`Tally::write`] wrote.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            candidates: r.u64()?,
            sent: r.u64()?,
            holdout: r.u64()?,
            cooldown: r.u64()?,
            budget: r.u64()?,
            converted_sent: r.u64()?,
            converted_holdout: r.u64()?,
            revenue_sent: f64::from_bits(r.u64()?),
            revenue_holdout: f64::from_bits(r.u64()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_of_a_known_difference() {
        // 60/100 against 40/100: diff 0.2, se = sqrt(0.24/100 + 0.24/100) = 0.069282.
        let u = two_proportion(60, 100, 40, 100).unwrap();
        assert!((u.diff - 0.2).abs() < 1e-12);
        assert!((u.low - (0.2 - 1.959964 * 0.069282)).abs() < 1e-5);
        assert!((u.high - (0.2 + 1.959964 * 0.069282)).abs() < 1e-5);
        assert_eq!(two_proportion(1, 0, 1, 3), None);
    }
}
