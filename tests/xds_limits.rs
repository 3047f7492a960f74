//! Bounded cost per client: each per-stream and per-server limit refuses the client that goes
//! past it with a clear status, and every other stream keeps being served. In-process ADS over
//! real gRPC (tonic server on a free 127.0.0.1 port, envoy-types' client) against the real hub.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use knative_pilot::hub::{EngineLimits, Hub};
use knative_pilot::tools::synth::{Form, Synth};
use knative_pilot::translate::Options;
use knative_pilot::xds::limits::Limits;
use knative_pilot::xds::server::{AdsService, ConnectionRegistry};
use knative_pilot::xds::{CLUSTER, ENDPOINT};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Status};

struct Harness {
    addr: SocketAddr,
    hub: Arc<Hub>,
    registry: Arc<ConnectionRegistry>,
}

/// The real hub with 3 synthetic services, served with these limits.
async fn start(limits: Limits, engines: EngineLimits) -> Harness {
    start_with(3, limits, engines).await
}

/// The real hub with `services` synthetic services, served with these limits.
async fn start_with(services: usize, limits: Limits, engines: EngineLimits) -> Harness {
    let hub = Hub::with_engine_limits(Options::default(), engines);
    hub.update(Synth::new(services, Form::Route).inputs(), Vec::new());
    let registry = Arc::new(ConnectionRegistry::new());
    let svc = AdsService::new(hub.clone(), registry.clone()).with_limits(limits);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", common::free_port()))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc.server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Harness {
        addr,
        hub,
        registry,
    }
}

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    common::node::istio_node(id, labels, &[])
}

/// The external gateway's Envoy.
fn gateway_node(i: usize) -> Node {
    node(
        &format!("router~10.0.0.{i}~gw-{i}.istio-system~istio-system.svc.cluster.local"),
        &[("istio", "ingressgateway")],
    )
}

async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(usize::MAX)
}

/// A SotW stream: its request sender and its responses (or the status it was refused with).
async fn sotw(
    addr: SocketAddr,
    first: DiscoveryRequest,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Result<tonic::Streaming<DiscoveryResponse>, Status>,
) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("queue");
    let resp = client(addr)
        .await
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map(tonic::Response::into_inner);
    (tx, resp)
}

async fn delta(
    addr: SocketAddr,
    first: DeltaDiscoveryRequest,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    Result<tonic::Streaming<DeltaDiscoveryResponse>, Status>,
) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("queue");
    let resp = client(addr)
        .await
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map(tonic::Response::into_inner);
    (tx, resp)
}

fn cds(node: Option<Node>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: CLUSTER.into(),
        ..Default::default()
    }
}

async fn next<T>(s: &mut tonic::Streaming<T>) -> Result<Option<T>, Status> {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an answer in time")
}

/// The status a stream ends with: refused at the start, or ended after the responses so far
/// (returned too).
async fn ended<T>(resp: Result<tonic::Streaming<T>, Status>) -> (Vec<T>, Status) {
    let mut s = match resp {
        Err(status) => return (Vec::new(), status),
        Ok(s) => s,
    };
    let mut got = Vec::new();
    loop {
        match next(&mut s).await {
            Ok(Some(r)) => got.push(r),
            Ok(None) => panic!("stream closed with status OK"),
            Err(status) => return (got, status),
        }
    }
}

/// A stream of the external gateway that receives its clusters: the server still serves.
async fn still_served(addr: SocketAddr, i: usize) {
    let (_tx, resp) = sotw(addr, cds(Some(gateway_node(i)))).await;
    let mut resp = resp.expect("a gateway stream is accepted");
    let first = next(&mut resp).await.expect("ok").expect("a response");
    assert_eq!(first.type_url, CLUSTER);
    assert!(!first.resources.is_empty(), "the gateway gets its clusters");
}

/// The stream was refused for a limit: `RESOURCE_EXHAUSTED`, its message naming every one of
/// `names` (the flag, the offending value).
fn assert_exhausted(status: &Status, names: &[&str]) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    for name in names {
        assert!(status.message().contains(name), "{name}: {status:?}");
    }
}

