//! Operators between decoding and windows: the compiled per-source plan of filters, derived
//! fields (map) and field accessors (key selection). Analytics build on it (`crate::analytics`).

pub mod plan;

pub use plan::{compile_sources, input_for, PlanError, SourcePlan, PARTITION_KEY};
