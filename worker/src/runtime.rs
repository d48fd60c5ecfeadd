//! The distributed worker: the pipeline's owned tasks over Kafka, with checkpoints on the pod's
//! volume, recovery on start, and the HTTP server (`/metrics`, `/healthz`, `/readyz`, snapshots).
//!
//! This module wires the parts; it owns the loop and the checkpoint schedule, not Kafka
//! (`crate::kafka`), the file format (`crate::checkpoint`) or the engine (`crate::engine`).
//!
//! Owned tasks run on a small fixed pool of task threads (`spec.worker.threads`, `--threads`,
//! default one per CPU, never more than tasks); each thread polls its tasks' own partition
//! queues ([`crate::kafka::TaskInput`]) and processes records in place, and checkpoints its
//! tasks. The main thread serves the consumer's callbacks, publishes lag, and watches the task
//! threads' heartbeats for `/healthz`. Per checkpoint, per task:
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

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::engine::{RestoreError, Task};
use crate::global::{partials_topic, task_label, GlobalStage, GLOBAL_STAGE};
use crate::handoff::{
    self, HandoffError, HandoffPlan, Parallelisms, PeerOptions, Peers, Prepared, Wait,
};
use crate::http::{self, AppState, Health};
use crate::kafka::{
    admin, ordinal_from_pod_name, restore_point, Assignment, AssignmentError, ConfigError,
    GlobalInput, KafkaSettings, KafkaSource, RecoveryError, RestorePoint, SinkError, SinkOptions,
    SinkRoutes, SourceError, SourceOffsets, SourceOptions, SourceTopic, TaskInput, TaskSink,
    GLOBAL_SOURCE,
};
use crate::metrics::{Metrics, TaskMetrics};
use crate::operators::PlanError;
use crate::plan::Plan;
use crate::privacy::{PrivacyError, Pseudonymizer};
use crate::result::Output;
use rdkafka::consumer::ConsumerGroupMetadata;

mod checkpointing;
mod fenced;
mod stage;

use stage::Stage;

/// Records a task takes from its buffer per turn: bounds how long other tasks wait.
const TAKE: usize = 4_096;

/// How often the source lag metric and the busy ratio are refreshed (librdkafka reports
/// partition ends every second).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Longest a task thread sleeps when its partitions are empty (ticks: idle timeouts, checkpoints).
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// A task thread whose last turn began longer ago than this fails `/healthz`.
const STALE_TURN_MS: u64 = 30_000;

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
    /// Task threads; default `spec.worker.threads`, else one per CPU (at most one per task).
    pub threads: Option<usize>,
    /// Tuning of the Kafka source (the embedded default shortens the fetch wait).
    pub source: SourceOptions,
    /// How to reach earlier owners of moved tasks (`--peer-url`, `--peer`, `--skip-handoff`).
    pub handoff: PeerOptions,
    /// The pseudonymisation key file, when the manifest pseudonymises user ids (default
    /// `crate::privacy::DEFAULT_KEY_FILE`, where the operator mounts the Secret).
    pub privacy_key_file: Option<PathBuf>,
}

/// The operator's runtime file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeFile {
    parallelism: Option<u32>,
    assignment_epoch: Option<u64>,
    /// The parallelisms since the last settled assignment (a rescale): their owners of a task
    /// this worker owns now may hold its state (`crate::handoff`).
    previous_parallelism: Option<Parallelisms>,
    /// The operator's release step: run only tasks owned under every assignment involved.
    #[serde(default)]
    release: bool,
    /// Template of a peer's base URL (`{ordinal}`).
    peer_url: Option<String>,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The spec does not compile.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The pseudonymisation key cannot be used.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    /// A source is not a Kafka topic.
    #[error("source {0:?} is not a Kafka topic: a worker reads Kafka sources only (use `tidemark run --input` for files)")]
    NotKafka(String),
    /// A sink or the dead-letter output is not a Kafka topic: its records would go nowhere.
    #[error("{0} is not a Kafka topic: a worker writes Kafka sinks and a Kafka dead-letter topic only (use `tidemark run --output` for files)")]
    NotKafkaOutput(String),
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
    #[error("task {}: {source}", task_label(*task))]
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
    #[error("task {}: {source}", task_label(*task))]
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
    /// A task's input failed.
    #[error("task {}: {source}", task_label(*task))]
    Input {
        /// The task.
        task: u32,
        /// The error.
        #[source]
        source: SourceError,
    },
    /// A task thread could not start or panicked.
    #[error("task thread: {0}")]
    Thread(String),
    /// A moved task's state could not be installed.
    #[error(transparent)]
    Handoff(#[from] HandoffError),
}

