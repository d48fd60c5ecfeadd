//! Helpers of Tidemark's end-to-end tests: the real `tidemark-operator` binary as a child process
//! against the Kubernetes API emulator (`tidemark-kube-emulator`) through a kubeconfig, as it
//! would run against a cluster; and the real `kubectl` and `helm` (installed by
//! `.ci/tools/kube.sh`).
//!
//! The emulator stores objects and runs the API machinery (schemas, CEL, SSA, watches, garbage
//! collection) but no kubelet or StatefulSet controller: tests that need worker readiness write
//! the StatefulSet status themselves, as the StatefulSet controller would.

pub mod cluster;
pub mod fixtures;
pub mod operator;
pub mod prometheus;
pub mod tools;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Path of a file of the repository.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}