fn limits() -> Limits {
    Limits::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_ends_its_stream_unread_and_others_are_served() {
    let h = start(
        Limits {
            max_request_bytes: 64 * 1024,
            ..limits()
        },
        EngineLimits::default(),
    )
    .await;
    let big_names: Vec<String> = (0..2_000).map(|i| format!("{i:0>64}")).collect();

    // As the first request.
    let (_tx, resp) = sotw(
        h.addr,
        DiscoveryRequest {
            resource_names: big_names.clone(),
            ..cds(Some(gateway_node(1)))
        },
    )
    .await;
    let (got, status) = ended(resp).await;
    assert!(got.is_empty(), "nothing answered");
    assert_exhausted(&status, &["--xds-max-request-bytes"]);

    // Later on a running stream: it got its clusters, then ends; the big request is not echoed.
    let (tx, resp) = sotw(h.addr, cds(Some(gateway_node(2)))).await;
    let mut resp = resp.expect("accepted");
    let first = next(&mut resp).await.expect("ok").expect("CDS");
    tx.send(DiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names: big_names,
        ..Default::default()
    })
    .await
    .expect("queue");
    let (got, status) = ended(Ok(resp)).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        got.iter().all(|r| r.encoded_len() < 64 * 1024),
        "no response echoes the request"
    );
    assert!(first.encoded_len() < 64 * 1024);

    still_served(h.addr, 3).await;
}

use prost::Message;

