//! The embedded default: the whole Kafka path in one process, for a laptop without a cluster.
//!
//! `tidemark run -f PIPELINE.yaml --embedded` starts librdkafka's mock Kafka cluster with the
//! manifest's topics, a generator thread producing the built-in clickstream into the Kafka
//! sources' topics (each event to the source whose `eventTypes` take it, keyed by user so a
//! user's clicks and purchases share a partition), the worker of [`crate::runtime`] owning every
//! task (checkpoints, transactions, metrics: what a pod runs), and a reader printing the sink
//! topics (`read_committed`) to standard output and the dead-letter topic to standard error.
//!
//! With `--events N` the input is bounded: once the generator has produced everything the
//! worker reads to the end, closes every window and stops, and the reader prints what is left.
//! Without it the run goes on until Ctrl-C (the worker stops at a final checkpoint).
//!
//! The mock cluster keeps its log in memory and goes with the process, so checkpoints go to a
//! fresh directory that is removed at the end (unless one is given).

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tidemark_api::{Delivery, GeneratorSpec, KafkaConnection, MarketingPipeline};
use tracing::info;

use crate::kafka::{SinkRoutes, SourceOptions};
use crate::privacy::Pseudonymizer;
use crate::runtime::{run_worker, WorkerError, WorkerOptions};
use crate::sink::{LineSink, SinkError};
use crate::source::generator::{Generator, Response};

/// Settings of an embedded run that are not in the manifest.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// The generator's settings (`events: None` runs until interrupted).
    pub generator: GeneratorSpec,
    /// A planted response to an action.
    pub response: Option<Response>,
    /// Partitions of every topic: the number of tasks.
    pub partitions: u32,
    /// Checkpoint directory; default: a fresh temporary one, removed at the end.
    pub checkpoint_dir: Option<PathBuf>,
    /// Replaces `spec.delivery`.
    pub delivery: Option<Delivery>,
    /// Address of the worker's `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// Task threads (default: one per CPU).
    pub threads: Option<usize>,
    /// Write results to this file instead of standard output.
    pub output: Option<PathBuf>,
    /// Print a progress line on standard error every few seconds.
    pub progress: bool,
    /// The pseudonymisation key file, when the manifest pseudonymises user ids.
    pub privacy_key_file: Option<PathBuf>,
}

/// What an embedded run did.
#[derive(Clone, Debug, Default)]
pub struct EmbeddedSummary {
    /// Events the generator produced into the source topics.
    pub produced: u64,
    /// Results read back from the sink topics.
    pub results: u64,
    /// Dead letters read back from the dead-letter topic.
    pub dead_letters: u64,
    /// Records of the sink and dead-letter topics the embedded Kafka dropped before they were
    /// read (it keeps 5 MB per partition).
    pub lost: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the run was interrupted before its input ended.
    pub interrupted: bool,
}

/// Why an embedded run failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A source is not Kafka: the embedded default stands in for Kafka only.
    #[error("source {0:?} is not a Kafka topic: --embedded runs Kafka pipelines (use --input for files)")]
    NotKafka(String),
    /// The mock cluster, a topic or a client could not be set up.
    #[error("embedded Kafka: {0}")]
    Kafka(String),
    /// The checkpoint directory could not be created.
    #[error("failed to create the checkpoint directory {path}: {source}")]
    CheckpointDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Writing results failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

fn kafka_error(what: &str) -> impl Fn(KafkaError) -> EmbeddedError + '_ {
    move |err| EmbeddedError::Kafka(format!("{what}: {err}"))
}

/// Topics of the pipeline by role.
struct Topics {
    /// Per Kafka source: its topic and the event types it takes (empty: every type).
    sources: Vec<(String, Vec<String>)>,
    /// Topics of Kafka sinks.
    sinks: Vec<String>,
    /// The dead-letter topic, if Kafka.
    dead_letter: Option<String>,
}

