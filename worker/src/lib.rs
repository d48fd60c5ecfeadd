//! Tidemark's worker: the windowed streaming engine, its sources and sinks, and the local runner.

pub mod analytics;
pub mod checkpoint;
pub mod decode;
pub mod embedded;
pub mod engine;
pub mod event;
pub mod expr;
pub mod global;
pub mod handoff;
pub mod health;
pub mod http;
pub mod kafka;
pub mod local;
pub mod metrics;
pub mod operators;
pub mod partials;
pub mod plan;
pub mod privacy;
pub mod quality;
pub mod restore;
pub mod result;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod watermark;
pub mod window;
