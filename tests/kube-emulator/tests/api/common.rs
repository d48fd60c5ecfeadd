//! Shared fixtures: a test CRD with status/scale subresources, printer columns and CEL rules.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tidemark_kube_emulator::{Emulator, EmulatorHandle};

/// The test CRD as JSON (the real Tidemark CRD lives in `crds/`).
pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.tidemark.dev"},
        "spec": {
            "group": "test.tidemark.dev",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}
                },
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["topic"],
                            "x-kubernetes-validations": [
                                {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"}
                            ],
                            "properties": {
                                "topic": {"type": "string", "pattern": "^[a-z_]+$"},
                                "replicas": {"type": "integer", "format": "int32", "minimum": 0, "default": 1},
                                "minReplicas": {"type": "integer", "default": 1},
                                "maxReplicas": {"type": "integer", "default": 10},
                                "mode": {"type": "string", "enum": ["fast", "safe"], "default": "safe"}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "replicas": {"type": "integer"},
                                "selector": {"type": "string"},
                                "conditions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                            }
                        }
                    }
                }}
            }]
        }
    })
}

/// How clients address the test CRD.
pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.tidemark.dev", "v1", "Widget"),
        "widgets",
    )
}

/// A Widget with `spec`.
pub fn widget(name: &str, spec: Value) -> DynamicObject {
    DynamicObject::new(name, &widget_resource()).data(json!({ "spec": spec }))
}

/// A running emulator with the Widget CRD installed, and a client.
pub async fn with_widgets() -> (EmulatorHandle, Client, Api<DynamicObject>) {
    let emulator = Emulator::start().await.expect("emulator starts");
    let client = emulator.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).expect("valid CRD");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    let widgets = Api::namespaced_with(client.clone(), "default", &widget_resource());
    (emulator, client, widgets)
}

/// The Status of a failed call.
pub fn status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
