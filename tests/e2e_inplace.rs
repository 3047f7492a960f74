//! End to end, a cluster that changes in place, with stock Envoy gateways (SotW and Delta) and
//! real HTTP to real backends:
//!
//! * a backend Service's port renamed from `http2` (appProtocol `kubernetes.io/h2c`) to `http`,
//!   endpoints unchanged: Envoy replaces the cluster, which warms until its (unchanged) load
//!   assignment is sent again; traffic must move to HTTP/1.1, no cluster may stay warming, and a
//!   KIngress added afterwards must still be served (a warming cluster held the CDS ACK, and with
//!   it every later push of the gateway);
//! * the Service spec and its Endpoints changed in one write (Delta: a new cluster and a new
//!   assignment at once);
//! * a Service that becomes ExternalName (EDS cluster -> STRICT_DNS) and back;
//! * an object removed and re-added within one debounce window.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

const NS: &str = "default";
const CONVERGE: Duration = Duration::from_secs(20);

fn host(name: &str) -> String {
    format!("{name}.{NS}.example.com")
}

/// A revision Service with one port 80 -> 8012, named `http2` with appProtocol
/// `kubernetes.io/h2c` (Envoy then speaks h2c to the backend), or named `http`.
fn service(name: &str, h2c: bool) -> String {
    let port = if h2c {
        "{name: http2, port: 80, targetPort: 8012, appProtocol: kubernetes.io/h2c}"
    } else {
        "{name: http, port: 80, targetPort: 8012}"
    };
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  ports:
  - {port}
"#
    )
}

/// The same Service as ExternalName pointing at 127.0.0.1: a STRICT_DNS cluster, which connects
/// to the Service port, so the tests use the DNS backend's own port as the Service port.
fn external_name_service(name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  type: ExternalName
  externalName: 127.0.0.1
  ports:
  - {{name: http, port: {port}}}
"#
    )
}

/// A ClusterIP Service on `port` whose Endpoints are elsewhere.
fn cluster_ip_service(name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  ports:
  - {{name: http, port: {port}, targetPort: 8012}}
"#
    )
}

/// Endpoints of `name` on 127.0.0.1 with one unnamed port.
fn endpoints(name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Endpoints
metadata: {{name: {name}, namespace: {NS}}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{port: {port}}}]
"#
    )
}

/// A KIngress of our class routing `host(name)` to Service `service` on `port`.
fn ingress(name: &str, service: &str, port: u16) -> String {
    kingress(
        NS,
        name,
        None,
        &[KRule::external(
            &[&host(name)],
            vec![KPath::any(vec![KSplit::new(service, 100).port(port)])],
        )],
    )
}

/// The server over `files` and one external gateway Envoy speaking `api`.
async fn start(files: &[(&str, String)], api: ApiType) -> Gateways {
    Fixture::new().files(files).external(api).start().await
}

