//! The Kafka sink of one task: results to each sink's topic, dead letters to the dead-letter
//! topic, idempotently (`atLeastOnce`) or in transactions tied to checkpoints (`exactlyOnce`).
//!
//! This module owns producing and the producer side of the transaction protocol. It does not
//! decide when a checkpoint happens, write it, or choose the checkpoint to restore: the task
//! loop calls [`TaskSink::prepare`] before writing its checkpoint and [`TaskSink::commit`] after
//! the checkpoint is durable; `super::recovery` picks the restore point. The protocol and why a
//! `read_committed` consumer sees each result once are in `docs/kafka.md`.
//!
//! One producer per task: with `exactlyOnce` its `transactional.id` is `<pipeline>-<task>`, so
//! a restarted worker (or a new owner after a rescale) fences any zombie producing for the same
//! task, and `init_transactions` aborts the zombie's open transaction.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, TopicPartitionList};
use tidemark_api::Delivery;

use super::config::KafkaSettings;
use super::routes::SinkRoutes;
use crate::result::Output;

/// Header naming a dead letter's reason (`malformed_json`, `late`, ...).
pub const REASON_HEADER: &str = "tidemark.reason";
/// Header naming a dead letter's source, absent when it was routed to none.
pub const SOURCE_HEADER: &str = "tidemark.source";

/// Why the sink failed. After [`SinkError::Fenced`] or [`SinkError::Fatal`] the producer is
/// unusable; after any error the task restarts from its restore point (see `recovery`).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The producer could not be created (bad settings).
    #[error("failed to create the Kafka producer")]
    Create(#[source] KafkaError),
    /// Flushing or a transaction call failed; the transaction was aborted or was never started.
    #[error("failed to {0}")]
    Transaction(&'static str, #[source] KafkaError),
    /// Another producer with this task's `transactional.id` took over: this worker is a zombie
    /// for the task and must stop it.
    #[error("failed to {0}: the producer was fenced by a newer one for the task")]
    Fenced(&'static str, #[source] KafkaError),
    /// A fatal producer error: the producer must be recreated.
    #[error("failed to {0}: fatal producer error")]
    Fatal(&'static str, #[source] KafkaError),
    /// A record could not be queued before the timeout (librdkafka's queue stayed full).
    #[error("failed to queue a record for topic {0:?}")]
    Send(String, #[source] KafkaError),
    /// The task emitted partials for the global stage but has no partials topic (a bug).
    #[error("no partials topic for the global stage's partials")]
    NoPartialsTopic,
    /// Records were not delivered before the timeout or were rejected.
    #[error("failed to deliver {count} records (first error: {first})")]
    Delivery {
        /// Records that failed.
        count: u64,
        /// The first failure's text.
        first: String,
    },
}

/// Tuning of a task sink.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// Bound of every blocking call: queueing, flush, transaction calls.
    pub timeout: Duration,
    /// How long the broker keeps a transaction open before aborting it (`transaction.timeout.ms`);
    /// it must exceed the checkpoint interval plus the time to write a checkpoint.
    pub transaction_timeout: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            transaction_timeout: Duration::from_secs(120),
        }
    }
}

/// Records delivery failures reported by librdkafka's delivery callback.
#[derive(Default)]
struct DeliveryTracker {
    failures: Mutex<(u64, Option<String>)>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            // Purged records belong to an aborted transaction: not a delivery failure.
            if matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
            ) {
                return;
            }
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            failures.0 += 1;
            failures.1.get_or_insert_with(|| error.to_string());
        }
    }
}

impl DeliveryTracker {
    fn take(&self) -> Result<(), SinkError> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::take(&mut *failures) {
            (0, _) => Ok(()),
            (count, first) => Err(SinkError::Delivery {
                count,
                first: first.unwrap_or_default(),
            }),
        }
    }
}

/// The producer of one task.
pub struct TaskSink {
    producer: BaseProducer<DeliveryTracker>,
    task: u32,
    routes: SinkRoutes,
    /// Results queued per sink (index in `routes`) since `take_written`.
    written: Vec<u64>,
    pipeline: String,
    delivery: Delivery,
    options: SinkOptions,
}

/// The `transactional.id` of a task's producer (`<pipeline>-global` for the global stage).
pub fn transactional_id(pipeline: &str, task: u32) -> String {
    format!("{pipeline}-{}", crate::global::task_label(task))
}

