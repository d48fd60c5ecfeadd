//! Kafka I/O of a worker: client settings, static task assignment, the source consumer, the
//! result sink and the choice of restore point under exactly-once.
//!
//! This module owns talking to Kafka. It does not own the task loop (threads per task, the
//! checkpoint schedule and recovery are the worker's; `docs/kafka.md` has the protocol they
//! follow), checkpoint files (`crate::checkpoint`) or metrics registration (`crate::metrics`).

pub mod admin;
pub mod assignment;
pub mod config;
pub mod recovery;
pub mod routes;
pub mod sink;
pub mod source;

pub use assignment::{co_partitioned, ordinal_from_pod_name, Assignment, AssignmentError};
pub use config::{ConfigError, KafkaSettings, Mounts};
pub use recovery::{restore_point, RecoveryError, RestorePoint};
pub use routes::SinkRoutes;
pub use sink::{SinkError, SinkOptions, TaskSink};
pub use source::{
    GlobalInput, KafkaRecord, KafkaSource, PartitionLag, SourceError, SourceOffsets, SourceOptions,
    SourceTopic, TaskInput, GLOBAL_SOURCE,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_sinks_can_move_to_the_threads_that_run_tasks() {
        fn movable<T: Send>() {}
        movable::<KafkaSource>();
        movable::<TaskInput>();
        movable::<TaskSink>();
    }
}
