//! The distributed worker: the pipeline's owned tasks over Kafka, with checkpoints on the pod's
//! volume, recovery on start, and the HTTP server (`/metrics`, `/healthz`, `/readyz`, snapshots).
//!
//! This module wires the parts; it owns the loop and the checkpoint schedule, not Kafka
//! (`crate::kafka`), the file format (`crate::checkpoint`) or the engine (`crate::engine`).
//!
//! The loop runs every owned task on one thread, in turn (a pool of task threads is the next
//! step; the task state is already single-threaded and `Send`). Per checkpoint, per task:
//! snapshot the state and the offsets of the records it has taken, `prepare` the sink (flush; under
//! exactly-once, add the offsets with the checkpoint marker to the open transaction), write the
//! checkpoint durably, then `commit` (exactly-once: commit the transaction and begin the next).
//! `docs/kafka.md` argues why a restart from [`crate::kafka::restore_point`] loses and doubles
//! nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_api::{Delivery, MarketingPipeline};
use tracing::{info, warn};

use crate::checkpoint::{CheckpointError, CheckpointStore, Metadata};
use crate::engine::{RestoreError, Task};
use crate::http::{self, AppState, Health};
use crate::kafka::{
    ordinal_from_pod_name, restore_point, Assignment, AssignmentError, ConfigError, KafkaRecord,
    KafkaSettings, KafkaSource, RecoveryError, RestorePoint, SinkError, SinkOptions, SinkRoutes,
    SourceError, SourceOffsets, SourceOptions, SourceTopic, TaskSink,
};
use crate::metrics::{Metrics, TaskMetrics};
use crate::operators::{Plan, PlanError};
use crate::result::Output;

/// Records a task takes from its buffer per turn: bounds how long other tasks wait.
const TAKE: usize = 4_096;

/// How often the source lag metric is refreshed (librdkafka reports partition ends every second).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How often a worker on bounded input asks the brokers whether it has read everything.
const END_CHECK: Duration = Duration::from_millis(200);

/// Settings of a worker that are not in the manifest (flags, the runtime file, the pod).
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Replaces `spec.kafka.bootstrapServers`.
    pub bootstrap_servers: Option<String>,
    /// This worker's ordinal; default from `POD_NAME` (`NAME-i`), else 0.
    pub ordinal: Option<u32>,
    /// Number of workers; default from the runtime file, else `spec.parallelism`.
    pub parallelism: Option<u32>,
    /// The operator's runtime file (`parallelism`, `assignmentEpoch`).
    pub runtime_file: Option<PathBuf>,
    /// Checkpoint directory (the pod's volume).
    pub checkpoint_dir: PathBuf,
    /// Replaces `spec.delivery`.
    pub delivery: Option<Delivery>,
    /// Address of the HTTP server.
    pub http_addr: SocketAddr,
    /// Bounded input: set once nothing more will be written to the source topics. The worker
    /// then stops when it has taken every owned partition up to its end, closing every window
    /// first (as a run over a file does) and taking a final checkpoint. `None`: unbounded.
    pub input_ended: Option<Arc<AtomicBool>>,
    /// Counts the records the tasks have taken from the sources (an embedded producer keeps
    /// within a bounded distance of it).
    pub taken: Option<Arc<AtomicU64>>,
}

/// The operator's runtime file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeFile {
    parallelism: Option<u32>,
    assignment_epoch: Option<u64>,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The spec does not compile.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A source is not a Kafka topic.
    #[error("source {0:?} is not a Kafka topic: a worker reads Kafka sources only (use `tidemark run --input` for files)")]
    NotKafka(String),
    /// No `spec.kafka`.
    #[error("spec.kafka is required to run a worker")]
    NoKafka,
    /// The runtime file is unreadable.
    #[error("failed to read the runtime file {path}: {message}")]
    Runtime {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Ordinal or parallelism are inconsistent.
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
    /// Kafka settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The consumer failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The producer failed.
    #[error("task {task}: {source}")]
    Sink {
        /// The task.
        task: u32,
        /// The error.
        #[source]
        source: SinkError,
    },
    /// Checkpoints cannot be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// No restore point.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// A checkpoint does not restore.
    #[error("task {task}: {source}")]
    Restore {
        /// The task.
        task: u32,
        /// The error.
        #[source]
        source: RestoreError,
    },
    /// The HTTP server failed to start.
    #[error("failed to start the HTTP server: {0}")]
    Http(String),
}

