//! Building versioned snapshots from translated config: every resource packed into `Any` and
//! versioned by a hash of its deterministic encoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};

use super::{
    Resource, ResourceMap, Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET,
};
use crate::translate::envoy::any;
use crate::translate::ProxyConfig;

/// A resource's version: the first 16 hex digits of the SHA-256 of its encoding.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..8])
}

/// Packs and versions one resource.
pub fn resource<M: Message + prost::Name>(name: &str, m: &M) -> Arc<Resource> {
    let body = any(m);
    let version = version_of(&body.value);
    Arc::new(Resource {
        name: name.to_string(),
        version,
        body,
    })
}

/// A resource from its already encoded message.
pub fn resource_from_bytes(name: &str, type_url: &str, value: Vec<u8>) -> Arc<Resource> {
    let version = version_of(&value);
    Arc::new(Resource {
        name: name.to_string(),
        version,
        body: envoy_types::pb::google::protobuf::Any {
            type_url: type_url.to_string(),
            value,
        },
    })
}

fn insert<M: Message + prost::Name>(
    map: &mut BTreeMap<&'static str, ResourceMap>,
    type_url: &'static str,
    name: &str,
    m: &M,
) {
    map.entry(type_url)
        .or_default()
        .insert(name.to_string(), resource(name, m));
}

/// The types every snapshot has a (possibly empty) map for.
pub const SNAPSHOT_TYPES: [&str; 6] = [CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET];

/// The snapshot a proxy should hold for this config.
pub fn snapshot(generation: u64, config: &ProxyConfig) -> Snapshot {
    let mut resources = BTreeMap::new();
    for t in SNAPSHOT_TYPES {
        resources.insert(t, ResourceMap::new());
    }
    for c in &config.clusters {
        insert(&mut resources, CLUSTER, &c.name, c);
    }
    for e in &config.endpoints {
        insert(&mut resources, ENDPOINT, &e.cluster_name, e);
    }
    for l in &config.listeners {
        insert(&mut resources, LISTENER, &l.name, l);
    }
    for r in &config.routes {
        insert(&mut resources, ROUTE, &r.name, r);
    }
    for s in &config.scoped_routes {
        insert(&mut resources, SCOPED_ROUTE, &s.name, s);
    }
    for s in &config.secrets {
        insert(&mut resources, SECRET, &s.name, s);
    }
    Snapshot {
        generation,
        resources,
    }
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
