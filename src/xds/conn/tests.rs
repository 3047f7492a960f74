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

#[test]
fn sotw_initial_sequence_and_status() {
    let e = sotw_started();
    let st = e.c.status();
    assert_eq!(st.target_generation, 1);
    assert!(st.outstanding.is_none());
    let cds = &st.types[CLUSTER];
    assert!(cds.wildcard);
    assert_eq!(cds.responses_sent, 1);
    assert_eq!(cds.acks, 1);
    assert!(cds.bytes_sent > 0);
    assert_eq!(cds.last_acked_version, cds.last_sent_version);
    let eds = &st.types[ENDPOINT];
    assert!(!eds.wildcard);
    assert_eq!(eds.subscribed, ["a", "b"]);
    assert!(eds.in_sync);
    // Serializable for the debug endpoint.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["acked_generation"], 1);
    assert_eq!(json["mode"], "sotw");
}

#[test]
fn sotw_version_is_deterministic_and_content_based() {
    let mut a = sotw_started();
    let mut b = sotw_started();
    let ra = one(a.snapshot(snap(2, &[(CLUSTER, "a", 2), (CLUSTER, "b", 1)])));
    let rb = one(b.snapshot(snap(2, &[(CLUSTER, "a", 2), (CLUSTER, "b", 1)])));
    assert_eq!(ra.version_info, rb.version_info);
    let st = a.c.status();
    assert_ne!(
        Some(&ra.version_info),
        st.types[CLUSTER].last_acked_version.as_ref()
    );
}

#[test]
fn sotw_only_subscribed_eds_names_are_sent() {
    let mut e = Sotw::new(gen1());
    let cds = one(e.request(CLUSTER, &[]));
    let eds = one(e.request(ENDPOINT, &["a", "missing"]));
    assert_eq!(names(&eds), ["a"]);
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty(), "no listener requested");
    // Subscribing to one more name (with the latest nonce) is answered at once.
    let eds = one(e.request(ENDPOINT, &["a", "b"]));
    assert_eq!(names(&eds), ["b"], "a is held");
}

#[test]
fn sotw_endpoint_only_change_sends_only_eds() {
    let mut e = sotw_started();
    let mut s2 = (*gen1()).clone();
    s2.generation = 2;
    s2.resources
        .get_mut(ENDPOINT)
        .unwrap()
        .insert("a".into(), res(ENDPOINT, "a", 2));
    let eds = one(e.snapshot(Arc::new(s2)));
    assert_eq!(eds.type_url, ENDPOINT);
    // Envoy hands a SotW EDS response to the watch of each assignment it names; b's is kept.
    assert_eq!(names(&eds), ["a"], "SotW EDS carries only what changed");
    assert_eq!(e.acked(), Some(1));
    assert!(e.ack(&eds).is_empty(), "nothing else changed");
    assert_eq!(e.acked(), Some(2));
    let st = e.c.status();
    assert_eq!(st.types[CLUSTER].responses_sent, 1);
    assert_eq!(st.types[LISTENER].responses_sent, 1);
    assert_eq!(st.types[ROUTE].responses_sent, 1);
    assert_eq!(st.types[ENDPOINT].responses_sent, 2);
}

#[test]
fn sotw_same_snapshot_again_sends_nothing() {
    let mut e = sotw_started();
    let mut s = (*gen1()).clone();
    s.generation = 2;
    assert!(e.snapshot(Arc::new(s)).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_stale_nonce_is_ignored_entirely() {
    let mut e = sotw_started();
    let old_rds_nonce = e.nonces[ROUTE].clone();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 2),
        ],
    );
    let lds = one(e.snapshot(s2));
    assert_eq!(lds.type_url, LISTENER);
    // A request with an old nonce for LDS (e.g. "1") is stale: no ACK, no response.
    assert!(e
        .send(DiscoveryRequest {
            type_url: LISTENER.into(),
            response_nonce: "1".into(),
            ..Default::default()
        })
        .is_empty());
    let st = e.c.status();
    assert_eq!(st.types[LISTENER].stale_requests, 1);
    assert_eq!(st.outstanding.as_ref().unwrap().nonce, lds.nonce);
    let rds = one(e.ack(&lds));
    assert_eq!(rds.type_url, ROUTE);
    // A stale RDS request changing the names is ignored entirely in SotW.
    assert!(e
        .send(DiscoveryRequest {
            type_url: ROUTE.into(),
            resource_names: vec!["other".into()],
            response_nonce: old_rds_nonce,
            ..Default::default()
        })
        .is_empty());
    assert_eq!(e.c.status().types[ROUTE].subscribed, ["r"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_nack_is_recorded_not_resent_and_does_not_block_later_types() {
    let mut e = sotw_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
        ],
    );
    // Cluster a is updated: its (unchanged) assignment goes with the CDS response.
    let out = e.snapshot(s2);
    assert_eq!(types(&out), [CLUSTER, ENDPOINT]);
    let (cds, eds) = two(out);
    assert_eq!(names(&eds), ["a"]);
    // NACK of CDS: the next type in the push order still goes out.
    assert!(e.nack(&cds, "bad cluster a").is_empty(), "EDS outstanding");
    let lds = one(e.ack(&eds));
    assert_eq!(lds.type_url, LISTENER);
    let st = e.c.status();
    let nack = st.types[CLUSTER].last_nack.as_ref().unwrap();
    assert_eq!(nack.message, "bad cluster a");
    assert_eq!(nack.nonce, cds.nonce);
    assert_eq!(nack.resources, ["a"]);
    assert_eq!(st.types[CLUSTER].nacks, 1);
    // After the LDS ACK the rejected CDS is not sent again.
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(1), "generation 2 is not fully acked");
    // A later snapshot that does not touch cluster a: only EDS, no CDS loop.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
        ],
    );
    let eds = one(e.snapshot(s3));
    assert_eq!(eds.type_url, ENDPOINT);
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.c.status().types[CLUSTER].responses_sent, 2);
    // Cluster a changes again: sent.
    let s4 = snap(
        4,
        &[
            (CLUSTER, "a", 4),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
        ],
    );
    let (cds, eds) = two(e.snapshot(s4));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["a", "b"]);
    assert_eq!(eds.type_url, ENDPOINT);
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(4));
}

