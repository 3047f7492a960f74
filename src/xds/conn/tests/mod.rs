//! Unit tests of the ADS connection state machine, driven by a tiny scripted "Envoy".

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, ScopedRouteConfiguration};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use sha2::{Digest, Sha256};

use super::{ConnStatus, DeltaConnection, Event, SotwConnection};
use crate::xds::{Resource, Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE};

const PROXY_CONFIG: &str = "type.googleapis.com/istio.mesh.v1alpha1.ProxyConfig";

fn res(type_url: &'static str, name: &str, variant: u32) -> Arc<Resource> {
    let value = match type_url {
        CLUSTER => Cluster {
            name: name.into(),
            alt_stat_name: format!("v{variant}"),
            ..Default::default()
        }
        .encode_to_vec(),
        ENDPOINT => ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                priority: variant,
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec(),
        LISTENER => Listener {
            name: name.into(),
            stat_prefix: format!("v{variant}"),
            ..Default::default()
        }
        .encode_to_vec(),
        ROUTE => RouteConfiguration {
            name: name.into(),
            internal_only_headers: vec![format!("v{variant}")],
            ..Default::default()
        }
        .encode_to_vec(),
        SCOPED_ROUTE => ScopedRouteConfiguration {
            name: name.into(),
            route_configuration_name: format!("{name}-v{variant}"),
            ..Default::default()
        }
        .encode_to_vec(),
        other => panic!("no fixture for {other}"),
    };
    let version = hex::encode(&Sha256::digest(&value)[..8]);
    Arc::new(Resource {
        name: name.into(),
        version,
        body: Any {
            type_url: type_url.into(),
            value,
        },
        pair: Default::default(),
    })
}

fn ver(type_url: &'static str, name: &str, variant: u32) -> String {
    res(type_url, name, variant).version.clone()
}

