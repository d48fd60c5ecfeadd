//! Operators between decoding and windows: the compiled plan of filters, derived fields (map),
//! key selection and the accumulator layout of aggregations and joins.

pub mod plan;

pub use plan::{AnalyticPlan, Plan, PlanError, SourcePlan};