#[test]
fn sotw_cluster_removal_waits_for_lds_and_rds_ack() {
    let mut e = sotw_started();
    // b goes away, c comes in, the route moves from b to c.
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "c", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "c", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 2),
        ],
    );
    let cds = one(e.snapshot(s2));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["a", "b", "c"], "b kept until routes moved");
    // Envoy asks for c's assignment while c warms and ACKs CDS only once c has warmed (it pauses
    // CDS ACKs while clusters warm): EDS goes out with CDS still outstanding.
    let eds = one(e.request(ENDPOINT, &["a", "b", "c"]));
    assert_eq!(names(&eds), ["c"], "a and b are held");
    assert!(
        e.ack(&eds).is_empty(),
        "nothing else while CDS is outstanding"
    );
    let rds = one(e.ack(&cds));
    assert_eq!(rds.type_url, ROUTE, "LDS unchanged, not resent");
    assert_eq!(e.c.status().retained_removals, 2);
    // Routes ACKed: now the final CDS push removes b. (A SotW EDS response would not remove
    // b's assignment: the Envoy drops it by unsubscribing.)
    let cds = one(e.ack(&rds));
    assert_eq!(names(&cds), ["a", "c"]);
    assert_eq!(e.acked(), Some(1));
    // Envoy drops the EDS watch for b (before acking CDS): nothing to send for that.
    assert!(e.request(ENDPOINT, &["a", "c"]).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    assert_eq!(e.c.status().retained_removals, 0);
}

#[test]
fn sotw_removal_kept_while_rds_is_nacked() {
    let mut e = sotw_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 2),
        ],
    );
    let rds = one(e.snapshot(s2));
    assert_eq!(rds.type_url, ROUTE);
    assert!(e.nack(&rds, "route rejected").is_empty());
    // The Envoy still runs the old routes (which use b): b must stay.
    assert_eq!(e.c.status().retained_removals, 2);
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 3),
        ],
    );
    let rds = one(e.snapshot(s3));
    let cds = one(e.ack(&rds));
    assert_eq!(names(&cds), ["a"]);
}

