//! Every pipeline manifest under `examples/` is a valid, complete manifest (the same file works
//! with `kubectl apply` and `tidemark run -f`), and the operator builds its objects.

use tidemark_api::parse_manifest;
use tidemark_operator::build::{desired, BuildParams};

fn manifests() -> Vec<std::path::PathBuf> {
    let root = tidemark_e2e::repo_path("examples");
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("examples/ readable")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && std::fs::read_to_string(&path).is_ok_and(|t| {
                    t.contains("kind: MarketingPipeline") && t.contains("\n  sources:")
                })
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn every_example_pipeline_is_valid_and_builds() {
    let found = manifests();
    assert!(
        found
            .iter()
            .any(|p| p.ends_with("gitops/base/clickstream.yaml")),
        "{found:?}"
    );
    for path in found {
        let text = std::fs::read_to_string(&path).expect("read");
        let mut pipeline =
            parse_manifest(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        pipeline.metadata.namespace = Some("default".into());
        pipeline.metadata.uid = Some("00000000-0000-4000-8000-000000000000".into());
        let params = BuildParams {
            default_image: "tidemark:test".into(),
            parallelism: pipeline.spec.parallelism,
            assignment_epoch: 1,
            handoff: None,
            service_monitor: true,
            network_policy: true,
            scrape_namespaces: vec!["monitoring".into()],
        };
        desired(&pipeline, &params).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