/// One owned task with its input, sink and bookkeeping.
struct Owned {
    id: u32,
    task: Stage,
    input: Option<TaskInput>,
    sink: TaskSink,
    metrics: TaskMetrics,
    next_checkpoint: u64,
    /// Bounded input only: every window closed, nothing more to read.
    finished: bool,
    /// Whether results go into transactions tied to checkpoints.
    exactly_once: bool,
    /// The checkpoint being encoded and written on another thread.
    in_flight: Option<checkpointing::InFlight>,
    /// Results emitted while an exactly-once checkpoint is in flight (see `checkpointing`).
    held: Output,
}

impl Owned {
    /// Owned task `id` running `task`, before its input is assigned.
    fn new(
        id: u32,
        task: Stage,
        sink: TaskSink,
        metrics: &Metrics,
        store: &CheckpointStore,
        exactly_once: bool,
    ) -> Result<Self, WorkerError> {
        Ok(Self {
            id,
            metrics: task.metrics(metrics, id),
            task,
            input: None,
            sink,
            next_checkpoint: store.next_id(id)?,
            finished: false,
            exactly_once,
            in_flight: None,
            held: Output::default(),
        })
    }
}

/// Restores `task` (id `t`) from its restore point, if it has one; returns the offsets to
/// start its input at. Corrupt checkpoints on the way are logged and counted.
fn restore(
    store: &CheckpointStore,
    t: u32,
    task: &mut Stage,
    committed: Option<u64>,
    exactly_once: bool,
    metrics: &Metrics,
) -> Result<Option<SourceOffsets>, WorkerError> {
    let scan = store.scan(t)?;
    for skipped in &scan.skipped {
        warn!(task = %task_label(t), id = skipped.id, problem = %skipped.problem, "corrupt checkpoint skipped");
    }
    metrics.checkpoint_corrupt(scan.skipped.len() as u64);
    let point = restore_point(&scan.valid, committed, exactly_once)?;
    let RestorePoint::Checkpoint { id, exact } = point else {
        return Ok(None);
    };
    let Some(checkpoint) = store.read(t, id)? else {
        return Ok(None);
    };
    task.restore(checkpoint.state())
        .map_err(|source| WorkerError::Restore { task: t, source })?;
    info!(task = %task_label(t), id, exact, "restored checkpoint");
    Ok(Some(checkpoint.meta.offsets.clone()))
}

/// What the task threads share.
struct Shared {
    /// Set by SIGTERM or SIGINT.
    stop: Arc<AtomicBool>,
    /// Set when a thread failed: the others stop too.
    failed: AtomicBool,
    store: CheckpointStore,
    metrics: Metrics,
    group: Option<ConsumerGroupMetadata>,
    epoch: u64,
    interval: Duration,
    input_ended: Option<Arc<AtomicBool>>,
    taken: Option<Arc<AtomicU64>>,
    started: Instant,
}

/// A running task thread and what it reports.
type Running = (
    std::thread::JoinHandle<Result<(), WorkerError>>,
    Arc<ThreadState>,
);

