//! A real Kafka-compatible broker for tests: tansu (`.ci/tools/tansu.sh` builds it into
//! `target/tools/bin/`), on a free loopback port with in-memory storage, and its topics.
//!
//! Found through `TIDEMARK_TANSU_BIN`, else `<workspace>/target/tools/bin/tansu`. Without it a
//! test prints why it is skipped and returns — unless `TIDEMARK_REQUIRE_TANSU=1` (CI), where a
//! missing binary fails the test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// The tansu binary, `None` (after printing why) when the test should be skipped.
///
/// Panics when `TIDEMARK_REQUIRE_TANSU=1` and there is no runnable binary.
pub fn tansu_bin() -> Option<PathBuf> {
    let required = std::env::var("TIDEMARK_REQUIRE_TANSU").is_ok_and(|v| v == "1");
    let path = match std::env::var_os("TIDEMARK_TANSU_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/tansu"),
    };
    let runs = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Some(path);
    }
    let why = format!(
        "no runnable tansu at {} (set TIDEMARK_TANSU_BIN, or run .ci/tools/tansu.sh)",
        path.display()
    );
    assert!(!required, "TIDEMARK_REQUIRE_TANSU=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

/// A tansu broker process with in-memory storage; killed when dropped.
pub struct Tansu {
    child: Child,
    bin: PathBuf,
    /// `HOST:PORT` for `bootstrap.servers`.
    pub bootstrap: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts a broker on a free loopback port and creates `topics` (name, partitions); `None`
    /// when tansu is not installed and not required (see [`tansu_bin`]).
    pub fn start(topics: &[(&str, i32)]) -> Option<Tansu> {
        let bin = tansu_bin()?;
        // The free port is found by binding port 0 and releasing it; another process may take
        // it in between, so a broker that does not come up is retried on a new port.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&bin) {
                Ok(tansu) => {
                    for (topic, partitions) in topics {
                        tansu.create_topic(topic, *partitions);
                    }
                    return Some(tansu);
                }
                Err(why) => failures.push(why),
            }
        }
        panic!("tansu did not start: {failures:#?}");
    }

    fn try_start(bin: &Path) -> Result<Tansu, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("tansu.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("tansu exited with {status}: {}", read_log(&log)));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("tansu not listening on {port}: {}", read_log(&log)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Tansu {
            child,
            bin: bin.to_path_buf(),
            bootstrap: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        })
    }

    /// Creates `topic` with `partitions` (tansu does not auto-create) and waits until its
    /// metadata shows every partition.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let output = Command::new(&self.bin)
            .args(["topic", "create", topic])
            .args(["--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://{}", self.bootstrap)])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tansu topic create {topic}: {}{}\nbroker log: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let deadline = Instant::now() + super::DEADLINE;
        loop {
            let seen = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map(|t| t.partitions().len())
                });
            if seen == Some(partitions as usize) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} has {seen:?} partitions, want {partitions}; broker log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's output so far (for failure messages).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    // The end is what explains a failure.
    let start = text.len().saturating_sub(4_000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}
