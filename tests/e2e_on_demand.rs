//! End to end, the on-demand layout (`--route-layout on-demand`): a stock Envoy gateway over
//! Delta ADS starts with the scopes and listeners only, and learns a host's RouteConfiguration
//! (on-demand scoped RDS) and the clusters its routes pick (on-demand CDS) from the first
//! request that needs them. Real Envoy, real echo backends. Proves: nothing of the services
//! loaded at start; the first request answered by the right backend; a 50/50 split (weighted
//! clusters, each fetched when first picked) reaching both; updates under load with no failed
//! request (a split moving to a revision whose cluster the Envoy never loaded, an endpoint
//! moving, a service added then requested, one deleted); an unknown host answered 404 without
//! waiting for a fetch; a SotW Envoy refused with a message naming what to change.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::Value;

const NS: &str = "default";

async fn start(files: &[(&str, String)]) -> Gateways {
    Fixture::new()
        .args(&["--route-layout", "on-demand"])
        .files(files)
        .external(ApiType::DeltaGrpc)
        .start()
        .await
}

fn services(backends: &[&Backend]) -> String {
    revision_services(NS, backends)
}

fn host(name: &str) -> String {
    format!("{name}.{NS}.example.com")
}

fn cluster_of(service: &str) -> String {
    format!("outbound|80||{service}.{NS}.svc.cluster.local")
}

/// KIngress `name` on the external host `<name>.default.example.com`, split between `a`
/// (`percent_a`) and `b`.
fn app(name: &str, a: &str, b: &str, percent_a: i64) -> String {
    let splits = if percent_a == 100 {
        vec![KSplit::new(a, 100)]
    } else {
        vec![KSplit::new(a, percent_a), KSplit::new(b, 100 - percent_a)]
    };
    kingress(
        NS,
        name,
        None,
        &[KRule::external(&[&host(name)], vec![KPath::any(splits)])],
    )
}

/// The RouteConfigurations the Envoy holds, sorted.
fn route_configs(dump: &Value) -> Vec<String> {
    common::envoy::dump_route_configs(dump)
        .into_keys()
        .collect()
}

/// The Envoy's clusters of services (`outbound|...`), sorted.
async fn service_clusters(envoy: &Envoy) -> Vec<String> {
    let mut names: Vec<String> = envoy
        .cluster_names()
        .await
        .into_iter()
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    names.sort();
    names
}

