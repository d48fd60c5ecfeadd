//! Tidemark's Kubernetes operator: turns each `MarketingPipeline` into running workers.
//!
//! A reconcile runs in steps, each a module: [`dereference`] (reads the cluster, the only I/O
//! before writing), [`validate`] (pure), [`build`] (pure, one file per Kubernetes kind),
//! [`apply`] (server-side apply, ordered, orphans deleted) and [`status`] (pure); [`rescale`]
//! (pure) steps a change of parallelism through the workers' snapshot hand-off. [`controller`]
//! wires the steps into kube-runtime; [`leader`], [`metrics`] and [`http`] are the process
//! around it. The binary's `main` only parses flags and calls [`run`].
//!
//! Modules are layered, with no import cycle: [`mod@run`] uses [`controller`], which uses
//! [`reconcile`]; [`reconcile`] uses the steps ([`status`], [`autoscale`], …), never the reverse.
//! What several layers share sits below them all: the reconcile [`context`], the [`conditions`]
//! helpers, and the one-line error text of [`message`].

pub mod apply;
pub mod autoscale;
pub mod build;
pub mod call;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod dereference;
pub mod events;
pub mod http;
pub mod leader;
pub mod message;
pub mod metrics;
pub mod names;
pub mod rbac;
pub mod reconcile;
pub mod rescale;
pub mod run;
pub mod secret;
pub mod status;
pub mod trigger;
pub mod validate;

pub use run::{run, RunConfig};
