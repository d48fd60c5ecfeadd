//! Where a task's outputs go in Kafka: the sink topics of each analytic and the dead-letter
//! topic, worked out once from the manifest.
//!
//! Pure data: this module owns the routing rule (a sink with an empty `analytics` list receives
//! every analytic; non-Kafka sinks are not its concern) and nothing else.

use tidemark_api::MarketingPipelineSpec;

/// Sinks per analytic (by index in `spec.analytics`, the engine's `ResultRecord::analytic`) and
/// the dead-letter topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkRoutes {
    /// Every Kafka sink: (topic, sink name).
    sinks: Vec<(String, String)>,
    /// Per analytic, the indexes in `sinks` that receive it.
    per_analytic: Vec<Vec<usize>>,
    dead_letter: Option<String>,
    /// The partials topic of the global stage and its partition count.
    partials: Option<(String, u32)>,
}

impl SinkRoutes {
    /// Routes given directly: `per_analytic[a]` are the topics of analytic `a`, each its own
    /// sink named after the topic.
    pub fn new(per_analytic: Vec<Vec<String>>, dead_letter: Option<String>) -> Self {
        let mut routes = Self {
            dead_letter,
            ..Self::default()
        };
        for topics in per_analytic {
            let indexes = topics
                .into_iter()
                .map(|topic| routes.sink(topic.clone(), topic))
                .collect();
            routes.per_analytic.push(indexes);
        }
        routes
    }

    /// The Kafka routes of a pipeline: each Kafka sink's topic for the analytics it names (all
    /// when it names none), the quality report's sink (as analytic index
    /// `spec.analytics.len()`), and the dead-letter topic when the dead-letter output is Kafka.
    pub fn from_spec(spec: &MarketingPipelineSpec) -> Self {
        let mut routes = Self {
            dead_letter: spec
                .dead_letter
                .as_ref()
                .and_then(|d| d.kafka.as_ref())
                .map(|k| k.topic.clone()),
            ..Self::default()
        };
        for analytic in &spec.analytics {
            let indexes = spec
                .sinks
                .iter()
                .filter(|sink| sink.analytics.is_empty() || sink.analytics.contains(&analytic.name))
                .filter_map(|sink| {
                    let topic = sink.kafka.as_ref()?.topic.clone();
                    Some(routes.sink(topic, sink.name.clone()))
                })
                .collect();
            routes.per_analytic.push(indexes);
        }
        // The quality report's records carry the index after the last analytic and go to the
        // one sink it names, whatever analytics that sink lists.
        if let Some(report) = &spec.data_quality.report {
            let indexes = spec
                .sinks
                .iter()
                .filter(|sink| sink.name == report.sink)
                .filter_map(|sink| {
                    let topic = sink.kafka.as_ref()?.topic.clone();
                    Some(routes.sink(topic, sink.name.clone()))
                })
                .collect();
            routes.per_analytic.push(indexes);
        }
        routes
    }

    fn sink(&mut self, topic: String, name: String) -> usize {
        let sink = (topic, name);
        match self.sinks.iter().position(|s| *s == sink) {
            Some(i) => i,
            None => {
                self.sinks.push(sink);
                self.sinks.len() - 1
            }
        }
    }

    /// The sinks that receive analytic `analytic`'s results, as indexes into
    /// [`SinkRoutes::sink_topic`] and [`SinkRoutes::sink_name`] (none for an unknown index).
    pub fn sinks_of(&self, analytic: usize) -> &[usize] {
        self.per_analytic.get(analytic).map_or(&[], Vec::as_slice)
    }

    /// The topic of sink `sink`.
    pub fn sink_topic(&self, sink: usize) -> &str {
        &self.sinks[sink].0
    }

    /// The name of sink `sink` (its `tidemark_records_out_total` label).
    pub fn sink_name(&self, sink: usize) -> &str {
        &self.sinks[sink].1
    }

    /// Number of sinks.
    pub fn sink_count(&self) -> usize {
        self.sinks.len()
    }

    /// The topics that receive analytic `analytic`'s results.
    pub fn topics(&self, analytic: usize) -> Vec<&str> {
        self.sinks_of(analytic)
            .iter()
            .map(|&s| self.sink_topic(s))
            .collect()
    }

    /// The dead-letter topic, if dead letters go to Kafka.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    /// The same routes with the global stage's partials going to `topic` of `partitions`
    /// partitions (`crate::global`).
    pub fn with_partials(mut self, topic: String, partitions: u32) -> Self {
        self.partials = Some((topic, partitions.max(1)));
        self
    }

    /// The partials topic and the partition of task `task` in it: every record of a task goes
    /// to one partition, in order.
    pub fn partials_of(&self, task: u32) -> Option<(&str, i32)> {
        let (topic, partitions) = self.partials.as_ref()?;
        Some((topic, (task % partitions) as i32))
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
        let names: Vec<&str> = routes
            .sinks_of(1)
            .iter()
            .map(|&s| routes.sink_name(s))
            .collect();
        assert_eq!(names, ["all", "only-other"]);
    }
}
