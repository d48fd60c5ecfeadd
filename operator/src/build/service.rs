//! The two worker Services: a headless one that gives each worker a stable DNS name for the
//! snapshot hand-off, and a ClusterIP one that the ServiceMonitor scrapes.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Context;
use crate::names::*;

fn http_port() -> ServicePort {
    ServicePort {
        name: Some(WORKER_PORT_NAME.into()),
        port: WORKER_PORT,
        target_port: Some(IntOrString::String(WORKER_PORT_NAME.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// Headless Service `<name>-workers`, the StatefulSet's `serviceName`. Not-ready workers are
/// published too: a worker restoring state fetches snapshots from peers before it is ready.
pub fn headless_service(context: &Context) -> Service {
    Service {
        metadata: context.metadata(headless_service_name(&context.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(context.selector_labels()),
            ports: Some(vec![http_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// ClusterIP Service `<name>-metrics` over the workers' HTTP port.
pub fn metrics_service(context: &Context) -> Service {
    Service {
        metadata: context.metadata(metrics_service_name(&context.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(context.selector_labels()),
            ports: Some(vec![http_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{pipeline, QUICKSTART};

    #[test]
    fn headless_service_publishes_not_ready_workers_on_the_http_port() {
        let svc = headless_service(&Context::new(&pipeline(QUICKSTART)).expect("ctx"));
        let spec = svc.spec.expect("spec");
        assert_eq!(svc.metadata.name.as_deref(), Some("quickstart-workers"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.ports.expect("ports")[0].port, 9102);
        assert_eq!(
            spec.selector.expect("selector")[LABEL_INSTANCE],
            "quickstart"
        );
    }

    #[test]
    fn metrics_service_carries_the_pipeline_label_and_an_owner_reference() {
        let svc = metrics_service(&Context::new(&pipeline(QUICKSTART)).expect("ctx"));
        assert_eq!(svc.metadata.name.as_deref(), Some("quickstart-metrics"));
        assert_eq!(
            svc.metadata.labels.expect("labels")[LABEL_PIPELINE],
            "quickstart"
        );
        let owner = &svc.metadata.owner_references.expect("owners")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("MarketingPipeline", Some(true))
        );
    }
}