impl Topics {
    fn of(pipeline: &MarketingPipeline) -> Result<Self, EmbeddedError> {
        let spec = &pipeline.spec;
        let sources = spec
            .sources
            .iter()
            .map(|s| match &s.kafka {
                Some(k) => Ok((k.topic.clone(), s.event_types.clone())),
                None => Err(EmbeddedError::NotKafka(s.name.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The topics the worker writes: the same routes its sinks use.
        let routes = SinkRoutes::from_spec(spec);
        let sinks: BTreeSet<String> = (0..routes.sink_count())
            .map(|s| routes.sink_topic(s).to_owned())
            .collect();
        Ok(Self {
            sources,
            sinks: sinks.into_iter().collect(),
            dead_letter: routes.dead_letter_topic().map(str::to_owned),
        })
    }

    fn all(&self) -> BTreeSet<&str> {
        self.sources
            .iter()
            .map(|(t, _)| t.as_str())
            .chain(self.sinks.iter().map(String::as_str))
            .chain(self.dead_letter.as_deref())
            .collect()
    }
}

/// Runs `pipeline` on an embedded Kafka until its generated input ends (or `stop` is set).
pub fn run_embedded(
    pipeline: &MarketingPipeline,
    opts: &EmbeddedOptions,
    stop: Arc<AtomicBool>,
) -> Result<EmbeddedSummary, EmbeddedError> {
    let started = Instant::now();
    let topics = Topics::of(pipeline)?;
    // Checked before anything starts; the worker reads the key again for itself.
    Pseudonymizer::for_spec(&pipeline.spec, opts.privacy_key_file.as_deref())
        .map_err(WorkerError::from)?;
    let cluster = MockCluster::new(1).map_err(kafka_error("failed to start the mock cluster"))?;
    let partitions = i32::try_from(opts.partitions.max(1)).unwrap_or(i32::MAX);
    // Output topics get more partitions: the mock keeps 5 MB per partition, and results may
    // come faster than the reader prints them.
    let output_partitions = partitions.max(OUTPUT_PARTITIONS);
    for topic in topics.all() {
        let count = if topics.sources.iter().any(|(t, _)| t == topic) {
            partitions
        } else {
            output_partitions
        };
        cluster
            .create_topic(topic, count, 1)
            .map_err(kafka_error(topic))?;
    }
    let bootstrap = cluster.bootstrap_servers();
    info!(%bootstrap, partitions, "embedded Kafka started");

    // The manifest's connection is the cluster's; its TLS and SASL settings do not apply here.
    let mut pipeline = pipeline.clone();
    pipeline.spec.kafka = Some(KafkaConnection {
        bootstrap_servers: bootstrap.clone(),
        ..KafkaConnection::default()
    });

    let (checkpoint_dir, temporary) = match &opts.checkpoint_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tidemark-embedded-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&checkpoint_dir).map_err(|source| EmbeddedError::CheckpointDir {
        path: checkpoint_dir.display().to_string(),
        source,
    })?;

    let counts = Counts::default();
    let input_ended = Arc::new(AtomicBool::new(false));
    let generator = spawn_generator(
        &bootstrap,
        &topics,
        &opts.generator,
        opts.response.clone(),
        counts.clone(),
        input_ended.clone(),
        stop.clone(),
    )?;
    let reader_done = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(
        &bootstrap,
        &topics,
        output_partitions,
        opts,
        reader_done.clone(),
    )?;

    let worker_opts = WorkerOptions {
        bootstrap_servers: None,
        ordinal: Some(0),
        parallelism: Some(1),
        runtime_file: None,
        checkpoint_dir: checkpoint_dir.clone(),
        delivery: opts.delivery,
        http_addr: opts.http_addr,
        input_ended: Some(input_ended.clone()),
        taken: Some(counts.taken.clone()),
        threads: opts.threads,
        // The mock answers a fetch only after its whole wait when no data was there.
        source: SourceOptions {
            fetch_wait: Duration::from_millis(10),
            ..SourceOptions::default()
        },
        handoff: Default::default(),
        privacy_key_file: opts.privacy_key_file.clone(),
    };
    let worker = {
        let pipeline = pipeline.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || run_worker(&pipeline, &worker_opts, stop))
            .map_err(|e| EmbeddedError::Kafka(format!("failed to start the worker: {e}")))?
    };

    let mut last_progress = Instant::now();
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            let n = counts.produced.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let (results, dead) = reader.counts();
            eprintln!(
                "tidemark: {n} events produced ({:.0}/s), {results} results, {dead} dead letters",
                n as f64 / secs
            );
        }
    }
    // The worker stops on its own only after bounded input; otherwise it was interrupted.
    let worker_result = join(worker, "worker")?;
    stop.store(true, Ordering::Relaxed);
    join(generator, "generator")??;
    reader_done.store(true, Ordering::Relaxed);
    let (results, dead_letters, lost) = reader.join()?;
    if temporary {
        let _ = std::fs::remove_dir_all(&checkpoint_dir);
    }
    worker_result?;
    drop(cluster);
    Ok(EmbeddedSummary {
        produced: counts.produced.load(Ordering::Relaxed),
        results,
        dead_letters,
        lost,
        elapsed: started.elapsed(),
        interrupted: !input_ended.load(Ordering::Relaxed),
    })
}