impl TaskSink {
    /// A sink for `task` of `pipeline`. With `exactlyOnce` it registers the task's
    /// `transactional.id` (fencing older producers and aborting their open transaction) and
    /// begins the first transaction. Blocks for at most `options.timeout`.
    pub fn new(
        settings: &KafkaSettings,
        pipeline: &str,
        task: u32,
        delivery: Delivery,
        routes: SinkRoutes,
        options: SinkOptions,
    ) -> Result<Self, SinkError> {
        let mut config = settings.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                options.timeout.as_millis().to_string(),
            );
        if delivery == Delivery::ExactlyOnce {
            config
                .set("transactional.id", transactional_id(pipeline, task))
                .set(
                    "transaction.timeout.ms",
                    options.transaction_timeout.as_millis().to_string(),
                );
        }
        let producer: BaseProducer<DeliveryTracker> = config
            .create_with_context(DeliveryTracker::default())
            .map_err(SinkError::Create)?;
        let sink = Self {
            producer,
            task,
            written: vec![0; routes.sink_count()],
            routes,
            pipeline: pipeline.to_owned(),
            delivery,
            options,
        };
        if delivery == Delivery::ExactlyOnce {
            sink.producer
                .init_transactions(sink.options.timeout)
                .map_err(|e| classify("initialize transactions", e))?;
            sink.begin()?;
        }
        Ok(sink)
    }

    /// Queues `output`'s results (to the topics routed for their analytic), dead letters
    /// (with reason and source headers, `at` as their time) and partials (to the task's
    /// partition of the partials topic). Blocks only while librdkafka's queue is full, for at
    /// most the timeout. Nothing is durable before `prepare`.
    pub fn write(&mut self, output: &Output, at: &str) -> Result<(), SinkError> {
        if !output.partials.is_empty() {
            let Some((topic, partition)) = self.routes.partials_of(self.task) else {
                return Err(SinkError::NoPartialsTopic);
            };
            for record in &output.partials {
                let record = BaseRecord::to(topic)
                    .partition(partition)
                    .key(record.key.as_bytes())
                    .payload(record.value.as_slice());
                self.send(record)?;
            }
        }
        for result in &output.results {
            for &sink in self.routes.sinks_of(result.analytic) {
                let record = BaseRecord::to(self.routes.sink_topic(sink))
                    .key(result.key.as_bytes())
                    .payload(result.value.as_slice());
                self.send(record)?;
                self.written[sink] += 1;
            }
        }
        if let Some(topic) = self.routes.dead_letter_topic() {
            for letter in &output.dead_letters {
                let value = letter.to_json(&self.pipeline, at);
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: REASON_HEADER,
                    value: Some(letter.reason.as_str()),
                });
                if let Some(source) = &letter.source {
                    headers = headers.insert(Header {
                        key: SOURCE_HEADER,
                        value: Some(source.as_str()),
                    });
                }
                let record = BaseRecord::<[u8], [u8]>::to(topic)
                    .payload(value.as_slice())
                    .headers(headers);
                self.send(record)?;
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn send<K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        mut record: BaseRecord<'_, K, [u8]>,
    ) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.options.timeout;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    // Serving delivery reports is what frees the queue.
                    self.producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((error, back)) => return Err(SinkError::Send(back.topic.to_owned(), error)),
            }
        }
    }

    /// Results queued per sink name since the last call (for `tidemark_records_out_total`).
    pub fn take_written(&mut self, mut f: impl FnMut(&str, u64)) {
        for (sink, n) in self.written.iter_mut().enumerate() {
            if *n > 0 {
                f(self.routes.sink_name(sink), std::mem::take(n));
            }
        }
    }

    /// Makes everything written since the last commit reach the brokers and checks that it
    /// was accepted. With `exactlyOnce` it also adds the task's source `offsets` to the
    /// transaction, marked with `checkpoint_id` (see [`checkpoint_marker`]), for the consumer
    /// group of `group` — the record of the transaction's outcome that recovery reads.
    ///
    /// Call it before writing checkpoint `checkpoint_id`; a failure means the checkpoint must
    /// not be written and the task restarts from its restore point.
    pub fn prepare(
        &mut self,
        checkpoint_id: u64,
        offsets: &TopicPartitionList,
        group: Option<&ConsumerGroupMetadata>,
    ) -> Result<(), SinkError> {
        self.producer
            .flush(self.options.timeout)
            .map_err(|e| classify("flush the producer", e))?;
        self.producer.context().take()?;
        if let (Delivery::ExactlyOnce, Some(group)) = (self.delivery, group) {
            let marked = offsets.clone();
            let marker = checkpoint_marker(checkpoint_id);
            for element in offsets.elements() {
                if let Some(mut e) = marked.find_partition(element.topic(), element.partition()) {
                    e.set_metadata(&marker);
                }
            }
            if marked.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(&marked, group, self.options.timeout)
                    .map_err(|e| classify("add the offsets to the transaction", e))?;
            }
        }
        Ok(())
    }

    /// Commits the transaction of the checkpoint just made durable and begins the next one
    /// (`exactlyOnce`); a no-op for `atLeastOnce`, whose records `prepare` already delivered.
    /// A retriable failure (a timeout) is retried once, with a second timeout; on any error the
    /// outcome may be unknown and recovery decides it from the committed marker.
    pub fn commit(&mut self) -> Result<(), SinkError> {
        if self.delivery != Delivery::ExactlyOnce {
            return Ok(());
        }
        let first = self.producer.commit_transaction(self.options.timeout);
        match first {
            Err(KafkaError::Transaction(ref e)) if e.is_retriable() => self
                .producer
                .commit_transaction(self.options.timeout)
                .map_err(|e| self.abort_after("commit the transaction", e))?,
            other => other.map_err(|e| self.abort_after("commit the transaction", e))?,
        }
        self.begin()
    }

    /// Aborts the open transaction and begins the next one (`exactlyOnce`); a no-op for
    /// `atLeastOnce`. The aborted records never become visible to `read_committed` consumers;
    /// the task must rewind to its restore point before writing again, or their results are
    /// lost.
    pub fn abort(&mut self) -> Result<(), SinkError> {
        if self.delivery != Delivery::ExactlyOnce {
            return Ok(());
        }
        self.producer
            .abort_transaction(self.options.timeout)
            .map_err(|e| classify("abort the transaction", e))?;
        self.begin()
    }

    fn begin(&self) -> Result<(), SinkError> {
        self.producer
            .begin_transaction()
            .map_err(|e| classify("begin a transaction", e))
    }

    /// Classifies `error` of `what`, aborting the transaction when librdkafka requires it.
    fn abort_after(&self, what: &'static str, error: KafkaError) -> SinkError {
        if let KafkaError::Transaction(e) = &error {
            if e.txn_requires_abort() {
                // Best effort: the error returned is the commit's; an abort failure leaves the
                // broker to time the transaction out.
                let _ = self.producer.abort_transaction(self.options.timeout);
            }
        }
        classify(what, error)
    }
}

