//! Every call to the API server goes through [`call`], which bounds it with a timeout: a hung
//! connection must turn into a retry, never into a reconcile that waits forever.

use std::future::Future;
use std::time::Duration;

/// Longest time one API call may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The API server answered with an error or could not be reached.
    #[error("API call failed")]
    Api(#[from] kube::Error),
    /// No answer within [`API_TIMEOUT`].
    #[error("API call timed out after {API_TIMEOUT:?}")]
    Timeout,
}

impl CallError {
    /// HTTP status code of an API server answer, if there was one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }

    /// Whether the API server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
}

/// Runs `request` with the [`API_TIMEOUT`].
pub async fn call<T>(
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(API_TIMEOUT, request).await {
        Ok(result) => result.map_err(CallError::Api),
        Err(_elapsed) => Err(CallError::Timeout),
    }
}

/// Like [`call`], with a 404 answer as `None`.
pub async fn call_opt<T>(
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Option<T>, CallError> {
    match call(request).await {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}
