//! Fan-out: concurrent Delta ADS streams (half per gateway, in-process tonic clients over
//! loopback) against the real ADS service and hub. Each stream subscribes to every cluster
//! (wildcard) and to the load assignments of its gateway; then one endpoint changes and we
//! measure the time until every stream has received the new assignment.
//!
//! `cargo bench --bench fanout -- [STREAMS] [N]` (defaults: 1000 streams, 1000 services).

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use knative_pilot::hub::Hub;
use knative_pilot::model::parse_object;
use knative_pilot::state::{Change, Entry};
use knative_pilot::tools::synth::{Form, Synth};
use knative_pilot::translate::Options;
use knative_pilot::xds::server::{AdsService, ConnectionRegistry};
use knative_pilot::xds::{CLUSTER, ENDPOINT};
use tokio::sync::{mpsc, watch};

fn node(i: usize, istio: &str) -> Node {
    let labels = Struct {
        fields: [(
            "istio".to_string(),
            Value {
                kind: Some(Kind::StringValue(istio.to_string())),
            },
        )]
        .into(),
    };
    Node {
        id: format!(
            "router~10.0.{}.{}~gw-{i}.istio-system~istio-system.svc.cluster.local",
            i / 250,
            i % 250
        ),
        metadata: Some(Struct {
            fields: [(
                "LABELS".to_string(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let streams = args.first().copied().unwrap_or(1000);
    let n = args.get(1).copied().unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(streams, n));
}

async fn run(streams: usize, n: usize) {
    let synth = Synth::new(n, Form::Route);
    let hub = Hub::new(Options::default());
    hub.update(synth.inputs(), Vec::new());
    let registry = Arc::new(ConnectionRegistry::new());
    let svc = AdsService::new(hub.clone(), registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc.server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The changed endpoint: revision 1 of service n/2 (on both gateways unless cluster-local).
    let mid = n / 2;
    let target = format!(
        "outbound|80||svc-{mid}-00001.{}.svc.cluster.local",
        synth.namespace(mid)
    );
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(streams);
    let (done_tx, mut done_rx) = mpsc::channel::<Instant>(streams);
    let (go_tx, go_rx) = watch::channel(false);
    let t_setup = Instant::now();
    for i in 0..streams {
        let istio = if i % 2 == 0 {
            "ingressgateway"
        } else {
            "cluster-local-gateway"
        };
        let (ready_tx, done_tx, mut go_rx) = (ready_tx.clone(), done_tx.clone(), go_rx.clone());
        let target = target.clone();
        let node = node(i, istio);
        // Connect one at a time: a burst of 1,000 connects can overflow the listen backlog.
        let mut client =
            match AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await {
                Ok(c) => c.max_decoding_message_size(usize::MAX),
                Err(e) => panic!("connect: {e}"),
            };
        tokio::spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
            let _ = tx.send(DeltaDiscoveryRequest {
                node: Some(node),
                type_url: CLUSTER.to_string(),
                ..Default::default()
            });
            let mut resp = client
                .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    rx,
                ))
                .await
                .expect("stream")
                .into_inner();
            let mut ready_sent = false;
            let mut eds_subscribed = false;
            while let Ok(Some(r)) = resp.message().await {
                let _ = tx.send(DeltaDiscoveryRequest {
                    type_url: r.type_url.clone(),
                    response_nonce: r.nonce.clone(),
                    ..Default::default()
                });
                if r.type_url == CLUSTER && !eds_subscribed {
                    eds_subscribed = true;
                    let _ = tx.send(DeltaDiscoveryRequest {
                        type_url: ENDPOINT.to_string(),
                        resource_names_subscribe: r
                            .resources
                            .iter()
                            .map(|x| x.name.clone())
                            .collect(),
                        ..Default::default()
                    });
                }
                if r.type_url == ENDPOINT {
                    if !ready_sent {
                        ready_sent = true;
                        let _ = ready_tx.send(()).await;
                    } else if *go_rx.borrow_and_update()
                        && r.resources.iter().any(|x| x.name == target)
                    {
                        let _ = done_tx.send(Instant::now()).await;
                    }
                }
            }
        });
    }
    for _ in 0..streams {
        ready_rx.recv().await.expect("stream ready");
    }
    let setup = t_setup.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = synth.endpoints(mid, 0, 1);
    let object = parse_object(v).ok().flatten().expect("endpoints");
    let change = vec![Change::Upsert(Arc::new(Entry {
        object,
        origin: None,
    }))];
    let _ = go_tx.send(true);
    let t0 = Instant::now();
    hub.apply(change, Vec::new());
    let mut times = Vec::new();
    for _ in 0..streams {
        match tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await {
            Ok(Some(t)) => times.push(t.duration_since(t0)),
            _ => break,
        }
    }
    times.sort();
    let pct =
        |p: f64| times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)));
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| Delta streams connected and synced ({n} services) | {streams} in {:.1} s |",
        setup.as_secs_f64()
    );
    println!(
        "| one endpoint change: streams that received it | {} of {streams} |",
        times.len()
    );
    if let (Some(p50), Some(max)) = (pct(0.5), times.last()) {
        println!(
            "| one endpoint change: time until every stream has it (median / max) | {:.1} ms / {:.1} ms |",
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
}