fn join<T>(thread: JoinHandle<T>, name: &'static str) -> Result<T, EmbeddedError> {
    thread.join().map_err(|_| EmbeddedError::Panicked(name))
}

/// Partitions of the sink and dead-letter topics at least.
const OUTPUT_PARTITIONS: i32 = 16;

/// Records produced by the generator and taken by the worker's tasks.
#[derive(Clone, Default)]
struct Counts {
    produced: Arc<AtomicU64>,
    taken: Arc<AtomicU64>,
}

/// Most events the generator runs ahead of the worker. librdkafka's mock cluster keeps at most
/// 5 MB per partition and drops the oldest records beyond it (as retention would), so an
/// unbounded head start would lose events before the worker reads them.
const MAX_AHEAD: u64 = 20_000;

/// Produces generated events into the source topics at the generator's rate, at most
/// [`MAX_AHEAD`] ahead of the worker, until it ends (then flushes and sets `ended`) or `stop`
/// is set.
fn spawn_generator(
    bootstrap: &str,
    topics: &Topics,
    spec: &GeneratorSpec,
    response: Option<Response>,
    counts: Counts,
    ended: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<(), EmbeddedError>>, EmbeddedError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(kafka_error("failed to create the generator's producer"))?;
    let feeds = topics.sources.clone();
    let mut generator = Generator::new(spec);
    if let Some(response) = response {
        generator = generator.respond(response);
    }
    let rate = spec.rate;
    std::thread::Builder::new()
        .name("generator".into())
        .spawn(move || {
            let started = Instant::now();
            let mut value = Vec::with_capacity(192);
            let mut key = Vec::with_capacity(16);
            // Events generated, and those sent (an event no source takes is not sent).
            let mut n: u64 = 0;
            let mut sent: u64 = 0;
            'produce: while !stop.load(Ordering::Relaxed) {
                let due = if rate == 0 {
                    n + 1_024
                } else {
                    (started.elapsed().as_secs_f64() * rate as f64) as u64
                };
                let ahead = sent.saturating_sub(counts.taken.load(Ordering::Relaxed));
                let due = due.min(n + MAX_AHEAD.saturating_sub(ahead));
                if due <= n {
                    producer.poll(Duration::from_millis(2));
                    continue;
                }
                while n < due {
                    value.clear();
                    let Some(kind) = generator.next_into(&mut value) else {
                        break 'produce;
                    };
                    n += 1;
                    let Some((topic, _)) = feeds
                        .iter()
                        .find(|(_, types)| types.is_empty() || types.iter().any(|t| t == kind))
                    else {
                        continue;
                    };
                    key.clear();
                    let _ = write!(key, "u{}", generator.user());
                    send(&producer, topic, &key, &value)?;
                    sent += 1;
                }
                producer.poll(Duration::ZERO);
                counts.produced.store(n, Ordering::Relaxed);
            }
            producer
                .flush(Duration::from_secs(30))
                .map_err(kafka_error("failed to flush the generator's producer"))?;
            counts.produced.store(n, Ordering::Relaxed);
            if !stop.load(Ordering::Relaxed) {
                ended.store(true, Ordering::Relaxed);
            }
            Ok(())
        })
        .map_err(|e| EmbeddedError::Kafka(format!("failed to start the generator: {e}")))
}

fn send(
    producer: &BaseProducer,
    topic: &str,
    key: &[u8],
    value: &[u8],
) -> Result<(), EmbeddedError> {
    loop {
        match producer.send(BaseRecord::to(topic).key(key).payload(value)) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((err, _)) => return Err(kafka_error("failed to produce an event")(err)),
        }
    }
}

/// The thread that prints the sink topics and the dead-letter topic.
struct Reader {
    thread: JoinHandle<Result<(), EmbeddedError>>,
    results: Arc<AtomicU64>,
    dead_letters: Arc<AtomicU64>,
    /// Records the mock dropped before the reader got to them (gaps in the offsets).
    lost: Arc<AtomicU64>,
}