/// What a task thread reports to the main thread.
#[derive(Default)]
struct ThreadState {
    /// Milliseconds since the worker started at the thread's last turn.
    beat_ms: AtomicU64,
    /// Share of the last second spent processing (f64 bits).
    busy: AtomicU64,
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
    // Before any connection: a worker that cannot pseudonymise must not start with raw ids.
    let pseudonymizer = Pseudonymizer::for_spec(spec, opts.privacy_key_file.as_deref())?;
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
    if let Some(sink) = spec.sinks.iter().find(|s| s.kafka.is_none()) {
        return Err(WorkerError::NotKafkaOutput(format!("sink {:?}", sink.name)));
    }
    if spec.dead_letter.as_ref().is_some_and(|d| d.kafka.is_none()) {
        return Err(WorkerError::NotKafkaOutput("the dead-letter output".into()));
    }
    let mut source = KafkaSource::connect(
        &settings,
        &format!("tidemark-{name}"),
        topics,
        opts.source.clone(),
    )?;
    let partitions = source.partitions();
    let plan = || -> Result<Plan, WorkerError> {
        Ok(Plan::compile(&name, spec)?
            .for_tasks(partitions)?
            .with_pseudonymizer(pseudonymizer.clone()))
    };
    // Analytics keyed by anything but the user run in two phases over several tasks: the
    // tasks' partials go to the partials topic, which the global stage on ordinal 0 merges.
    let global = if plan()?.has_global() {
        let topic = partials_topic(&name);
        let count = admin::ensure_topic(&settings, &topic, partitions, opts.source.timeout)?;
        info!(%topic, partitions = count, "global analytics: tasks send partials to the global stage on ordinal 0");
        Some(GlobalInput {
            topic,
            partitions: count,
            start: BTreeMap::new(),
        })
    } else {
        None
    };
    let routes = match &global {
        Some(g) => SinkRoutes::from_spec(spec).with_partials(g.topic.clone(), g.partitions),
        None => SinkRoutes::from_spec(spec),
    };
    let previous = runtime
        .previous_parallelism
        .as_ref()
        .map(Parallelisms::to_vec)
        .unwrap_or_default();
    let handoff_plan = HandoffPlan::new(
        ordinal,
        workers,
        assignment.epoch(),
        previous.clone(),
        runtime.release,
        opts.handoff.skip,
    )?;
    let peers = Peers::new(
        &opts.handoff,
        runtime.peer_url.as_deref(),
        &name,
        pipeline.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let tasks = handoff_plan.tasks(source.partitions());
    info!(pipeline = %name, ordinal, workers, epoch = assignment.epoch(), ?previous,
        release = runtime.release, ?tasks, "worker starting");
    if handoff_plan.is_surplus() {
        info!(ordinal, workers, "this worker owns no task: it serves its checkpoints to the workers that took its tasks over until it is removed");
    }
    let withheld = handoff_plan.withheld(source.partitions());
    if !withheld.is_empty() {
        info!(?withheld, "release step: these tasks move here in the next epoch; their earlier owners stop them first");
    }

    let metrics = Metrics::new(&name).map_err(|e| WorkerError::Http(e.to_string()))?;
    metrics.set_tasks(source.partitions());
    let store = CheckpointStore::new(&opts.checkpoint_dir, spec.checkpoint.retain as usize);
    let health = Arc::new(Health::new(http::DEFAULT_STALE_AFTER));
    health.set_not_ready("restoring checkpoints");
    // Claimed before the server answers: a peer asking for a task this worker is about to run
    // is told 409, never handed a checkpoint the task will move past.
    for &t in &tasks {
        health.claim(t);
    }
    let state = AppState {
        metrics: metrics.clone(),
        health: health.clone(),
        store: store.clone(),
    };
    let server = start_http(opts.http_addr, state)?;

    let exactly_once = delivery == Delivery::ExactlyOnce;
    let mut owned = Vec::with_capacity(tasks.len());
    let mut start: BTreeMap<u32, SourceOffsets> = BTreeMap::new();
    let wait = Wait {
        health: &health,
        stop: &stop,
    };
    for &t in &tasks {
        store.clean_temp(t)?;
        let mut task = Stage::Task(Task::new(plan()?, 0).with_id(t));
        // A moved task: hear every earlier owner first (they must have stopped it), then fence
        // them (the producer's init_transactions), then read the commit marker.
        let asked = Instant::now();
        let Some(prepared) = handoff::prepare(&store, t, &handoff_plan, &peers, wait)? else {
            server.stop();
            return Ok(());
        };
        let moved = match &prepared {
            Prepared::Remote { checkpoint, .. } => Some(("peer", checkpoint.state().len())),
            Prepared::LocalNewest | Prepared::Skipped => Some(("local", 0)),
            Prepared::NotMoved | Prepared::Acquired => None,
        };
        let sink = TaskSink::new(
            &settings,
            &name,
            t,
            delivery,
            routes.clone(),
            SinkOptions::default(),
        )
        .map_err(|source| WorkerError::Sink { task: t, source })?;
        let committed = if exactly_once {
            source.committed_checkpoint(t)?
        } else {
            None
        };
        let installed =
            handoff::install(&store, t, &handoff_plan, &peers, prepared, committed, wait)?;
        if installed.is_none() {
            server.stop();
            return Ok(());
        }
        if let Some((from, bytes)) = moved {
            metrics.handoff(asked.elapsed(), from, bytes as u64);
        }
        if let Some(offsets) = restore(&store, t, &mut task, committed, exactly_once, &metrics)? {
            start.insert(t, offsets);
        }
        owned.push(Owned::new(t, task, sink, &metrics, &store, exactly_once)?);
    }
    // The global stage: on ordinal 0, which every assignment keeps; it never moves.
    let mut global = global.filter(|_| ordinal == 0);
    if let Some(input) = &mut global {
        let t = GLOBAL_STAGE;
        store.clean_temp(t)?;
        let mut stage = Stage::Global(GlobalStage::new(plan()?, partitions));
        let sink = TaskSink::new(
            &settings,
            &name,
            t,
            delivery,
            SinkRoutes::from_spec(spec),
            SinkOptions::default(),
        )
        .map_err(|source| WorkerError::Sink { task: t, source })?;
        let committed = if exactly_once {
            source.committed_global_checkpoint(&input.topic, input.partitions)?
        } else {
            None
        };
        if let Some(offsets) = restore(&store, t, &mut stage, committed, exactly_once, &metrics)? {
            input.start = offsets.get(GLOBAL_SOURCE).cloned().unwrap_or_default();
        }
        owned.push(Owned::new(t, stage, sink, &metrics, &store, exactly_once)?);
    }
    let (inputs, global_input) = source.assign_with_global(&tasks, &start, global.as_ref())?;
    for input in inputs.into_iter().chain(global_input) {
        if let Some(task) = owned.iter_mut().find(|o| o.id == input.task()) {
            task.input = Some(input);
        }
    }
    health.set_ready();

    let threads = opts
        .threads
        .or_else(|| spec.worker.threads.and_then(|t| usize::try_from(t).ok()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, owned.len().max(1));
    let mut groups: Vec<Vec<Owned>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, task) in owned.into_iter().enumerate() {
        groups[i % threads].push(task);
    }
    let shared = Arc::new(Shared {
        stop: stop.clone(),
        failed: AtomicBool::new(false),
        store,
        metrics: metrics.clone(),
        group: source.group_metadata(),
        epoch: assignment.epoch(),
        interval: Duration::from_millis(spec.checkpoint.interval.millis().max(100)),
        input_ended: opts.input_ended.clone(),
        taken: opts.taken.clone(),
        started: Instant::now(),
    });
    info!(threads, "task threads starting");
    let mut running = Vec::with_capacity(threads);
    for (i, group) in groups.into_iter().enumerate() {
        let state = Arc::new(ThreadState::default());
        let (shared, mine) = (shared.clone(), state.clone());
        let handle = std::thread::Builder::new()
            .name(format!("tasks-{i}"))
            .spawn(move || {
                let result = run_tasks(group, &shared, &mine);
                if result.is_err() {
                    // One failed thread stops the others, each at a final checkpoint.
                    shared.failed.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| WorkerError::Thread(e.to_string()))?;
        running.push((handle, state));
    }

    let result = supervise(&source, &running, &shared, &health);
    if result.is_err() {
        shared.failed.store(true, Ordering::Relaxed);
    }
    let mut first_error = result.err();
    let mut fenced = None;
    for (handle, _) in running {
        let outcome = handle
            .join()
            .unwrap_or_else(|_| Err(WorkerError::Thread("a task thread panicked".into())));
        if let Err(err) = outcome {
            if let WorkerError::Sink {
                task,
                source: SinkError::Fenced(..),
            } = &err
            {
                fenced.get_or_insert(*task);
            }
            first_error.get_or_insert(err);
        }
    }
    if let Some(task) = fenced {
        fenced::step_back(task, &stop, &health, &metrics);
    }
    health.set_not_ready("stopping");
    for &t in &tasks {
        health.release(t);
    }
    server.stop();
    first_error.map_or(Ok(()), Err)
}

/// The main thread's loop while task threads run: serves the consumer, publishes lag and the
/// busy ratio, and beats `/healthz` while every task thread is turning.
fn supervise(
    source: &KafkaSource,
    running: &[Running],
    shared: &Shared,
    health: &Health,
) -> Result<(), WorkerError> {
    let mut last_lag = Instant::now();
    while running.iter().any(|(handle, _)| !handle.is_finished()) {
        source.serve(Duration::from_millis(100))?;
        let now = millis_since(shared.started);
        let stale = running
            .iter()
            .any(|(_, s)| now.saturating_sub(s.beat_ms.load(Ordering::Relaxed)) > STALE_TURN_MS);
        if !stale {
            health.beat();
        }
        if last_lag.elapsed() >= LAG_EVERY {
            last_lag = Instant::now();
            for p in source.known_lag() {
                shared.metrics.set_source_lag(&p.source, p.partition, p.lag);
            }
            let busy: f64 = running
                .iter()
                .map(|(_, s)| f64::from_bits(s.busy.load(Ordering::Relaxed)))
                .sum();
            shared.metrics.set_busy_ratio(busy / running.len() as f64);
        }
    }
    Ok(())
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A task thread: its tasks in turn until stopped (or, on bounded input, until every one has
/// read everything), checkpointing them every interval and once more at the end.
fn run_tasks(
    mut group: Vec<Owned>,
    shared: &Shared,
    state: &ThreadState,
) -> Result<(), WorkerError> {
    let waker = std::thread::current();
    for task in &mut group {
        if let Some(input) = &mut task.input {
            let waker = waker.clone();
            input.wake_on_records(move || waker.unpark());
        }
    }
    let metrics = &shared.metrics;
    let mut out = Output::default();
    let mut last_checkpoint = Instant::now();
    let mut last_end_check = Instant::now();
    let (mut window, mut busy) = (Instant::now(), Duration::ZERO);
    let result = (|| -> Result<(), WorkerError> {
        while !shared.stop.load(Ordering::Relaxed) && !shared.failed.load(Ordering::Relaxed) {
            state
                .beat_ms
                .store(millis_since(shared.started), Ordering::Relaxed);
            let turn = Instant::now();
            let processing = i64::try_from(millis_since(shared.started)).unwrap_or(i64::MAX);
            let mut taken = 0;
            for owned in group.iter_mut().filter(|o| !o.finished) {
                let Owned {
                    task, input, id, ..
                } = owned;
                let Some(input) = input.as_mut() else {
                    continue;
                };
                task.set_wall_clock(now_ms());
                let n = input
                    .poll(TAKE, |source, _, payload| {
                        task.process(source, payload, processing, &mut out);
                    })
                    .map_err(|source| WorkerError::Input { task: *id, source })?;
                for (source, skipped) in input.take_skipped() {
                    metrics.records_skipped(&source, skipped);
                }
                taken += n;
                task.tick(processing, &mut out);
                write(owned, &mut out, metrics)?;
                owned.task.publish(&mut owned.metrics, metrics, now_ms());
            }
            if let Some(counter) = &shared.taken {
                counter.fetch_add(taken as u64, Ordering::Relaxed);
            }
            busy += turn.elapsed();
            for owned in &mut group {
                checkpointing::complete(owned, shared, false)?;
            }
            if last_checkpoint.elapsed() >= shared.interval {
                for owned in &mut group {
                    checkpointing::begin(owned, shared)?;
                }
                last_checkpoint = Instant::now();
            }
            let ended = shared
                .input_ended
                .as_ref()
                .is_some_and(|ended| ended.load(Ordering::Relaxed));
            if ended && last_end_check.elapsed() >= END_CHECK {
                last_end_check = Instant::now();
                if finish_caught_up(&mut group, &mut out, shared)? {
                    info!("bounded input taken to its end: every window closed");
                    break;
                }
            }
            if taken == 0 {
                // Nothing to do: sleep until a partition queue fills (its callback unparks
                // this thread) or the next tick is due.
                std::thread::park_timeout(IDLE_WAIT);
            }
            if window.elapsed() >= LAG_EVERY {
                let ratio = busy.as_secs_f64() / window.elapsed().as_secs_f64().max(1e-9);
                state.busy.store(ratio.to_bits(), Ordering::Relaxed);
                (window, busy) = (Instant::now(), Duration::ZERO);
            }
        }
        Ok(())
    })();
    // A final checkpoint, also after an error elsewhere: what was taken is not replayed twice.
    let mut last = Ok(());
    for owned in &mut group {
        let done = checkpointing::now(owned, shared);
        if last.is_ok() {
            last = done;
        }
    }
    result.and(last)
}

/// Closes every window of each task that has read its partitions to their end; whether all have.
fn finish_caught_up(
    group: &mut [Owned],
    out: &mut Output,
    shared: &Shared,
) -> Result<bool, WorkerError> {
    let processing = i64::try_from(millis_since(shared.started)).unwrap_or(i64::MAX);
    for owned in group.iter_mut().filter(|o| !o.finished) {
        let caught_up = match &owned.input {
            Some(input) => input.caught_up().map_err(|source| WorkerError::Input {
                task: owned.id,
                source,
            })?,
            None => true,
        };
        if caught_up && owned.task.finish(processing, out) {
            write(owned, out, &shared.metrics)?;
            owned.finished = true;
            // Under exactly-once what the task wrote last (partials for the global stage
            // among it) becomes visible with its next checkpoint: take it now.
            checkpointing::now(owned, shared)?;
        }
    }
    Ok(group.iter().all(|o| o.finished))
}

/// Writes `out` to the task's sink (or holds it while an exactly-once checkpoint is in flight).
fn write(task: &mut Owned, out: &mut Output, metrics: &Metrics) -> Result<(), WorkerError> {
    if out.is_empty() || checkpointing::hold(task, out) {
        return Ok(());
    }
    task.sink
        .write(out, task.task.now_text())
        .map_err(|source| WorkerError::Sink {
            task: task.id,
            source,
        })?;
    task.sink
        .take_written(|sink, n| metrics.records_out(sink, n));
    out.clear();
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
