//! Names of the worker metrics that the operator reads back from Prometheus (the autoscaler
//! and the status's lag and last checkpoint). Defined once here, because two crates must agree
//! on them: the worker exports them (`tidemark_worker::metrics` re-exports these constants) and
//! the operator queries them. The worker's other metrics are the worker's business.

/// Counter of records received, by `source`.
pub const RECORDS_IN_TOTAL: &str = "tidemark_records_in_total";
/// Gauge of records behind the end of a partition, by `source` and `partition`.
pub const SOURCE_LAG: &str = "tidemark_source_lag";
/// Gauge of the share of wall time the worker's task threads spent processing, 0..1.
pub const BUSY_RATIO: &str = "tidemark_busy_ratio";
/// Gauge of the Unix time of the worker's last successful checkpoint.
pub const CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "tidemark_checkpoint_last_success_timestamp_seconds";
/// Counter of failed checkpoint writes of the worker.
pub const CHECKPOINT_FAILURES_TOTAL: &str = "tidemark_checkpoint_failures_total";
/// Counter of corrupt checkpoints the worker found (and skipped) when restoring.
pub const CHECKPOINT_CORRUPT_TOTAL: &str = "tidemark_checkpoint_corrupt_total";
/// Gauge of the pipeline's task count: the partition count shared by its input topics.
pub const PIPELINE_TASKS: &str = "tidemark_pipeline_tasks";
/// The constant label on every worker series: the pipeline's name.
pub const PIPELINE_LABEL: &str = "pipeline";
