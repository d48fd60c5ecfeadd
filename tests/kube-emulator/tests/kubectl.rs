//! The real `kubectl` against the `kube-emulator` binary: proves that a user's workflow (apply a
//! CRD and a custom resource, list with printer columns, scale, wait for a condition, explain,
//! delete) works on the emulator, not just our own client.
//!
//! Runs only with `TIDEMARK_KUBECTL_TESTS=1` (CI sets it after `.ci/tools/kube.sh`); then a missing
//! kubectl is a failure, not a skip. `KUBECTL` overrides the binary path.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.tidemark.dev
spec:
  group: test.tidemark.dev
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: Desired state of the widget.
            properties:
              replicas: {type: integer, minimum: 0, description: How many workers run the widget.}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET: &str =
    "apiVersion: test.tidemark.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  replicas: 1\n";

/// Kills the emulator process when the test ends, pass or fail.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/kubectl")
}

struct Kubectl {
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kubectl runs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let dir = self.dir.path();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--kubeconfig").arg(dir.join("kubeconfig"));
        cmd.arg("--cache-dir").arg(dir.join("cache"));
        cmd.args(args).env("HOME", dir).current_dir(dir);
        cmd
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn start_emulator(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .args(["--port", "0", "--kubeconfig"])
        .arg(dir.join("kubeconfig"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("emulator binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read banner");
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "unexpected banner {line:?}"
    );
    Server(child)
}

#[test]
fn real_kubectl_applies_lists_scales_and_waits_on_custom_resources() {
    if std::env::var("TIDEMARK_KUBECTL_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set TIDEMARK_KUBECTL_TESTS=1 (after .ci/tools/kube.sh) to run the real kubectl");
        return;
    }
    let binary = kubectl_path();
    assert!(
        binary.exists(),
        "kubectl not found at {}: run .ci/tools/kube.sh first (or set KUBECTL)",
        binary.display()
    );
    let kubectl = Kubectl {
        binary,
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let _server = start_emulator(kubectl.dir.path());
    std::fs::write(kubectl.dir.path().join("crd.yaml"), CRD).expect("write crd");
    std::fs::write(kubectl.dir.path().join("widget.yaml"), WIDGET).expect("write widget");

    kubectl.ok(&["apply", "-f", "crd.yaml"]);
    kubectl.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.test.tidemark.dev",
        "--timeout=10s",
    ]);
    assert!(kubectl
        .ok(&["apply", "-f", "widget.yaml"])
        .contains("widget.test.tidemark.dev/w1 created"));

    let listed = kubectl.ok(&["get", "widgets"]);
    let header: Vec<&str> = listed
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "REPLICAS", "READY", "AGE"],
        "{listed}"
    );

    kubectl.ok(&["scale", "wd/w1", "--replicas=3"]);
    assert_eq!(
        kubectl.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );

    let waiting = kubectl
        .command(&[
            "wait",
            "--for=condition=Ready",
            "widget/w1",
            "--timeout=30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl wait starts");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = r#"{"status":{"phase":"Running","replicas":3,"conditions":[{"type":"Ready","status":"True","reason":"Up","message":"ok","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}"#;
    kubectl.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    let waited = waiting.wait_with_output().expect("kubectl wait ends");
    assert!(
        waited.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("condition met"));

    let row = kubectl.ok(&["get", "wd", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], ["w1", "Running", "3", "True"], "{row}");

    assert!(kubectl
        .ok(&["explain", "widgets.spec"])
        .contains("How many workers run the widget."));

    kubectl.ok(&["delete", "-f", "widget.yaml"]);
    let gone = kubectl.run(&["get", "widget", "w1"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

fn helm_path() -> PathBuf {
    if let Some(path) = std::env::var_os("HELM") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/helm")
}

#[test]
fn real_helm_installs_upgrades_and_uninstalls_a_release() {
    if std::env::var("TIDEMARK_KUBECTL_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set TIDEMARK_KUBECTL_TESTS=1 (after .ci/tools/kube.sh) to run the real helm"
        );
        return;
    }
    let helm = helm_path();
    assert!(
        helm.exists(),
        "helm not found at {}: run .ci/tools/kube.sh first (or set HELM)",
        helm.display()
    );
    let kubectl = Kubectl {
        binary: kubectl_path(),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let dir = kubectl.dir.path();
    let _server = start_emulator(dir);
    std::fs::create_dir_all(dir.join("chart/templates")).expect("chart dir");
    std::fs::write(
        dir.join("chart/Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )
    .expect("Chart.yaml");
    std::fs::write(
        dir.join("chart/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n  level: {{ .Values.level | default \"low\" | quote }}\n",
    )
    .expect("template");
    let run = |args: &[&str]| {
        let out = Command::new(&helm)
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .args(args)
            .env("HOME", dir)
            .env("HELM_CACHE_HOME", dir.join("helm-cache"))
            .env("HELM_CONFIG_HOME", dir.join("helm-config"))
            .env("HELM_DATA_HOME", dir.join("helm-data"))
            .current_dir(dir)
            .output()
            .expect("helm runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    run(&["install", "demo", "./chart"]);
    assert_eq!(
        kubectl.ok(&[
            "get",
            "configmap",
            "demo-config",
            "-o",
            "jsonpath={.data.level}"
        ]),
        "low"
    );
    run(&["upgrade", "demo", "./chart", "--set", "level=high"]);
    assert_eq!(
        kubectl.ok(&[
            "get",
            "configmap",
            "demo-config",
            "-o",
            "jsonpath={.data.level}"
        ]),
        "high"
    );
    assert!(run(&["list"]).contains("deployed"));
    run(&["uninstall", "demo"]);
    assert!(
        !kubectl
            .run(&["get", "configmap", "demo-config"])
            .status
            .success(),
        "uninstall removed the ConfigMap"
    );
}
