//! The bearer token of the snapshot hand-off: `GET /v1/tasks/{t}/snapshot` serves a task's
//! whole state (user ids, revenue), so only the pipeline's own workers may call it.
//!
//! The operator creates one random token per pipeline in a Secret, mounts it into every worker
//! and names the file in `$TIDEMARK_HANDOFF_TOKEN_FILE`. The serving side ([`SnapshotAuth`])
//! requires `Authorization: Bearer <token>` and compares in constant time; the fetching side
//! ([`client_authorization`]) sends it. The file is read once at start: the token changes only
//! when the pipeline is re-created, and then every pod is too.
//!
//! Without the variable (a local or embedded run, where no peer exists) the route is open. With
//! the variable set but the file missing or empty, every request is refused: a misconfigured pod
//! fails closed, never open.
//!
//! Owns the token check and the refusal counts; not the route (`crate::http`) nor the request
//! (`super::client`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable naming the token file (set by the operator on worker pods).
pub const TOKEN_FILE_ENV: &str = "TIDEMARK_HANDOFF_TOKEN_FILE";
/// Metric counting refused snapshot requests, by reason.
pub const REFUSED_METRIC: &str = "tidemark_handoff_refused_total";

/// What a request must present.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// No token configured: the route is open.
    Nothing,
    /// This token.
    Token(Vec<u8>),
    /// A token file is configured but cannot be used: refuse everything.
    Unusable(String),
}

/// Why a snapshot request was refused (each a label of [`REFUSED_METRIC`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not this pipeline's.
    Wrong,
    /// This worker has no usable token and refuses every request.
    Unconfigured,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Wrong => "wrong_token",
            Refusal::Unconfigured => "no_token_configured",
        }
    }
}

/// The serving side's token check and refusal counts.
#[derive(Debug)]
pub struct SnapshotAuth {
    expected: Expected,
    refused: [AtomicU64; 3],
}

impl SnapshotAuth {
    fn new(expected: Expected) -> Self {
        Self {
            expected,
            refused: Default::default(),
        }
    }

    /// An open route (local runs and tests without a peer to protect against).
    pub fn open() -> Self {
        Self::new(Expected::Nothing)
    }

    /// Requires `token`.
    pub fn with_token(token: &str) -> Self {
        Self::new(Expected::Token(token.trim().as_bytes().to_vec()))
    }

    /// Requires the token in `path` (surrounding whitespace ignored); refuses everything when
    /// the file cannot be read or is empty.
    pub fn from_file(path: &Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Self::with_token(&text),
            Ok(_) => Self::new(Expected::Unusable(format!("{} is empty", path.display()))),
            Err(err) => Self::new(Expected::Unusable(format!(
                "failed to read {}: {err}",
                path.display()
            ))),
        }
    }

    /// As `$TIDEMARK_HANDOFF_TOKEN_FILE` says: [`Self::from_file`], or open when unset.
    pub fn from_env() -> Self {
        let auth = match std::env::var_os(TOKEN_FILE_ENV) {
            Some(path) if !path.is_empty() => Self::from_file(Path::new(&path)),
            _ => Self::open(),
        };
        match &auth.expected {
            Expected::Nothing => {
                tracing::info!("no hand-off token configured: snapshots are served to anyone")
            }
            Expected::Unusable(why) => {
                tracing::error!(%why, "hand-off token unusable: every snapshot request is refused")
            }
            Expected::Token(_) => {}
        }
        auth
    }

    /// Checks an `Authorization` header value; a refusal is counted.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let result = match &self.expected {
            Expected::Nothing => Ok(()),
            Expected::Unusable(_) => Err(Refusal::Unconfigured),
            Expected::Token(expected) => match authorization.and_then(bearer) {
                None => Err(Refusal::Missing),
                Some(given) if constant_time_eq(given.as_bytes(), expected) => Ok(()),
                Some(_) => Err(Refusal::Wrong),
            },
        };
        if let Err(refusal) = result {
            self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Refusals so far with `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// The refusal counter in Prometheus' text format (appended to `/metrics`).
    pub fn render_metrics(&self) -> String {
        let mut text = format!(
            "# HELP {REFUSED_METRIC} Snapshot hand-off requests refused for lack of the pipeline's token.\n\
             # TYPE {REFUSED_METRIC} counter\n"
        );
        for reason in [Refusal::Missing, Refusal::Wrong, Refusal::Unconfigured] {
            text.push_str(&format!(
                "{REFUSED_METRIC}{{reason=\"{}\"}} {}\n",
                reason.label(),
                self.refused(reason)
            ));
        }
        text
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `a == b`, in time that depends only on the lengths (the token's length is no
/// secret: it is always 64 hex characters).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The `Authorization` value a fetching worker sends, from `$TIDEMARK_HANDOFF_TOKEN_FILE`
/// (`None` when unset or unreadable: the peer then refuses, and the fetch is retried and
/// logged with the peer's 401).
pub fn client_authorization() -> Option<String> {
    let path = std::env::var_os(TOKEN_FILE_ENV).filter(|p| !p.is_empty())?;
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Some(format!("Bearer {}", text.trim())),
        Ok(_) | Err(_) => {
            tracing::error!(path = ?path, "hand-off token unreadable: peers will refuse snapshot requests");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_bearer_token_passes_and_others_are_refused_and_counted() {
        let auth = SnapshotAuth::with_token("s3cret\n");
        assert_eq!(auth.check(Some("Bearer s3cret")), Ok(()));
        assert_eq!(auth.check(Some("bearer  s3cret ")), Ok(()));
        assert_eq!(auth.check(None), Err(Refusal::Missing));
        assert_eq!(auth.check(Some("Basic s3cret")), Err(Refusal::Missing));
        assert_eq!(auth.check(Some("Bearer s3creT")), Err(Refusal::Wrong));
        assert_eq!(auth.check(Some("Bearer s3cret2")), Err(Refusal::Wrong));
        assert_eq!(auth.refused(Refusal::Missing), 2);
        assert_eq!(auth.refused(Refusal::Wrong), 2);
        assert!(auth
            .render_metrics()
            .contains("tidemark_handoff_refused_total{reason=\"wrong_token\"} 2\n"));
    }

    #[test]
    fn a_configured_but_missing_or_empty_token_file_refuses_everything() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = SnapshotAuth::from_file(&dir.path().join("token"));
        assert_eq!(missing.check(Some("Bearer x")), Err(Refusal::Unconfigured));
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        let empty = SnapshotAuth::from_file(&dir.path().join("empty"));
        assert_eq!(empty.check(None), Err(Refusal::Unconfigured));
        std::fs::write(dir.path().join("token"), "abc\n").expect("write");
        let good = SnapshotAuth::from_file(&dir.path().join("token"));
        assert_eq!(good.check(Some("Bearer abc")), Ok(()));
    }

    #[test]
    fn constant_time_comparison_agrees_with_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
