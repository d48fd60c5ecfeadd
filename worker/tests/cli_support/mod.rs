//! What the tests that run the `tidemark` binary share: running it, its standard error, the
//! examples' paths, generated events.

#![allow(dead_code)] // each test binary uses some of these
#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `tidemark ARGS` to its end.
pub fn tidemark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .output()
        .unwrap()
}

/// The standard error of a run, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The path of `examples/NAME`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Writes the events `tidemark generate` makes with `flags` to `path`.
pub fn generate(path: &Path, flags: &[&str]) {
    let out = tidemark(&[&["generate", "--out", path.to_str().unwrap()][..], flags].concat());
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs `manifest` quietly on the embedded Kafka with four partitions (`--rate 0`) and
/// `flags`; returns what it printed (the sink topics' records).
pub fn embedded_four_partitions(manifest: &Path, flags: &[&str]) -> String {
    let run = [
        "run",
        "-q",
        "-f",
        manifest.to_str().unwrap(),
        "--embedded",
        "--rate",
        "0",
        "--partitions",
        "4",
    ];
    let out = tidemark(&[&run[..], flags].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