#[test]
fn sotw_listener_removed_directly() {
    let mut e = sotw_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (ROUTE, "r", 1),
        ],
    );
    let lds = one(e.snapshot(s2));
    assert_eq!(lds.type_url, LISTENER);
    assert!(lds.resources.is_empty());
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_unknown_type_gets_one_empty_response() {
    let mut e = Sotw::new(gen1());
    let cds = one(e.request(CLUSTER, &[]));
    // While CDS is outstanding, an unserved type is still answered at once, empty.
    let pc = one(e.request(PROXY_CONFIG, &[]));
    assert_eq!(pc.type_url, PROXY_CONFIG);
    assert!(pc.resources.is_empty());
    assert!(!pc.version_info.is_empty());
    assert_ne!(pc.nonce, cds.nonce);
    // Its ACK produces nothing, and the push sequence is unaffected.
    assert!(e.ack(&pc).is_empty());
    assert!(e.request(LISTENER, &[]).is_empty());
    let lds = one(e.ack(&cds));
    assert_eq!(lds.type_url, LISTENER);
    let st = e.c.status();
    assert!(!st.types[PROXY_CONFIG].served);
    assert_eq!(st.types[PROXY_CONFIG].acks, 1);
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

#[test]
fn delta_initial_sequence() {
    let e = delta_started();
    let st = e.c.status();
    assert_eq!(st.mode, super::Mode::Delta);
    assert!(st.types[CLUSTER].wildcard);
    assert!(st.types[LISTENER].wildcard);
    assert!(!st.types[ROUTE].wildcard);
    assert_eq!(st.types[ENDPOINT].resources_held, 2);
}

#[test]
fn delta_endpoint_only_change_sends_only_changed_assignment() {
    let mut e = delta_started();
    let mut s2 = (*gen1()).clone();
    s2.generation = 2;
    s2.resources
        .get_mut(ENDPOINT)
        .unwrap()
        .insert("b".into(), res(ENDPOINT, "b", 2));
    let eds = one(e.c.on_snapshot(Arc::new(s2)).responses);
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(dnames(&eds), ["b"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "b", 2));
    assert!(eds.removed_resources.is_empty());
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_cluster_removal_waits_for_route_ack() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 2),
        ],
    );
    // Clusters unchanged apart from the removal: no CDS/EDS yet, routes first.
    let rds = one(e.c.on_snapshot(s2).responses);
    assert_eq!(rds.type_url, ROUTE);
    assert_eq!(dnames(&rds), ["r"]);
    let out = e.ack(&rds);
    assert_eq!(dtypes(&out), [CLUSTER, ENDPOINT]);
    let (cds, eds) = two(out);
    assert!(cds.resources.is_empty());
    assert_eq!(cds.removed_resources, ["b"]);
    // b's assignment is removed with its cluster.
    assert!(eds.resources.is_empty());
    assert_eq!(eds.removed_resources, ["b"]);
    // Envoy drops its EDS watch for b: nothing more to send for it.
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_removed_assignment_of_still_subscribed_cluster_is_removed_after_routes() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 2),
        ],
    );
    let lds = one(e.c.on_snapshot(s2).responses);
    assert_eq!(lds.type_url, LISTENER);
    assert!(lds.removed_resources.is_empty());
    let rds = one(e.ack(&lds));
    assert_eq!(rds.type_url, ROUTE);
    // The Envoy (misbehaving) keeps the EDS watch for b: EDS removes it explicitly, with the
    // CDS removal.
    let (cds, eds) = two(e.ack(&rds));
    assert_eq!(cds.removed_resources, ["b"]);
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(eds.removed_resources, ["b"]);
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_initial_resource_versions_skip_known_and_remove_gone() {
    let mut e = Delta {
        c: DeltaConnection::new(gen1()),
    };
    let mut q = dreq(CLUSTER, &[], &[], "");
    q.initial_resource_versions = [
        ("a".to_string(), ver(CLUSTER, "a", 1)),
        ("b".to_string(), "outdated".to_string()),
        ("z".to_string(), "whatever".to_string()),
    ]
    .into_iter()
    .collect();
    let cds = one(e.send(q));
    assert_eq!(dnames(&cds), ["b"], "a is already current on the Envoy");
    // z is gone from our config, but a reconnecting Envoy may still route to it: it is removed
    // only once the Envoy has taken listeners and routes from us.
    assert!(
        cds.removed_resources.is_empty(),
        "{:?}",
        cds.removed_resources
    );
    assert_eq!(e.c.status().retained_removals, 1);
    // EDS re-subscription with everything current: nothing to send after the CDS ACK.
    let mut q = dreq(ENDPOINT, &["a", "b"], &[], "");
    q.initial_resource_versions = [
        ("a".to_string(), ver(ENDPOINT, "a", 1)),
        ("b".to_string(), ver(ENDPOINT, "b", 1)),
    ]
    .into_iter()
    .collect();
    assert!(e.send(q).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), None, "z still to be removed");
    let lds = one(e.sub(LISTENER, &[]));
    assert_eq!(dnames(&lds), ["l"]);
    assert!(e.ack(&lds).is_empty(), "routes not asked for yet: z stays");
    let rds = one(e.sub(ROUTE, &["r"]));
    assert_eq!(rds.type_url, ROUTE);
    let removal = one(e.ack(&rds));
    assert_eq!(removal.type_url, CLUSTER);
    assert!(removal.resources.is_empty());
    assert_eq!(removal.removed_resources, ["z"]);
    assert!(e.ack(&removal).is_empty());
    assert_eq!(e.acked(), Some(1));
}

#[test]
fn delta_stale_nonce_still_applies_subscriptions_and_nack_not_resent() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
            (ROUTE, "r2", 1),
        ],
    );
    let lds = one(e.c.on_snapshot(s2).responses);
    assert_eq!(lds.type_url, LISTENER);
    // Subscribe r2 with a stale nonce: not an ACK, but the subscription counts.
    assert!(e.send(dreq(ROUTE, &["r2"], &[], "1")).is_empty());
    assert_eq!(e.c.status().types[ROUTE].stale_requests, 1);
    let rds = one(e.ack(&lds));
    assert_eq!(dnames(&rds), ["r2"]);
    assert!(e.nack(&rds, "bad r2").is_empty());
    let st = e.c.status();
    assert_eq!(
        st.types[ROUTE].last_nack.as_ref().unwrap().message,
        "bad r2"
    );
    assert_eq!(e.acked(), Some(1));
    // An unrelated change: only EDS, the rejected r2 is not resent.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
            (ROUTE, "r2", 1),
        ],
    );
    let eds = one(e.c.on_snapshot(s3).responses);
    assert_eq!(eds.type_url, ENDPOINT);
    assert!(e.ack(&eds).is_empty());
    // r2 fixed: sent and acked.
    let s4 = snap(
        4,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
            (ROUTE, "r2", 2),
        ],
    );
    let rds = one(e.c.on_snapshot(s4).responses);
    assert_eq!(dnames(&rds), ["r2"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(4));
}

