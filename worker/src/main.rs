//! `tidemark`: run a MarketingPipeline manifest locally, generate events, validate manifests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tidemark_api::{
    parse_manifest, Delivery, Duration, GeneratorSpec, ManifestError, MarketingPipeline,
};
use tidemark_worker::embedded::{run_embedded, EmbeddedOptions};
use tidemark_worker::handoff::PeerOptions;
use tidemark_worker::local::{run_local, LocalOptions};
use tidemark_worker::runtime::{run_worker, WorkerOptions};
use tidemark_worker::source::generator::{Generator, Response};

/// mimalloc: the engine makes many small, short-lived allocations (ids, observations,
/// results), which glibc's allocator serves noticeably slower (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tidemark: real-time marketing analytics.
#[derive(Parser)]
#[command(name = "tidemark", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline manifest.
    Run(Box<RunArgs>),
    /// Write generated clickstream events as JSON lines.
    Generate(Box<GenerateArgs>),
    /// Check a pipeline manifest; prints one line per problem.
    Validate {
        /// The manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The MarketingPipeline manifest.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Replace every source by this JSON-lines file; records are routed by event type.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Replace every sink by this file (JSON lines).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write dead letters to this file (default: the manifest's, else standard error).
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Run on the embedded default: an in-process Kafka (librdkafka's mock cluster) with the
    /// manifest's topics, the built-in generator producing into the sources' topics, the worker
    /// owning every task, and the sink topics printed to standard output.
    #[arg(long)]
    embedded: bool,
    /// Partitions of every embedded topic (the number of tasks).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// No progress line.
    #[arg(short, long)]
    quiet: bool,
    /// The pseudonymisation key, for a manifest that sets spec.privacy.pseudonymizeKeySecret
    /// (default: /etc/tidemark/privacy/key, where the operator mounts that Secret).
    #[arg(long, value_name = "PATH")]
    privacy_key_file: Option<PathBuf>,
    #[command(flatten)]
    generator: GeneratorArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Settings of a worker on Kafka (used when the pipeline's sources are Kafka topics and neither
/// --input nor --embedded is given).
#[derive(Args)]
struct WorkerArgs {
    /// Kafka bootstrap servers, replacing spec.kafka.bootstrapServers.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// This worker's ordinal (default: from POD_NAME `NAME-i`, else 0).
    #[arg(long)]
    ordinal: Option<u32>,
    /// Number of workers (default: the runtime file's, else spec.parallelism).
    #[arg(long)]
    parallelism: Option<u32>,
    /// The operator's runtime file (parallelism, assignmentEpoch, and during a rescale
    /// previousParallelism, release, peerUrl).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Base URL of an earlier owner during a hand-off, as a template with {ordinal}, {pipeline}
    /// and {namespace} (default: the runtime file's peerUrl, else
    /// http://{pipeline}-{ordinal}.{pipeline}-workers.{namespace}.svc:9102).
    #[arg(long, value_name = "TEMPLATE")]
    peer_url: Option<String>,
    /// Base URL of one peer, ahead of the template, as ORDINAL=URL (repeatable).
    #[arg(long = "peer", value_name = "ORDINAL=URL", value_parser = parse_peer)]
    peers: Vec<(u32, String)>,
    /// Escape hatch: start tasks that moved here from this volume only, without asking their
    /// earlier owners (state only they hold is lost for those tasks). Also TIDEMARK_SKIP_HANDOFF.
    #[arg(long, env = "TIDEMARK_SKIP_HANDOFF")]
    skip_handoff: bool,
    /// Checkpoint directory (default: /var/lib/tidemark/checkpoints; with --embedded a
    /// temporary one, removed at the end).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Task threads, replacing spec.worker.threads (default: one per CPU, at most one per task).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Delivery guarantee, replacing spec.delivery.
    #[arg(long, value_parser = parse_delivery)]
    delivery: Option<Delivery>,
    /// Address of /metrics, /healthz, /readyz and the snapshot API (default: 0.0.0.0:9102;
    /// with --embedded 127.0.0.1 on a free port).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
}

fn parse_peer(text: &str) -> Result<(u32, String), String> {
    let (ordinal, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ORDINAL=URL"))?;
    let ordinal = ordinal
        .parse()
        .map_err(|_| format!("{ordinal:?} is not an ordinal"))?;
    Ok((ordinal, url.to_owned()))
}

fn parse_delivery(text: &str) -> Result<Delivery, String> {
    match text {
        "exactlyOnce" => Ok(Delivery::ExactlyOnce),
        "atLeastOnce" => Ok(Delivery::AtLeastOnce),
        other => Err(format!("{other:?} is not exactlyOnce or atLeastOnce")),
    }
}

/// Settings of the built-in generator.
#[derive(Args)]
struct GeneratorArgs {
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Stop after this many events.
    #[arg(long)]
    events: Option<u64>,
    /// Distinct users.
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    /// Distinct products.
    #[arg(long, default_value_t = 200)]
    products: u64,
    /// Share of events with an older timestamp (0 to 1).
    #[arg(long, default_value_t = 0.05)]
    out_of_order: f64,
    /// Most an out-of-order event lags behind (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    max_delay: Duration,
    /// Event time advanced per event (e.g. 50ms): with --rate, how fast event time runs.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    time_step: Duration,
    /// Seed of the pseudo-random sequence.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of records that repeat the record before them, same event_id (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Share of events stamped about a year ahead of the clock (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    clock_skew: f64,
    /// A planted incident, STEP:FACTOR@FROM..TO after the start (e.g. purchase:0.2@2h..4h:
    /// purchases succeed a fifth as often from 2 h to 4 h); repeatable.
    #[arg(long, value_parser = parse_incident)]
    incident: Vec<tidemark_api::IncidentSpec>,
    /// Plant a response to an action of the manifest, ACTION:LIFT (e.g. cart_coupon:0.3): a
    /// user outside its holdout group who leaves a cart buys with this extra chance 40 min to
    /// 2 h later. `generate` needs the manifest (-f) for it.
    #[arg(long, value_name = "ACTION:LIFT")]
    respond_to: Option<String>,
}

fn parse_incident(text: &str) -> Result<tidemark_api::IncidentSpec, String> {
    tidemark_api::IncidentSpec::parse(text)
}

#[derive(Args)]
struct GenerateArgs {
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// The manifest whose action --respond-to names.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[command(flatten)]
    generator: GeneratorArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    Duration::parse(text).map_err(|e| e.to_string())
}

impl GeneratorArgs {
    /// The planted response of `--respond-to`, resolved against `pipeline`'s actions.
    fn response(&self, pipeline: Option<&MarketingPipeline>) -> anyhow::Result<Option<Response>> {
        let Some(text) = &self.respond_to else {
            return Ok(None);
        };
        let (action, lift) = text
            .split_once(':')
            .context("--respond-to takes ACTION:LIFT, e.g. cart_coupon:0.3")?;
        let lift: f64 = lift
            .parse()
            .ok()
            .filter(|l| (0.0..=1.0).contains(l))
            .context("--respond-to: LIFT must be a number from 0 to 1")?;
        let pipeline = pipeline.context("--respond-to needs the manifest (-f)")?;
        let spec = pipeline
            .spec
            .analytics
            .iter()
            .find(|a| a.name == action)
            .and_then(|a| a.action.as_ref())
            .with_context(|| {
                format!("--respond-to: the manifest has no action named {action:?}")
            })?;
        Ok(Some(Response {
            pipeline: pipeline.metadata.name.clone().unwrap_or_default(),
            action: action.to_owned(),
            holdout: spec.holdout_percent / 100.0,
            lift,
        }))
    }

    fn spec(&self) -> anyhow::Result<GeneratorSpec> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.out_of_order),
            "--out-of-order must be between 0 and 1"
        );
        anyhow::ensure!(
            self.users > 0 && self.products > 0,
            "--users and --products must be at least 1"
        );
        anyhow::ensure!(self.time_step.millis() > 0, "--time-step must be positive");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.duplicates) && (0.0..=1.0).contains(&self.clock_skew),
            "--duplicates and --clock-skew must be between 0 and 1"
        );
        Ok(GeneratorSpec {
            rate: self.rate,
            events: self.events,
            users: self.users,
            products: self.products,
            out_of_order_fraction: self.out_of_order,
            max_delay: self.max_delay.clone(),
            time_step: self.time_step.clone(),
            seed: self.seed,
            duplicate_fraction: self.duplicates,
            clock_skew_fraction: self.clock_skew,
            incidents: self.incident.clone(),
            ..GeneratorSpec::default()
        })
    }
}

