//! Where a task's outputs go in Kafka: the sink topics of each analytic and the dead-letter
//! topic, worked out once from the manifest.
//!
//! Pure data: this module owns the routing rule (a sink with an empty `analytics` list receives
//! every analytic; non-Kafka sinks are not its concern) and nothing else.

use tidemark_api::MarketingPipelineSpec;

/// Topics per analytic (by index in `spec.analytics`, the engine's `ResultRecord::analytic`) and
/// the dead-letter topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkRoutes {
    per_analytic: Vec<Vec<String>>,
    dead_letter: Option<String>,
}

impl SinkRoutes {
    /// Routes given directly: `per_analytic[a]` are the topics of analytic `a`.
    pub fn new(per_analytic: Vec<Vec<String>>, dead_letter: Option<String>) -> Self {
        Self {
            per_analytic,
            dead_letter,
        }
    }

    /// The Kafka routes of a pipeline: each Kafka sink's topic for the analytics it names (all
    /// when it names none), and the dead-letter topic when the dead-letter output is Kafka.
    pub fn from_spec(spec: &MarketingPipelineSpec) -> Self {
        let per_analytic = spec
            .analytics
            .iter()
            .map(|analytic| {
                spec.sinks
                    .iter()
                    .filter(|sink| {
                        sink.analytics.is_empty() || sink.analytics.contains(&analytic.name)
                    })
                    .filter_map(|sink| sink.kafka.as_ref().map(|k| k.topic.clone()))
                    .collect()
            })
            .collect();
        let dead_letter = spec
            .dead_letter
            .as_ref()
            .and_then(|d| d.kafka.as_ref())
            .map(|k| k.topic.clone());
        Self::new(per_analytic, dead_letter)
    }

    /// The topics that receive analytic `analytic`'s results (none for an unknown index).
    pub fn topics(&self, analytic: usize) -> &[String] {
        self.per_analytic.get(analytic).map_or(&[], Vec::as_slice)
    }

    /// The dead-letter topic, if dead letters go to Kafka.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: tidemark.dev/v1alpha1
kind: MarketingPipeline
metadata: {name: routes}
spec:
  kafka: {bootstrapServers: "kafka:9092"}
  sources:
    - name: clicks
      kafka: {topic: clicks}
      eventTypes: [click]
  analytics:
    - name: counts
      aggregate:
        sources: [clicks]
        keyBy: user
        window: { type: tumbling, size: 1h }
        aggregates: [{ name: clicks, op: count, source: clicks }]
    - name: other
      aggregate:
        sources: [clicks]
        keyBy: user
        window: { type: tumbling, size: 1h }
        aggregates: [{ name: clicks, op: count, source: clicks }]
  sinks:
    - name: all
      kafka: {topic: reports}
    - name: only-other
      analytics: [other]
      kafka: {topic: other-reports}
    - name: local
      stdout: {}
  deadLetter:
    kafka: {topic: dead}
"#;

    #[test]
    fn each_analytic_goes_to_the_kafka_sinks_that_name_it_or_name_none() {
        let pipeline = tidemark_api::parse_manifest(MANIFEST).unwrap();
        let routes = SinkRoutes::from_spec(&pipeline.spec);
        assert_eq!(routes.topics(0), ["reports"]);
        assert_eq!(routes.topics(1), ["reports", "other-reports"]);
        assert!(routes.topics(2).is_empty());
        assert_eq!(routes.dead_letter_topic(), Some("dead"));
    }
}
