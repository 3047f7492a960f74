//! What the kube source watches: the API resources of each kind, and one watch ("slot") per
//! resource and namespace.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::ApiResource;

use crate::model::Kind;

/// How often a resource that was not served (404) is listed again, by default.
pub const MISSING_RETRY: Duration = Duration::from_secs(60);

/// The namespace of the Knative ConfigMaps translation reads.
pub const KNATIVE_NAMESPACE: &str = "knative-serving";
/// The ConfigMaps translation reads.
pub const CONFIG_MAPS: &[&str] = &["config-network", "config-domain", "config-istio"];

/// One kind we watch: its API resource and how to select objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub group: &'static str,
    pub version: &'static str,
    pub api_kind: &'static str,
    pub plural: &'static str,
    /// Field selector for list and watch.
    pub fields: Option<&'static str>,
}

impl Resource {
    const fn new(
        kind: Kind,
        group: &'static str,
        version: &'static str,
        api_kind: &'static str,
        plural: &'static str,
    ) -> Resource {
        Resource {
            kind,
            group,
            version,
            api_kind,
            plural,
            fields: None,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.api_kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// `group/version/plural` for logs.
    pub fn path(&self) -> String {
        format!("{}/{}", self.api_version(), self.plural)
    }
}

pub const ROUTE: Resource =
    Resource::new(Kind::Route, "serving.knative.dev", "v1", "Route", "routes");
pub const REVISION: Resource = Resource::new(
    Kind::Revision,
    "serving.knative.dev",
    "v1",
    "Revision",
    "revisions",
);
pub const KINGRESS: Resource = Resource::new(
    Kind::KIngress,
    "networking.internal.knative.dev",
    "v1alpha1",
    "Ingress",
    "ingresses",
);
pub const VIRTUAL_SERVICE: Resource = Resource::new(
    Kind::VirtualService,
    "networking.istio.io",
    "v1beta1",
    "VirtualService",
    "virtualservices",
);
pub const GATEWAY: Resource = Resource::new(
    Kind::Gateway,
    "networking.istio.io",
    "v1beta1",
    "Gateway",
    "gateways",
);
pub const SERVICE: Resource = Resource::new(Kind::Service, "", "v1", "Service", "services");
pub const ENDPOINT_SLICE: Resource = Resource::new(
    Kind::EndpointSlice,
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices",
);
pub const ENDPOINTS: Resource = Resource::new(Kind::Endpoints, "", "v1", "Endpoints", "endpoints");
pub const SECRET: Resource = Resource {
    fields: Some("type=kubernetes.io/tls"),
    ..Resource::new(Kind::Secret, "", "v1", "Secret", "secrets")
};
pub const CONFIG_MAP: Resource =
    Resource::new(Kind::ConfigMap, "", "v1", "ConfigMap", "configmaps");
/// Gateway API (optional: a cluster without its CRDs answers 404, served as empty). Cluster
/// scoped.
pub const GATEWAY_CLASS: Resource = Resource::new(
    Kind::GatewayClass,
    "gateway.networking.k8s.io",
    "v1",
    "GatewayClass",
    "gatewayclasses",
);
pub const K8S_GATEWAY: Resource = Resource::new(
    Kind::K8sGateway,
    "gateway.networking.k8s.io",
    "v1",
    "Gateway",
    "gateways",
);
pub const HTTP_ROUTE: Resource = Resource::new(
    Kind::HttpRoute,
    "gateway.networking.k8s.io",
    "v1",
    "HTTPRoute",
    "httproutes",
);
/// v1beta1: served by every Gateway API release that has ReferenceGrant.
pub const REFERENCE_GRANT: Resource = Resource::new(
    Kind::ReferenceGrant,
    "gateway.networking.k8s.io",
    "v1beta1",
    "ReferenceGrant",
    "referencegrants",
);

/// Cluster scoped: read for `allowedRoutes` namespace selectors.
pub const NAMESPACE: Resource = Resource::new(Kind::Namespace, "", "v1", "Namespace", "namespaces");

/// One watch: a resource in one namespace (or all), and what replaces it when it is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub fallback: Option<Resource>,
}

/// The watches for `namespaces` (empty: all namespaces). ConfigMaps are watched in
/// [`KNATIVE_NAMESPACE`] only, GatewayClasses and Namespaces (cluster scoped) cluster-wide.
pub fn slots(namespaces: &[String]) -> Vec<Slot> {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        let set: BTreeSet<&String> = namespaces.iter().collect();
        set.into_iter().map(|n| Some(n.clone())).collect()
    };
    let mut out = Vec::new();
    for r in [
        ROUTE,
        REVISION,
        KINGRESS,
        VIRTUAL_SERVICE,
        GATEWAY,
        SERVICE,
        ENDPOINT_SLICE,
        SECRET,
        K8S_GATEWAY,
        HTTP_ROUTE,
        REFERENCE_GRANT,
    ] {
        for ns in &scopes {
            out.push(Slot {
                fallback: (r == ENDPOINT_SLICE).then_some(ENDPOINTS),
                resource: r.clone(),
                namespace: ns.clone(),
            });
        }
    }
    for r in [GATEWAY_CLASS, NAMESPACE] {
        out.push(Slot {
            resource: r,
            namespace: None,
            fallback: None,
        });
    }
    out.push(Slot {
        resource: CONFIG_MAP,
        namespace: Some(KNATIVE_NAMESPACE.to_string()),
        fallback: None,
    });
    out
}
