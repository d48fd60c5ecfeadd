//! The real `tidemark-operator` binary as a child process.
//!
//! The binary belongs to another package, so Cargo does not build it for this crate's tests;
//! [`binary`] runs `cargo build -p tidemark-operator` once per test process (a no-op when it is
//! up to date) and finds it next to the test executable's profile directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// Path of the freshly built operator binary.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TIDEMARK_OPERATOR_BIN") {
        // A prebuilt binary (e.g. a release build for measurements).
        return Ok(PathBuf::from(path));
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build() -> anyhow::Result<PathBuf> {
    // target/<profile>/deps/<test-exe>  →  target/<profile>/tidemark-operator
    let exe = std::env::current_exe().context("failed to find the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("unexpected test executable path")?;
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .unwrap_or("debug")
        .to_owned();
    let target_dir = profile_dir.parent().context("no target directory")?;
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args([
        "build",
        "--quiet",
        "-p",
        "tidemark-operator",
        "--bin",
        "tidemark-operator",
    ]);
    cargo.arg("--target-dir").arg(target_dir);
    // target/debug is the dev (and test) profile; any other directory is named after its profile.
    if profile != "debug" {
        cargo.args(["--profile", &profile]);
    }
    let status = cargo.status().context("failed to run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build -p tidemark-operator failed");
    Ok(profile_dir.join("tidemark-operator"))
}

/// A running operator process; killed when dropped.
pub struct Operator {
    child: Child,
    /// Address of its `/metrics` and `/healthz`.
    pub metrics_addr: std::net::SocketAddr,
    /// Its identity in the Lease and in events.
    pub identity: String,
}

/// Options of [`Operator::start`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Identity in the Lease.
    pub identity: String,
    /// `--leader-election`.
    pub leader_election: bool,
    /// `--lease-duration-seconds`.
    pub lease_seconds: u64,
    /// `--namespace` flags.
    pub namespaces: Vec<String>,
    /// `--prometheus-url`.
    pub prometheus_url: Option<String>,
    /// `--scrape-namespace` flags.
    pub scrape_namespaces: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            identity: "operator-0".into(),
            leader_election: true,
            lease_seconds: 3,
            namespaces: vec![],
            prometheus_url: None,
            scrape_namespaces: vec![],
        }
    }
}

impl Operator {
    /// Starts `tidemark-operator run` with `kubeconfig` (a file path).
    pub async fn start(kubeconfig: &std::path::Path, options: &Options) -> anyhow::Result<Self> {
        let port = free_port()?;
        let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(binary()?);
        command
            .arg("run")
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--leader-election")
            .arg(options.leader_election.to_string())
            .arg("--lease-namespace")
            .arg("default")
            .arg("--lease-duration-seconds")
            .arg(options.lease_seconds.to_string())
            .arg("--identity")
            .arg(&options.identity)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = &options.prometheus_url {
            command.arg("--prometheus-url").arg(url);
        }
        for namespace in &options.namespaces {
            command.arg("--namespace").arg(namespace);
        }
        for namespace in &options.scrape_namespaces {
            command.arg("--scrape-namespace").arg(namespace);
        }
        let child = command
            .spawn()
            .context("failed to start tidemark-operator")?;
        Ok(Self {
            child,
            metrics_addr,
            identity: options.identity.clone(),
        })
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status (graceful shutdown), at most `timeout`.
    pub async fn terminate(
        mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let status = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()?;
            anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        }
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("operator did not stop after SIGTERM")??;
        Ok(status)
    }

    /// Kills the process at once (a crash).
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .context("failed to kill the operator")
    }

    /// GETs `path` from the operator's HTTP endpoint.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }

    /// Resident memory of the process in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
