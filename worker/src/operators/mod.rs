//! Operators between decoding and windows: the compiled plan of filters, derived fields (map),
//! key selection and the accumulator layout of aggregations and joins; the ranking of top-N
//! analytics.

pub mod plan;
pub mod top;

pub use plan::{AnalyticPlan, Plan, PlanError, SourcePlan};
