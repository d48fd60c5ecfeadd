//! `tidemark-mock-kafka`: hosts librdkafka's mock Kafka cluster for tests, so worker processes
//! reach a Kafka over TCP that outlives them (they can be killed while it keeps the log).
//!
//! It creates the topics given as `--topic NAME:PARTITIONS`, prints one line
//! `bootstrap=HOST:PORT[,HOST:PORT...]` on standard output, and serves until standard input
//! closes (the test dropped its pipe), SIGTERM or SIGINT. With `--no-stdin` only signals stop it
//! (for shells that start background jobs with standard input at end of file).
//!
//! What the mock does and does not implement (transaction markers, fencing) is in
//! `docs/kafka.md`; this binary adds nothing to it.

use std::io::{Read, Write};

use anyhow::Context;
use clap::Parser;
use rdkafka::mocking::MockCluster;

/// A mock Kafka cluster for tests (librdkafka's), served until stdin closes or SIGTERM.
#[derive(Parser)]
#[command(name = "tidemark-mock-kafka", version, about)]
struct Cli {
    /// Number of brokers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    brokers: i32,
    /// A topic to create, as NAME:PARTITIONS; repeatable.
    #[arg(long = "topic", value_parser = parse_topic)]
    topics: Vec<(String, i32)>,
    /// Ignore standard input; stop only on SIGTERM or SIGINT.
    #[arg(long)]
    no_stdin: bool,
}

fn parse_topic(text: &str) -> Result<(String, i32), String> {
    let (name, partitions) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("expected NAME:PARTITIONS, got {text:?}"))?;
    let partitions: i32 = partitions
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("partitions of {name:?} must be a positive number"))?;
    if name.is_empty() {
        return Err(format!("expected NAME:PARTITIONS, got {text:?}"));
    }
    Ok((name.to_owned(), partitions))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cluster = MockCluster::new(cli.brokers).context("failed to start the mock cluster")?;
    let replication = cli.brokers.min(3);
    for (topic, partitions) in &cli.topics {
        cluster
            .create_topic(topic, *partitions, replication)
            .with_context(|| format!("failed to create topic {topic:?}"))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "bootstrap={}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    drop(stdout);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("failed to start the runtime")?;
    runtime.block_on(serve(cli.no_stdin))?;
    // Dropping the cluster closes its listeners.
    drop(cluster);
    Ok(())
}

/// Returns when standard input ends (unless `no_stdin`), or on SIGTERM or SIGINT.
async fn serve(no_stdin: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to watch SIGINT")?;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    // With `no_stdin` the sender is held, so the receiver never completes.
    let _held = if no_stdin {
        Some(closed_tx)
    } else {
        // A blocking reader on its own thread: anything written is ignored; end of file or a
        // read error means the parent is gone.
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = closed_tx.send(());
        });
        None
    };
    let stdin_closed = async {
        let _ = closed_rx.await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = stdin_closed => {}
    }
    Ok(())
}
