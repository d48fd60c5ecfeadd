//! Operators between decoding and windows: the compiled per-source plan of filters, derived
//! fields (map) and field accessors (key selection). Analytics build on it (`crate::analytics`).

pub mod plan;

pub use plan::{
    check_condition, compile_sources, field_of_inputs, input_for, inputs_named, PlanError,
    SourcePlan, PARTITION_KEY,
};
