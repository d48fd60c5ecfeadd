//! `kube-emulator`: serves the Kubernetes API emulator until Ctrl-C, for kubectl/helm and for
//! operator processes started by tests.
//!
//! Prints `listening on http://127.0.0.1:PORT` on stdout once ready; `--kubeconfig PATH` also
//! writes a kubeconfig pointing at it.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "kube-emulator",
    about = "Kubernetes API emulator for Tidemark tests"
)]
struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on (loopback only is the intended use).
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Write a kubeconfig for this server to PATH.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let emulator =
        tidemark_kube_emulator::Emulator::start_on(SocketAddr::new(args.address, args.port))
            .await?;
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, emulator.kubeconfig_yaml())
            .with_context(|| format!("failed to write kubeconfig {}", path.display()))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", emulator.url())?;
    stdout.flush()?;
    tokio::signal::ctrl_c()
        .await
        .context("failed to wait for Ctrl-C")?;
    emulator.shutdown().await;
    Ok(())
}
