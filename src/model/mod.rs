//! Core object types: the Kubernetes, Knative and Istio objects we read, and the envelope that
//! tells them apart by `apiVersion` and `kind`.

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The hash map of the lookup-only indexes (the engines', the directory source's): std's map
/// with foldhash's hasher, which hashes their short string keys (kind, namespace, name; hosts)
/// several times faster than SipHash, seeded at random per process as std's is. Nothing
/// iterates these maps where the order would show.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub mod check;
pub mod core;
pub mod diag;
pub mod duration;
pub mod gateway_api;
pub mod istio;
pub mod kingress;
pub mod knative;

/// A custom resource: metadata, a typed spec and an untyped status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Crd<S> {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

pub use self::core::{EndpointSlice, Endpoints, Service};

pub type Gateway = Crd<istio::GatewaySpec>;
pub type VirtualService = Crd<istio::VirtualServiceSpec>;
pub type KIngress = Crd<kingress::IngressSpec>;
pub type GatewayClass = Crd<gateway_api::GatewayClassSpec>;
/// A `gateway.networking.k8s.io` Gateway (Istio's is [`Gateway`]).
pub type K8sGateway = Crd<gateway_api::GatewaySpec>;
pub type HttpRoute = Crd<gateway_api::HttpRouteSpec>;
pub type ReferenceGrant = Crd<gateway_api::ReferenceGrantSpec>;

/// The kinds we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Route,
    Revision,
    KIngress,
    VirtualService,
    Gateway,
    Service,
    Endpoints,
    EndpointSlice,
    Secret,
    ConfigMap,
    GatewayClass,
    /// `gateway.networking.k8s.io` Gateway.
    K8sGateway,
    HttpRoute,
    ReferenceGrant,
    /// Core `v1` Namespace (cluster scoped; read for `allowedRoutes` namespace selectors).
    Namespace,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::Route => "Route",
            Kind::Revision => "Revision",
            Kind::KIngress => "Ingress",
            Kind::VirtualService => "VirtualService",
            Kind::Gateway => "Gateway",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::GatewayClass => "GatewayClass",
            Kind::K8sGateway => "gateway.networking.k8s.io/Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
        };
        f.write_str(s)
    }
}

/// One object read by a source, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    pub object: Object,
    pub origin: diag::Origin,
}

