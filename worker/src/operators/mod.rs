//! Operators between decoding and windows: the compiled plan of filters, derived fields (map),
//! key selection; each analytic's kind is compiled by `crate::analytics`.

pub mod plan;

pub use plan::{AnalyticPlan, Plan, PlanError, SourcePlan};
