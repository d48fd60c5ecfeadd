//! The worker StatefulSet: pod `NAME-i` is worker `i`, with its own checkpoint volume, the
//! restricted security context, probes on the worker's HTTP port and the config hash that rolls
//! the pods when the worker config changes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tidemark_api::MarketingPipeline;

use super::{BuildParams, Context};
use crate::names::*;
use crate::rescale::ANNOTATION_ASSIGNMENT;

/// User and group the worker runs as (the distroless `nonroot` user).
const WORKER_UID: i64 = 65_532;
/// Time a worker gets to write its final checkpoint on shutdown.
const TERMINATION_GRACE_SECONDS: i64 = 60;

/// The StatefulSet of `params.parallelism` workers whose pod template carries `config_hash`.
pub fn stateful_set(
    context: &Context,
    pipeline: &MarketingPipeline,
    params: &BuildParams,
    config_hash: &str,
) -> StatefulSet {
    let checkpoint = &pipeline.spec.checkpoint;
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(CHECKPOINT_VOLUME.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: checkpoint.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(checkpoint.storage_size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let mut pod_labels = context.labels();
    pod_labels.extend(context.selector_labels());
    let assignment = params.assignment();
    let mut metadata = context.metadata(workload_name(&context.name));
    // The assignment this template carries, read back live by the next reconcile (`rescale`).
    metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_ASSIGNMENT.to_owned(),
        assignment.to_annotation(),
    )]));
    StatefulSet {
        metadata,
        spec: StatefulSetSpec {
            // During a hand-off every earlier owner stays, serving the tasks that moved.
            replicas: Some(assignment.replicas()),
            service_name: Some(headless_service_name(&context.name)),
            // Workers do not depend on each other to start; ordered start would only slow a
            // rescale down.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(context.selector_labels()),
                ..LabelSelector::default()
            },
            // Checkpoints outlive the pipeline object: deleting and re-creating a pipeline
            // resumes from its state. Volumes of removed pods are kept for the hand-off.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        ANNOTATION_CONFIG_HASH.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(context, pipeline, params)),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn pod_spec(context: &Context, pipeline: &MarketingPipeline, params: &BuildParams) -> PodSpec {
    let (volumes, mounts) = volumes(context, pipeline);
    let worker = &pipeline.spec.worker;
    let container = Container {
        name: WORKER_CONTAINER.into(),
        image: Some(
            worker
                .image
                .clone()
                .unwrap_or_else(|| params.default_image.clone()),
        ),
        image_pull_policy: worker.image_pull_policy.clone(),
        args: Some(
            [
                "run",
                "-f",
                &format!("{CONFIG_DIR}/{CONFIG_KEY_PIPELINE}"),
                "--runtime",
                &format!("{CONFIG_DIR}/{CONFIG_KEY_RUNTIME}"),
                "--checkpoint-dir",
                CHECKPOINT_DIR,
            ]
            .map(String::from)
            .into(),
        ),
        env: Some(env(context)),
        ports: Some(vec![ContainerPort {
            name: Some(WORKER_PORT_NAME.into()),
            container_port: WORKER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(worker.resources.clone().unwrap_or_else(default_resources)),
        // Restoring a large checkpoint can take a while: the startup probe holds liveness off.
        startup_probe: Some(probe("/healthz", 2, 90)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        // Workers never call the Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(WORKER_UID),
            run_as_group: Some(WORKER_UID),
            // Makes the checkpoint volume writable by the worker user.
            fs_group: Some(WORKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn env(context: &Context) -> Vec<EnvVar> {
    vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        },
        EnvVar {
            name: "TIDEMARK_PIPELINE".into(),
            value: Some(context.name.clone()),
            value_from: None,
        },
        EnvVar {
            name: HANDOFF_TOKEN_ENV.into(),
            value: Some(format!("{HANDOFF_DIR}/{HANDOFF_TOKEN_KEY}")),
            value_from: None,
        },
        EnvVar {
            name: "RUST_LOG".into(),
            value: Some("info".into()),
            value_from: None,
        },
    ]
}

fn probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(WORKER_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                .collect(),
        )
    };
    ResourceRequirements {
        requests: quantities(&[("cpu", "500m"), ("memory", "512Mi")]),
        limits: quantities(&[("memory", "1Gi")]),
        ..ResourceRequirements::default()
    }
}

/// Volumes and mounts: config files (by `subPath`: pods see a config only through a restart,
/// which the config hash triggers, never a half-updated one), `/tmp`, the hand-off token and the
/// optional Secrets.
fn volumes(context: &Context, pipeline: &MarketingPipeline) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mount = |name: &str, path: String, sub_path: Option<&str>, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path,
        sub_path: sub_path.map(Into::into),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&context.name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount(
            "config",
            format!("{CONFIG_DIR}/{CONFIG_KEY_PIPELINE}"),
            Some(CONFIG_KEY_PIPELINE),
            true,
        ),
        mount(
            "config",
            format!("{CONFIG_DIR}/{CONFIG_KEY_RUNTIME}"),
            Some(CONFIG_KEY_RUNTIME),
            true,
        ),
        mount(CHECKPOINT_VOLUME, CHECKPOINT_DIR.into(), None, false),
        mount("tmp", "/tmp".into(), None, false),
    ];
    let spec = &pipeline.spec;
    let kafka = spec.kafka.as_ref();
    let secrets = [
        // Always: the bearer token of the snapshot hand-off (created by the operator).
        (
            "handoff-token",
            Some(handoff_secret_name(&context.name, context.uid())),
            HANDOFF_DIR,
        ),
        (
            "kafka-tls",
            kafka
                .and_then(|k| k.tls.as_ref())
                .and_then(|t| t.secret_name.clone()),
            KAFKA_TLS_DIR,
        ),
        (
            "kafka-sasl",
            kafka
                .and_then(|k| k.sasl.as_ref())
                .and_then(|s| s.secret_name.clone()),
            KAFKA_SASL_DIR,
        ),
        (
            "privacy",
            spec.privacy
                .as_ref()
                .and_then(|p| p.pseudonymize_key_secret.clone()),
            PRIVACY_DIR,
        ),
    ];
    for (volume, secret, dir) in secrets {
        let Some(secret_name) = secret else { continue };
        volumes.push(Volume {
            name: volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount(volume, dir.into(), None, true));
    }
    (volumes, mounts)
}

#[cfg(test)]
#[path = "stateful_set_tests.rs"]
mod tests;
