//! The emulator's one error type, [`ApiError`], and its rendering as a `meta.k8s.io/v1 Status`.
//!
//! Every failure a client can observe is one of the reasons kube-apiserver uses, with the same
//! HTTP code and message shape, because kube-rs and kubectl branch on `reason`/`code` (for example
//! a 409 `AlreadyExists` versus a 409 `Conflict`, or a 410 `Expired` during a watch). This module
//! does not decide *when* an error happens; the registry and HTTP layers do.

use serde_json::{json, Value};

/// A failed API request, as the client will see it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The object or the resource type does not exist (404 `NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// A create named an object that exists (409 `AlreadyExists`).
    #[error("{0}")]
    AlreadyExists(String),
    /// Optimistic concurrency or server-side apply ownership conflict (409 `Conflict`).
    #[error("{0}")]
    Conflict(String),
    /// The object failed validation (422 `Invalid`); `causes` are (field, message) pairs.
    #[error("{message}")]
    Invalid {
        /// The full human message, `Kind.group "name" is invalid: path: reason, ...`.
        message: String,
        /// One entry per rejected field.
        causes: Vec<(String, String)>,
    },
    /// The request itself is malformed (400 `BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// The verb is not supported on this path (405 `MethodNotAllowed`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The content type of a patch is not one we accept (415 `UnsupportedMediaType`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A watch asked for a resourceVersion older than the event log holds (410 `Expired`).
    #[error("{0}")]
    Gone(String),
    /// Fault injection or shutdown (503 `ServiceUnavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an impossible state in the emulator (500 `InternalError`).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code kube-apiserver uses for this error.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::AlreadyExists(_) | ApiError::Conflict(_) => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Gone(_) => 410,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `Status.reason` string kube-apiserver uses for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "NotFound",
            ApiError::AlreadyExists(_) => "AlreadyExists",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Gone(_) => "Expired",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// Renders the error as a `meta.k8s.io/v1 Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let ApiError::Invalid { causes, .. } = self {
            let causes: Vec<Value> = causes
                .iter()
                .map(|(field, message)| {
                    json!({"reason": "FieldValueInvalid", "message": message, "field": field})
                })
                .collect();
            status["details"] = json!({ "causes": causes });
        }
        status
    }

    /// `"<resource>.<group> \"<name>\" not found"`, kube-apiserver's NotFound wording.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        ApiError::NotFound(format!(
            "{} \"{name}\" not found",
            qualified(resource, group)
        ))
    }

    /// `"<resource>.<group> \"<name>\" already exists"`.
    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        ApiError::AlreadyExists(format!(
            "{} \"{name}\" already exists",
            qualified(resource, group)
        ))
    }

    /// The optimistic-concurrency conflict message kubectl and kube-rs users know.
    pub fn stale(resource: &str, group: &str, name: &str) -> Self {
        ApiError::Conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            qualified(resource, group)
        ))
    }

    /// A 422 listing every `(field, reason)` like kube-apiserver:
    /// `Kind.group "name" is invalid: [a: reason, b: reason]`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let details: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let joined = if details.len() == 1 {
            details.join("")
        } else {
            format!("[{}]", details.join(", "))
        };
        ApiError::Invalid {
            message: format!("{what} \"{name}\" is invalid: {joined}"),
            causes,
        }
    }
}

/// `plural.group`, or just `plural` for the core group.
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_lists_every_field_and_reason() {
        let err = ApiError::invalid(
            "MarketingPipeline",
            "tidemark.dev",
            "x",
            vec![
                ("spec.a".into(), "Required value".into()),
                (
                    "spec.b".into(),
                    "Invalid value: 3: must be less than 2".into(),
                ),
            ],
        );
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(
            status["message"],
            "MarketingPipeline.tidemark.dev \"x\" is invalid: [spec.a: Required value, \
             spec.b: Invalid value: 3: must be less than 2]"
        );
        assert_eq!(status["details"]["causes"][1]["field"], "spec.b");
    }

    #[test]
    fn not_found_names_the_resource_like_the_apiserver() {
        let err = ApiError::not_found("configmaps", "", "cm");
        assert_eq!(err.to_string(), "configmaps \"cm\" not found");
        assert_eq!(err.code(), 404);
    }
}