/// Waits until a request for `host` is answered 200 by `backend` over `proto` (the backend's
/// view: `HTTP/1.1` or `HTTP/2.0`) and Envoy has no cluster left warming.
async fn converged(envoy: &Envoy, port: u16, host: &str, backend: &str, proto: &str) {
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let seen = match try_http_get(port, host, "/", &[]).await {
            Ok(r) => format!(
                "{} {} {}",
                r.status,
                r.backend().unwrap_or("-"),
                r.body_json["proto"].as_str().unwrap_or("-")
            ),
            Err(e) => e,
        };
        let warming = envoy.warming_cluster_names().await;
        if seen == format!("200 {backend} {proto}") && warming.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let last = format!("request: {seen}; warming clusters: {warming:?}");
            panic!(
                "{host}: not served by {backend} over {proto} with no cluster warming after \
                 {CONVERGE:?}; last: {last}\nEnvoy log tail:\n{}",
                envoy.logs_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The port rename of the issue, then a KIngress added afterwards.
async fn port_renamed_in_place(api: ApiType) {
    let backend = Backend::start("app").await;
    let gw = start(
        &[
            ("service.yaml", service("app-00001", true)),
            ("endpoints.yaml", endpoints("app-00001", backend.port())),
            ("ingress.yaml", ingress("app", "app-00001", 80)),
        ],
        api,
    )
    .await;
    let (dir, envoy, ext_port) = (&gw.dir, gw.envoy(), gw.ext_port);
    converged(envoy, ext_port, &host("app"), "app", "HTTP/2.0").await;

    dir.write("service.yaml", &service("app-00001", false));
    converged(envoy, ext_port, &host("app"), "app", "HTTP/1.1").await;

    // The gateway still takes new config.
    let other = Backend::start("other").await;
    dir.write("other-service.yaml", &service("other-00001", false));
    dir.write(
        "other-endpoints.yaml",
        &endpoints("other-00001", other.port()),
    );
    dir.write("other-ingress.yaml", &ingress("other", "other-00001", 80));
    converged(envoy, ext_port, &host("other"), "other", "HTTP/1.1").await;
    // And back to h2c.
    dir.write("service.yaml", &service("app-00001", true));
    converged(envoy, ext_port, &host("app"), "app", "HTTP/2.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_renamed_in_place_sotw() {
    port_renamed_in_place(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_renamed_in_place_delta() {
    port_renamed_in_place(ApiType::DeltaGrpc).await;
}

/// Service spec and Endpoints changed in one write: the new cluster and its new assignment.
async fn service_and_endpoints_in_one_write(api: ApiType) {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let both = |h2c: bool, port: u16| {
        format!(
            "{}---\n{}",
            service("app-00001", h2c),
            endpoints("app-00001", port)
        )
    };
    let gw = start(
        &[
            ("app.yaml", both(true, a.port())),
            ("ingress.yaml", ingress("app", "app-00001", 80)),
        ],
        api,
    )
    .await;
    let (dir, envoy, ext_port) = (&gw.dir, gw.envoy(), gw.ext_port);
    converged(envoy, ext_port, &host("app"), "a", "HTTP/2.0").await;
    dir.write("app.yaml", &both(false, b.port()));
    converged(envoy, ext_port, &host("app"), "b", "HTTP/1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_endpoints_in_one_write_sotw() {
    service_and_endpoints_in_one_write(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_endpoints_in_one_write_delta() {
    service_and_endpoints_in_one_write(ApiType::DeltaGrpc).await;
}

/// EDS -> STRICT_DNS -> EDS under one cluster name: the KIngress names the Service port, which is
/// the DNS backend's own port (an ExternalName cluster connects to the Service port).
async fn external_name_and_back(api: ApiType) {
    let eds = Backend::start("eds").await;
    let dns = Backend::start("dns").await;
    let gw = start(
        &[
            ("service.yaml", cluster_ip_service("app-00001", dns.port())),
            ("endpoints.yaml", endpoints("app-00001", eds.port())),
            ("ingress.yaml", ingress("app", "app-00001", dns.port())),
        ],
        api,
    )
    .await;
    let (dir, envoy, ext_port) = (&gw.dir, gw.envoy(), gw.ext_port);
    converged(envoy, ext_port, &host("app"), "eds", "HTTP/1.1").await;
    dir.write(
        "service.yaml",
        &external_name_service("app-00001", dns.port()),
    );
    converged(envoy, ext_port, &host("app"), "dns", "HTTP/1.1").await;
    dir.write("service.yaml", &cluster_ip_service("app-00001", dns.port()));
    converged(envoy, ext_port, &host("app"), "eds", "HTTP/1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_and_back_sotw() {
    external_name_and_back(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_and_back_delta() {
    external_name_and_back(ApiType::DeltaGrpc).await;
}

/// A backend Service removed and written again, changed, within one debounce window: the
/// gateway ends with the new version and nothing warming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_and_readded_within_one_debounce_window() {
    let backend = Backend::start("app").await;
    let gw = start(
        &[
            ("service.yaml", service("app-00001", true)),
            ("endpoints.yaml", endpoints("app-00001", backend.port())),
            ("ingress.yaml", ingress("app", "app-00001", 80)),
        ],
        ApiType::DeltaGrpc,
    )
    .await;
    let (dir, envoy, ext_port) = (&gw.dir, gw.envoy(), gw.ext_port);
    converged(envoy, ext_port, &host("app"), "app", "HTTP/2.0").await;
    dir.remove("service.yaml");
    dir.write("service.yaml", &service("app-00001", false));
    converged(envoy, ext_port, &host("app"), "app", "HTTP/1.1").await;
}