/// A gateway whose config is large may send a request as large as naming every resource of its
/// largest type takes (a SotW EDS request, a Delta reconnect's `initial_resource_versions`:
/// ~10 MB at 100,000 services), above `--xds-max-request-bytes`; a request past that bound is
/// still refused, and the first request (before the stream's config is known) has only the
/// configured bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_bound_grows_with_the_config_of_the_stream() {
    use knative_pilot::xds::limits::REQUEST_BYTES_PER_RESOURCE;
    let configured = 64 * 1024;
    let h = start_with(
        500,
        Limits {
            max_request_bytes: configured,
            ..limits()
        },
        EngineLimits::default(),
    )
    .await;
    let (tx, resp) = sotw(h.addr, cds(Some(gateway_node(1)))).await;
    let mut resp = resp.expect("accepted");
    let clusters = next(&mut resp).await.expect("ok").expect("CDS");
    let bound = clusters.resources.len() * REQUEST_BYTES_PER_RESOURCE;
    assert!(
        bound > 3 * configured / 2,
        "{} clusters",
        clusters.resources.len()
    );
    // Every cluster's assignment, by name, padded to a request above the configured bound.
    let mut names: Vec<String> = clusters
        .resources
        .iter()
        .map(|r| {
            envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(&r.value[..])
                .expect("cluster")
                .name
        })
        .collect();
    let mut i = 0;
    while names.iter().map(|n| n.len() + 3).sum::<usize>() < configured + configured / 4 {
        names.push(format!("absent-{i:0>56}"));
        i += 1;
    }
    let request = DiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names: names,
        ..Default::default()
    };
    let size = request.encoded_len();
    assert!(size > configured && size < bound, "{size} of {bound}");
    tx.send(request).await.expect("queue");
    let mut eds = None;
    while eds.is_none() {
        let r = next(&mut resp)
            .await
            .expect("not refused")
            .expect("a response");
        if r.type_url == ENDPOINT {
            eds = Some(r);
        }
    }
    let eds = eds.expect("EDS");
    assert!(
        !eds.resources.is_empty(),
        "the assignments named are sent ({size} bytes asked for them)"
    );
    // Past the stream's bound: ended, nothing echoed.
    tx.send(DiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names: (0..bound / 60 + 1000)
            .map(|i| format!("{i:0>64}"))
            .collect(),
        ..Default::default()
    })
    .await
    .expect("queue");
    let (_, status) = ended(Ok(resp)).await;
    assert_exhausted(&status, &["--xds-max-request-bytes"]);
    still_served(h.addr, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_larger_than_the_limit_is_refused() {
    let h = start(
        Limits {
            max_node_bytes: 1024,
            ..limits()
        },
        EngineLimits::default(),
    )
    .await;
    let huge = node(&"x".repeat(10_000), &[("istio", "ingressgateway")]);
    let (_tx, resp) = sotw(h.addr, cds(Some(huge))).await;
    let (got, status) = ended(resp).await;
    assert!(got.is_empty());
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("--xds-max-node-bytes") && status.message().contains("1024"),
        "{status:?}"
    );
    assert!(
        status.message().len() < 1024,
        "the node id is not echoed: {status:?}"
    );
    assert!(h.registry.is_empty());
    still_served(h.addr, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_urls_beyond_the_limit_end_the_stream() {
    let h = start(
        Limits {
            max_type_urls: 8,
            ..limits()
        },
        EngineLimits::default(),
    )
    .await;
    let (tx, resp) = sotw(h.addr, cds(Some(gateway_node(1)))).await;
    let mut resp = resp.expect("accepted");
    assert_eq!(
        next(&mut resp).await.expect("ok").expect("CDS").type_url,
        CLUSTER
    );
    // 7 unknown types besides CDS: each answered empty; the 8th unknown one ends the stream.
    for i in 0..8 {
        tx.send(DiscoveryRequest {
            type_url: format!("type.googleapis.com/garbage.T{i}"),
            ..Default::default()
        })
        .await
        .expect("queue");
    }
    let (got, status) = ended(Ok(resp)).await;
    assert_eq!(got.len(), 7, "one empty answer per admitted unknown type");
    assert!(got.iter().all(|r| r.resources.is_empty()));
    assert_exhausted(&status, &["--xds-max-type-urls", "T7"]);

    // A type URL no Envoy would send (longer than 512 bytes) is refused, not echoed.
    let long = format!("type.googleapis.com/{}", "y".repeat(100_000));
    let (tx, resp) = sotw(h.addr, cds(Some(gateway_node(2)))).await;
    let mut resp = resp.expect("accepted");
    next(&mut resp).await.expect("ok").expect("CDS");
    tx.send(DiscoveryRequest {
        type_url: long,
        ..Default::default()
    })
    .await
    .expect("queue");
    let (got, status) = ended(Ok(resp)).await;
    assert!(got.is_empty(), "nothing echoed");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().len() < 200, "{status:?}");

    still_served(h.addr, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_subscriptions_beyond_the_name_limit_end_the_stream() {
    let h = start(
        Limits {
            max_resource_names: 100,
            ..limits()
        },
        EngineLimits::default(),
    )
    .await;
    let (tx, resp) = delta(
        h.addr,
        DeltaDiscoveryRequest {
            node: Some(gateway_node(1)),
            type_url: CLUSTER.into(),
            ..Default::default()
        },
    )
    .await;
    let mut resp = resp.expect("accepted");
    next(&mut resp).await.expect("ok").expect("CDS");
    // Subscriptions add up over requests: 60 + 60 names.
    for batch in 0..2 {
        tx.send(DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names_subscribe: (0..60).map(|i| format!("n-{batch}-{i}")).collect(),
            ..Default::default()
        })
        .await
        .expect("queue");
    }
    let (_, status) = ended(Ok(resp)).await;
    assert_exhausted(&status, &["120 resource names"]);
    still_served(h.addr, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_label_set_beyond_the_limit_is_refused_until_a_slot_is_unused() {
    let h = start(
        limits(),
        EngineLimits {
            max_label_sets: 1,
            grace: Duration::from_secs(300),
        },
    )
    .await;
    let gateways = h.hub.label_sets();
    let invented = |app: &str| node(&format!("gw-{app}"), &[("app", app)]);
    let (a_tx, a) = sotw(h.addr, cds(Some(invented("a")))).await;
    let mut a = a.expect("the first invented label set is admitted");
    next(&mut a).await.expect("ok").expect("CDS");
    assert_eq!(h.hub.label_sets(), gateways + 1);

    let (_tx, b) = sotw(h.addr, cds(Some(invented("b")))).await;
    let (got, status) = ended(b).await;
    assert!(got.is_empty());
    assert_exhausted(&status, &["--xds-max-label-sets"]);
    assert_eq!(h.hub.label_sets(), gateways + 1, "no translation for b");

    // The gateways' Envoys and more Envoys of label set a are admitted.
    still_served(h.addr, 1).await;
    let (_a2_tx, a2) = sotw(h.addr, cds(Some(invented("a")))).await;
    next(&mut a2.expect("same label set")).await.expect("ok");
    drop(_a2_tx);

    // Once no Envoy of a is connected, b takes its slot (a's engine is dropped).
    drop((a_tx, a));
    common::eventually(
        Duration::from_secs(10),
        "b admitted once a is unused",
        || {
            let addr = h.addr;
            async move {
                let (_tx, b) = sotw(addr, cds(Some(invented("b")))).await;
                match b {
                    Ok(mut s) => next(&mut s).await.is_ok(),
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    assert_eq!(h.hub.label_sets(), gateways + 1);
}