fn snap(generation: u64, items: &[(&'static str, &str, u32)]) -> Arc<Snapshot> {
    let mut s = Snapshot {
        generation,
        resources: BTreeMap::new(),
        wildcard_clusters: None,
    };
    for (t, name, variant) in items {
        s.resources
            .entry(*t)
            .or_default()
            .insert(name.to_string(), res(t, name, *variant));
    }
    Arc::new(s)
}

/// Name of an encoded resource.
fn any_name(a: &Any) -> String {
    let v = a.value.as_slice();
    match a.type_url.as_str() {
        CLUSTER => Cluster::decode(v).unwrap().name,
        ENDPOINT => ClusterLoadAssignment::decode(v).unwrap().cluster_name,
        LISTENER => Listener::decode(v).unwrap().name,
        ROUTE => RouteConfiguration::decode(v).unwrap().name,
        SCOPED_ROUTE => ScopedRouteConfiguration::decode(v).unwrap().name,
        other => panic!("unexpected type {other}"),
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    let mut n: Vec<String> = r.resources.iter().map(any_name).collect();
    n.sort();
    n
}

fn dnames(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut n: Vec<String> = r.resources.iter().map(|r| r.name.clone()).collect();
    n.sort();
    n
}

/// The type URLs of a batch of SotW responses, in order.
fn types(v: &[DiscoveryResponse]) -> Vec<&str> {
    v.iter().map(|r| r.type_url.as_str()).collect()
}

/// The type URLs of a batch of Delta responses, in order.
fn dtypes(v: &[DeltaDiscoveryResponse]) -> Vec<&str> {
    v.iter().map(|r| r.type_url.as_str()).collect()
}

/// The two responses of a batch.
fn two<T: std::fmt::Debug>(mut v: Vec<T>) -> (T, T) {
    assert_eq!(v.len(), 2, "expected exactly two responses, got {v:?}");
    let b = v.remove(1);
    (v.remove(0), b)
}

fn one<T: std::fmt::Debug>(mut v: Vec<T>) -> T {
    assert_eq!(v.len(), 1, "expected exactly one response, got {v:?}");
    v.remove(0)
}

fn gen1() -> Arc<Snapshot> {
    snap(
        1,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    )
}

fn rpc_error(msg: &str) -> RpcStatus {
    RpcStatus {
        code: 3,
        message: msg.into(),
        details: vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// SotW

/// A scripted SotW Envoy: remembers its subscriptions and the latest nonce per type.
struct Sotw {
    c: SotwConnection,
    names: BTreeMap<String, Vec<String>>,
    nonces: BTreeMap<String, String>,
}

impl Sotw {
    fn new(s: Arc<Snapshot>) -> Self {
        Sotw {
            c: SotwConnection::new(s),
            names: BTreeMap::new(),
            nonces: BTreeMap::new(),
        }
    }

    fn see(&mut self, out: Vec<DiscoveryResponse>) -> Vec<DiscoveryResponse> {
        for r in &out {
            self.nonces.insert(r.type_url.clone(), r.nonce.clone());
        }
        out
    }

    fn send(&mut self, req: DiscoveryRequest) -> Vec<DiscoveryResponse> {
        let out = self.c.on_request(req).responses;
        self.see(out)
    }

    /// (Re)subscribe: carries the latest nonce seen for the type.
    fn request(&mut self, t: &str, names: &[&str]) -> Vec<DiscoveryResponse> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.names.insert(t.into(), names.clone());
        self.send(DiscoveryRequest {
            type_url: t.into(),
            resource_names: names,
            response_nonce: self.nonces.get(t).cloned().unwrap_or_default(),
            ..Default::default()
        })
    }

    fn reply(&mut self, r: &DiscoveryResponse, error: Option<&str>) -> Vec<DiscoveryResponse> {
        self.send(DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            resource_names: self.names.get(&r.type_url).cloned().unwrap_or_default(),
            response_nonce: r.nonce.clone(),
            error_detail: error.map(rpc_error),
            ..Default::default()
        })
    }

    fn ack(&mut self, r: &DiscoveryResponse) -> Vec<DiscoveryResponse> {
        self.reply(r, None)
    }

    fn nack(&mut self, r: &DiscoveryResponse, msg: &str) -> Vec<DiscoveryResponse> {
        self.reply(r, Some(msg))
    }

    fn snapshot(&mut self, s: Arc<Snapshot>) -> Vec<DiscoveryResponse> {
        let out = self.c.on_snapshot(s).responses;
        self.see(out)
    }

    fn acked(&self) -> Option<u64> {
        self.c.status().acked_generation
    }
}

/// Envoy's startup sequence: CDS, EDS for the clusters, LDS, RDS for the listener's routes.
/// Requests for the next type arrive before the ACK of the previous one, as Envoy sends them.
fn sotw_started() -> Sotw {
    let mut e = Sotw::new(gen1());
    let cds = one(e.request(CLUSTER, &[]));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["a", "b"]);
    assert!(!cds.version_info.is_empty());
    // EDS request while CDS is un-acked: answered (Envoy ACKs CDS only once its EDS clusters
    // have warmed); nothing else while CDS is outstanding.
    let eds = one(e.request(ENDPOINT, &["a", "b"]));
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(names(&eds), ["a", "b"]);
    assert!(e.ack(&eds).is_empty());
    assert!(e.request(LISTENER, &[]).is_empty());
    assert_eq!(e.acked(), None);
    let lds = one(e.ack(&cds));
    assert_eq!(lds.type_url, LISTENER);
    assert_eq!(names(&lds), ["l"]);
    assert!(e.request(ROUTE, &["r"]).is_empty());
    let rds = one(e.ack(&lds));
    assert_eq!(rds.type_url, ROUTE);
    assert_eq!(names(&rds), ["r"]);
    assert_eq!(e.acked(), None);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(1));
    e
}

// ---------------------------------------------------------------------------------------------
// Delta

struct Delta {
    c: DeltaConnection,
}

fn dreq(t: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

impl Delta {
    fn send(&mut self, r: DeltaDiscoveryRequest) -> Vec<DeltaDiscoveryResponse> {
        self.c.on_request(r).responses
    }
    fn sub(&mut self, t: &str, names: &[&str]) -> Vec<DeltaDiscoveryResponse> {
        self.send(dreq(t, names, &[], ""))
    }
    fn ack(&mut self, r: &DeltaDiscoveryResponse) -> Vec<DeltaDiscoveryResponse> {
        self.send(dreq(&r.type_url, &[], &[], &r.nonce))
    }
    fn nack(&mut self, r: &DeltaDiscoveryResponse, msg: &str) -> Vec<DeltaDiscoveryResponse> {
        let mut q = dreq(&r.type_url, &[], &[], &r.nonce);
        q.error_detail = Some(rpc_error(msg));
        self.send(q)
    }
    fn acked(&self) -> Option<u64> {
        self.c.status().acked_generation
    }
}

fn delta_started() -> Delta {
    let mut e = Delta {
        c: DeltaConnection::new(gen1()),
    };
    let cds = one(e.sub(CLUSTER, &[]));
    assert_eq!(dnames(&cds), ["a", "b"]);
    assert!(cds.removed_resources.is_empty());
    // Answered while CDS is outstanding (see sotw_started).
    let eds = one(e.sub(ENDPOINT, &["a", "b"]));
    assert_eq!(dnames(&eds), ["a", "b"]);
    assert!(e.ack(&eds).is_empty());
    assert!(e.sub(LISTENER, &["*"]).is_empty());
    let lds = one(e.ack(&cds));
    assert_eq!(dnames(&lds), ["l"]);
    assert!(e.sub(ROUTE, &["r"]).is_empty());
    let rds = one(e.ack(&lds));
    assert_eq!(dnames(&rds), ["r"]);
    assert_eq!(rds.resources[0].version, ver(ROUTE, "r", 1));
    assert_eq!(e.acked(), None);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(1));
    e
}

/// Limits small enough to reach in a test.
fn small_limits() -> crate::xds::limits::Limits {
    crate::xds::limits::Limits {
        max_type_urls: 3,
        max_type_url_bytes: 80,
        max_resource_names: 4,
        max_resource_name_bytes: 40,
        max_nack_message_bytes: 8,
        ..Default::default()
    }
}

fn sotw_req(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

mod delta;
mod events;
mod limits;
mod scoped;
mod shared;
mod sotw;
mod subscriptions;
mod warming;
