//! `tidemark run` worker processes for the Kafka tests: started with flags, their log captured,
//! their HTTP address read from the log, `/metrics` and `/readyz` polled, killed or stopped.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bearer token of the snapshot hand-off the test workers share.
pub const TOKEN: &str = "test-token-of-this-pipeline";

/// A token file shared by every worker of this test process, as the operator's Secret is shared
/// by every worker of a pipeline.
fn token_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("tidemark-test-token-{}", std::process::id()));
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        path
    })
    .clone()
}

/// A worker process; killed (SIGKILL) when dropped if still running.
pub struct WorkerProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: Option<SocketAddr>,
}

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerArgs<'a> {
    /// The manifest.
    pub manifest: &'a Path,
    /// `--bootstrap-servers`.
    pub bootstrap: &'a str,
    /// `--ordinal`.
    pub ordinal: u32,
    /// `--parallelism`.
    pub parallelism: u32,
    /// `--checkpoint-dir`.
    pub checkpoint_dir: &'a Path,
    /// `--delivery`.
    pub delivery: &'a str,
}

impl WorkerProcess {
    /// Starts `tidemark run` as a worker on an ephemeral HTTP port, logging at info level (the
    /// worker's lines) and warn (everything else).
    pub fn start(args: &WorkerArgs<'_>) -> WorkerProcess {
        Self::start_with(env!("CARGO_BIN_EXE_tidemark"), args)
    }

    /// Like [`Self::start`] with another `tidemark` binary.
    pub fn start_with(bin: &str, args: &WorkerArgs<'_>) -> WorkerProcess {
        let mut command = Command::new(bin);
        command
            .args(["run", "-q", "-f"])
            .arg(args.manifest)
            .args(["--bootstrap-servers", args.bootstrap])
            .args(["--ordinal", &args.ordinal.to_string()])
            .args(["--parallelism", &args.parallelism.to_string()])
            .arg("--checkpoint-dir")
            .arg(args.checkpoint_dir)
            .args(["--delivery", args.delivery])
            .args(["--http-addr", "127.0.0.1:0"]);
        Self::spawn(command)
    }

    /// Starts `command` (a `tidemark run` with every flag set) with the log levels and capture
    /// of [`Self::start`].
    pub fn spawn(mut command: Command) -> WorkerProcess {
        let mut child = command
            // As in a pod: the snapshot hand-off needs the pipeline's bearer token.
            .env(tidemark_worker::handoff::auth::TOKEN_FILE_ENV, token_file())
            .env("RUST_LOG", "warn,tidemark_worker=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(strip_ansi(&line));
            }
        });
        WorkerProcess {
            child,
            log,
            addr: None,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether a log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// The log as one text, for failure messages.
    pub fn log_text(&self) -> String {
        self.log().join("\n")
    }

    /// The HTTP server's address, from the log line `HTTP server listening bound=…`; waits for
    /// it up to `wait`, `None` if it has not appeared (or the process exited).
    pub fn addr_within(&mut self, wait: Duration) -> Option<SocketAddr> {
        let deadline = Instant::now() + wait;
        while self.addr.is_none() {
            self.addr = self.log().iter().find_map(|l| {
                if !l.contains("HTTP server listening") {
                    return None;
                }
                let at = l.find("bound=")? + "bound=".len();
                l[at..].split_whitespace().next()?.parse().ok()
            });
            if self.addr.is_some() {
                break;
            }
            if Instant::now() > deadline || self.exited() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.addr
    }

    /// The HTTP server's address; fails the test if it does not appear within the deadline.
    pub fn addr(&mut self) -> SocketAddr {
        match self.addr_within(super::DEADLINE) {
            Some(addr) => addr,
            None => panic!("worker has no HTTP address; log:\n{}", self.log_text()),
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// `GET path` on the worker: status code and body; `None` when it does not answer.
    pub fn get(&mut self, path: &str) -> Option<(u16, String)> {
        let addr = self.addr_within(Duration::ZERO)?;
        http_get(addr, path)
    }

    /// The sum of every series of metric `name` (exact name, any labels) on `/metrics`; `None`
    /// when the worker does not answer or has no such series.
    pub fn metric(&mut self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        metric_sum(&body, name)
    }

    /// Waits until metric `name` (summed over its series) reaches `at_least`; returns the value
    /// seen, or `None` if it did not within `wait` (or the worker stopped answering).
    pub fn wait_metric(&mut self, name: &str, at_least: f64, wait: Duration) -> Option<f64> {
        let deadline = Instant::now() + wait;
        loop {
            match self.metric(name) {
                Some(value) if value >= at_least => return Some(value),
                _ if Instant::now() >= deadline || self.exited() => return None,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Waits until `/readyz` answers 200; returns how long that took.
    pub fn wait_ready(&mut self) -> Duration {
        let started = Instant::now();
        self.addr();
        loop {
            if self.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return started.elapsed();
            }
            assert!(
                !self.exited(),
                "worker exited before it was ready; log:\n{}",
                self.log_text()
            );
            assert!(
                started.elapsed() < super::DEADLINE,
                "worker not ready; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `/readyz` answers 200 (true) or the process exits (false); fails the test
    /// after the deadline.
    pub fn wait_ready_or_exit(&mut self) -> bool {
        let started = Instant::now();
        while self.addr_within(Duration::from_millis(100)).is_none() {
            if self.exited() {
                return false;
            }
            assert!(started.elapsed() < super::DEADLINE, "{}", self.log_text());
        }
        loop {
            if self.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return true;
            }
            if self.exited() {
                return false;
            }
            assert!(
                started.elapsed() < super::DEADLINE,
                "worker not ready; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (fails the test after 30 s).
    pub fn terminate(mut self) -> ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not stop on SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET with short timeouts: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// The sum of the series of metric `name` in a Prometheus text exposition; `None` without any.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Every series of metric `name` as (labels, value).
pub fn metric_series(body: &str, name: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.trim().to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
