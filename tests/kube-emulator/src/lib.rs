//! A Kubernetes API server emulator for Tidemark's tests (DESIGN.md §9: no real cluster here).

pub mod cel_rules;
pub mod error;
pub mod fieldpath;
pub mod merge;
pub mod resource;
pub mod schema;
pub mod ssa;
pub mod store;
pub mod jsonpath;
pub mod registry;
pub mod selector;
