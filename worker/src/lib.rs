//! Tidemark's worker: the windowed streaming engine, its sources and sinks, and the local runner.

pub mod decode;
pub mod event;
pub mod window;
