//! Reading a `MarketingPipeline` manifest from YAML text (no file I/O).

use kube::Resource;

use crate::{validate, MarketingPipeline, Problem};

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML of the right shape; the message names the place.
    #[error("failed to parse manifest: {0}")]
    Parse(String),
    /// Well-formed but invalid; one problem per field.
    #[error("invalid manifest: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

/// Parses and validates a manifest: `apiVersion: tidemark.dev/v1alpha1`, `kind: MarketingPipeline`,
/// `metadata.name` and a valid `spec`.
pub fn parse_manifest(text: &str) -> Result<MarketingPipeline, ManifestError> {
    let envelope: Envelope =
        serde_saphyr::from_str(text).map_err(|err| ManifestError::Parse(err.to_string()))?;
    let pipeline: MarketingPipeline =
        serde_saphyr::from_str(text).map_err(|err| ManifestError::Parse(err.to_string()))?;
    let mut problems = Vec::new();
    let api_version = MarketingPipeline::api_version(&());
    if envelope.api_version.as_deref() != Some(api_version.as_ref()) {
        problems.push(Problem {
            path: "apiVersion".into(),
            message: format!("must be {api_version}"),
        });
    }
    if envelope.kind.as_deref() != Some(crate::KIND) {
        problems.push(Problem {
            path: "kind".into(),
            message: "must be MarketingPipeline".into(),
        });
    }
    match pipeline.metadata.name.as_deref() {
        Some(name) if is_dns_label(name) => {}
        _ => problems.push(Problem {
            path: "metadata.name".into(),
            message: "must be a DNS label (lowercase letters, digits and '-', at most 63)".into(),
        }),
    }
    problems.extend(validate(&pipeline.spec));
    if problems.is_empty() {
        Ok(pipeline)
    } else {
        Err(ManifestError::Invalid(problems))
    }
}

/// The type fields of a manifest, which the generated resource type does not keep.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
