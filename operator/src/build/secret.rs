//! The Secret holding a pipeline's hand-off token: the bearer token workers present to each
//! other on `GET /v1/tasks/{t}/snapshot`. Owned by the pipeline, so it goes with it; its name
//! carries the pipeline's uid, so a re-created pipeline gets a new Secret and token even while
//! the garbage collector still removes the old one.
//!
//! Only the shape is built here (pure); the token is drawn and the Secret created, never read
//! or updated, by [`crate::secret`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::Context;
use crate::names::{handoff_secret_name, HANDOFF_TOKEN_KEY};

/// The hand-off Secret of `context`'s pipeline holding `token`.
pub fn handoff_secret(context: &Context, token: &str) -> Secret {
    Secret {
        metadata: context.metadata(handoff_secret_name(&context.name, context.uid())),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            HANDOFF_TOKEN_KEY.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        immutable: Some(true),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{pipeline, QUICKSTART};

    #[test]
    fn the_secret_is_owned_by_the_pipeline_and_holds_the_token() {
        let p = pipeline(QUICKSTART);
        let context = Context::new(&p).expect("context");
        let secret = handoff_secret(&context, "abc");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("quickstart-handoff-5f0c6d52")
        );
        let owner = &secret.metadata.owner_references.expect("owner")[0];
        assert_eq!(owner.uid, p.metadata.uid.clone().expect("uid"));
        assert_eq!(owner.controller, Some(true));
        assert_eq!(secret.data.expect("data")["token"].0, b"abc");
    }
}
