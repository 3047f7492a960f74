//! KIngress status with `serve --kube`: written through the status subresource of a fake API
//! server that speaks the real wire format (no Kubernetes API server exists on these machines),
//! only for KIngresses of our class, Ready only once the gateway's Envoys (real Envoy) have
//! ACKed the config carrying them, and only by the replica holding the Lease.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::fake_apiserver::FakeApiServer;
use common::*;
use serde_json::Value;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(30);
const KINGRESS: &str = "networking.internal.knative.dev/v1alpha1";

fn one_rule(name: &str, hosts: &[&str], local: bool) -> String {
    let paths = vec![KPath::any(vec![KSplit::new("hello-00001", 100)])];
    let rule = if local {
        KRule::cluster_local(hosts, paths)
    } else {
        KRule::external(hosts, paths)
    };
    kingress(NS, name, None, &[rule])
}

fn with_class(yaml: &str, class: Option<&str>) -> String {
    let ours =
        "    networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev\n";
    match class {
        Some(c) => yaml.replace(
            ours,
            &format!("    networking.knative.dev/ingress.class: {c}\n"),
        ),
        None => yaml.replace(&format!("  annotations:\n{ours}"), ""),
    }
}

async fn start_server(api: &FakeApiServer, identity: &str) -> Server {
    let kubeconfig = api.kubeconfig(identity);
    Server::start_with_env(
        &[
            "--kube",
            "--bind-address",
            "127.0.0.1",
            "--identity",
            identity,
            "--lease-duration",
            "2s",
            "--lease-renew",
            "200ms",
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .await
}

fn status(api: &FakeApiServer, name: &str) -> Value {
    api.get(KINGRESS, "Ingress", NS, name)
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition(status: &Value, kind: &str) -> (String, String) {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

/// Waits until `name`'s status satisfies `ok`; returns it.
async fn wait_status(
    api: &FakeApiServer,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = status(api, name);
        if ok(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: status of {name} is {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready(s: &Value, generation: i64) -> bool {
    s["observedGeneration"] == generation && condition(s, "Ready").0 == "True"
}

fn status_writes(api: &FakeApiServer, token: &str) -> Vec<String> {
    api.writes()
        .into_iter()
        .filter(|w| w.path.ends_with("/status") && (token.is_empty() || w.token == token))
        .map(|w| format!("{} {} {}", w.method, w.path, w.code))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_for_our_class_ready_once_acked_written_by_the_lease_holder() {
    let v1 = Backend::start("v1").await;
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services(ext_port, local_port));
    let both = revision_service(NS, "hello-00001", &[], false);
    api.apply_yaml(both.split_once("---\n").expect("Service --- Endpoints").0);
    api.apply(common::fake_apiserver::endpoint_slice(
        NS,
        "hello-00001-x",
        "hello-00001",
        v1.port(),
    ));
    api.apply_yaml(&one_rule("ours", &["ours.default.example.com"], false));
    api.apply_yaml(&one_rule(
        "local",
        &["local.default.svc.cluster.local"],
        true,
    ));
    api.apply_yaml(&with_class(
        &one_rule("theirs", &["theirs.default.example.com"], false),
        Some("istio.ingress.networking.knative.dev"),
    ));
    api.apply_yaml(&with_class(
        &one_rule("none", &["none.default.example.com"], false),
        None,
    ));

    let mut a = start_server(&api, "a").await;
    // No Envoy yet: not Ready, and the reason says why.
    let s = wait_status(&api, "ours", "not ready without Envoys", |s| {
        condition(s, "Ready").0 == "Unknown"
    })
    .await;
    assert_eq!(
        condition(&s, "Ready").1,
        "no Envoy of gateway knative-serving/knative-ingress-gateway is connected"
    );
    assert_eq!(condition(&s, "NetworkConfigured").0, "True");
    assert_eq!(s["observedGeneration"], 1);

    let mut envoy_a = start_gateway(
        &a,
        "istio-ingressgateway-a",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    let s = wait_status(&api, "ours", "ready once the Envoy ACKed", |s| ready(s, 1)).await;
    assert_eq!(condition(&s, "LoadBalancerReady").0, "True");
    assert_eq!(condition(&s, "NetworkConfigured").0, "True");
    assert_eq!(
        s["publicLoadBalancer"]["ingress"][0]["domainInternal"],
        "istio-ingressgateway.istio-system.svc.cluster.local"
    );
    assert_eq!(
        s["privateLoadBalancer"]["ingress"][0]["domainInternal"],
        "knative-local-gateway.istio-system.svc.cluster.local"
    );
    // Ready means served: the very first request after Ready reaches the backend.
    let r = http_get(ext_port, "ours.default.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("v1")));
    // A ClusterLocal KIngress needs the local gateway, which has no Envoy.
    let s = wait_status(&api, "local", "local waits for its gateway", |s| {
        condition(s, "Ready").0 == "Unknown"
    })
    .await;
    assert_eq!(
        condition(&s, "Ready").1,
        "no Envoy of gateway knative-serving/cluster-local-gateway is connected"
    );

    // A spec change: Ready again only for the new generation, and then the new host answers at
    // once. The first status write hits a conflict and is retried.
    api.force_status_conflicts(1);
    api.apply_yaml(&one_rule(
        "ours",
        &["ours.default.example.com", "new.default.example.com"],
        false,
    ));
    wait_status(&api, "ours", "ready for generation 2", |s| ready(s, 2)).await;
    let r = http_get(ext_port, "new.default.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("v1")));
    let writes = status_writes(&api, "a");
    assert!(
        writes.iter().any(|w| w.ends_with(" 409")),
        "a conflict was answered: {writes:#?}"
    );

    // Other classes and KIngresses without a class are never touched.
    for name in ["theirs", "none"] {
        assert_eq!(status(&api, name), Value::Null, "{name}");
        assert!(
            !status_writes(&api, "")
                .iter()
                .any(|w| w.contains(&format!("/{name}/"))),
            "{name} was written"
        );
    }

    // A second replica serves xDS too but does not write status while `a` holds the Lease.
    let b = start_server(&api, "b").await;
    let envoy_b = start_gateway(&b, "istio-ingressgateway-b", EXTERNAL_LABELS, ApiType::Grpc).await;
    envoy_b.wait_ready(WAIT).await;
    wait_synced(&b, 0, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api.get(
            "coordination.k8s.io/v1",
            "Lease",
            "knative-pilot",
            "knative-pilot-status"
        )
        .map(|l| l["spec"]["holderIdentity"].clone()),
        Some(Value::from("a"))
    );
    assert!(
        status_writes(&api, "b").is_empty(),
        "{:#?}",
        status_writes(&api, "b")
    );

    // The holder dies: after the lease duration `b` takes over and writes status from its own
    // Envoy's ACKs.
    a.kill();
    envoy_a.stop();
    api.apply_yaml(&one_rule(
        "ours",
        &["ours.default.example.com", "newer.default.example.com"],
        false,
    ));
    wait_status(&api, "ours", "b writes generation 3", |s| ready(s, 3)).await;
    assert!(!status_writes(&api, "b").is_empty());
    // Both gateway Envoys listened on the Service's port (SO_REUSEPORT); only b's is left.
    let r = http_get(ext_port, "newer.default.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("v1")));
    assert_eq!(
        api.get(
            "coordination.k8s.io/v1",
            "Lease",
            "knative-pilot",
            "knative-pilot-status"
        )
        .map(|l| l["spec"]["holderIdentity"].clone()),
        Some(Value::from("b"))
    );
}

/// A KIngress without the class annotation is ours when config-network's ingress class says so
/// (`ingress-class`, or the legacy `ingress.class`): it is served, and it is marked Ready too
/// (the status writer and the translator ask the same question).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kingress_selected_through_config_network_becomes_ready() {
    let v1 = Backend::start("v1").await;
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services(ext_port, local_port));
    let both = revision_service(NS, "hello-00001", &[], false);
    api.apply_yaml(both.split_once("---\n").expect("Service --- Endpoints").0);
    api.apply(common::fake_apiserver::endpoint_slice(
        NS,
        "hello-00001-x",
        "hello-00001",
        v1.port(),
    ));
    api.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-network\n  namespace: \
         knative-serving\ndata:\n  ingress-class: knative-pilot.ingress.networking.knative.dev\n",
    );
    api.apply_yaml(&with_class(
        &one_rule("by-config", &["by-config.default.example.com"], false),
        None,
    ));
    api.apply_yaml(&with_class(
        &one_rule("theirs", &["theirs.default.example.com"], false),
        Some("istio.ingress.networking.knative.dev"),
    ));
    let a = start_server(&api, "a").await;
    let _envoy = start_gateway(
        &a,
        "istio-ingressgateway-a",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    wait_status(&api, "by-config", "ready through config-network", |s| {
        ready(s, 1)
    })
    .await;
    let r = http_get(ext_port, "by-config.default.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("v1")));
    // The annotation still wins over config-network.
    assert_eq!(status(&api, "theirs"), Value::Null);
}

fn lease_holder(api: &FakeApiServer) -> Option<Value> {
    api.get(
        "coordination.k8s.io/v1",
        "Lease",
        "knative-pilot",
        "knative-pilot-status",
    )
    .map(|l| l["spec"]["holderIdentity"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_holder_releases_the_lease_for_an_immediate_takeover() {
    let api = FakeApiServer::start().await;
    let start = |id: &'static str| {
        let kubeconfig = api.kubeconfig(id);
        async move {
            Server::start_with_env(
                &[
                    "--kube",
                    "--identity",
                    id,
                    "--lease-duration",
                    "60s",
                    "--lease-renew",
                    "200ms",
                ],
                &[("KUBECONFIG", kubeconfig.as_str())],
            )
            .await
        }
    };
    let mut a = start("a").await;
    eventually(WAIT, "a holds the Lease", || async {
        lease_holder(&api) == Some(Value::from("a"))
    })
    .await;
    let _b = start("b").await;
    // SIGTERM: a releases; b takes over long before the 60s lease duration would expire.
    assert!(a.stop().await.is_some_and(|s| s.success()), "{}", a.logs());
    let released = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "b takes the released Lease",
        || async { lease_holder(&api) == Some(Value::from("b")) },
    )
    .await;
    assert!(released.elapsed() < Duration::from_secs(30));
}

/// A gateway "Envoy" that is slow to apply config: a raw SotW ADS client (envoy-types' gRPC
/// client) with the external gateway's labels that subscribes to clusters and listeners and
/// ACKs only when told to.
struct SlowGateway {
    tx: tokio::sync::mpsc::Sender<envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest>,
    stream: tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
}

impl SlowGateway {
    async fn connect(xds_port: u16) -> SlowGateway {
        use envoy_types::pb::envoy::config::core::v3::Node;
        use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
        use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
        let labels = Struct {
            fields: [(
                "istio".to_string(),
                PbValue {
                    kind: Some(Kind::StringValue("ingressgateway".into())),
                },
            )]
            .into_iter()
            .collect(),
        };
        let node = Node {
            id: "router~10.0.0.9~slow-gateway.istio-system~istio-system.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: [(
                    "LABELS".to_string(),
                    PbValue {
                        kind: Some(Kind::StructValue(labels)),
                    },
                )]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        };
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds_port}"))
                .await
                .expect("connect ADS");
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tx.send(DiscoveryRequest {
            node: Some(node),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        })
        .await
        .expect("send");
        // An Envoy always asks for listeners too.
        tx.send(DiscoveryRequest {
            type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
            ..Default::default()
        })
        .await
        .expect("send");
        let stream = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("ADS stream")
            .into_inner();
        SlowGateway { tx, stream }
    }

    /// Reads the next response and ACKs it.
    async fn ack_next(&mut self) {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
        let r = tokio::time::timeout(WAIT, self.stream.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open");
        self.tx
            .send(DiscoveryRequest {
                type_url: r.type_url.clone(),
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            })
            .await
            .expect("send ACK");
    }
}

/// An EndpointSlice of the `knative-pilot/knative-pilot` Service for one replica.
fn replica_slice(identity: &str, debug_port: u16) -> Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("knative-pilot-{identity}"), "namespace": "knative-pilot",
                     "labels": {"kubernetes.io/service-name": "knative-pilot"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-monitoring", "port": debug_port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "namespace": "knative-pilot", "name": identity}}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_envoys_connected_to_the_other_replicas() {
    let v1 = Backend::start("v1").await;
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services(ext_port, local_port));
    let both = revision_service(NS, "hello-00001", &[], false);
    api.apply_yaml(both.split_once("---\n").expect("Service --- Endpoints").0);
    api.apply(common::fake_apiserver::endpoint_slice(
        NS,
        "hello-00001-x",
        "hello-00001",
        v1.port(),
    ));
    api.apply_yaml(&one_rule("ours", &["ours.default.example.com"], false));
    let a = start_server(&api, "a").await;
    eventually(WAIT, "a holds the Lease", || async {
        lease_holder(&api) == Some(Value::from("a"))
    })
    .await;
    let b = start_server(&api, "b").await;
    // The Service's endpoints name both replicas (as the EndpointSlice controller would).
    api.apply(replica_slice("a", a.debug_port()));
    api.apply(replica_slice("b", b.debug_port()));
    let envoy = start_gateway(
        &a,
        "istio-ingressgateway-a",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    envoy.wait_ready(WAIT).await;
    let mut slow = SlowGateway::connect(b.xds_port()).await;

    // a's Envoy has ACKed, b's gateway has not: not Ready, and the message counts both.
    let s = wait_status(&api, "ours", "waiting for b's gateway", |s| {
        condition(s, "Ready").1
            == "1 of 2 Envoys of gateway knative-serving/knative-ingress-gateway have ACKed the config carrying it"
    })
    .await;
    assert_eq!(condition(&s, "Ready").0, "Unknown");
    let progress = b.get_json("/debug/kingress_progress").await;
    assert_eq!(
        progress["default/ours"]["gateways"][0]["connected"], 1,
        "{progress}"
    );
    assert_eq!(
        progress["default/ours"]["gateways"][0]["acked"], 0,
        "{progress}"
    );

    // b's gateway catches up (ACKs everything from now on): Ready.
    let acking = tokio::spawn(async move {
        loop {
            slow.ack_next().await;
        }
    });
    wait_status(
        &api,
        "ours",
        "ready once every replica's Envoys ACKed",
        |s| ready(s, 1),
    )
    .await;
    acking.abort();
}