#[test]
fn delta_unsubscribe_sends_no_removal_and_resubscribe_resends() {
    let mut e = delta_started();
    assert!(e.send(dreq(ROUTE, &[], &["r"], "")).is_empty());
    assert_eq!(e.c.status().types[ROUTE].resources_held, 0);
    let rds = one(e.sub(ROUTE, &["r"]));
    assert_eq!(dnames(&rds), ["r"]);
}

#[test]
fn delta_outstanding_response_of_fully_unsubscribed_type_does_not_stall() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 2),
        ],
    );
    let lds = one(e.c.on_snapshot(s2).responses);
    assert!(e.ack(&lds).into_iter().any(|r| r.type_url == ROUTE));
    // The Envoy drops its last route watch and will never ACK that RDS response.
    assert!(e.send(dreq(ROUTE, &[], &["r"], "")).is_empty());
    assert!(e.c.status().outstanding.is_none());
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 5),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 2),
        ],
    );
    let eds = one(e.c.on_snapshot(s3).responses);
    assert_eq!(eds.type_url, ENDPOINT);
}

#[test]
fn delta_unknown_type_gets_empty_response() {
    let mut e = delta_started();
    let pc = one(e.sub(PROXY_CONFIG, &[]));
    assert_eq!(pc.type_url, PROXY_CONFIG);
    assert!(pc.resources.is_empty() && pc.removed_resources.is_empty());
    assert!(e.ack(&pc).is_empty());
    assert_eq!(e.acked(), Some(1));
}

#[test]
fn delta_empty_wildcard_type_is_answered() {
    let mut e = Delta {
        c: DeltaConnection::new(snap(1, &[(CLUSTER, "a", 1)])),
    };
    let cds = one(e.sub(CLUSTER, &[]));
    let lds = one(e
        .ack(&cds)
        .into_iter()
        .chain(e.sub(LISTENER, &[]))
        .collect());
    assert_eq!(lds.type_url, LISTENER);
    assert!(lds.resources.is_empty());
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(1));
}

// ---------------------------------------------------------------------------------------------
// Scoped RDS (scoped route layout)

/// Scopes `s1`, `s2` with one RouteConfiguration each.
fn scoped_gen(generation: u64, r1: u32, r2: u32, scope2: bool) -> Arc<Snapshot> {
    let mut items = vec![
        (CLUSTER, "a", 1),
        (ENDPOINT, "a", 1),
        (LISTENER, "l", 1),
        (SCOPED_ROUTE, "s1", 1),
        (ROUTE, "s1", r1),
        (ROUTE, "s2", r2),
    ];
    if scope2 {
        items.push((SCOPED_ROUTE, "s2", 1));
    }
    snap(generation, &items)
}

