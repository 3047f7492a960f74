//! In-process ADS over real gRPC: tonic server on 127.0.0.1:0, envoy-types' generated client.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Any;
use knative_pilot::xds::limits::Limits;
use knative_pilot::xds::server::{AdsService, ConnectionInfo, ConnectionRegistry};
use knative_pilot::xds::{
    ConfigSource, ProxyIdentity, Resource, Snapshot, SubscribeError, CLUSTER, LISTENER,
};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

const NODE_ID: &str =
    "router~10.0.0.1~istio-ingressgateway-abc.istio-system~istio-system.svc.cluster.local";

struct FakeSource {
    ready: AtomicBool,
    /// Bumped when `ready` turns true ([`ConfigSource::readiness`]).
    readiness: watch::Sender<u64>,
    tx: watch::Sender<Arc<Snapshot>>,
    seen: Mutex<Vec<ProxyIdentity>>,
}

impl FakeSource {
    /// The config exists from now on.
    fn make_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.readiness.send_modify(|n| *n += 1);
    }
}

impl ConfigSource for FakeSource {
    fn subscribe(
        &self,
        proxy: &ProxyIdentity,
    ) -> Result<watch::Receiver<Arc<Snapshot>>, SubscribeError> {
        self.seen.lock().unwrap().push(proxy.clone());
        self.ready
            .load(Ordering::Acquire)
            .then(|| self.tx.subscribe())
            .ok_or(SubscribeError::NotReady)
    }

    fn readiness(&self) -> Option<watch::Receiver<u64>> {
        Some(self.readiness.subscribe())
    }
}

fn resource(type_url: &'static str, value: Vec<u8>, name: &str) -> Arc<Resource> {
    Arc::new(Resource {
        name: name.into(),
        version: hex::encode(&Sha256::digest(&value)[..8]),
        body: Any {
            type_url: type_url.into(),
            value,
        },
        pair: Default::default(),
    })
}

fn snapshot(generation: u64, listener_prefix: &str) -> Arc<Snapshot> {
    let cluster = Cluster {
        name: "c1".into(),
        ..Default::default()
    };
    let listener = Listener {
        name: "l1".into(),
        stat_prefix: listener_prefix.into(),
        ..Default::default()
    };
    let mut resources = BTreeMap::new();
    resources.insert(
        CLUSTER,
        BTreeMap::from([(
            "c1".to_string(),
            resource(CLUSTER, cluster.encode_to_vec(), "c1"),
        )]),
    );
    resources.insert(
        LISTENER,
        BTreeMap::from([(
            "l1".to_string(),
            resource(LISTENER, listener.encode_to_vec(), "l1"),
        )]),
    );
    Arc::new(Snapshot {
        generation,
        resources: resources
            .into_iter()
            .map(|(t, m)| (t, m.into_iter().collect()))
            .collect(),
        wildcard_clusters: None,
    })
}

fn node() -> Node {
    common::node::istio_node(NODE_ID, &[("istio", "ingressgateway")], &[])
}

struct Harness {
    addr: SocketAddr,
    source: Arc<FakeSource>,
    registry: Arc<ConnectionRegistry>,
    shutdown: watch::Sender<bool>,
}

async fn start(ready: bool) -> Harness {
    start_with(ready, Limits::default()).await
}

async fn start_with(ready: bool, limits: Limits) -> Harness {
    let (tx, _) = watch::channel(snapshot(1, "v1"));
    let source = Arc::new(FakeSource {
        ready: AtomicBool::new(ready),
        readiness: watch::channel(0).0,
        tx,
        seen: Mutex::new(Vec::new()),
    });
    let registry = Arc::new(ConnectionRegistry::new());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let svc = AdsService::new(source.clone(), registry.clone())
        .with_shutdown(shutdown_rx)
        .with_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc.server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Harness {
        addr,
        source,
        registry,
        shutdown,
    }
}

