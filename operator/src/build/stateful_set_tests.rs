//! Tests of the worker StatefulSet, over the YAML fixtures.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::build::fixtures::{params, pipeline, GENERATOR, QUICKSTART};
use crate::build::{desired, selector_string, BuildParams};
use crate::names::*;

fn build(yaml: &str, params: &BuildParams) -> StatefulSet {
    desired(&pipeline(yaml), params)
        .expect("build")
        .stateful_set
}

fn pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec.template.spec.as_ref().expect("pod spec")
}

fn worker(sts: &StatefulSet) -> &Container {
    &pod(sts).containers[0]
}

#[test]
fn workers_run_the_mounted_config_with_the_contract_arguments() {
    let sts = build(QUICKSTART, &params(2));
    let c = worker(&sts);
    assert_eq!(
        c.args.as_deref().expect("args"),
        [
            "run",
            "-f",
            "/etc/tidemark/pipeline.yaml",
            "--runtime",
            "/etc/tidemark/runtime.yaml",
            "--checkpoint-dir",
            "/var/lib/tidemark/checkpoints"
        ]
    );
    assert_eq!(c.image.as_deref(), Some(DEFAULT_WORKER_IMAGE));
    let env = c.env.as_deref().expect("env");
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").expect("POD_NAME");
    let field = pod_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(field.field_path, "metadata.name");
    assert!(env
        .iter()
        .any(|e| e.name == "TIDEMARK_PIPELINE" && e.value.as_deref() == Some("quickstart")));
    let mounts: Vec<_> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for path in [
        "/etc/tidemark/pipeline.yaml",
        "/etc/tidemark/runtime.yaml",
        CHECKPOINT_DIR,
        "/tmp",
        KAFKA_TLS_DIR,
        KAFKA_SASL_DIR,
    ] {
        assert!(mounts.contains(&path), "{path} is mounted: {mounts:?}");
    }
}

#[test]
fn replicas_follow_the_parallelism_in_effect_and_the_selector_matches_status() {
    let sts = build(QUICKSTART, &params(5));
    let spec = &sts.spec;
    assert_eq!(spec.replicas, Some(5));
    assert_eq!(spec.service_name.as_deref(), Some("quickstart-workers"));
    let selector = spec.selector.match_labels.as_ref().expect("labels");
    let as_string = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(as_string, selector_string("quickstart"));
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(pod_labels[LABEL_PIPELINE], "quickstart");
    assert_eq!(pod_labels[LABEL_MANAGED_BY], "tidemark-operator");
}

#[test]
fn during_a_hand_off_every_earlier_owner_stays_and_the_assignment_is_recorded() {
    use crate::rescale::{Assignment, ANNOTATION_ASSIGNMENT};
    use tidemark_api::{HandoffStatus, HandoffStep};
    let handoff = |step| BuildParams {
        parallelism: 1,
        assignment_epoch: 4,
        handoff: Some(HandoffStatus {
            from: vec![3],
            to: 1,
            step,
        }),
        ..params(1)
    };
    let acquiring = build(QUICKSTART, &handoff(HandoffStep::Acquire));
    assert_eq!(
        acquiring.spec.replicas,
        Some(3),
        "surplus workers serve until restored"
    );
    let recorded = acquiring
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ASSIGNMENT))
        .and_then(|a| Assignment::from_annotation(a))
        .expect("the assignment annotation");
    assert_eq!(recorded, handoff(HandoffStep::Acquire).assignment());
    let complete = build(QUICKSTART, &handoff(HandoffStep::Complete));
    assert_eq!(complete.spec.replicas, Some(1));
    assert_eq!(
        complete.spec.template, acquiring.spec.template,
        "completing changes replicas only"
    );
    let budget = desired(&pipeline(QUICKSTART), &handoff(HandoffStep::Acquire))
        .expect("build")
        .pod_disruption_budget;
    assert!(budget.is_some(), "three pods run during the hand-off");
}

#[test]
fn checkpoint_claim_takes_size_and_storage_class_from_the_spec() {
    let sts = build(QUICKSTART, &params(2));
    let claims = sts.spec.volume_claim_templates.as_ref().expect("claims");
    let claim = claims[0].spec.as_ref().expect("claim spec");
    assert_eq!(claims[0].metadata.name.as_deref(), Some("checkpoints"));
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast-ssd"));
    let requests = claim
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests["storage"].0, "5Gi");

    let default = build(GENERATOR, &params(1));
    let claims = default
        .spec
        .volume_claim_templates
        .as_ref()
        .expect("claims");
    let claim = claims[0].spec.as_ref().expect("claim spec");
    assert_eq!(
        claim.storage_class_name, None,
        "absent class means the cluster default"
    );
    assert_eq!(
        claim
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .expect("r")["storage"]
            .0,
        "1Gi"
    );
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    let sts = build(QUICKSTART, &params(2));
    let pod_sc = pod(&sts)
        .security_context
        .as_ref()
        .expect("pod security context");
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let sc = worker(&sts)
        .security_context
        .as_ref()
        .expect("container security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(pod(&sts).automount_service_account_token, Some(false));
}

#[test]
fn probes_hit_health_and_readiness_on_the_named_port() {
    let sts = build(QUICKSTART, &params(2));
    let c = worker(&sts);
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(
        c.ports.as_deref().expect("ports")[0].container_port,
        WORKER_PORT
    );
}

#[test]
fn worker_image_and_resources_from_the_spec_override_the_defaults() {
    let mut p = pipeline(GENERATOR);
    p.spec.worker.image = Some("registry.local/tidemark:dev".into());
    p.spec.worker.resources = Some(serde_saphyr::from_str("limits: { cpu: '2' }").expect("yaml"));
    let sts = desired(&p, &params(1)).expect("build").stateful_set;
    assert_eq!(
        worker(&sts).image.as_deref(),
        Some("registry.local/tidemark:dev")
    );
    let resources = worker(&sts).resources.as_ref().expect("resources");
    assert_eq!(resources.limits.as_ref().expect("limits")["cpu"].0, "2");
    assert!(
        pod(&sts)
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref())
            .all(|s| s.secret_name.as_deref() == Some("demo-handoff-5f0c6d52")),
        "no secrets asked for but the hand-off token"
    );
}

#[test]
fn a_spec_change_changes_the_pod_template_hash() {
    let hash = |p: &tidemark_api::MarketingPipeline| {
        let sts = desired(p, &params(2)).expect("build").stateful_set;
        sts.spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .expect("ann")[ANNOTATION_CONFIG_HASH]
            .clone()
    };
    let before = pipeline(QUICKSTART);
    let mut after = before.clone();
    after.spec.checkpoint.interval = tidemark_api::Duration::from_millis(30_000);
    assert_ne!(hash(&before), hash(&after));
    assert_eq!(hash(&before), hash(&before.clone()), "deterministic");
}
