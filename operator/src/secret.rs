//! The hand-off token Secret of each pipeline (`<name>-handoff`): created once with a random
//! token, then left alone. The operator never reads, lists or updates Secrets — its RBAC grants
//! only `create` on them — so it cannot leak a token or any other Secret of the namespace.
//!
//! "Exists" is learnt from the API server's 409 AlreadyExists, and remembered per pipeline uid
//! for [`RECHECK`] so that a reconcile does not cost a create call each time. A pipeline that is
//! deleted and re-created has a new uid: its old Secret went with it (owner reference), and the
//! new one gets a new token. A Secret deleted by hand is re-created within [`RECHECK`]; until
//! then, workers that restart cannot mount it and wait.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use tidemark_api::MarketingPipeline;

use crate::build::{handoff_secret, BuildError, Context};
use crate::call::{call, CallError};

/// How long a pipeline's Secret is trusted to exist before the next create attempt.
pub const RECHECK: Duration = Duration::from_secs(300);
/// Random bytes of a token (hex encoded: 64 characters).
const TOKEN_BYTES: usize = 32;

/// Failed to make sure the hand-off Secret exists.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The pipeline lacks metadata the Secret needs.
    #[error("failed to build the hand-off Secret")]
    Build(#[from] BuildError),
    /// No random bytes for a token.
    #[error("failed to draw a random hand-off token")]
    Random(#[source] std::io::Error),
    /// The API server refused or failed the create.
    #[error("failed to create Secret/{0}")]
    Create(String, #[source] CallError),
}

/// Which pipelines' Secrets are known to exist, and since when.
#[derive(Debug, Default)]
pub struct HandoffSecrets {
    ensured: Mutex<HashMap<String, Instant>>,
}

impl HandoffSecrets {
    /// Creates `pipeline`'s hand-off Secret unless it is known to exist. Idempotent; a
    /// cancelled call at worst repeats the create next time (which then answers 409).
    pub async fn ensure(
        &self,
        client: &Client,
        pipeline: &MarketingPipeline,
    ) -> Result<(), SecretError> {
        let uid = pipeline.uid().unwrap_or_default();
        if self
            .lock()
            .get(&uid)
            .is_some_and(|at| at.elapsed() < RECHECK)
        {
            return Ok(());
        }
        let context = Context::new(pipeline)?;
        let secret = handoff_secret(&context, &new_token().map_err(SecretError::Random)?);
        let name = secret.name_any();
        let api: Api<Secret> = Api::namespaced(client.clone(), &context.namespace);
        match call(api.create(&PostParams::default(), &secret)).await {
            Ok(_) => {
                tracing::info!(pipeline = %context.name, secret = %name, "created the hand-off token")
            }
            Err(err) if err.code() == Some(409) => {}
            Err(err) => return Err(SecretError::Create(name, err)),
        }
        self.lock().insert(uid, Instant::now());
        Ok(())
    }

    /// Forgets `pipeline` (it was deleted).
    pub fn forget(&self, pipeline: &MarketingPipeline) {
        self.lock().remove(&pipeline.uid().unwrap_or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.ensured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A fresh token: [`TOKEN_BYTES`] bytes from the kernel's random source, hex encoded.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_characters_and_differ() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
