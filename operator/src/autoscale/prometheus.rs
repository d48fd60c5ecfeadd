//! A client of the Prometheus HTTP API: instant queries (`GET /api/v1/query`) with a timeout,
//! answers decoded into samples. Owns the wire format only; which queries to ask is
//! [`super::observe`]'s.
//!
//! One client serves every pipeline (each may name its own Prometheus URL); it keeps idle
//! connections pooled. `http://` and `https://` URLs are accepted (TLS with the system's roots).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

/// Time one query may take, connection included. An evaluation asks six at once.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read: an instant vector of a few series per worker is far below this.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// One series of an instant vector: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Labels of the series.
    pub labels: BTreeMap<String, String>,
    /// Value (may be NaN or infinite: Prometheus's own arithmetic).
    pub value: f64,
}

/// A failed query.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The URL does not parse.
    #[error("failed to build a query URL from {0:?}")]
    Url(String),
    /// No connection or no answer in time.
    #[error("failed to reach Prometheus at {0}")]
    Unreachable(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// No answer within [`QUERY_TIMEOUT`].
    #[error("failed to get an answer from Prometheus at {0} within {QUERY_TIMEOUT:?}")]
    Timeout(String),
    /// Prometheus answered with an error.
    #[error("failed query (HTTP {status}, {error_type}): {error}")]
    Query {
        /// HTTP status.
        status: u16,
        /// Prometheus's `errorType`.
        error_type: String,
        /// Prometheus's `error`.
        error: String,
    },
    /// The answer is not what the API documents.
    #[error("failed to read Prometheus's answer")]
    Decode(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The HTTP client.
#[derive(Clone, Debug)]
pub struct Prometheus {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Prometheus {
    /// A client with pooled connections.
    ///
    /// Errors: the system's TLS roots cannot be loaded.
    pub fn new() -> Result<Self, std::io::Error> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Self { client })
    }

    /// Runs instant query `promql` against the Prometheus at `base` (e.g.
    /// `http://prometheus:9090`); returns its vector or scalar as samples.
    pub async fn query(&self, base: &str, promql: &str) -> Result<Vec<Sample>, PrometheusError> {
        let url = format!(
            "{}/api/v1/query?query={}",
            base.trim_end_matches('/'),
            utf8_percent_encode(promql, NON_ALPHANUMERIC)
        );
        let uri: hyper::Uri = url.parse().map_err(|_| PrometheusError::Url(base.into()))?;
        let ask = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| PrometheusError::Unreachable(base.into(), Box::new(e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| PrometheusError::Unreachable(base.into(), e))?
                .to_bytes();
            Ok::<_, PrometheusError>((status, body))
        };
        let (status, body) = tokio::time::timeout(QUERY_TIMEOUT, ask)
            .await
            .map_err(|_| PrometheusError::Timeout(base.into()))??;
        decode(status, &body)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "camelCase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    // Range and string answers are read only to be refused.
    #[allow(dead_code)]
    Matrix(serde::de::IgnoredAny),
    #[allow(dead_code)]
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Decodes an answer of the query API (HTTP `status`, JSON `body`).
pub fn decode(status: u16, body: &[u8]) -> Result<Vec<Sample>, PrometheusError> {
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(_) if status != 200 => {
            return Err(PrometheusError::Query {
                status,
                error_type: "http".into(),
                error: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            })
        }
        Err(e) => return Err(PrometheusError::Decode(Box::new(e))),
    };
    if answer.status != "success" {
        return Err(PrometheusError::Query {
            status,
            error_type: answer.error_type.unwrap_or_default(),
            error: answer.error.unwrap_or_default(),
        });
    }
    let value = |text: &str| parse_value(text).ok_or_else(|| bad(format!("value {text:?}")));
    match answer.data {
        Some(Data::Vector(series)) => series
            .into_iter()
            .map(|s| {
                Ok(Sample {
                    labels: s.metric,
                    value: value(&s.value.1)?,
                })
            })
            .collect(),
        Some(Data::Scalar((_, text))) => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: value(&text)?,
        }]),
        Some(Data::Matrix(_) | Data::String(_)) => Err(bad("not an instant vector".into())),
        None => Err(bad("no data".into())),
    }
}

fn bad(what: String) -> PrometheusError {
    PrometheusError::Decode(what.into())
}

/// Prometheus's number text: decimals, `NaN`, `+Inf`, `-Inf`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_answer_becomes_samples_with_labels_and_special_values() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"w0:9102"},"value":[1700000000.1,"12.5"]},
            {"metric":{},"value":[1700000000.1,"NaN"]},
            {"metric":{"instance":"w1:9102"},"value":[1700000000.1,"+Inf"]}]}}"#;
        let samples = decode(200, body).expect("decoded");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["instance"], "w0:9102");
        assert_eq!(samples[0].value, 12.5);
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[2].value, f64::INFINITY);
    }

    #[test]
    fn a_scalar_answer_is_one_unlabelled_sample() {
        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(decode(200, body).expect("decoded")[0].value, 3.0);
    }

    #[test]
    fn a_promql_error_keeps_prometheus_words() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        let err = decode(400, body).expect_err("an error");
        assert_eq!(
            err.to_string(),
            "failed query (HTTP 400, bad_data): parse error at char 4"
        );
    }

    #[test]
    fn a_non_json_error_page_is_reported_with_its_status() {
        let err = decode(502, b"<html>Bad Gateway</html>").expect_err("an error");
        assert!(err.to_string().contains("HTTP 502"), "{err}");
        assert!(matches!(
            decode(200, b"nonsense"),
            Err(PrometheusError::Decode(_))
        ));
    }
}
