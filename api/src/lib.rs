//! Tidemark's API: the `MarketingPipeline` custom resource (spec and status) and its validation.
//!
//! This crate does no I/O. The operator turns these types into Kubernetes objects; the worker
//! compiles them into a streaming plan; both call [`validate`].

mod duration;
mod manifest;
pub mod metrics;
pub mod spec;
pub mod status;
mod validate;

pub use duration::{Duration, DurationError, DURATION_PATTERN};
pub use manifest::{parse_manifest, ManifestError};
pub use spec::*;
pub use status::*;
pub use validate::{placeholders, validate, Problem};

/// API group of Tidemark's resources.
pub const GROUP: &str = "tidemark.dev";
/// API version of `MarketingPipeline`.
pub const VERSION: &str = "v1alpha1";
/// Kind of the pipeline resource.
pub const KIND: &str = "MarketingPipeline";
