//! The Helm chart, rendered by the real `helm` (`TIDEMARK_KUBECTL_TESTS=1`, tools from
//! `.ci/tools/kube.sh`): lint, then every rendered object parses into the k8s-openapi type of
//! its kind and serializes back to the same document (no unknown or misplaced fields), RBAC grants
//! exactly the operator's calls, and the pods meet the restricted Pod Security Standard.

use std::collections::BTreeSet;

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use tidemark_e2e::tools;
use tidemark_operator::rbac::{Rule, LEASE_RULES, WATCH_RULES};

const CHART: &str = "charts/tidemark";

fn render(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut all = vec![
        "template",
        "tidemark",
        CHART,
        "--namespace",
        "tidemark-system",
        "--include-crds",
    ];
    all.extend_from_slice(args);
    let text = tools::run("helm", None, &all)?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).context("rendered YAML parses")?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// Parses `doc` into `K` and checks that serializing it back gives the same document.
fn typed<K: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> anyhow::Result<K> {
    let object: K = serde_json::from_value(doc.clone())
        .with_context(|| format!("{} {} parses", doc["kind"], doc["metadata"]["name"]))?;
    let back = serde_json::to_value(&object)?;
    anyhow::ensure!(
        &back == doc,
        "{} {} has fields its type does not know:\nrendered: {doc}\ntyped:    {back}",
        doc["kind"],
        doc["metadata"]["name"]
    );
    Ok(object)
}

fn check_all_typed(docs: &[Value]) -> anyhow::Result<()> {
    for doc in docs {
        match doc["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => drop(typed::<ServiceAccount>(doc)?),
            "ClusterRole" => drop(typed::<ClusterRole>(doc)?),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(doc)?),
            "Role" => drop(typed::<Role>(doc)?),
            "RoleBinding" => drop(typed::<RoleBinding>(doc)?),
            "Deployment" => drop(typed::<Deployment>(doc)?),
            "Service" => drop(typed::<Service>(doc)?),
            "ConfigMap" => drop(typed::<ConfigMap>(doc)?),
            "NetworkPolicy" => drop(typed::<NetworkPolicy>(doc)?),
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(doc)?),
            // Prometheus Operator kinds have no k8s-openapi type; checked by shape below.
            "ServiceMonitor" | "PodMonitor" | "PrometheusRule" => {
                anyhow::ensure!(doc["apiVersion"] == "monitoring.coreos.com/v1", "{doc}");
                anyhow::ensure!(doc["spec"].is_object(), "{doc}");
            }
            other => anyhow::bail!("unexpected kind {other} rendered"),
        }
    }
    Ok(())
}