/// Sorts a producer error into fenced, fatal or plain transaction failures.
fn classify(what: &'static str, error: KafkaError) -> SinkError {
    let fenced = matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    );
    let fatal = matches!(&error, KafkaError::Transaction(e) if e.is_fatal());
    if fenced {
        SinkError::Fenced(what, error)
    } else if fatal {
        SinkError::Fatal(what, error)
    } else {
        SinkError::Transaction(what, error)
    }
}

/// The offset-commit metadata that marks checkpoint `id`'s transaction.
pub fn checkpoint_marker(id: u64) -> String {
    format!("tidemark-checkpoint={id}")
}

/// The checkpoint id of a [`checkpoint_marker`], if `metadata` is one.
pub fn parse_checkpoint_marker(metadata: &str) -> Option<u64> {
    metadata.strip_prefix("tidemark-checkpoint=")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_marker_round_trips() {
        assert_eq!(parse_checkpoint_marker(&checkpoint_marker(42)), Some(42));
        assert_eq!(parse_checkpoint_marker(""), None);
        assert_eq!(parse_checkpoint_marker("tidemark-checkpoint=x"), None);
    }

    #[test]
    fn the_transactional_id_names_pipeline_and_task() {
        assert_eq!(transactional_id("quickstart", 3), "quickstart-3");
        assert_eq!(
            transactional_id("quickstart", crate::global::GLOBAL_STAGE),
            "quickstart-global"
        );
    }
}
