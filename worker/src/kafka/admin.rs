//! The partials topic of the global stage (`crate::global`): created by the workers when the
//! pipeline has a global analytic and the topic is missing.
//!
//! It gets one partition per task (any count works: a task writes to partition `task mod
//! count`) and a replication factor of three, or the number of brokers when there are fewer.
//! Records in it are only needed until the global stage has checkpointed past them, so the
//! broker's default retention suffices. A topic created beforehand (by an administrator, with
//! ACLs) is used as it is.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

use super::config::KafkaSettings;
use super::source::SourceError;

/// Replication factor of a created partials topic, at most.
const REPLICATION: usize = 3;

/// The partition count of `topic`, creating it with `partitions` partitions if it does not
/// exist. Blocks up to about `timeout`.
pub fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<u32, SourceError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .map_err(SourceError::Create)?;
    let deadline = Instant::now() + timeout;
    let mut created = false;
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| SourceError::Metadata(topic.to_owned(), e))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as u32);
        if count > 0 {
            return Ok(count);
        }
        if Instant::now() >= deadline {
            return Err(SourceError::CreateTopic(
                topic.to_owned(),
                "the topic did not appear in the metadata in time".into(),
            ));
        }
        if !created {
            let replication = metadata.brokers().len().clamp(1, REPLICATION) as i32;
            create(&admin, topic, partitions, replication, timeout)?;
            info!(
                topic,
                partitions, replication, "created the partials topic of the global stage"
            );
            created = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: u32,
    replication: i32,
    timeout: Duration,
) -> Result<(), SourceError> {
    let fail = |message: String| SourceError::CreateTopic(topic.to_owned(), message);
    let new = NewTopic::new(
        topic,
        partitions.max(1) as i32,
        TopicReplication::Fixed(replication),
    );
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let results = runtime
        .block_on(admin.create_topics([&new], &options))
        .map_err(|e| fail(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(fail(code.to_string())),
        }
    }
    Ok(())
}