fn rules(rules: &[Rule]) -> BTreeSet<(String, String, Vec<String>)> {
    rules
        .iter()
        .map(|(g, r, v)| {
            (
                (*g).to_owned(),
                (*r).to_owned(),
                v.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect()
}

fn rendered_rules(
    policy: &[PolicyRule],
) -> anyhow::Result<BTreeSet<(String, String, Vec<String>)>> {
    let mut set = BTreeSet::new();
    for rule in policy {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                anyhow::ensure!(
                    group != "*" && resource != "*" && !rule.verbs.iter().any(|v| v == "*"),
                    "wildcard in {rule:?}"
                );
                // Secrets: only `create` (each pipeline's hand-off token), never get/list/watch.
                anyhow::ensure!(
                    resource != "secrets" || rule.verbs == ["create"],
                    "the operator must not read Secrets: {rule:?}"
                );
                set.insert((group.clone(), resource.clone(), rule.verbs.clone()));
            }
        }
    }
    Ok(set)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn chart_lints_and_every_rendered_object_parses_into_its_type() -> anyhow::Result<()> {
    if !tools::enabled() {
        eprintln!("skipped: set TIDEMARK_KUBECTL_TESTS=1 (after .ci/tools/kube.sh) to run");
        return Ok(());
    }
    tools::run("helm", None, &["lint", "--strict", CHART])?;
    let everything = [
        "--set=watchNamespaces={shop,ads}",
        "--set=metrics.serviceMonitor.enabled=true",
        "--set=metrics.workerPodMonitor.enabled=true",
        "--set=prometheusRules.enabled=true",
    ];
    check_all_typed(&render(&[])?)?;
    check_all_typed(&render(&everything)?)?;
    let bad = tools::run_raw(
        "helm",
        None,
        &["template", "t", CHART, "--set", "operator.replicas=0"],
    )?;
    assert!(
        !bad.status.success(),
        "values.schema.json rejects replicas=0"
    );
    Ok(())
}

#[test]
fn a_prometheus_url_reaches_the_operator_and_its_network_policy_lets_it_ask() -> anyhow::Result<()>
{
    if !tools::enabled() {
        eprintln!("skipped: set TIDEMARK_KUBECTL_TESTS=1 (after .ci/tools/kube.sh) to run");
        return Ok(());
    }
    let docs =
        render(&["--set=operator.prometheusUrl=http://prometheus-operated.monitoring:9090"])?;
    let deployment: Deployment = typed(of_kind(&docs, "Deployment")[0])?;
    let args = deployment
        .spec
        .template
        .spec
        .context("pod spec")?
        .containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        args.contains(&"--prometheus-url=http://prometheus-operated.monitoring:9090".to_owned()),
        "{args:?}"
    );
    let policy = of_kind(&docs, "NetworkPolicy")[0].to_string();
    assert!(policy.contains("9090"), "egress to Prometheus: {policy}");
    let without: Deployment = typed(of_kind(&render(&[])?, "Deployment")[0])?;
    let args = without.spec.template.spec.context("pod spec")?.containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        !args.iter().any(|a| a.starts_with("--prometheus-url")),
        "{args:?}"
    );
    let bad = tools::run_raw(
        "helm",
        None,
        &[
            "template",
            "t",
            CHART,
            "--set",
            "operator.prometheusUrl=prometheus:9090",
        ],
    )?;
    assert!(!bad.status.success(), "values.schema.json wants a URL");
    Ok(())
}

#[test]
fn rbac_grants_exactly_the_calls_of_the_operator() -> anyhow::Result<()> {
    if !tools::enabled() {
        return Ok(());
    }
    let docs = render(&[])?;
    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    let role: ClusterRole = typed(cluster_roles[0])?;
    assert_eq!(
        rendered_rules(role.rules.as_deref().unwrap_or_default())?,
        rules(WATCH_RULES)
    );
    let lease: Role = typed(of_kind(&docs, "Role")[0])?;
    assert_eq!(lease.metadata.namespace.as_deref(), Some("tidemark-system"));
    assert_eq!(
        rendered_rules(lease.rules.as_deref().unwrap_or_default())?,
        rules(LEASE_RULES)
    );

    let scoped = render(&["--set=watchNamespaces={shop,ads}"])?;
    assert!(
        of_kind(&scoped, "ClusterRole").is_empty(),
        "nothing cluster-wide with watchNamespaces"
    );
    let mut namespaces = BTreeSet::new();
    for doc in of_kind(&scoped, "Role") {
        let role: Role = typed(doc)?;
        let namespace = role.metadata.namespace.clone().unwrap_or_default();
        if namespace == "tidemark-system" {
            continue;
        }
        assert_eq!(
            rendered_rules(role.rules.as_deref().unwrap_or_default())?,
            rules(WATCH_RULES)
        );
        namespaces.insert(namespace);
    }
    assert_eq!(
        namespaces,
        BTreeSet::from(["ads".to_owned(), "shop".to_owned()])
    );
    let deployment: Deployment = typed(of_kind(&scoped, "Deployment")[0])?;
    let args = deployment.spec.template.spec.expect("pod").containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        args.contains(&"--namespace=shop".to_owned())
            && args.contains(&"--namespace=ads".to_owned()),
        "{args:?}"
    );
    Ok(())
}

