//! xDS serving: versioned resources per proxy (the cache), the I/O-free ADS connection state
//! machine (`conn`), and the tonic service that is a thin shell around it (`server`).

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

pub mod auth;
pub mod cache;
pub mod conn;
pub mod server;

/// Type URLs we serve, in push order (make before break): CDS, EDS, LDS, SRDS, RDS, SDS. SRDS
/// (scoped route configurations, only in the scoped route layout) goes before RDS: Envoy asks for
/// a scope's RouteConfiguration only once it holds the scope.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SCOPED_ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
pub const PUSH_ORDER: [&str; 6] = [CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET];

/// One named xDS resource with its version (a hash of its deterministic encoding).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub body: Any,
}

/// The resources of one type, by name: a persistent map (`imbl::OrdMap`), so the next snapshot
/// shares everything but the changed resources with this one (cloning it is O(1), replacing one
/// resource O(log n)).
pub type ResourceMap = imbl::OrdMap<String, Arc<Resource>>;

/// Everything one proxy should hold, per type URL, per resource name. Immutable once built and
/// shared by `Arc` between the cache and every connection that serves it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Monotonic generation of the inputs this snapshot was translated from.
    pub generation: u64,
    pub resources: BTreeMap<&'static str, ResourceMap>,
}

impl Snapshot {
    /// The resources of one type (empty when none).
    pub fn of_type(&self, type_url: &str) -> Option<&ResourceMap> {
        self.resources.get(type_url)
    }
}

/// Who is asking: parsed from the Envoy node (Istio node id `router~ip~pod.ns~ns.svc.cluster.local`
/// and metadata `LABELS` / `NAMESPACE`, or a plain node id with `LABELS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyIdentity {
    pub id: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Where connections get their config from. Implemented by the runtime over the xDS cache.
pub trait ConfigSource: Send + Sync + 'static {
    /// The live snapshot channel for this proxy; `None` while the first full load of the inputs
    /// has not been translated yet (the stream is then answered `Unavailable`).
    fn subscribe(
        &self,
        proxy: &ProxyIdentity,
    ) -> Option<tokio::sync::watch::Receiver<Arc<Snapshot>>>;

    /// When the source started making `generation` (it saw the change that led to it), for the
    /// convergence time metric. `None` when unknown (the default).
    fn generation_time(&self, _generation: u64) -> Option<std::time::Instant> {
        None
    }
}
