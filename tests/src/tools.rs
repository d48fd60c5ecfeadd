//! The real `kubectl` and `helm` binaries, installed by `.ci/tools/kube.sh` into
//! `target/tools/bin/`. Tests that need them run when `TIDEMARK_KUBECTL_TESTS=1` and then fail
//! loudly if a binary is missing, rather than passing without having run.

use std::path::PathBuf;
use std::process::Output;

use anyhow::Context;

/// Whether the kubectl/helm tests are asked for.
pub fn enabled() -> bool {
    std::env::var("TIDEMARK_KUBECTL_TESTS").is_ok_and(|v| v == "1")
}

/// Path of tool `name` (`kubectl` or `helm`); an error says how to install it.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("KUBE_TOOLS_DIR")
        .map(|d| PathBuf::from(d).join("bin"))
        .unwrap_or_else(|| crate::repo_path("target/tools/bin"));
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run .ci/tools/kube.sh (TIDEMARK_KUBECTL_TESTS=1 requires it)",
        path.display()
    );
    Ok(path)
}

/// Runs `name args...` with `KUBECONFIG`, returning its output; fails on a non-zero exit with
/// stdout and stderr in the message.
pub fn run(
    name: &str,
    kubeconfig: Option<&std::path::Path>,
    args: &[&str],
) -> anyhow::Result<String> {
    let output = run_raw(name, kubeconfig, args)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "{name} {} failed ({}):\n{stdout}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// Runs `name args...` and returns the raw output, whatever the exit status.
pub fn run_raw(
    name: &str,
    kubeconfig: Option<&std::path::Path>,
    args: &[&str],
) -> anyhow::Result<Output> {
    let mut command = std::process::Command::new(tool(name)?);
    command.args(args).current_dir(crate::repo_path("."));
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    // helm keeps caches and config under $HOME; keep them out of the user's home.
    let home = std::env::temp_dir().join("tidemark-e2e-home");
    std::fs::create_dir_all(&home)?;
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"));
    command.env("HELM_DATA_HOME", home.join("data"));
    command
        .output()
        .with_context(|| format!("failed to run {name}"))
}