/// Exit code of an invalid manifest or usage.
const EXIT_INVALID: u8 = 2;

fn load(path: &Path) -> Result<MarketingPipeline, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: failed to read {}: {err}", path.display());
            return Err(ExitCode::from(EXIT_INVALID));
        }
    };
    parse_manifest(&text).map_err(|err| {
        match err {
            ManifestError::Parse(message) => {
                let first = message.lines().next().unwrap_or_default();
                eprintln!(
                    "error: {}: failed to parse manifest: {first}",
                    path.display()
                );
            }
            ManifestError::Invalid(problems) => {
                for problem in problems {
                    eprintln!("error: {}: {problem}", path.display());
                }
            }
        }
        ExitCode::from(EXIT_INVALID)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Validate { file } => match load(&file) {
            Ok(pipeline) => {
                println!(
                    "{}: valid MarketingPipeline {:?}",
                    file.display(),
                    pipeline.metadata.name.unwrap_or_default()
                );
                Ok(())
            }
            Err(code) => return code,
        },
        Command::Generate(args) => generate(&args),
        Command::Run(args) => {
            let pipeline = match load(&args.file) {
                Ok(pipeline) => pipeline,
                Err(code) => return code,
            };
            run(&pipeline, &args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut spec = args.generator.spec()?;
    spec.events = Some(spec.events.unwrap_or(1_000_000));
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("failed to create {}", args.out.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let pipeline = match &args.file {
        Some(path) => Some(load(path).map_err(|_| anyhow::anyhow!("invalid manifest"))?),
        None => None,
    };
    let mut generator = Generator::new(&spec);
    if let Some(response) = args.generator.response(pipeline.as_ref())? {
        generator = generator.respond(response);
    }
    let mut line = Vec::with_capacity(160);
    while generator.next_into(&mut line).is_some() {
        line.push(b'\n');
        out.write_all(&line)
            .with_context(|| format!("failed to write {}", args.out.display()))?;
        line.clear();
    }
    out.flush()
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    Ok(())
}

fn run(pipeline: &MarketingPipeline, args: &RunArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("failed to install the interrupt handler")?;
    let kafka_sources = pipeline.spec.sources.iter().any(|s| s.kafka.is_some());
    let w = &args.worker;
    if kafka_sources && args.embedded && args.input.is_none() {
        let opts = EmbeddedOptions {
            generator: args.generator.spec()?,
            response: args.generator.response(Some(pipeline))?,
            partitions: args.partitions,
            checkpoint_dir: w.checkpoint_dir.clone(),
            delivery: w.delivery,
            http_addr: w.http_addr.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
            threads: w.threads.map(usize::from),
            output: args.output.clone(),
            progress: !args.quiet,
            privacy_key_file: args.privacy_key_file.clone(),
        };
        let summary = run_embedded(pipeline, &opts, stop)?;
        if !args.quiet {
            let secs = summary.elapsed.as_secs_f64().max(1e-9);
            eprintln!(
                "tidemark: {} {} events in {:.2}s ({:.0}/s) through the embedded Kafka, {} results, {} dead letters",
                if summary.interrupted { "interrupted after" } else { "done:" },
                summary.produced,
                secs,
                summary.produced as f64 / secs,
                summary.results,
                summary.dead_letters,
            );
        }
        if summary.lost > 0 {
            eprintln!(
                "warning: the embedded Kafka dropped {} records of the sink and dead-letter topics before they were printed (it keeps 5 MB per partition); lower --rate to keep the printing up",
                summary.lost
            );
        }
        return Ok(());
    }
    if kafka_sources && args.input.is_none() {
        let opts = WorkerOptions {
            bootstrap_servers: w.bootstrap_servers.clone(),
            ordinal: w.ordinal,
            parallelism: w.parallelism,
            runtime_file: w.runtime.clone(),
            checkpoint_dir: w
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/tidemark/checkpoints")),
            delivery: w.delivery,
            http_addr: w.http_addr.unwrap_or_else(|| ([0, 0, 0, 0], 9102).into()),
            input_ended: None,
            taken: None,
            threads: w.threads.map(usize::from),
            source: Default::default(),
            handoff: PeerOptions {
                url_template: w.peer_url.clone(),
                peers: w.peers.iter().cloned().collect(),
                skip: w.skip_handoff,
            },
            privacy_key_file: args.privacy_key_file.clone(),
        };
        return Ok(run_worker(pipeline, &opts, stop)?);
    }
    let opts = LocalOptions {
        input: args.input.clone(),
        output: args.output.clone(),
        dead_letter: args.dead_letter.clone(),
        progress: !args.quiet,
        privacy_key_file: args.privacy_key_file.clone(),
    };
    let summary = run_local(pipeline, &opts, stop)?;
    if !args.quiet {
        let secs = summary.elapsed.as_secs_f64().max(1e-9);
        let reasons: Vec<String> = summary
            .dead_letters_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        eprintln!(
            "tidemark: {} {} events in {:.2}s ({:.0}/s), {} results, {} dead letters{}, peak {} open windows ({} bytes of state), most state {} bytes for {} live keys",
            if summary.interrupted { "interrupted after" } else { "done:" },
            summary.records,
            secs,
            summary.records as f64 / secs,
            summary.results,
            summary.dead_letters,
            if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
            summary.peak_windows,
            summary.peak_state_bytes,
            summary.max_state_bytes,
            summary.keys_at_max_state
        );
    }
    Ok(())
}