/// Identity of one object: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One parsed object of a kind we understand.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Route(Box<knative::Route>),
    Revision(Box<knative::Revision>),
    KIngress(Box<KIngress>),
    VirtualService(Box<VirtualService>),
    Gateway(Box<Gateway>),
    Service(Box<Service>),
    Endpoints(Box<Endpoints>),
    EndpointSlice(Box<EndpointSlice>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    GatewayClass(Box<GatewayClass>),
    K8sGateway(Box<K8sGateway>),
    HttpRoute(Box<HttpRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
    Namespace(Box<Namespace>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Route(_) => Kind::Route,
            Object::Revision(_) => Kind::Revision,
            Object::KIngress(_) => Kind::KIngress,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::Gateway(_) => Kind::Gateway,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::K8sGateway(_) => Kind::K8sGateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Route(o) => &o.metadata,
            Object::Revision(o) => &o.metadata,
            Object::KIngress(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::K8sGateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let m = self.metadata();
        ObjectKey {
            kind: self.kind(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".to_string()),
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

/// Why a document could not become an object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("document has no apiVersion/kind")]
    NoKind,
    #[error("{kind} {namespace}/{name}: {message}")]
    Invalid {
        kind: String,
        namespace: String,
        name: String,
        message: String,
    },
}

/// A document [`parse_document`] can type: its `apiVersion`, `kind` and `metadata` name and
/// namespace read without typing the rest, and the whole typed as the kind names it. A
/// `serde_json::Value` is one (the kube source's objects, and the wording of every error of
/// the files); `source::json` reads JSON text straight into the types.
pub trait Document {
    /// The `apiVersion`, when it is a string.
    fn api_version(&self) -> Option<&str>;
    /// The `kind`, when it is a string.
    fn kind(&self) -> Option<&str>;
    /// A string field of `metadata` (`name`, `namespace`), for messages.
    fn meta(&self, key: &str) -> Option<&str>;
    /// What [`check::shape`] finds wrong with the document.
    fn shape(&self) -> Result<(), String>;
    /// The document as a `T`.
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, String>;
}

impl Document for serde_json::Value {
    fn api_version(&self) -> Option<&str> {
        self.get("apiVersion").and_then(|v| v.as_str())
    }

    fn kind(&self) -> Option<&str> {
        self.get("kind").and_then(|v| v.as_str())
    }

    fn meta(&self, key: &str) -> Option<&str> {
        self.get("metadata")
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
    }

    fn shape(&self) -> Result<(), String> {
        check::shape(self)
    }

    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        serde_json::from_value(self).map_err(|e| e.to_string())
    }
}

/// Turns one decoded document into an object. `Ok(None)` for kinds we do not serve (logged at
/// debug by the caller), and for Knative Service/Configuration which are accepted and ignored.
pub fn parse_object(value: serde_json::Value) -> Result<Option<Object>, ParseError> {
    parse_document(value)
}

/// [`parse_object`] of any [`Document`]: the kind told apart by `apiVersion`/`kind`, the
/// document typed as that kind, then the checks of [`check`].
pub fn parse_document(value: impl Document) -> Result<Option<Object>, ParseError> {
    let api_version = value.api_version().unwrap_or("").to_string();
    let kind = value.kind().ok_or(ParseError::NoKind)?.to_string();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let meta_str = |key: &str| -> String { value.meta(key).unwrap_or("").to_string() };
    let (namespace, name) = (meta_str("namespace"), meta_str("name"));
    let invalid = |message: String| ParseError::Invalid {
        kind: kind.clone(),
        namespace: if namespace.is_empty() {
            "default".to_string()
        } else {
            namespace.clone()
        },
        name: name.clone(),
        message,
    };
    fn de<T: serde::de::DeserializeOwned>(v: impl Document) -> Result<Box<T>, String> {
        v.shape()?;
        v.decode().map(Box::new)
    }
    let mut obj = match (group, kind.as_str()) {
        ("serving.knative.dev", "Route") => Object::Route(de(value).map_err(invalid)?),
        ("serving.knative.dev", "Revision") => Object::Revision(de(value).map_err(invalid)?),
        ("networking.internal.knative.dev", "Ingress") => {
            Object::KIngress(de(value).map_err(invalid)?)
        }
        ("networking.istio.io", "VirtualService") => {
            Object::VirtualService(de(value).map_err(invalid)?)
        }
        ("networking.istio.io", "Gateway") => Object::Gateway(de(value).map_err(invalid)?),
        ("", "Service") if api_version == "v1" => Object::Service(de(value).map_err(invalid)?),
        ("", "Endpoints") if api_version == "v1" => Object::Endpoints(de(value).map_err(invalid)?),
        ("discovery.k8s.io", "EndpointSlice") => Object::EndpointSlice(de(value).map_err(invalid)?),
        ("", "Secret") if api_version == "v1" => Object::Secret(de(value).map_err(invalid)?),
        ("", "ConfigMap") if api_version == "v1" => Object::ConfigMap(de(value).map_err(invalid)?),
        ("", "Namespace") if api_version == "v1" => Object::Namespace(de(value).map_err(invalid)?),
        // Istio's Gateway is `networking.istio.io` (above); this group's is the Gateway API's.
        (gateway_api::GROUP, "GatewayClass") => Object::GatewayClass(de(value).map_err(invalid)?),
        (gateway_api::GROUP, "Gateway") => Object::K8sGateway(de(value).map_err(invalid)?),
        (gateway_api::GROUP, "HTTPRoute") => Object::HttpRoute(de(value).map_err(invalid)?),
        (gateway_api::GROUP, "ReferenceGrant") => {
            Object::ReferenceGrant(de(value).map_err(invalid)?)
        }
        _ => return Ok(None),
    };
    if obj.metadata().name.as_deref().unwrap_or("").is_empty() {
        return Err(invalid("metadata.name is required".to_string()));
    }
    check::values(&obj).map_err(invalid)?;
    compact(&mut obj);
    Ok(Some(obj))
}

/// Gives back the room the decoder left in the lists of the kinds there are several of per
/// service (a list decoded without a length grows by doubling from four: one port, or three
/// addresses, took four places; at 10,000 services 20–25 MB of the peak).
fn compact(obj: &mut Object) {
    fn fit<T>(v: &mut Option<Vec<T>>) {
        if let Some(v) = v {
            v.shrink_to_fit();
        }
    }
    match obj {
        Object::Service(s) => {
            if let Some(spec) = &mut s.spec {
                fit(&mut spec.ports);
            }
        }
        Object::Endpoints(e) => {
            fit(&mut e.subsets);
            for s in e.subsets.iter_mut().flatten() {
                fit(&mut s.addresses);
                fit(&mut s.not_ready_addresses);
                fit(&mut s.ports);
            }
        }
        Object::EndpointSlice(s) => {
            s.endpoints.shrink_to_fit();
            for e in &mut s.endpoints {
                e.addresses.shrink_to_fit();
            }
            fit(&mut s.ports);
        }
        _ => {}
    }
}

/// The kind for a manifest's `apiVersion` and `kind:` values, when it is one we understand
/// (the group tells Istio's Gateway from the Gateway API's, as in [`parse_document`]).
pub fn kind_of(api_version: &str, kind: &str) -> Option<Kind> {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    if kind == "Gateway" && group == gateway_api::GROUP {
        return Some(Kind::K8sGateway);
    }
    kind_from_name(kind)
}

/// The kind for a manifest `kind:` value, when it is one we understand (`Gateway`: Istio's;
/// [`kind_of`] looks at the group too).
pub fn kind_from_name(kind: &str) -> Option<Kind> {
    Some(match kind {
        "Route" => Kind::Route,
        "Revision" => Kind::Revision,
        "Ingress" => Kind::KIngress,
        "VirtualService" => Kind::VirtualService,
        "Gateway" => Kind::Gateway,
        "Service" => Kind::Service,
        "Endpoints" => Kind::Endpoints,
        "EndpointSlice" => Kind::EndpointSlice,
        "Secret" => Kind::Secret,
        "ConfigMap" => Kind::ConfigMap,
        "GatewayClass" => Kind::GatewayClass,
        "HTTPRoute" => Kind::HttpRoute,
        "ReferenceGrant" => Kind::ReferenceGrant,
        "Namespace" => Kind::Namespace,
        _ => return None,
    })
}
