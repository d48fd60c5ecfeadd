//! The worker ConfigMap `<name>-config`: the pipeline manifest and the runtime settings the
//! operator decides, plus the hash that rolls the pods when either changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tidemark_api::MarketingPipeline;

use super::{BuildError, BuildParams, Context};
use crate::names::*;
use crate::rescale::Assignment;

/// The ConfigMap the workers read their pipeline and runtime settings from.
pub fn config_map(
    context: &Context,
    pipeline: &MarketingPipeline,
    params: &BuildParams,
) -> Result<ConfigMap, BuildError> {
    let data = BTreeMap::from([
        (CONFIG_KEY_PIPELINE.to_owned(), pipeline_manifest(pipeline)?),
        (
            CONFIG_KEY_RUNTIME.to_owned(),
            runtime_yaml(&context.name, &context.namespace, &params.assignment()),
        ),
    ]);
    Ok(ConfigMap {
        metadata: context.metadata(config_map_name(&context.name)),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// The pipeline as a manifest the worker can run with `tidemark run -f`: type, name, namespace
/// and spec; no status, labels or server-set metadata, so that only a spec change changes it.
pub fn pipeline_manifest(pipeline: &MarketingPipeline) -> Result<String, BuildError> {
    let mut clean = MarketingPipeline::new(
        pipeline.metadata.name.as_deref().unwrap_or_default(),
        pipeline.spec.clone(),
    );
    clean.metadata = ObjectMeta {
        name: pipeline.metadata.name.clone(),
        namespace: pipeline.metadata.namespace.clone(),
        ..ObjectMeta::default()
    };
    serde_saphyr::to_string(&clean).map_err(BuildError::Manifest)
}

/// `runtime.yaml`: what the operator decided for the workers. After a pipeline's first rescale
/// it also says whom to ask for moved tasks (`previousParallelism`, `peerUrl`: the pods behind
/// the headless Service) and, in a release step, `release: true`. These lines stay after the
/// hand-off completes, so completing it changes no worker config and rolls no pod; a pipeline
/// never rescaled keeps the two-line file (an operator upgrade rolls nothing).
pub fn runtime_yaml(name: &str, namespace: &str, assignment: &Assignment) -> String {
    let mut text = format!(
        "parallelism: {}\nassignmentEpoch: {}\n",
        assignment.parallelism, assignment.epoch
    );
    let previous = assignment.previous();
    if !previous.is_empty() {
        let list: Vec<String> = previous.iter().map(i32::to_string).collect();
        text.push_str(&format!("previousParallelism: [{}]\n", list.join(", ")));
        if assignment.release() {
            text.push_str("release: true\n");
        }
        text.push_str(&format!(
            "peerUrl: \"http://{}-{{ordinal}}.{}.{namespace}.svc:{WORKER_PORT}\"\n",
            workload_name(name),
            headless_service_name(name)
        ));
    }
    text
}

/// Hash of the ConfigMap data (FNV-1a, 64 bit, hex). Not a security boundary, only a change
/// detector; chosen over `DefaultHasher` because its output must stay the same across operator
/// builds, or an operator upgrade would roll every pipeline's pods.
pub fn config_hash(config_map: &ConfigMap) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for (key, value) in config_map.data.iter().flatten() {
        // A separator byte that YAML text never contains keeps ("ab","c") apart from ("a","bc").
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{params, pipeline, QUICKSTART};
    use crate::build::Context;

    #[test]
    fn config_map_holds_the_manifest_and_the_runtime_settings() {
        let pipeline = pipeline(QUICKSTART);
        let cm = config_map(
            &Context::new(&pipeline).expect("ctx"),
            &pipeline,
            &params(3),
        )
        .expect("config map");
        assert_eq!(cm.metadata.name.as_deref(), Some("quickstart-config"));
        let data = cm.data.expect("data");
        assert_eq!(
            data[CONFIG_KEY_RUNTIME],
            "parallelism: 3\nassignmentEpoch: 1\n"
        );
        let manifest = tidemark_api::parse_manifest(&data[CONFIG_KEY_PIPELINE])
            .expect("the worker can parse the manifest");
        assert_eq!(manifest.spec, pipeline.spec);
        assert_eq!(manifest.metadata.namespace.as_deref(), Some("shop"));
        assert!(!data[CONFIG_KEY_PIPELINE].contains("status"));
        assert!(!data[CONFIG_KEY_PIPELINE].contains("uid"));
    }

    #[test]
    fn during_a_hand_off_the_runtime_says_whom_to_ask_and_completing_it_changes_nothing() {
        use tidemark_api::{HandoffStatus, HandoffStep};
        let pipeline = pipeline(QUICKSTART);
        let context = Context::new(&pipeline).expect("ctx");
        let with = |step| BuildParams {
            parallelism: 3,
            assignment_epoch: 5,
            handoff: Some(HandoffStatus {
                from: vec![2],
                to: 3,
                step,
            }),
            ..params(3)
        };
        let runtime = |p: &BuildParams| {
            config_map(&context, &pipeline, p)
                .expect("cm")
                .data
                .expect("data")[CONFIG_KEY_RUNTIME]
                .clone()
        };
        assert_eq!(
            runtime(&with(HandoffStep::Release)),
            "parallelism: 3\nassignmentEpoch: 5\npreviousParallelism: [2]\nrelease: true\n\
             peerUrl: \"http://quickstart-{ordinal}.quickstart-workers.shop.svc:9102\"\n"
        );
        let acquire = runtime(&with(HandoffStep::Acquire));
        assert_eq!(
            acquire,
            "parallelism: 3\nassignmentEpoch: 5\npreviousParallelism: [2]\n\
             peerUrl: \"http://quickstart-{ordinal}.quickstart-workers.shop.svc:9102\"\n"
        );
        assert_eq!(runtime(&with(HandoffStep::Complete)), acquire);
        let hash = |p: &BuildParams| config_hash(&config_map(&context, &pipeline, p).expect("cm"));
        assert_eq!(
            hash(&with(HandoffStep::Acquire)),
            hash(&with(HandoffStep::Complete)),
            "completing a hand-off rolls no pod"
        );
    }

    #[test]
    fn hash_changes_with_the_spec_and_not_with_status_or_labels() {
        let base = pipeline(QUICKSTART);
        let hash = |p: &MarketingPipeline, n| {
            config_hash(&config_map(&Context::new(p).expect("ctx"), p, &params(n)).expect("cm"))
        };
        let mut relabeled = base.clone();
        relabeled.metadata.labels = Some([("team".to_owned(), "growth".to_owned())].into());
        relabeled.metadata.resource_version = Some("999".into());
        relabeled.status = Some(tidemark_api::MarketingPipelineStatus::default());
        assert_eq!(hash(&base, 2), hash(&relabeled, 2));

        let mut changed = base.clone();
        changed.spec.checkpoint.retain = 5;
        assert_ne!(hash(&base, 2), hash(&changed, 2));
        assert_ne!(
            hash(&base, 2),
            hash(&base, 3),
            "parallelism is part of the worker config"
        );
    }
}
