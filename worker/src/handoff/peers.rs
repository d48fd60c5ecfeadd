//! How a worker reaches its peers: the URL of each ordinal (flags, the runtime file's template
//! or the headless Service's default) and the bearer token its snapshot requests carry.

use std::collections::BTreeMap;

use super::{auth, PeerOptions, DEFAULT_PEER_URL};

/// How to reach a peer by ordinal.
#[derive(Clone, Debug)]
pub struct Peers {
    template: String,
    overrides: BTreeMap<u32, String>,
    pipeline: String,
    namespace: String,
    /// `Authorization` of every snapshot request (the pipeline's bearer token).
    authorization: Option<String>,
}

impl Peers {
    /// From the flags, the runtime file's template and the pipeline's name and namespace.
    pub fn new(
        opts: &PeerOptions,
        runtime_template: Option<&str>,
        pipeline: &str,
        namespace: &str,
    ) -> Self {
        Self {
            template: opts
                .url_template
                .clone()
                .or_else(|| runtime_template.map(str::to_owned))
                .unwrap_or_else(|| DEFAULT_PEER_URL.to_owned()),
            overrides: opts.peers.clone(),
            pipeline: pipeline.to_owned(),
            namespace: namespace.to_owned(),
            authorization: auth::client_authorization(),
        }
    }

    /// The `Authorization` value of every snapshot request, if any.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// With `token` as the bearer token of every request, instead of
    /// `$TIDEMARK_HANDOFF_TOKEN_FILE`'s.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.authorization = token.map(|t| format!("Bearer {}", t.trim()));
        self
    }

    /// The base URL of worker `ordinal`.
    pub fn url(&self, ordinal: u32) -> String {
        if let Some(url) = self.overrides.get(&ordinal) {
            return url.clone();
        }
        self.template
            .replace("{ordinal}", &ordinal.to_string())
            .replace("{pipeline}", &self.pipeline)
            .replace("{namespace}", &self.namespace)
    }
}
