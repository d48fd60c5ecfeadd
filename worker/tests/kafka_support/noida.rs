//! A Kafka broker with transactions for tests: noida-db (`.ci/tools/noida.sh` installs it into
//! a virtual environment under `target/tools/`), which writes transaction markers (so a
//! `read_committed` reader hides aborted records) and fences producers; on a free loopback port
//! with its data in a temporary directory, killed when dropped.
//!
//! Found through `TIDEMARK_NOIDA_BIN`, else in `<workspace>/target/tools/noida-venv`. Without it
//! a test prints why it is skipped and returns — unless `TIDEMARK_REQUIRE_NOIDA=1` (CI), where a
//! missing binary fails the test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// The noida-db binary, `None` (after printing why) when the test should be skipped.
///
/// Panics when `TIDEMARK_REQUIRE_NOIDA=1` and there is no runnable binary.
pub fn noida_bin() -> Option<PathBuf> {
    let required = std::env::var("TIDEMARK_REQUIRE_NOIDA").is_ok_and(|v| v == "1");
    let path = match std::env::var_os("TIDEMARK_NOIDA_BIN") {
        Some(path) => PathBuf::from(path),
        None => venv_bin().unwrap_or_else(|| PathBuf::from("noida-db")),
    };
    let runs = Command::new(&path)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Some(path);
    }
    let why = format!(
        "no runnable noida-db at {} (set TIDEMARK_NOIDA_BIN, or run .ci/tools/noida.sh)",
        path.display()
    );
    assert!(!required, "TIDEMARK_REQUIRE_NOIDA=1 but {why}");
    eprintln!("skipped: {why}");
    None
}

/// `target/tools/noida-venv/lib/python3.*/site-packages/noida_db/noida-db`, if there.
fn venv_bin() -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/noida-venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/noida_db/noida-db"))
        .find(|p| p.is_file())
}

/// A noida-db broker process serving only Kafka; killed when dropped.
pub struct Noida {
    child: Child,
    /// `HOST:PORT` for `bootstrap.servers`.
    pub bootstrap: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Noida {
    /// Starts a broker on a free loopback port and creates `topics` (name, partitions); `None`
    /// when noida-db is not installed and not required (see [`noida_bin`]).
    pub fn start(topics: &[(&str, i32)]) -> Option<Noida> {
        let bin = noida_bin()?;
        // The free port is found by binding port 0 and releasing it; another process may take
        // it in between, so a broker that does not come up is retried on a new port.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&bin) {
                Ok(noida) => {
                    for (topic, partitions) in topics {
                        noida.create_topic(topic, *partitions);
                    }
                    return Some(noida);
                }
                Err(why) => failures.push(why),
            }
        }
        panic!("noida-db did not start: {failures:#?}");
    }

    fn try_start(bin: &Path) -> Result<Noida, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("noida.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // The binary itself, not the package's Python wrapper: killing this process stops the
        // broker.
        let mut child = Command::new(bin)
            .args(["start", "--only", "kafka", "--host", "127.0.0.1"])
            .args(["--kafka-port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("noida-db exited with {status}: {}", read_log(&log)));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "noida-db not listening on {port}: {}",
                    read_log(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Noida {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        })
    }

    /// Creates `topic` with `partitions` (a CreateTopics request: noida-db creates a topic with
    /// one partition when a metadata request names it, so none may come first) and waits until
    /// its metadata shows every partition.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("allow.auto.create.topics", "false")
            .create()
            .unwrap();
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(super::DEADLINE));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let results = runtime
            .block_on(admin.create_topics([&new], &options))
            .unwrap_or_else(|e| panic!("create topic {topic}: {e}; broker log: {}", self.log()));
        for result in results {
            if let Err((_, code)) = result {
                panic!("create topic {topic}: {code}; broker log: {}", self.log());
            }
        }
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

impl Drop for Noida {
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