/// Envoy's on-demand CDS gives up on a cluster after 5 s (the filter's default `timeout`): an
/// answer that waited for it would take at least that long.
const ODCDS_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_routing_and_splits() {
    let a = Backend::start("app-a-00001").await;
    let b = Backend::start("app-b-00001").await;
    let c = Backend::start("other-00001").await;
    let gw = start(&[
        ("services.yaml", services(&[&a, &b, &c])),
        ("app.yaml", app("app", a.name(), b.name(), 50)),
        ("other.yaml", app("other", c.name(), c.name(), 100)),
    ])
    .await;
    let port = gw.ext_port;
    let envoy = gw.envoy();

    // Ready, with every scope and no RouteConfiguration or cluster of a service.
    let dump = envoy.config_dump().await;
    assert_eq!(
        common::envoy::dump_scopes(&dump),
        [
            "http.80/app.default.example.com",
            "http.80/other.default.example.com"
        ]
    );
    assert!(
        route_configs(&dump).is_empty(),
        "{:?}",
        route_configs(&dump)
    );
    assert!(
        service_clusters(envoy).await.is_empty(),
        "{:?}",
        envoy.cluster_names().await
    );

    // The first request of a host loads its route and the cluster it picks, nothing else.
    let r = http_get(port, &host("other"), "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(c.name())), "{}", r.body);
    let dump = envoy.config_dump().await;
    assert_eq!(route_configs(&dump), ["http.80/other.default.example.com"]);
    assert_eq!(service_clusters(envoy).await, [cluster_of(c.name())]);
    // With a port in the Host header too.
    let with_port = format!("{}:{port}", host("other"));
    let r = http_get(port, &with_port, "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(c.name())), "{}", r.body);

    // A 50/50 split: weighted clusters, each fetched when a request first picks it.
    let seen = backend_spread(port, &host("app"), 400).await;
    for backend in [a.name(), b.name()] {
        let n = seen.get(backend).copied().unwrap_or(0);
        assert!((120..=280).contains(&n), "{backend}: {n} of 400: {seen:?}");
    }
    let mut want = vec![
        cluster_of(a.name()),
        cluster_of(b.name()),
        cluster_of(c.name()),
    ];
    want.sort();
    assert_eq!(service_clusters(envoy).await, want);

    // An unknown host has no scope: 404 from Envoy itself, without a fetch to wait for; and
    // nothing was loaded for it.
    let started = Instant::now();
    let r = http_get(port, &host("nope"), "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(took < ODCDS_TIMEOUT, "the 404 waited {took:?}");
    assert_eq!(
        route_configs(&envoy.config_dump().await),
        [
            "http.80/app.default.example.com",
            "http.80/other.default.example.com"
        ]
    );
    // A cluster-local host is not on the external gateway.
    let r = http_get(port, "app.default.svc.cluster.local", "/", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    drop(gw.dir);
}

/// Updates while a client sends requests without pause to a loaded host: (a) its split moves to
/// a revision whose cluster the Envoy never loaded (the route is pushed, the on-demand filter
/// fetches the cluster), (b) that revision's endpoint moves to another backend, (c) a service
/// is added and requested, then deleted (404). No request of the load fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_updates_under_load() {
    let a = Backend::start("app-a-00001").await;
    let b = Backend::start("app-b-00001").await;
    let c = Backend::start("app-c-00002").await;
    // (b) moves app-c-00002's endpoint to this backend (reporting its own name).
    let moved = Backend::start("moved-endpoint").await;
    let gw = start(&[
        ("services.yaml", services(&[&a, &b, &c])),
        ("app.yaml", app("app", a.name(), b.name(), 100)),
    ])
    .await;
    let port = gw.ext_port;
    let envoy = gw.envoy();
    let r = http_get(port, &host("app"), "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(a.name())), "{}", r.body);
    let load = Load::start(port, &host("app"));
    let mut gen = generation(&gw.server).await;

    // (a) The split moves to c, whose cluster the Envoy never loaded.
    assert!(!service_clusters(envoy)
        .await
        .contains(&cluster_of(c.name())));
    gw.dir
        .write("app.yaml", &app("app", c.name(), b.name(), 100));
    gen = wait_synced(&gw.server, gen, 1).await;
    let r = http_get(port, &host("app"), "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(c.name())), "{}", r.body);
    assert!(service_clusters(envoy)
        .await
        .contains(&cluster_of(c.name())));
    // The cluster no route needs any more is removed from the Envoy.
    let gone = cluster_of(a.name());
    eventually(Duration::from_secs(10), "a's cluster removed", || async {
        !service_clusters(envoy).await.contains(&gone)
    })
    .await;

    // (b) c's endpoint moves to another backend.
    let mut moved_services = services(&[&a, &b]);
    moved_services.push_str("---\n");
    moved_services.push_str(&revision_service(NS, c.name(), &[moved.port()], false));
    gw.dir.write("services.yaml", &moved_services);
    gen = wait_synced(&gw.server, gen, 1).await;
    let r = http_get(port, &host("app"), "/", &[]).await;
    assert_eq!(
        (r.status, r.backend()),
        (200, Some(moved.name())),
        "{}",
        r.body
    );

    // (c) A service added, then requested; then deleted: 404.
    gw.dir
        .write("extra.yaml", &app("extra", b.name(), b.name(), 100));
    gen = wait_synced(&gw.server, gen, 1).await;
    assert!(!route_configs(&envoy.config_dump().await)
        .contains(&"http.80/extra.default.example.com".to_string()));
    let r = http_get(port, &host("extra"), "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(b.name())), "{}", r.body);
    gw.dir.remove("extra.yaml");
    wait_synced(&gw.server, gen, 1).await;
    let r = http_get(port, &host("extra"), "/", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let total = load.finish_clean(50).await;
    eprintln!("on-demand updates under load: {total} requests, 0 failed");
}

/// A SotW Envoy cannot use on-demand CDS: its stream is refused with `FAILED_PRECONDITION`
/// naming the layout and what to change (seen by a plain ADS client), and a real SotW Envoy is
/// not served (never ready, no connection), while a Delta one next to it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sotw_stream_is_refused_with_the_reason() {
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

    let a = Backend::start("app-a-00001").await;
    let gw = start(&[
        ("services.yaml", services(&[&a])),
        ("app.yaml", app("app", a.name(), a.name(), 100)),
    ])
    .await;
    let r = http_get(gw.ext_port, &host("app"), "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(a.name())), "{}", r.body);

    let node = common::node::istio_node(
        "router~10.0.0.9~gw-9.istio-system~istio-system.svc.cluster.local",
        &[("istio", "ingressgateway")],
        &[],
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::connect(format!(
        "http://127.0.0.1:{}",
        gw.server.xds_port()
    ))
    .await
    .expect("connect");
    let status = match client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Err(status) => status,
        Ok(resp) => {
            let mut s = resp.into_inner();
            match tokio::time::timeout(Duration::from_secs(10), s.message()).await {
                Ok(Err(status)) => status,
                other => panic!("expected the stream to be refused, got {other:?}"),
            }
        }
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("--route-layout on-demand")
            && status.message().contains("DELTA_GRPC"),
        "{status:?}"
    );

    // A real SotW Envoy: never served.
    let params = BootstrapParams::new(gw.server.xds_port())
        .api_type(ApiType::Grpc)
        .pod("istio-ingressgateway-sotw", "istio-system")
        .labels(&[("istio", "ingressgateway")]);
    let envoy = Envoy::start(&render_bootstrap(&params)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!envoy.is_ready().await);
    assert!(envoy.listener_names().await.is_empty());
    let syncz = gw.server.get_json("/debug/syncz").await;
    let conns = syncz["connections"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        conns.len(),
        1,
        "only the Delta Envoy is connected: {syncz:#}"
    );
    drop(tx);
}
