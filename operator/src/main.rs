//! `tidemark-operator`: flags in, [`tidemark_operator::run`] out.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tidemark_operator::{names, run, RunConfig};

/// Tidemark's Kubernetes operator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile MarketingPipelines (the in-cluster kubeconfig or $KUBECONFIG is used).
    Run(Box<RunArgs>),
    /// Print the MarketingPipeline CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespace to watch; repeat for several; none means every namespace.
    #[arg(
        long = "namespace",
        env = "TIDEMARK_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Worker image used when a pipeline does not set spec.worker.image.
    #[arg(long, env = "TIDEMARK_WORKER_IMAGE", default_value = names::DEFAULT_WORKER_IMAGE)]
    worker_image: String,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "TIDEMARK_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader with a Lease so that only one replica reconciles.
    #[arg(long, env = "TIDEMARK_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "TIDEMARK_LEASE_NAME", default_value = "tidemark-operator")]
    lease_name: String,
    /// Namespace of the Lease; default: $POD_NAMESPACE, else the kubeconfig's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity in the Lease; default: $POD_NAME, else the host name ($HOSTNAME or the
    /// kernel's) and the process id.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Prometheus HTTP API (e.g. http://prometheus-operated.monitoring:9090) that the
    /// autoscaler and the status's lag and last checkpoint read, for pipelines that set no
    /// spec.autoscaling.prometheusUrl.
    #[arg(long, env = "TIDEMARK_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Give each pipeline a NetworkPolicy: its workers' port 9102 (metrics and the snapshot
    /// hand-off) admits only the pipeline's own workers and the --scrape-namespace namespaces.
    #[arg(long, env = "TIDEMARK_WORKER_NETWORK_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    worker_network_policy: bool,
    /// A namespace whose pods (Prometheus) may scrape the workers' metrics; repeat for several.
    #[arg(long = "scrape-namespace")]
    scrape_namespaces: Vec<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", tidemark_operator::crd::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .init();
            let identity = args.identity.unwrap_or_else(|| {
                tidemark_operator::run::default_identity(
                    std::env::var("HOSTNAME").ok(),
                    std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
                    std::process::id(),
                )
            });
            let config = RunConfig {
                namespaces: args.namespaces,
                worker_image: args.worker_image,
                metrics_addr: args.metrics_addr,
                leader_election: args.leader_election,
                lease_name: args.lease_name,
                lease_namespace: args.lease_namespace,
                identity,
                lease_duration: Duration::from_secs(args.lease_duration_seconds),
                prometheus_url: args.prometheus_url,
                worker_network_policy: args.worker_network_policy,
                scrape_namespaces: args.scrape_namespaces,
            };
            run(config).await.context("operator stopped with an error")
        }
    }
}
