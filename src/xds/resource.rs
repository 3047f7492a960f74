//! The leaf of `xds`: what a snapshot is made of. Resources (named, versioned `Any`s), the
//! per-type resource maps, the snapshot, the type URLs we serve (in push order) and the version
//! helpers. It imports no other module of the crate, so `translate` can build snapshots without
//! knowing the ADS machinery, and `conn` serves them without knowing `translate`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sha2::{Digest, Sha256};

/// The resource types we serve, in push order (make before break): CDS, EDS, LDS, SRDS, RDS,
/// SDS. SRDS (scoped route configurations, only in the scoped route layout) goes before RDS:
/// Envoy asks for a scope's RouteConfiguration only once it holds the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TypeUrl {
    Cluster,
    Endpoint,
    Listener,
    ScopedRoute,
    Route,
    Secret,
}

impl TypeUrl {
    /// Every type, in push order.
    pub const ALL: [TypeUrl; 6] = [
        TypeUrl::Cluster,
        TypeUrl::Endpoint,
        TypeUrl::Listener,
        TypeUrl::ScopedRoute,
        TypeUrl::Route,
        TypeUrl::Secret,
    ];

    /// The type URL on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeUrl::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeUrl::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeUrl::ScopedRoute => {
                "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
            }
            TypeUrl::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            TypeUrl::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The type we serve under this URL, if any.
    pub fn parse(type_url: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == type_url)
    }

    /// istiod's short name (`cds`, `eds`, `lds`, `srds`, `rds`, `sds`), for metrics and logs.
    pub const fn short(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "cds",
            TypeUrl::Endpoint => "eds",
            TypeUrl::Listener => "lds",
            TypeUrl::ScopedRoute => "srds",
            TypeUrl::Route => "rds",
            TypeUrl::Secret => "sds",
        }
    }
}

/// istiod's short name of a type URL (see [`TypeUrl::short`]), `other` for one we do not serve.
pub fn type_short(type_url: &str) -> &'static str {
    TypeUrl::parse(type_url).map_or("other", TypeUrl::short)
}

pub const CLUSTER: &str = TypeUrl::Cluster.as_str();
pub const ENDPOINT: &str = TypeUrl::Endpoint.as_str();
pub const LISTENER: &str = TypeUrl::Listener.as_str();
pub const ROUTE: &str = TypeUrl::Route.as_str();
pub const SCOPED_ROUTE: &str = TypeUrl::ScopedRoute.as_str();
pub const SECRET: &str = TypeUrl::Secret.as_str();
/// The type URLs we serve, in push order ([`TypeUrl::ALL`] as strings).
pub const PUSH_ORDER: [&str; 6] = [CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET];
/// The types every snapshot has a (possibly empty) map for.
pub const SNAPSHOT_TYPES: [&str; 6] = PUSH_ORDER;

/// One named xDS resource with its version (a hash of its deterministic encoding). `Eq`, so
/// two `Arc<Resource>`s compare by address first (std's `Arc` does for `Eq` types): a diff of
/// two maps compares the entries of the nodes they do not share, mostly the same `Arc`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub body: Any,
    /// Its [`pair_hash`], once a connection needed it: every connection sending the resource
    /// sums it into its set version, so it is hashed once, not once per connection.
    pub pair: PairCache,
}

impl Resource {
    /// [`pair_hash`]`(name, version)`: from the cache when `name` is the resource's own.
    pub fn pair_hash_as(&self, name: &str) -> u64 {
        if name != self.name {
            return pair_hash(name, &self.version);
        }
        match self.pair.0.load(Ordering::Relaxed) {
            // Not computed yet (or a hash of 0, computed each time).
            0 => {
                let h = pair_hash(name, &self.version);
                self.pair.0.store(h, Ordering::Relaxed);
                h
            }
            h => h,
        }
    }
}

/// A resource's computed [`pair_hash`] (0 until then). Not part of the resource's identity:
/// resources compare equal whatever their caches hold, and it is never shown.
#[derive(Default)]
pub struct PairCache(AtomicU64);

