//! The NetworkPolicy of a pipeline's workers: their port 9102 (metrics, probes and the snapshot
//! hand-off) admits only the pipeline's own workers (peers fetching snapshots) and pods in the
//! namespaces configured for Prometheus scraping. Only ingress is restricted; the workers still
//! reach Kafka, DNS and each other.
//!
//! Kubelet probes come from the node, which most network plugins let through whatever the
//! policies say; see `docs/security.md`.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Context;
use crate::names::{network_policy_name, WORKER_PORT};

/// The label every namespace carries with its own name (Kubernetes sets it).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy over the workers of `context`'s pipeline; `scrape_namespaces` may reach port
/// 9102 too (none: only the pipeline's own workers).
pub fn network_policy(context: &Context, scrape_namespaces: &[String]) -> NetworkPolicy {
    let workers = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(context.selector_labels()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut from = vec![workers];
    if !scrape_namespaces.is_empty() {
        let mut namespaces = scrape_namespaces.to_vec();
        namespaces.sort();
        namespaces.dedup();
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: NAMESPACE_NAME_LABEL.into(),
                    operator: "In".into(),
                    values: Some(namespaces),
                }]),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    NetworkPolicy {
        metadata: context.metadata(network_policy_name(&context.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(context.selector_labels()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(WORKER_PORT)),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::build::desired;
    use crate::build::fixtures::{params, pipeline, QUICKSTART};

    #[test]
    fn only_the_pipelines_workers_and_scrape_namespaces_reach_port_9102() {
        let mut p = params(2);
        p.scrape_namespaces = vec!["monitoring".into(), "obs".into()];
        let policy = desired(&pipeline(QUICKSTART), &p)
            .expect("build")
            .network_policy
            .expect("a policy");
        let value = serde_json::to_value(&policy).expect("json");
        assert_eq!(value["metadata"]["name"], "quickstart-workers");
        assert_eq!(
            value["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "quickstart"
        );
        assert_eq!(value["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
        let rule = &value["spec"]["ingress"][0];
        assert_eq!(
            rule["ports"],
            serde_json::json!([{"port": 9102, "protocol": "TCP"}])
        );
        assert_eq!(
            rule["from"],
            serde_json::json!([
                {"podSelector": {"matchLabels": {
                    "app.kubernetes.io/instance": "quickstart",
                    "app.kubernetes.io/name": "tidemark-worker"}}},
                {"namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "In",
                    "values": ["monitoring", "obs"]}]}}
            ])
        );
    }

    #[test]
    fn without_scrape_namespaces_only_the_workers_are_admitted_and_it_can_be_turned_off() {
        let mut p = params(1);
        let policy = desired(&pipeline(QUICKSTART), &p)
            .expect("build")
            .network_policy
            .expect("a policy");
        let from = &policy.spec.expect("spec").ingress.expect("ingress")[0].from;
        assert_eq!(from.as_ref().map(Vec::len), Some(1));
        p.network_policy = false;
        assert!(desired(&pipeline(QUICKSTART), &p)
            .expect("build")
            .network_policy
            .is_none());
    }
}