impl Reader {
    fn counts(&self) -> (u64, u64) {
        (
            self.results.load(Ordering::Relaxed),
            self.dead_letters.load(Ordering::Relaxed),
        )
    }

    fn join(self) -> Result<(u64, u64, u64), EmbeddedError> {
        join(self.thread, "reader")??;
        Ok((
            self.results.load(Ordering::Relaxed),
            self.dead_letters.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        ))
    }
}

/// Reads every partition of the sink and dead-letter topics from the beginning
/// (`read_committed`) and writes results to the output and dead letters to standard error;
/// once `done` is set it reads up to the end of each partition and returns.
fn spawn_reader(
    bootstrap: &str,
    topics: &Topics,
    partitions: i32,
    opts: &EmbeddedOptions,
    done: Arc<AtomicBool>,
) -> Result<Reader, EmbeddedError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tidemark-embedded-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(kafka_error("failed to create the reader"))?;
    let mut list = TopicPartitionList::new();
    let watched: Vec<&String> = topics.sinks.iter().chain(&topics.dead_letter).collect();
    for topic in &watched {
        for p in 0..partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(kafka_error("failed to assign the reader"))?;
        }
    }
    consumer
        .assign(&list)
        .map_err(kafka_error("failed to assign the reader"))?;
    let dead_letter_topic = topics.dead_letter.clone();
    let mut output = match &opts.output {
        Some(path) => LineSink::file(path)?,
        None => LineSink::stdout(),
    };
    let mut errors = LineSink::stderr();
    let results = Arc::new(AtomicU64::new(0));
    let dead_letters = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let (r, d, lost_in_thread) = (results.clone(), dead_letters.clone(), lost.clone());
    let watched: Vec<String> = watched.into_iter().cloned().collect();
    let thread = std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || -> Result<(), EmbeddedError> {
            // Once the worker is done: the end offsets to read up to, per (topic, partition).
            let mut ends: Option<Vec<(String, i32, i64)>> = None;
            // Next offset expected per watched topic and partition (`topic * partitions + p`).
            let mut next = vec![0_i64; watched.len() * partitions as usize];
            loop {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        let topic = watched
                            .iter()
                            .position(|t| t == message.topic())
                            .unwrap_or_default();
                        let at = topic * partitions as usize + message.partition() as usize;
                        let expected = &mut next[at];
                        // The mock writes no transaction markers: offsets leave no gap unless
                        // it dropped records.
                        lost_in_thread.fetch_add(
                            u64::try_from(message.offset() - *expected).unwrap_or(0),
                            Ordering::Relaxed,
                        );
                        *expected = message.offset() + 1;
                        let value = message.payload().unwrap_or_default();
                        if Some(message.topic()) == dead_letter_topic.as_deref() {
                            errors.write_line(value)?;
                            d.fetch_add(1, Ordering::Relaxed);
                        } else {
                            output.write_line(value)?;
                            r.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    Some(Err(err)) => {
                        return Err(kafka_error("failed to read the sink topics")(err));
                    }
                    None => {
                        output.flush()?;
                        errors.flush()?;
                    }
                }
                if ends.is_none() && done.load(Ordering::Relaxed) {
                    let mut found = Vec::new();
                    for topic in &watched {
                        for p in 0..partitions {
                            let (_, high) = consumer
                                .fetch_watermarks(topic, p, Duration::from_secs(10))
                                .map_err(kafka_error(
                                    "failed to read the end of the sink topics",
                                ))?;
                            found.push((topic.clone(), p, high));
                        }
                    }
                    ends = Some(found);
                }
                if let Some(ends) = &ends {
                    let position = consumer
                        .position()
                        .map_err(kafka_error("failed to read the reader's position"))?;
                    let reached = ends.iter().all(|(topic, p, high)| {
                        *high == 0
                            || matches!(
                                position.find_partition(topic, *p).map(|e| e.offset()),
                                Some(Offset::Offset(at)) if at >= *high
                            )
                    });
                    if reached {
                        output.flush()?;
                        errors.flush()?;
                        return Ok(());
                    }
                }
            }
        })
        .map_err(|e| EmbeddedError::Kafka(format!("failed to start the reader: {e}")))?;
    Ok(Reader {
        thread,
        results,
        dead_letters,
        lost,
    })
}
