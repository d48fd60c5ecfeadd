//! The Argo CD health check of `MarketingPipeline` (examples/gitops/argocd), run by a real Lua
//! interpreter over statuses computed by the operator's own `status::compute`. Runs when
//! `TIDEMARK_LUA_TESTS=1` (set by `.ci/operator.sh` when `lua5.4` or `lua` is installed) and then
//! fails loudly if no interpreter is found.

use std::process::Command;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use tidemark_api::MarketingPipelineStatus;
use tidemark_operator::rescale::{Assignment, Scale};
use tidemark_operator::status::{compute, Inputs, Outcome, Workers};

const SCRIPT: &str = "examples/gitops/argocd/marketingpipeline-health.lua";

fn lua() -> Option<String> {
    ["lua5.4", "lua5.3", "lua5.1", "lua"]
        .into_iter()
        .map(String::from)
        .find(|bin| {
            Command::new(bin)
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// A Lua table constructor for a JSON value.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs the health script on `object`; returns (status, message).
fn health(lua: &str, object: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal hs = dofile({:?})\nio.write(hs.status, '\\n', hs.message)",
        lua_literal(object),
        tidemark_e2e::repo_path(SCRIPT).display().to_string()
    );
    let output = Command::new(lua)
        .arg("-e")
        .arg(program)
        .output()
        .expect("lua runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}

fn pipeline(generation: i64, status: Option<MarketingPipelineStatus>) -> Value {
    json!({
        "apiVersion": "tidemark.dev/v1alpha1",
        "kind": "MarketingPipeline",
        "metadata": { "name": "clickstream", "generation": generation },
        "spec": {},
        "status": status,
    })
}

fn status(generation: i64, outcome: &Outcome) -> MarketingPipelineStatus {
    let inputs = Inputs {
        generation: Some(generation),
        previous: None,
        selector: "app.kubernetes.io/instance=clickstream".into(),
        evaluation: None,
        now: Time(Timestamp::UNIX_EPOCH),
    };
    compute(&inputs, outcome)
}

fn applied(ready: i32) -> Outcome {
    Outcome::Applied {
        scale: Scale {
            assignment: Assignment {
                epoch: 1,
                parallelism: 2,
                handoff: None,
            },
            rescaled_from: None,
            advanced: None,
        },
        workers: Workers {
            replicas: 2,
            ready,
            updated: 2,
            rolled_out: true,
        },
    }
}

#[test]
fn argocd_health_follows_observed_generation_and_conditions() {
    let Some(lua) = lua() else {
        assert!(
            std::env::var("TIDEMARK_LUA_TESTS").is_err(),
            "TIDEMARK_LUA_TESTS=1 but no lua interpreter found"
        );
        eprintln!("skipped: no lua interpreter (apt-get install lua5.4)");
        return;
    };
    assert_eq!(
        health(&lua, &pipeline(1, None)).0,
        "Progressing",
        "no status yet"
    );
    let ready = status(3, &applied(2));
    let (state, message) = health(&lua, &pipeline(3, Some(ready.clone())));
    assert_eq!(
        (state.as_str(), message.as_str()),
        ("Healthy", "2/2 workers ready")
    );
    let (state, message) = health(&lua, &pipeline(4, Some(ready)));
    assert_eq!(
        state, "Progressing",
        "a new generation is not yet observed: {message}"
    );
    assert_eq!(
        health(&lua, &pipeline(3, Some(status(3, &applied(1))))).0,
        "Progressing"
    );
    let invalid = Outcome::InvalidSpec {
        message: "spec.sinks[0]: unknown analytic".into(),
        workers: None,
    };
    let (state, message) = health(&lua, &pipeline(5, Some(status(5, &invalid))));
    assert_eq!(state, "Degraded");
    assert_eq!(message, "InvalidSpec: spec.sinks[0]: unknown analytic");
}

#[test]
fn argocd_cm_example_embeds_the_tested_script() {
    let script = std::fs::read_to_string(tidemark_e2e::repo_path(SCRIPT)).expect("script");
    let cm: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(tidemark_e2e::repo_path(
            "examples/gitops/argocd/argocd-cm.yaml",
        ))
        .expect("cm"),
    )
    .expect("yaml");
    let embedded = cm["data"]["resource.customizations.health.tidemark.dev_MarketingPipeline"]
        .as_str()
        .expect("key");
    let code: String = script
        .lines()
        .filter(|l| !l.starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(embedded, code);
}