/// One owned task with its sink and bookkeeping.
struct Owned {
    id: u32,
    task: Task,
    sink: TaskSink,
    metrics: TaskMetrics,
    next_checkpoint: u64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn runtime_file(opts: &WorkerOptions) -> Result<RuntimeFile, WorkerError> {
    let Some(path) = &opts.runtime_file else {
        return Ok(RuntimeFile::default());
    };
    let err = |message: String| WorkerError::Runtime {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Runs the worker until `stop` is set, then takes a final checkpoint of every task.
pub fn run_worker(
    pipeline: &MarketingPipeline,
    opts: &WorkerOptions,
    stop: Arc<AtomicBool>,
) -> Result<(), WorkerError> {
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let spec = &pipeline.spec;
    let delivery = opts.delivery.unwrap_or(spec.delivery);
    let runtime = runtime_file(opts)?;
    let workers = opts
        .parallelism
        .or(runtime.parallelism)
        .unwrap_or(spec.parallelism.max(1) as u32);
    let ordinal = match (opts.ordinal, std::env::var("POD_NAME")) {
        (Some(ordinal), _) => ordinal,
        (None, Ok(pod)) => ordinal_from_pod_name(&pod)?,
        (None, Err(_)) => 0,
    };
    let assignment = Assignment::new(ordinal, workers, runtime.assignment_epoch.unwrap_or(0))?;
    let connection = spec.kafka.as_ref().ok_or(WorkerError::NoKafka)?;
    let settings = KafkaSettings::from_connection(connection, opts.bootstrap_servers.as_deref())?;
    let topics = spec
        .sources
        .iter()
        .enumerate()
        .map(|(index, s)| match &s.kafka {
            Some(k) => Ok(SourceTopic {
                name: s.name.clone(),
                index,
                topic: k.topic.clone(),
            }),
            None => Err(WorkerError::NotKafka(s.name.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut source = KafkaSource::connect(
        &settings,
        &format!("tidemark-{name}"),
        topics,
        SourceOptions::default(),
    )?;
    let tasks = assignment.tasks(source.partitions());
    info!(pipeline = %name, ordinal, workers, epoch = assignment.epoch(), ?tasks, "worker starting");

    let metrics = Metrics::new(&name).map_err(|e| WorkerError::Http(e.to_string()))?;
    let store = CheckpointStore::new(&opts.checkpoint_dir, spec.checkpoint.retain as usize);
    let health = Arc::new(Health::new(http::DEFAULT_STALE_AFTER));
    health.set_not_ready("restoring checkpoints");
    let state = AppState {
        metrics: metrics.clone(),
        health: health.clone(),
        store: store.clone(),
    };
    let server = start_http(opts.http_addr, state)?;

    let exactly_once = delivery == Delivery::ExactlyOnce;
    let mut owned = Vec::with_capacity(tasks.len());
    let mut start: BTreeMap<u32, SourceOffsets> = BTreeMap::new();
    for &t in &tasks {
        health.claim(t);
        store.clean_temp(t)?;
        let mut task = Task::new(Plan::compile(&name, spec)?, 0);
        let scan = store.scan(t)?;
        for skipped in &scan.skipped {
            warn!(task = t, id = skipped.id, problem = %skipped.problem, "corrupt checkpoint skipped");
        }
        metrics.checkpoint_corrupt(scan.skipped.len() as u64);
        let committed = if exactly_once {
            source.committed_checkpoint(t)?
        } else {
            None
        };
        let point = restore_point(&scan.valid, committed, exactly_once)?;
        if let RestorePoint::Checkpoint { id, exact } = point {
            if let Some(checkpoint) = store.read(t, id)? {
                task.restore(checkpoint.state())
                    .map_err(|source| WorkerError::Restore { task: t, source })?;
                start.insert(t, checkpoint.meta.offsets.clone());
                info!(task = t, id, exact, "restored checkpoint");
            }
        }
        let sink = TaskSink::new(
            &settings,
            &name,
            t,
            delivery,
            SinkRoutes::from_spec(spec),
            SinkOptions::default(),
        )
        .map_err(|source| WorkerError::Sink { task: t, source })?;
        let metrics_of_task = TaskMetrics::for_task(&metrics, t, &task);
        owned.push(Owned {
            id: t,
            task,
            sink,
            metrics: metrics_of_task,
            next_checkpoint: store.next_id(t)?,
        });
    }
    source.assign(&tasks, &start)?;
    health.set_ready();

    let interval = Duration::from_millis(spec.checkpoint.interval.millis().max(100));
    let mut last_checkpoint = Instant::now();
    let mut records: Vec<KafkaRecord> = Vec::with_capacity(TAKE);
    let mut out = Output::default();
    let started = Instant::now();
    let mut last_end_check = Instant::now();
    let mut last_lag = Instant::now();
    let result = (|| -> Result<(), WorkerError> {
        while !stop.load(Ordering::Relaxed) {
            health.beat();
            let turn = Instant::now();
            source.poll(Duration::from_millis(50))?;
            let busy = Instant::now();
            let processing = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            for task in &mut owned {
                task.task.set_wall_clock(now_ms());
                records.clear();
                source.take(task.id, TAKE, &mut records)?;
                if let Some(taken) = &opts.taken {
                    taken.fetch_add(records.len() as u64, Ordering::Relaxed);
                }
                for record in &records {
                    task.task
                        .process(record.source, &record.payload, processing, &mut out);
                }
                task.task.tick(processing, &mut out);
                write(task, &mut out, &metrics)?;
                task.metrics.publish_task(&metrics, &task.task, now_ms());
            }
            // Share of the turn spent processing rather than waiting for records.
            metrics.set_busy_ratio(
                busy.elapsed().as_secs_f64() / turn.elapsed().as_secs_f64().max(1e-9),
            );
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = Instant::now();
                for p in source.known_lag() {
                    metrics.set_source_lag(&p.source, p.partition, p.lag);
                }
            }
            if last_checkpoint.elapsed() >= interval {
                checkpoint_all(&mut owned, &source, &store, &metrics, assignment.epoch())?;
                last_checkpoint = Instant::now();
            }
            let ended = opts
                .input_ended
                .as_ref()
                .is_some_and(|ended| ended.load(Ordering::Relaxed));
            if ended && last_end_check.elapsed() >= END_CHECK {
                last_end_check = Instant::now();
                if caught_up(&source)? {
                    for task in &mut owned {
                        task.task.finish(processing, &mut out);
                        write(task, &mut out, &metrics)?;
                    }
                    info!("bounded input taken to its end: every window closed");
                    break;
                }
            }
        }
        checkpoint_all(&mut owned, &source, &store, &metrics, assignment.epoch())
    })();
    health.set_not_ready("stopping");
    for task in &owned {
        health.release(task.id);
    }
    server.stop();
    result
}

/// Whether every owned partition has been taken up to its end (nothing buffered, no lag).
fn caught_up(source: &KafkaSource) -> Result<bool, WorkerError> {
    if source.tasks().iter().any(|&t| source.buffered(t) > 0) {
        return Ok(false);
    }
    Ok(source.lag()?.iter().all(|p| p.lag == 0))
}

fn write(task: &mut Owned, out: &mut Output, metrics: &Metrics) -> Result<(), WorkerError> {
    if out.is_empty() {
        return Ok(());
    }
    task.sink
        .write(out, task.task.now_text())
        .map_err(|source| WorkerError::Sink {
            task: task.id,
            source,
        })?;
    metrics.records_out("kafka", out.results.len() as u64);
    out.results.clear();
    out.dead_letters.clear();
    Ok(())
}

/// Checkpoints every task. A checkpoint that cannot be written is counted and logged and the
/// task goes on: its transaction stays open (exactly-once) and the next checkpoint retries, so
/// nothing is lost; if the transaction times out meanwhile, the commit fails and the worker
/// restarts from the last committed checkpoint.
fn checkpoint_all(
    owned: &mut [Owned],
    source: &KafkaSource,
    store: &CheckpointStore,
    metrics: &Metrics,
    epoch: u64,
) -> Result<(), WorkerError> {
    let group = source.group_metadata();
    for task in owned {
        let id = task.next_checkpoint;
        let offsets = source.offsets(task.id);
        let state = task.task.snapshot();
        let list = source.offset_list(&offsets)?;
        task.sink
            .prepare(id, &list, group.as_ref())
            .map_err(|source| WorkerError::Sink {
                task: task.id,
                source,
            })?;
        let meta = Metadata {
            task: task.id,
            checkpoint_id: id,
            epoch,
            offsets,
            watermark: task.task.watermark(),
            created_at_ms: now_ms(),
        };
        match store.write(&meta, &state) {
            Ok(written) => {
                metrics.checkpoint_succeeded(
                    written.duration,
                    written.bytes,
                    now_ms() as f64 / 1000.0,
                );
                task.sink.commit().map_err(|source| WorkerError::Sink {
                    task: task.id,
                    source,
                })?;
                if let Err(err) = source.commit(task.id, id) {
                    warn!(task = task.id, error = %err, "informative offset commit failed");
                }
                task.next_checkpoint = id + 1;
            }
            Err(err) => {
                metrics.checkpoint_failed();
                warn!(task = task.id, error = %err, "checkpoint failed; processing goes on and the next one retries");
            }
        }
    }
    Ok(())
}

/// The HTTP server on its own thread and runtime.
struct Server {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start_http(addr: SocketAddr, state: AppState) -> Result<Server, WorkerError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (ready, bound) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready.send(Err(err.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                match http::serve(addr, state, stopped).await {
                    Ok((bound, server)) => {
                        let _ = ready.send(Ok(bound));
                        if let Err(err) = server.await {
                            warn!(error = %err, "HTTP server stopped");
                        }
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err.to_string()));
                    }
                }
            });
        })
        .map_err(|e| WorkerError::Http(e.to_string()))?;
    match bound.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(bound)) => {
            info!(%bound, "HTTP server listening");
            Ok(Server {
                stop,
                thread: Some(thread),
            })
        }
        Ok(Err(message)) => Err(WorkerError::Http(message)),
        Err(_) => Err(WorkerError::Http("no answer within 10 s".into())),
    }
}
