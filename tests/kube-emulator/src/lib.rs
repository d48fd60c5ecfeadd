//! A Kubernetes API server emulator for Tidemark's tests: there is no real cluster on our machines
//! (docs/design.md, contracts), so the real operator, kubectl and helm are tested against this instead.
//!
//! It aims to behave like kube-apiserver where clients can tell: discovery, CRDs with structural
//! schemas and CEL rules, status/scale subresources, resourceVersion concurrency, server-side
//! apply with managedFields, watches with 410 relists, finalizers and garbage collection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let emulator = tidemark_kube_emulator::Emulator::start().await?;
//! let client = emulator.client();               // kube::Client
//! std::fs::write("kubeconfig", emulator.kubeconfig_yaml())?; // for kubectl/helm
//! emulator.set_unavailable(true);               // every request answers 503 now
//! # drop(client); Ok(()) }
//! ```
//!
//! Layers, from pure to I/O: [`store`] (objects, revisions, event log) → [`schema`],
//! [`cel_rules`], [`merge`], [`ssa`], [`fieldpath`], [`selector`], [`jsonpath`], [`table`],
//! [`discovery`], [`warnings`] (pure functions) → [`registry`] (API semantics) → `http` (axum) → [`server`].

pub mod cel_rules;
pub mod discovery;
pub mod error;
pub mod fieldpath;
mod http;
pub mod jsonpath;
pub mod merge;
pub mod protobuf;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod server;
pub mod ssa;
pub mod store;
pub mod table;
pub mod warnings;

pub use error::ApiError;
pub use server::{kubeconfig_yaml, Emulator, EmulatorHandle, Options, StartError};
