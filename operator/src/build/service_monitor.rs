//! The Prometheus Operator `ServiceMonitor` of a pipeline (built only when that CRD exists). It
//! scrapes the metrics Service and adds the `pipeline` label every dashboard and alert uses.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::Context;
use crate::names::*;

/// API resource of `monitoring.coreos.com/v1` ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// The ServiceMonitor over `<name>-metrics`.
pub fn service_monitor(context: &Context) -> DynamicObject {
    let mut object = DynamicObject::new(
        &metrics_service_name(&context.name),
        &service_monitor_resource(),
    );
    object.metadata = context.metadata(metrics_service_name(&context.name));
    object.data = json!({
        "spec": {
            "selector": { "matchLabels": {
                LABEL_INSTANCE: context.name,
                LABEL_NAME: WORKER_APP_NAME,
            }},
            "namespaceSelector": { "matchNames": [context.namespace] },
            "endpoints": [{
                "port": WORKER_PORT_NAME,
                "path": "/metrics",
                "interval": "15s",
                "relabelings": [{
                    "action": "replace",
                    "targetLabel": "pipeline",
                    "replacement": context.name,
                }],
            }],
        }
    });
    object
}

#[cfg(test)]
mod tests {
    use crate::build::fixtures::{params, pipeline, QUICKSTART};
    use crate::build::{desired, BuildParams};

    #[test]
    fn service_monitor_relabels_targets_with_the_pipeline_name() {
        let p = pipeline(QUICKSTART);
        let params = BuildParams {
            service_monitor: true,
            ..params(2)
        };
        let sm = desired(&p, &params)
            .expect("build")
            .service_monitor
            .expect("service monitor");
        let endpoint = &sm.data["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], "http");
        assert_eq!(endpoint["relabelings"][0]["targetLabel"], "pipeline");
        assert_eq!(endpoint["relabelings"][0]["replacement"], "quickstart");
        assert_eq!(sm.types.expect("types").kind, "ServiceMonitor");
    }
}