#[test]
fn operator_pod_meets_the_restricted_pod_security_standard() -> anyhow::Result<()> {
    if !tools::enabled() {
        return Ok(());
    }
    let docs = render(&[])?;
    let deployment: Deployment = typed(of_kind(&docs, "Deployment")[0])?;
    let pod = deployment.spec.template.spec.expect("pod spec");
    let pod_sc = pod.security_context.expect("pod securityContext");
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(
        pod_sc.seccomp_profile.map(|s| s.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let sc = pod.containers[0]
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    assert!(!of_kind(&docs, "NetworkPolicy").is_empty());
    Ok(())
}

#[test]
fn dashboards_are_sidecar_config_maps_over_the_worker_and_operator_metrics() -> anyhow::Result<()> {
    if !tools::enabled() {
        return Ok(());
    }
    let docs = render(&[])?;
    let mut text = String::new();
    for doc in of_kind(&docs, "ConfigMap") {
        let cm: ConfigMap = typed(doc)?;
        assert_eq!(
            cm.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("grafana_dashboard"))
                .map(String::as_str),
            Some("1")
        );
        for json in cm.data.unwrap_or_default().values() {
            let dashboard: Value = serde_json::from_str(json).context("dashboard JSON")?;
            assert!(dashboard["panels"]
                .as_array()
                .is_some_and(|p| !p.is_empty()));
            text.push_str(json);
        }
    }
    for metric in [
        "tidemark_records_in_total",
        "tidemark_source_lag",
        "tidemark_watermark_delay_seconds",
        "tidemark_checkpoint_duration_seconds_bucket",
        "tidemark_dead_letter_total",
        "tidemark_busy_ratio",
        "tidemark_global_partials_total",
        "tidemark_actions_total",
        "tidemark_model",
        "tidemark_clock_skew_seconds_bucket",
        tidemark_operator::metrics::RECONCILES_TOTAL,
        tidemark_operator::metrics::RECONCILE_DURATION_SECONDS,
        tidemark_operator::metrics::AUTOSCALER_DECISIONS_TOTAL,
        tidemark_operator::metrics::AUTOSCALER_DESIRED_PARALLELISM,
    ] {
        assert!(text.contains(metric), "a dashboard shows {metric}");
    }
    let rules = render(&["--set=prometheusRules.enabled=true"])?;
    let rule = of_kind(&rules, "PrometheusRule")[0].to_string();
    for alert in [
        "TidemarkLagGrowing",
        "TidemarkCheckpointsFailing",
        "TidemarkPipelineDegraded",
        "TidemarkAutoscalerRefusing",
        "TidemarkInvalidShareHigh",
    ] {
        assert!(rule.contains(alert), "alert {alert}");
    }
    Ok(())
}

/// Installs the chart with the real helm into the API emulator, which validates every object
/// against its built-in schema, then upgrades and uninstalls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_the_chart_on_the_api_emulator() -> anyhow::Result<()>
{
    if !tools::enabled() {
        return Ok(());
    }
    let cluster = tidemark_e2e::cluster::Cluster::start_without_crd().await?;
    cluster.ensure_namespace("tidemark-system").await?;
    let kubeconfig = cluster.kubeconfig();
    let helm =
        |args: &[&str]| tokio::task::block_in_place(|| tools::run("helm", Some(&kubeconfig), args));
    let namespace = ["--namespace", "tidemark-system"];
    helm(
        &[
            &["install", "tidemark", CHART, "--wait=false"][..],
            &namespace[..],
        ]
        .concat(),
    )?;
    let deployments: kube::Api<Deployment> =
        kube::Api::namespaced(cluster.client.clone(), "tidemark-system");
    let deployment = deployments
        .get("tidemark")
        .await
        .context("operator Deployment installed")?;
    assert_eq!(deployment.spec.replicas, Some(1));
    let roles: kube::Api<ClusterRole> = kube::Api::all(cluster.client.clone());
    assert!(roles.get_opt("tidemark").await?.is_some());
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(cluster.client.clone());
    assert!(
        crds.get_opt("marketingpipelines.tidemark.dev")
            .await?
            .is_some(),
        "helm installed the CRD"
    );
    helm(
        &[
            &["upgrade", "tidemark", CHART, "--set", "operator.replicas=2"][..],
            &namespace[..],
        ]
        .concat(),
    )?;
    assert_eq!(deployments.get("tidemark").await?.spec.replicas, Some(2));
    helm(&[&["uninstall", "tidemark"][..], &namespace[..]].concat())?;
    assert!(deployments.get_opt("tidemark").await?.is_none());
    Ok(())
}
