//! Test inputs: pipelines parsed from YAML manifests, as a user writes them, with the metadata an
//! API server would add.

use tidemark_api::MarketingPipeline;

use super::BuildParams;

/// The seed job of `examples/quickstart.yaml`, in namespace `shop`.
pub const QUICKSTART: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata:
  name: quickstart
  namespace: shop
  uid: 5f0c6d52-0000-4000-8000-000000000001
  generation: 1
spec:
  kafka:
    bootstrapServers: kafka:9092
    tls: { secretName: kafka-ca }
    sasl: { mechanism: SCRAM-SHA-512, secretName: kafka-user }
  sources:
    - name: clicks
      kafka: { topic: click_topic }
    - name: purchases
      kafka: { topic: purchase_topic }
  analytics:
    - name: marketing_report
      join:
        left: clicks
        right: purchases
        type: fullOuter
        keyBy: user
        window: { type: tumbling, size: 1h }
        aggregates:
          - { name: clicks, op: count, source: clicks }
          - { name: purchases, op: count, source: purchases }
  sinks:
    - name: reports
      kafka: { topic: marketing_report_topic }
  checkpoint:
    storageSize: 5Gi
    storageClassName: fast-ssd
  parallelism: 2
"#;

/// A pipeline whose only source is the built-in generator: no Kafka, no secrets.
pub const GENERATOR: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata:
  name: demo
  namespace: default
  uid: 5f0c6d52-0000-4000-8000-000000000002
  generation: 3
spec:
  sources:
    - name: events
      generator: { rate: 100 }
  analytics:
    - name: per_user
      aggregate:
        sources: [events]
        keyBy: user
        window: { type: tumbling, size: 1m }
        aggregates: [{ name: events, op: count }]
  sinks:
    - name: out
      stdout: {}
"#;

/// Parses a fixture (panics on a broken fixture: this is test code).
pub fn pipeline(yaml: &str) -> MarketingPipeline {
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

/// Build parameters with `parallelism` workers, epoch 1, no ServiceMonitor.
pub fn params(parallelism: i32) -> BuildParams {
    BuildParams {
        default_image: crate::names::DEFAULT_WORKER_IMAGE.into(),
        parallelism,
        assignment_epoch: 1,
        handoff: None,
        service_monitor: false,
        network_policy: true,
        scrape_namespaces: Vec::new(),
    }
}
