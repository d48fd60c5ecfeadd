//! Local runs: one task on one thread over files, standard input or the generator, writing to
//! files, standard output or standard error. `--input` replaces every source by one file whose
//! records are routed by event type. (Kafka pipelines run on the embedded Kafka of
//! `crate::embedded`, or as a worker of `crate::runtime`.)

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_api::{GeneratorSpec, MarketingPipeline};

use crate::engine::Task;
use crate::operators::PlanError;
use crate::plan::Plan;
use crate::privacy::{PrivacyError, Pseudonymizer};
use crate::result::{rfc3339, Output};
use crate::sink::{LineSink, SinkError, Sinks};
use crate::source::generator::Generator;
use crate::source::lines::{records, LineReader};

/// Generated records per batch: large enough to amortise per-batch work, small enough to keep
/// latency low. (Files and standard input are read in blocks of `lines::BLOCK` bytes.)
const BATCH: usize = 4_096;

/// Settings of a local run that are not in the manifest.
#[derive(Clone, Debug, Default)]
pub struct LocalOptions {
    /// Replace every source by this JSON-lines file, routed by event type.
    pub input: Option<PathBuf>,
    /// Replace every sink by this file.
    pub output: Option<PathBuf>,
    /// Write dead letters to this file.
    pub dead_letter: Option<PathBuf>,
    /// Print a progress line on standard error every few seconds.
    pub progress: bool,
    /// The pseudonymisation key file, when the manifest pseudonymises user ids (default
    /// `crate::privacy::DEFAULT_KEY_FILE`).
    pub privacy_key_file: Option<PathBuf>,
}

/// What a local run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Records read.
    pub records: u64,
    /// Results written.
    pub results: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Most key-windows open at once.
    pub peak_windows: usize,
    /// State bytes at that moment.
    pub peak_state_bytes: usize,
    /// The most state bytes at any moment (a funnel's state peaks with its users, not its
    /// windows).
    pub max_state_bytes: usize,
    /// Live keys (users, for a funnel) at that moment.
    pub keys_at_max_state: usize,
    /// Whether the run was interrupted before its input ended.
    pub interrupted: bool,
    /// Dead-lettered records by reason.
    pub dead_letters_by_reason: std::collections::BTreeMap<&'static str, u64>,
}