impl Clone for PairCache {
    fn clone(&self) -> Self {
        PairCache(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl PartialEq for PairCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PairCache {}

impl std::fmt::Debug for PairCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairCache")
    }
}

/// One `name:version` pair's share of a set version (see `xds::conn::set_version`): the first
/// 8 bytes of a SHA-256 of `name`, a NUL and `version`.
pub fn pair_hash(name: &str, version: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0u8]);
    h.update(version.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
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
    /// What a wildcard CDS subscription gets, when not every cluster: in the on-demand route
    /// layout, the clusters no request fetches by name (the rest are fetched one by one by
    /// Envoy's on-demand CDS). `None`: every cluster (the eager layouts).
    pub wildcard_clusters: Option<Arc<[String]>>,
}

impl Snapshot {
    /// The resources of one type (empty when none).
    pub fn of_type(&self, type_url: &str) -> Option<&ResourceMap> {
        self.resources.get(type_url)
    }

    /// An empty map for every type in [`SNAPSHOT_TYPES`], then these resources.
    pub fn from_resources(
        generation: u64,
        resources: impl IntoIterator<Item = (&'static str, Arc<Resource>)>,
    ) -> Snapshot {
        let mut map: BTreeMap<&'static str, ResourceMap> = SNAPSHOT_TYPES
            .into_iter()
            .map(|t| (t, ResourceMap::new()))
            .collect();
        for (t, r) in resources {
            map.entry(t).or_default().insert(r.name.clone(), r);
        }
        Snapshot {
            generation,
            resources: map,
            wildcard_clusters: None,
        }
    }
}

/// A resource's version: the first 16 hex digits of the SHA-256 of its encoding.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..8])
}

/// Packs and versions one resource.
pub fn resource<M: Message + prost::Name>(name: &str, m: &M) -> Arc<Resource> {
    resource_from_bytes(name, &M::type_url(), m.encode_to_vec())
}

/// A resource from its already encoded message.
pub fn resource_from_bytes(name: &str, type_url: &str, value: Vec<u8>) -> Arc<Resource> {
    let version = version_of(&value);
    Arc::new(Resource {
        name: name.to_string(),
        version,
        body: Any {
            type_url: type_url.to_string(),
            value,
        },
        pair: Default::default(),
    })
}

/// True when two snapshots hold the same resources at the same versions.
pub fn same_resources(a: &Snapshot, b: &Snapshot) -> bool {
    a.resources.len() == b.resources.len()
        && a.resources.iter().all(|(t, ra)| {
            b.resources.get(t).is_some_and(|rb| {
                ra.len() == rb.len()
                    && ra
                        .iter()
                        .zip(rb.iter())
                        .all(|((na, a), (nb, b))| na == nb && a.version == b.version)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_pair_hash_is_the_pair_hash_of_its_name_and_version() {
        let r = resource_from_bytes("c1", CLUSTER, vec![1, 2, 3]);
        let expected = pair_hash("c1", &r.version);
        assert_eq!(r.pair_hash_as("c1"), expected);
        // The second time from the cache, which a copy keeps and equality ignores.
        assert_eq!(r.pair_hash_as("c1"), expected);
        let copy = Resource::clone(&r);
        assert_eq!(copy.pair_hash_as("c1"), expected);
        assert_eq!(copy, *resource_from_bytes("c1", CLUSTER, vec![1, 2, 3]));
        // Another name (a map key that is not the resource's own) is hashed with it.
        assert_eq!(r.pair_hash_as("c2"), pair_hash("c2", &r.version));
        assert_ne!(r.pair_hash_as("c2"), expected);
    }

    #[test]
    fn type_urls_are_the_protos_in_push_order() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use envoy_types::pb::envoy::config::listener::v3::Listener;
        use envoy_types::pb::envoy::config::route::v3::{
            RouteConfiguration, ScopedRouteConfiguration,
        };
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
        use prost::Name;
        assert_eq!(
            PUSH_ORDER.map(String::from),
            [
                Cluster::type_url(),
                ClusterLoadAssignment::type_url(),
                Listener::type_url(),
                ScopedRouteConfiguration::type_url(),
                RouteConfiguration::type_url(),
                Secret::type_url(),
            ]
        );
        for t in TypeUrl::ALL {
            assert_eq!(TypeUrl::parse(t.as_str()), Some(t));
        }
        assert_eq!(type_short("type.googleapis.com/x"), "other");
    }
}