async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Poll the registry until the predicate holds (or fail after 5 s).
async fn wait_for(
    registry: &ConnectionRegistry,
    what: &str,
    f: impl Fn(&[ConnectionInfo]) -> bool,
) {
    for _ in 0..500 {
        if f(&registry.list()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}: {:#?}", registry.list());
}

async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("response in time")
        .expect("stream ok")
        .expect("stream not closed")
}

#[tokio::test]
async fn sotw_exchange() {
    let h = start(true).await;
    let mut c = client(h.addr).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(DiscoveryRequest {
        node: Some(node()),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut resp = c
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let cds = next(&mut resp).await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(cds.resources.len(), 1);
    assert_eq!(
        Cluster::decode(cds.resources[0].value.as_slice())
            .unwrap()
            .name,
        "c1"
    );
    // An unserved Istio type is answered empty.
    let proxy_config = "type.googleapis.com/istio.mesh.v1alpha1.ProxyConfig";
    tx.send(DiscoveryRequest {
        type_url: proxy_config.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let pc = next(&mut resp).await;
    assert_eq!(pc.type_url, proxy_config);
    assert!(pc.resources.is_empty());
    // LDS request, then the CDS ACK releases the LDS response.
    tx.send(DiscoveryRequest {
        type_url: LISTENER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(DiscoveryRequest {
        type_url: CLUSTER.into(),
        version_info: cds.version_info.clone(),
        response_nonce: cds.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let lds = next(&mut resp).await;
    assert_eq!(lds.type_url, LISTENER);
    tx.send(DiscoveryRequest {
        type_url: LISTENER.into(),
        version_info: lds.version_info.clone(),
        response_nonce: lds.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_for(&h.registry, "generation 1 acked", |l| {
        l.len() == 1 && l[0].status.acked_generation == Some(1)
    })
    .await;
    assert!(h.registry.all_acked(1));
    assert!(!h.registry.all_acked(2));
    let info = &h.registry.list()[0];
    assert_eq!(info.node_id, NODE_ID);
    assert_eq!(info.namespace.as_deref(), Some("istio-system"));
    assert_eq!(info.labels["istio"], "ingressgateway");
    assert_eq!(info.mode, "sotw");
    assert_eq!(h.source.seen.lock().unwrap()[0].id, NODE_ID);

    // A new snapshot with a changed listener: only LDS is pushed.
    h.source.tx.send_replace(snapshot(2, "v2"));
    let lds2 = next(&mut resp).await;
    assert_eq!(lds2.type_url, LISTENER);
    assert_ne!(lds2.version_info, lds.version_info);
    tx.send(DiscoveryRequest {
        type_url: LISTENER.into(),
        version_info: lds2.version_info.clone(),
        response_nonce: lds2.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_for(&h.registry, "generation 2 acked", |l| {
        l.len() == 1 && l[0].status.acked_generation == Some(2)
    })
    .await;
    assert_eq!(
        serde_json::to_value(h.registry.list()).unwrap()[0]["status"]["types"][CLUSTER]
            ["responses_sent"],
        1
    );

    // Client goes away: the connection leaves the registry.
    drop(tx);
    drop(resp);
    wait_for(&h.registry, "registry empty", |l| l.is_empty()).await;
}

#[tokio::test]
async fn delta_exchange_and_shutdown() {
    let h = start(true).await;
    let mut c = client(h.addr).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut resp = c
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let cds = next(&mut resp).await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(cds.resources.len(), 1);
    assert_eq!(cds.resources[0].name, "c1");
    // The listener subscription (wildcard) from an Envoy that already holds l1 at v1: held back
    // until CDS is ACKed, then answered with an empty delta (nothing to resend).
    let v1 = snapshot(1, "v1").resources[LISTENER]["l1"].version.clone();
    tx.send(DeltaDiscoveryRequest {
        type_url: LISTENER.into(),
        initial_resource_versions: [("l1".to_string(), v1)].into_iter().collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    tx.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        response_nonce: cds.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let lds = next(&mut resp).await;
    assert_eq!(lds.type_url, LISTENER);
    assert!(lds.resources.is_empty());
    assert!(lds.removed_resources.is_empty());
    tx.send(DeltaDiscoveryRequest {
        type_url: LISTENER.into(),
        response_nonce: lds.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_for(&h.registry, "generation 1 acked", |l| {
        l.len() == 1 && l[0].status.acked_generation == Some(1) && l[0].mode == "delta"
    })
    .await;
    // Listener changes: exactly that listener is pushed.
    h.source.tx.send_replace(snapshot(2, "v2"));
    let lds2 = next(&mut resp).await;
    assert_eq!(lds2.type_url, LISTENER);
    assert_eq!(lds2.resources.len(), 1);
    assert_eq!(lds2.resources[0].name, "l1");
    let l1 = Listener::decode(
        lds2.resources[0]
            .resource
            .as_ref()
            .unwrap()
            .value
            .as_slice(),
    );
    assert_eq!(l1.unwrap().stat_prefix, "v2");
    tx.send(DeltaDiscoveryRequest {
        type_url: LISTENER.into(),
        response_nonce: lds2.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_for(&h.registry, "generation 2 acked", |l| {
        l.len() == 1 && l[0].status.acked_generation == Some(2)
    })
    .await;
    // Shutdown: the stream ends cleanly and the connection leaves the registry.
    h.shutdown.send_replace(true);
    let end = tokio::time::timeout(Duration::from_secs(5), resp.message())
        .await
        .expect("stream ends on shutdown");
    assert!(matches!(end, Ok(None)), "clean end, got {end:?}");
    wait_for(&h.registry, "registry empty", |l| l.is_empty()).await;
}

/// A stream that arrives before its config exists is held open and gets the full config as
/// soon as it exists: no error, so Envoy does not back off (0.5 s, doubling) before asking again.
#[tokio::test]
async fn a_stream_before_ready_waits_and_gets_the_config_once_it_exists() {
    let h = start(false).await;
    let mut c = client(h.addr).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(DiscoveryRequest {
        node: Some(node()),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (dtx, drx) = mpsc::channel(16);
    dtx.send(DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut dc = client(h.addr).await;
    let sotw =
        tokio::spawn(async move { c.stream_aggregated_resources(ReceiverStream::new(rx)).await });
    let delta = tokio::spawn(async move {
        dc.delta_aggregated_resources(ReceiverStream::new(drx))
            .await
    });
    // Both streams asked (the source was consulted twice) and neither is answered yet.
    for _ in 0..500 {
        if h.source.seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.source.seen.lock().unwrap().len(), 2, "both streams asked");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !sotw.is_finished() && !delta.is_finished(),
        "held open, not refused"
    );
    assert!(
        h.registry.is_empty(),
        "nothing served before the config exists"
    );

    h.source.make_ready();
    let mut resp = sotw
        .await
        .unwrap()
        .expect("the SotW stream starts")
        .into_inner();
    let r = next(&mut resp).await;
    assert_eq!(r.type_url, CLUSTER);
    let names: Vec<String> = r
        .resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .collect();
    assert_eq!(
        names,
        ["c1"],
        "the full config, from the first request kept while waiting"
    );
    let mut dresp = delta
        .await
        .unwrap()
        .expect("the Delta stream starts")
        .into_inner();
    let d = next(&mut dresp).await;
    assert_eq!(d.type_url, CLUSTER);
    assert_eq!(d.resources.len(), 1);
    assert_eq!(d.resources[0].name, "c1");
    wait_for(&h.registry, "both streams registered", |l| l.len() == 2).await;
    drop((tx, dtx));
}

/// A stream for a config that never comes is answered `Unavailable` once the wait is over (so
/// it holds nothing forever), and at once with no wait.
#[tokio::test]
async fn unavailable_when_not_ready_within_the_wait() {
    let h = start_with(
        false,
        Limits {
            not_ready_wait: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let mut c = client(h.addr).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(DiscoveryRequest {
        node: Some(node()),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let asked = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        c.stream_aggregated_resources(ReceiverStream::new(rx)),
    )
    .await
    .expect("answered once the wait is over")
    .unwrap_err();
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "it waited first"
    );
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("not ready"), "{}", err.message());
    assert!(
        err.message().contains("--xds-not-ready-wait"),
        "{}",
        err.message()
    );

    let h = start_with(
        false,
        Limits {
            not_ready_wait: Duration::ZERO,
            ..Limits::default()
        },
    )
    .await;
    let mut c = client(h.addr).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = c
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(h.registry.is_empty());
}
