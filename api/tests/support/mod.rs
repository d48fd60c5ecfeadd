//! What the validation tests share: a manifest's problems as text.

use tidemark_api::{parse_manifest, ManifestError};

/// Every problem `text` has, as `path: message` lines (none for a valid manifest).
pub fn problems(text: &str) -> Vec<String> {
    match parse_manifest(text) {
        Ok(_) => Vec::new(),
        Err(ManifestError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}