/// SotW: SRDS asked without names is a wildcard and goes after LDS, before RDS; RDS may go while
/// SRDS is outstanding; a change to one scope's RouteConfiguration resends only that one.
#[test]
fn sotw_scoped_routes_order_wildcard_and_changed_only_rds() {
    let mut e = Sotw::new(scoped_gen(1, 1, 1, true));
    let cds = one(e.request(CLUSTER, &[]));
    let eds = one(e.request(ENDPOINT, &["a"]));
    assert!(e.ack(&eds).is_empty());
    assert!(e.request(LISTENER, &[]).is_empty());
    let lds = one(e.ack(&cds));
    assert_eq!(lds.type_url, LISTENER);
    assert!(e.request(SCOPED_ROUTE, &[]).is_empty(), "LDS outstanding");
    let srds = one(e.ack(&lds));
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert_eq!(names(&srds), ["s1", "s2"]);
    // The Envoy asks for the scopes' RouteConfigurations before it ACKs SRDS: answered.
    let rds = one(e.request(ROUTE, &["s1", "s2"]));
    assert_eq!(names(&rds), ["s1", "s2"]);
    assert!(e.ack(&srds).is_empty());
    assert_eq!(e.acked(), None);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(1));
    assert!(e.c.status().types[SCOPED_ROUTE].wildcard);

    // One RouteConfiguration changes: only it is sent (Envoy leaves the other watch alone).
    let rds = one(e.snapshot(scoped_gen(2, 1, 2, true)));
    assert_eq!(rds.type_url, ROUTE);
    assert_eq!(names(&rds), ["s2"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let st = e.c.status();
    assert_eq!(st.types[SCOPED_ROUTE].responses_sent, 1);
    assert_eq!(st.types[LISTENER].responses_sent, 1);

    // A scope goes away: SRDS is resent without it (state of the world), RDS not at all.
    let srds = one(e.snapshot(scoped_gen(3, 1, 2, false)));
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert_eq!(names(&srds), ["s1"]);
    assert!(e.ack(&srds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

/// Delta: a wildcard SRDS subscription gets the scopes, and removed scopes are listed.
#[test]
fn delta_scoped_routes_wildcard_and_removal() {
    let mut e = Delta {
        c: DeltaConnection::new(scoped_gen(1, 1, 1, true)),
    };
    let cds = one(e.sub(CLUSTER, &[]));
    let eds = one(e.sub(ENDPOINT, &["a"]));
    assert!(e.ack(&eds).is_empty());
    assert!(e.sub(LISTENER, &[]).is_empty());
    let lds = one(e.ack(&cds));
    assert!(e.sub(SCOPED_ROUTE, &[]).is_empty());
    let srds = one(e.ack(&lds));
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert_eq!(dnames(&srds), ["s1", "s2"]);
    let rds = one(e.sub(ROUTE, &["s1", "s2"]));
    assert_eq!(dnames(&rds), ["s1", "s2"]);
    assert!(e.ack(&srds).is_empty());
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(1));
    let srds = one(e.c.on_snapshot(scoped_gen(2, 1, 1, false)).responses);
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert!(srds.resources.is_empty());
    assert_eq!(srds.removed_resources, ["s2"]);
    assert!(e.ack(&srds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn steps_return_acks_nacks_and_convergence_once() {
    let mut c = SotwConnection::new(snap(1, &[(CLUSTER, "a", 1)]));
    let step = c.on_request(DiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    });
    assert!(step.events.is_empty(), "{:?}", step.events);
    let cds = one(step.responses);
    let ack = |c: &mut SotwConnection, r: &DiscoveryResponse, error: Option<&str>| {
        c.on_request(DiscoveryRequest {
            type_url: CLUSTER.into(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: error.map(rpc_error),
            ..Default::default()
        })
    };
    let step = ack(&mut c, &cds, None);
    assert!(step.responses.is_empty());
    assert_eq!(
        step.events,
        [
            Event::Ack {
                type_url: CLUSTER.into(),
                version: cds.version_info.clone(),
                generation: 1,
            },
            Event::Converged { generation: 1 }
        ]
    );
    // A new snapshot, NACKed: one NACK event (the machine itself logs nothing), no convergence.
    let step = c.on_snapshot(snap(2, &[(CLUSTER, "a", 2)]));
    assert!(step.events.is_empty(), "{:?}", step.events);
    let cds2 = one(step.responses);
    let step = ack(&mut c, &cds2, Some("bad cluster"));
    match &step.events[..] {
        [Event::Nack {
            type_url,
            nack,
            generation,
        }] => {
            assert_eq!(type_url, CLUSTER);
            assert_eq!(*generation, 2, "the NACKed response's snapshot");
            assert_eq!(nack.message, "bad cluster");
            assert_eq!(nack.nonce, cds2.nonce);
            assert_eq!(nack.resources, ["a"]);
        }
        other => panic!("expected one NACK event, got {other:?}"),
    }
    // Fixed: the ACK converges on generation 3, once.
    let cds3 = one(c.on_snapshot(snap(3, &[(CLUSTER, "a", 3)])).responses);
    let step = ack(&mut c, &cds3, None);
    assert_eq!(step.events.len(), 2, "{:?}", step.events);
    assert_eq!(step.events[1], Event::Converged { generation: 3 });
    let step = c.on_snapshot(snap(3, &[(CLUSTER, "a", 3)]));
    assert!(step.responses.is_empty() && step.events.is_empty());
}

#[test]
fn sotw_cluster_turning_from_eds_to_dns_and_back_does_not_stall() {
    let mut e = sotw_started();
    // a becomes a DNS cluster: no assignment any more. No EDS response goes out for that (the
    // Envoy stops watching a's assignment, and would accept an empty EDS response for a type it
    // no longer watches without ACKing it).
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let cds = one(e.snapshot(s2));
    assert_eq!(cds.type_url, CLUSTER);
    assert!(e.request(ENDPOINT, &["b"]).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    // Back to EDS: the Envoy asks for a's assignment, which is sent.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 3),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let cds = one(e.snapshot(s3));
    assert_eq!(cds.type_url, CLUSTER);
    let eds = one(e.request(ENDPOINT, &["a", "b"]));
    assert_eq!(names(&eds), ["a"], "b's watch is unchanged");
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn sotw_eds_removal_to_an_envoy_that_stopped_watching_is_not_sent() {
    let mut e = sotw_started();
    // Both clusters become DNS clusters: the Envoy watches no assignment at all.
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 2),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let cds = one(e.snapshot(s2));
    // Its EDS request naming nothing carries an EDS nonce older than any we might have sent.
    assert!(e.request(ENDPOINT, &[]).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let lds = one(e.snapshot(snap(
        3,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 2),
            (LISTENER, "l", 3),
            (ROUTE, "r", 1),
        ],
    )));
    assert_eq!(lds.type_url, LISTENER, "later pushes are not stalled");
}

// ---------------------------------------------------------------------------------------------
// Clusters changed in place: an updated EDS cluster warms until its assignment is answered.

/// gen1 with cluster a updated (e.g. its Service port renamed: new upstream protocol) and the
/// given variant of a's assignment.
fn gen_a_updated(generation: u64, eds_variant: u32, listener_variant: u32) -> Arc<Snapshot> {
    snap(
        generation,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", eds_variant),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", listener_variant),
            (ROUTE, "r", 1),
        ],
    )
}

#[test]
fn sotw_updated_cluster_gets_its_unchanged_assignment_and_does_not_stall() {
    let mut e = sotw_started();
    let (cds, eds) = two(e.snapshot(gen_a_updated(2, 1, 1)));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(
        eds.type_url, ENDPOINT,
        "the assignment goes right after CDS"
    );
    assert_eq!(names(&eds), ["a"], "only the updated cluster's assignment");
    // The Envoy re-requests EDS for the new cluster with the latest nonce (an ACK), then ACKs
    // CDS once a has warmed.
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    // Later changes still flow.
    let lds = one(e.snapshot(gen_a_updated(3, 1, 2)));
    assert_eq!(lds.type_url, LISTENER);
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_updated_cluster_gets_its_unchanged_assignment() {
    let mut e = delta_started();
    let (cds, eds) = two(e.c.on_snapshot(gen_a_updated(2, 1, 1)).responses);
    assert_eq!(dnames(&cds), ["a"]);
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(dnames(&eds), ["a"], "only the updated cluster's assignment");
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 1));
    // No request from the Envoy is needed for it: its subscriptions did not change.
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let lds = one(e.c.on_snapshot(gen_a_updated(3, 1, 2)).responses);
    assert_eq!(lds.type_url, LISTENER);
}

#[test]
fn delta_cluster_and_assignment_changed_together_go_out_together() {
    let mut e = delta_started();
    let (cds, eds) = two(e.c.on_snapshot(gen_a_updated(2, 5, 1)).responses);
    assert_eq!(dnames(&cds), ["a"]);
    assert_eq!(dnames(&eds), ["a"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 5));
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_updated_cluster_while_eds_is_outstanding_is_answered_after_its_ack() {
    let mut e = sotw_started();
    // An endpoint change goes out first and stays un-acked ...
    let mut s2 = (*gen1()).clone();
    s2.generation = 2;
    s2.resources
        .get_mut(ENDPOINT)
        .unwrap()
        .insert("b".into(), res(ENDPOINT, "b", 2));
    let eds = one(e.snapshot(Arc::new(s2)));
    // ... then cluster a is updated: CDS may not go while EDS is outstanding.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 2),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    assert!(e.snapshot(s3).is_empty());
    let (cds, eds2) = two(e.ack(&eds));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(
        eds2.type_url, ENDPOINT,
        "a's assignment is resent although b's was acked"
    );
    assert!(e.ack(&eds2).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_resubscribing_a_held_name_resends_it() {
    let mut e = delta_started();
    let eds = one(e.sub(ENDPOINT, &["a"]));
    assert_eq!(dnames(&eds), ["a"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 1));
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.acked(), Some(1));
}

#[test]
fn delta_cluster_turning_from_eds_to_dns_and_back() {
    let mut e = delta_started();
    // a becomes a DNS cluster (ExternalName): a new cluster body, no assignment any more.
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    // Routes are unchanged, so nothing still needs a's assignment: it is removed with the CDS
    // update.
    let (cds, eds) = two(e.c.on_snapshot(s2).responses);
    assert_eq!(dnames(&cds), ["a"]);
    assert!(eds.resources.is_empty());
    assert_eq!(eds.removed_resources, ["a"]);
    // The DNS cluster has no EDS watch: the Envoy unsubscribes a.
    assert!(e.send(dreq(ENDPOINT, &[], &["a"], "")).is_empty());
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    // Back to EDS: the Envoy subscribes to a's assignment again, which is sent.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 3),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let cds = one(e.c.on_snapshot(s3).responses);
    assert_eq!(dnames(&cds), ["a"]);
    let eds = one(e.sub(ENDPOINT, &["a"]));
    assert_eq!(dnames(&eds), ["a"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 3));
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_name_subscribed_while_a_response_is_outstanding_is_sent_after_its_ack() {
    let mut e = delta_started();
    let items = [
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (ENDPOINT, "a", 1),
        (ENDPOINT, "b", 1),
        (LISTENER, "l", 1),
        (ROUTE, "r", 2),
        (ROUTE, "r2", 1),
    ];
    let rds = one(e.c.on_snapshot(snap(2, &items)).responses);
    assert_eq!(dnames(&rds), ["r"], "r2 is not subscribed yet");
    // The Envoy subscribes to r2 before it ACKs (e.g. a new scope names it).
    assert!(e.sub(ROUTE, &["r2"]).is_empty(), "RDS is outstanding");
    let rds2 = one(e.ack(&rds));
    assert_eq!(dnames(&rds2), ["r2"]);
    assert!(e.ack(&rds2).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_name_in_the_synced_map_but_never_sent_is_sent_when_subscribed() {
    let mut e = delta_started();
    let items = [
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (ENDPOINT, "a", 1),
        (ENDPOINT, "b", 1),
        (LISTENER, "l", 1),
        (ROUTE, "r", 2),
        (ROUTE, "r2", 1),
    ];
    // The Envoy ACKs a response built from a map that holds r2, which it does not watch.
    let rds = one(e.c.on_snapshot(snap(2, &items)).responses);
    assert_eq!(dnames(&rds), ["r"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let rds2 = one(e.sub(ROUTE, &["r2"]));
    assert_eq!(dnames(&rds2), ["r2"]);
    assert!(e.ack(&rds2).is_empty());
    assert_eq!(e.c.status().types[ROUTE].resources_held, 2);
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_unsubscribed_names_are_forgotten_while_synced() {
    let mut e = delta_started();
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    let st = e.c.status();
    assert_eq!(st.types[ENDPOINT].resources_held, 1);
    assert_eq!(st.types[ENDPOINT].subscribed, ["a"]);
    assert_eq!(st.acked_generation, Some(1));
    // b changes: nothing to send; a changes: only a. Subscribing to b again sends it.
    let mut items = vec![
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (ENDPOINT, "a", 2),
        (ENDPOINT, "b", 2),
        (LISTENER, "l", 1),
        (ROUTE, "r", 1),
    ];
    let eds = one(e.c.on_snapshot(snap(2, &items)).responses);
    assert_eq!(dnames(&eds), ["a"]);
    assert!(e.ack(&eds).is_empty());
    items[3].2 = 3;
    assert!(e.c.on_snapshot(snap(3, &items)).responses.is_empty());
    let eds = one(e.sub(ENDPOINT, &["b"]));
    assert_eq!(dnames(&eds), ["b"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "b", 3));
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.c.status().types[ENDPOINT].resources_held, 2);
}

#[test]
fn sotw_and_delta_versions_agree_after_subscription_changes() {
    // The same holdings reached two ways give the same set version.
    let mut e = delta_started();
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 2),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let out = e.c.on_snapshot(s2.clone()).responses;
    let eds = out.iter().find(|r| r.type_url == ENDPOINT).unwrap();
    let mut fresh = Delta {
        c: DeltaConnection::new(s2),
    };
    let _ = fresh.sub(CLUSTER, &[]);
    let direct = one(fresh.sub(ENDPOINT, &["a"]));
    assert_eq!(eds.system_version_info, direct.system_version_info);
}

// ---- per-stream limits ----

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

#[test]
fn distinct_type_urls_beyond_the_limit_end_the_stream() {
    use crate::xds::limits::LimitExceeded;
    let mut c = SotwConnection::with_limits(snap(1, &[(CLUSTER, "c", 1)]), small_limits());
    let step = c.on_request(sotw_req(CLUSTER, &[], ""));
    assert!(step.refused.is_none());
    assert_eq!(types(&step.responses), [CLUSTER]);
    for t in ["type.example/a", "type.example/b"] {
        let step = c.on_request(sotw_req(t, &[], ""));
        assert!(step.refused.is_none(), "{t}");
        assert_eq!(step.responses.len(), 1, "unknown types are answered empty");
    }
    // Asking again for a type it named costs nothing new.
    assert!(c
        .on_request(sotw_req("type.example/a", &[], ""))
        .refused
        .is_none());
    let step = c.on_request(sotw_req("type.example/c", &[], ""));
    assert!(step.responses.is_empty(), "nothing echoed");
    assert_eq!(
        step.refused,
        Some(LimitExceeded::TypeUrls {
            limit: 3,
            type_url: "type.example/c".into()
        })
    );
    assert_eq!(c.status().types.len(), 3, "the refused type left no state");
    let long = format!("type.example/{}", "x".repeat(100));
    let step = c.on_request(sotw_req(&long, &[], ""));
    assert!(step.responses.is_empty());
    assert_eq!(
        step.refused,
        Some(LimitExceeded::TypeUrlLength {
            len: long.len(),
            limit: 80
        })
    );
}

#[test]
fn subscribed_names_beyond_the_limit_end_the_stream() {
    use crate::xds::limits::LimitExceeded;
    let s = snap(1, &[(CLUSTER, "c", 1), (ENDPOINT, "c", 1)]);
    // Delta: subscriptions accumulate over requests.
    let mut d = DeltaConnection::with_limits(s.clone(), small_limits());
    let sub = |names: &[&str]| DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    };
    // Only names the config lacks count: `c` is free, `d` to `h` are five.
    let first = d.on_request(sub(&["c", "d"]));
    assert!(first.refused.is_none(), "{:?}", first.refused);
    assert!(d.on_request(sub(&["e", "f"])).refused.is_none());
    assert!(d.on_request(sub(&["g"])).refused.is_none());
    let step = d.on_request(sub(&["h"]));
    assert!(step.responses.is_empty());
    assert!(
        matches!(
            step.refused,
            Some(LimitExceeded::ResourceNames {
                names: 5,
                max_names: 4,
                ..
            })
        ),
        "{:?}",
        step.refused
    );
    // SotW: bytes count too (one 41-byte name).
    let mut c = SotwConnection::with_limits(s, small_limits());
    let long = "n".repeat(41);
    let step = c.on_request(sotw_req(ENDPOINT, &[&long], ""));
    assert!(
        matches!(
            step.refused,
            Some(LimitExceeded::ResourceNames { bytes: 41, .. })
        ),
        "{:?}",
        step.refused
    );
}

/// An Envoy subscribing to every resource of a config larger than the name limits is served:
/// the names its config holds cost the stream nothing (the cluster-local gateway at 100,000
/// services names 200,001 resources, the default limit is 200,000).
#[test]
fn names_the_config_holds_do_not_count_against_the_limit() {
    let names = ["c1", "c2", "c3", "c4", "c5", "c6"];
    let all: Vec<(&'static str, &str, u32)> = names
        .iter()
        .flat_map(|n| [(CLUSTER, *n, 1), (ENDPOINT, *n, 1)])
        .collect();
    let s = snap(1, &all);
    let mut d = DeltaConnection::with_limits(s.clone(), small_limits());
    let cds = d.on_request(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    });
    assert!(cds.refused.is_none());
    let eds = d.on_request(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    });
    assert!(eds.refused.is_none(), "{:?}", eds.refused);
    let sent: usize = eds.responses.iter().map(|r| r.resources.len()).sum();
    assert_eq!(sent, 6, "every assignment is sent");
    let mut c = SotwConnection::with_limits(s, small_limits());
    let _ = c.on_request(sotw_req(CLUSTER, &[], ""));
    let step = c.on_request(sotw_req(ENDPOINT, &names, ""));
    assert!(step.refused.is_none(), "{:?}", step.refused);
    // Names the config lacks still count, on top of the free ones.
    let mut more: Vec<&str> = names.to_vec();
    more.extend(["x1", "x2", "x3", "x4", "x5"]);
    let step = c.on_request(sotw_req(ENDPOINT, &more, ""));
    assert!(
        matches!(
            step.refused,
            Some(crate::xds::limits::LimitExceeded::ResourceNames { names: 5, .. })
        ),
        "{:?}",
        step.refused
    );
}

#[test]
fn nack_messages_are_kept_truncated() {
    let mut c = SotwConnection::with_limits(snap(1, &[(CLUSTER, "c", 1)]), small_limits());
    let step = c.on_request(sotw_req(CLUSTER, &[], ""));
    let nonce = step.responses[0].nonce.clone();
    let step = c.on_request(DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "x".repeat(10_000),
            details: vec![],
        }),
        ..sotw_req(CLUSTER, &[], &nonce)
    });
    let Some(Event::Nack { nack, .. }) = step.events.first() else {
        panic!("no NACK event: {:?}", step.events);
    };
    assert_eq!(nack.message, format!("{}…", "x".repeat(8)));
    let st = c.status();
    assert_eq!(
        st.types[CLUSTER]
            .last_nack
            .as_ref()
            .map(|n| n.message.len()),
        Some(8 + '…'.len_utf8())
    );
}

#[test]
fn a_status_kept_and_rewritten_after_every_input_equals_a_fresh_one() {
    // The stream's task rewrites the registry's status in place (`status_into`); after every
    // input it must be exactly what a fresh `status()` says: NACKs come and go, names are
    // subscribed and unsubscribed (the shown list grows and shrinks), types are added.
    let mut e = Delta {
        c: DeltaConnection::new(gen1()),
    };
    let mut kept = e.c.status();
    let check = |e: &Delta, kept: &mut ConnStatus| {
        e.c.status_into(kept);
        assert_eq!(*kept, e.c.status());
    };
    let cds = one(e.sub(CLUSTER, &[]));
    check(&e, &mut kept);
    let eds = one(e.sub(ENDPOINT, &["a", "b"]));
    check(&e, &mut kept);
    assert!(e.nack(&eds, "bad assignment").is_empty());
    check(&e, &mut kept);
    assert!(kept.types[ENDPOINT].last_nack.is_some());
    assert!(e.ack(&cds).iter().all(|r| r.type_url != CLUSTER));
    check(&e, &mut kept);
    e.send(dreq(ENDPOINT, &[], &["b"], ""));
    check(&e, &mut kept);
    assert_eq!(kept.types[ENDPOINT].subscribed, ["a"]);
    let many: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    e.sub(ENDPOINT, &refs);
    check(&e, &mut kept);
    assert_eq!(
        kept.types[ENDPOINT].subscribed.len(),
        super::SUBSCRIBED_SHOWN
    );
    e.send(dreq(ENDPOINT, &[], &refs, ""));
    check(&e, &mut kept);
    assert_eq!(kept.types[ENDPOINT].subscribed, ["a"]);
    let _ =
        e.c.on_snapshot(snap(2, &[(CLUSTER, "a", 2), (ENDPOINT, "a", 2)]));
    check(&e, &mut kept);
    e.sub(ROUTE, &["r"]);
    check(&e, &mut kept);
    assert!(kept.types.contains_key(ROUTE));
}

mod subscriptions;