/// Why a local run failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The spec does not compile.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The pseudonymisation key cannot be used.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    /// A Kafka source or sink without a broker.
    #[error("{what} {name:?} uses Kafka: run it with --embedded (an embedded Kafka fed by the built-in generator), or with --input/--output files")]
    NeedsKafka {
        /// "source" or "sink".
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// An input file cannot be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Standard input named by more than one source.
    #[error("only one source can read standard input")]
    TwoStdin,
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Sources fed by one generator, each with the event types it carries.
type GeneratorFeeds = Vec<(usize, Vec<String>)>;

enum Input {
    /// Lines for one source, or routed by type when `source` is `None`.
    Lines {
        source: Option<usize>,
        feeds: Vec<usize>,
        reader: LineReader,
        name: String,
    },
    /// A generator feeding the listed sources by event type.
    Generator {
        generator: Box<Generator>,
        feeds: Vec<(usize, Vec<String>)>,
        rate: u64,
        produced: u64,
    },
}

fn open(path: &std::path::Path) -> Result<LineReader, LocalError> {
    let file = File::open(path).map_err(|source| LocalError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(LineReader::new(Box::new(file)))
}

fn inputs(pipeline: &MarketingPipeline, opts: &LocalOptions) -> Result<Vec<Input>, LocalError> {
    let spec = &pipeline.spec;
    let all: Vec<usize> = (0..spec.sources.len()).collect();
    if let Some(path) = &opts.input {
        return Ok(vec![Input::Lines {
            source: None,
            feeds: all,
            reader: open(path)?,
            name: path.display().to_string(),
        }]);
    }
    let mut inputs = Vec::new();
    let mut generators: Vec<(GeneratorSpec, GeneratorFeeds)> = Vec::new();
    let mut stdin_used = false;
    for (i, source) in spec.sources.iter().enumerate() {
        let generator = match (
            &source.kafka,
            &source.file,
            &source.stdin,
            &source.generator,
        ) {
            (Some(_), ..) => {
                return Err(LocalError::NeedsKafka {
                    what: "source",
                    name: source.name.clone(),
                })
            }
            (_, Some(file), ..) => {
                let reader = open(std::path::Path::new(&file.path))?;
                inputs.push(Input::Lines {
                    source: Some(i),
                    feeds: vec![i],
                    reader,
                    name: file.path.clone(),
                });
                None
            }
            (_, _, Some(_), _) => {
                if std::mem::replace(&mut stdin_used, true) {
                    return Err(LocalError::TwoStdin);
                }
                let reader = LineReader::new(Box::new(io::stdin()));
                inputs.push(Input::Lines {
                    source: Some(i),
                    feeds: vec![i],
                    reader,
                    name: "standard input".into(),
                });
                None
            }
            (_, _, _, Some(generator)) => Some(generator.clone()),
            _ => None,
        };
        if let Some(generator) = generator {
            // Sources with the same settings share one generator: one consistent clickstream.
            match generators.iter_mut().find(|(g, _)| *g == generator) {
                Some((_, feeds)) => feeds.push((i, source.event_types.clone())),
                None => generators.push((generator, vec![(i, source.event_types.clone())])),
            }
        }
    }
    for (spec, feeds) in generators {
        inputs.push(Input::Generator {
            generator: Box::new(Generator::new(&spec)),
            feeds,
            rate: spec.rate,
            produced: 0,
        });
    }
    Ok(inputs)
}

fn sinks(pipeline: &MarketingPipeline, opts: &LocalOptions) -> Result<Sinks, LocalError> {
    let spec = &pipeline.spec;
    let results = match &opts.output {
        Some(path) => vec![(None, LineSink::file(path)?)],
        None => {
            let mut sinks = Vec::new();
            let report = spec.data_quality.report.as_ref();
            for sink in &spec.sinks {
                let mut analytics: Option<Vec<usize>> = (!sink.analytics.is_empty()).then(|| {
                    sink.analytics
                        .iter()
                        .filter_map(|name| spec.analytics.iter().position(|a| &a.name == name))
                        .collect()
                });
                // The quality report (analytic index `spec.analytics.len()`) goes to its sink
                // only: a sink of every analytic lists them.
                if report.is_some() {
                    let list = analytics.get_or_insert_with(|| (0..spec.analytics.len()).collect());
                    if report.is_some_and(|r| r.sink == sink.name) {
                        list.push(spec.analytics.len());
                    }
                }
                let line_sink = match (&sink.kafka, &sink.file) {
                    (Some(_), _) => {
                        return Err(LocalError::NeedsKafka {
                            what: "sink",
                            name: sink.name.clone(),
                        })
                    }
                    (_, Some(file)) => LineSink::file(std::path::Path::new(&file.path))?,
                    _ => LineSink::stdout(),
                };
                sinks.push((analytics, line_sink));
            }
            sinks
        }
    };
    let dead_letter = match (
        &opts.dead_letter,
        spec.dead_letter.as_ref().and_then(|d| d.file.as_ref()),
    ) {
        (Some(path), _) => LineSink::file(path)?,
        (None, Some(file)) => LineSink::file(std::path::Path::new(&file.path))?,
        _ => LineSink::stderr(),
    };
    Ok(Sinks {
        results,
        dead_letter,
    })
}

/// Runs `pipeline` locally until its inputs end (or `stop` is set), then closes every window.
pub fn run_local(
    pipeline: &MarketingPipeline,
    opts: &LocalOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, LocalError> {
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let pseudonymizer = Pseudonymizer::for_spec(&pipeline.spec, opts.privacy_key_file.as_deref())?;
    let plan = Plan::compile(&name, &pipeline.spec)?.with_pseudonymizer(pseudonymizer);
    let mut inputs = inputs(pipeline, opts)?;
    let mut sinks = sinks(pipeline, opts)?;
    let started = Instant::now();
    let now = || i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let mut task = Task::new(plan, now());
    let mut out = Output::default();
    let mut summary = RunSummary::default();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut last_progress = Instant::now();
    let mut active = inputs.len();
    while active > 0 {
        if stop.load(Ordering::Relaxed) {
            summary.interrupted = true;
            break;
        }
        task.set_wall_clock(chrono::Utc::now().timestamp_millis());
        let mut idle = true;
        for input in &mut inputs {
            let t = now();
            match input {
                Input::Lines {
                    source,
                    feeds,
                    reader,
                    name,
                } => {
                    if feeds.is_empty() {
                        continue;
                    }
                    let block = reader.read_block().map_err(|source| LocalError::Read {
                        path: name.clone(),
                        source,
                    })?;
                    for record in records(block) {
                        summary.records += 1;
                        match source {
                            Some(s) => task.process(*s, record, t, &mut out),
                            None => task.route(record, t, &mut out),
                        }
                    }
                    if block.is_empty() {
                        for s in std::mem::take(feeds) {
                            task.finish_source(s, t, &mut out);
                        }
                        active -= 1;
                    } else {
                        idle = false;
                    }
                }
                Input::Generator {
                    generator,
                    feeds,
                    rate,
                    produced,
                } => {
                    if feeds.is_empty() {
                        continue;
                    }
                    let allowed = if *rate == 0 {
                        BATCH as u64
                    } else {
                        let due = (started.elapsed().as_secs_f64() * *rate as f64) as u64;
                        due.saturating_sub(*produced).min(BATCH as u64)
                    };
                    let mut ended = false;
                    for _ in 0..allowed {
                        buf.clear();
                        let Some(kind) = generator.next_into(&mut buf) else {
                            ended = true;
                            break;
                        };
                        *produced += 1;
                        if let Some((s, _)) = feeds
                            .iter()
                            .find(|(_, types)| types.is_empty() || types.iter().any(|x| x == kind))
                        {
                            summary.records += 1;
                            task.process(*s, &buf, t, &mut out);
                        }
                    }
                    if ended {
                        for (s, _) in std::mem::take(feeds) {
                            task.finish_source(s, t, &mut out);
                        }
                        active -= 1;
                    } else if allowed > 0 {
                        idle = false;
                    }
                }
            }
        }
        task.tick(now(), &mut out);
        summary.results += out.results.len() as u64;
        summary.dead_letters += out.dead_letters.len() as u64;
        sinks.write(&mut out, &name, task.now_text())?;
        let stats = task.stats();
        if stats.windows > summary.peak_windows {
            summary.peak_windows = stats.windows;
            summary.peak_state_bytes = stats.bytes;
        }
        if stats.bytes > summary.max_state_bytes {
            summary.max_state_bytes = stats.bytes;
            summary.keys_at_max_state = stats.keys;
        }
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            sinks.flush()?;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "tidemark: {} events ({:.0}/s), watermark {}, open windows {}, results {}, dead letters {}",
                summary.records,
                summary.records as f64 / secs,
                rfc3339(task.watermark()),
                stats.windows,
                summary.results,
                summary.dead_letters
            );
        }
        if idle {
            sinks.flush()?;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if !summary.interrupted {
        task.finish(now(), &mut out);
    }
    summary.results += out.results.len() as u64;
    summary.dead_letters += out.dead_letters.len() as u64;
    sinks.write(&mut out, &name, task.now_text())?;
    sinks.flush()?;
    for ((_, reason), count) in &task.counters().dead_letters {
        *summary
            .dead_letters_by_reason
            .entry(reason.as_str())
            .or_default() += count;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}
