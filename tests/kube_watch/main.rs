//! `serve --kube` end to end: kube-rs's real client and watchers against a fake API server that
//! speaks the real wire format (there is no Kubernetes API server on these machines; see
//! `common/fake_apiserver/`), our server translating, and a stock Envoy serving real HTTP to
//! echo backends.
//!
//! Here: the initial lists, then every kind changed through the API server and served.
//! `watches`: dropped, failing, missing and lost watches (resumes, 410 relists, backoff, CRDs
//! installed later, last objects kept). `objects`: a TLS Secret over SDS, `--namespace`, a bad
//! update.

#[path = "../common/mod.rs"]
mod common;
mod objects;
mod watches;

use std::time::Duration;

use common::cluster::*;
use common::fake_apiserver::FakeApiServer;
use common::*;
use serde_json::{json, Value};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(30);

fn endpoint_slice(name: &str, svc: &str, ports: &[u16]) -> Value {
    common::fake_apiserver::endpoint_slice(NS, name, svc, ports.first().copied().unwrap_or(1))
}

/// A revision Service (`http` 80 -> 8012) without endpoints.
fn revision_svc(name: &str) -> String {
    let both = revision_service(NS, name, &[], false);
    both.split_once("---\n")
        .expect("Service --- Endpoints")
        .0
        .to_string()
}

/// A Service and its EndpointSlice pointing at `b`.
fn serve_backend(api: &FakeApiServer, name: &str, b: &Backend) {
    api.apply_yaml(&revision_svc(name));
    api.apply(endpoint_slice(&format!("{name}-abcde"), name, &[b.port()]));
}

fn one_rule(name: &str, hosts: &[&str], svc: &str) -> String {
    kingress(
        NS,
        name,
        None,
        &[KRule::external(
            hosts,
            vec![KPath::any(vec![KSplit::new(svc, 100)])],
        )],
    )
}

async fn start_server(api: &FakeApiServer, token: &str, extra: &[&str]) -> Server {
    let kubeconfig = api.kubeconfig(token);
    let mut args = vec!["--kube", "--bind-address", "127.0.0.1"];
    args.extend_from_slice(extra);
    Server::start_with_env(&args, &[("KUBECONFIG", kubeconfig.as_str())]).await
}

/// Starts the server on the fake API server, waits until it is ready, then starts the external
/// gateway Envoy against it and waits until that is ready.
async fn serve_external(api: &FakeApiServer, extra: &[&str], api_type: ApiType) -> (Server, Envoy) {
    let server = start_server(api, "a", extra).await;
    eventually(WAIT, "/ready", || async {
        ready_status(&server).await == 200
    })
    .await;
    let envoy = start_gateway(&server, "istio-ingressgateway-0", EXTERNAL_LABELS, api_type).await;
    envoy.wait_ready(WAIT).await;
    (server, envoy)
}

async fn ready_status(server: &Server) -> u16 {
    server.get("/ready").await.map(|r| r.status).unwrap_or(0)
}

/// Status and backend name of GET `host` through the gateway on `port`.
async fn get(port: u16, host: &str, path: &str) -> (u16, Option<String>) {
    match try_http_get(port, host, path, &[]).await {
        Ok(r) => (r.status, r.backend().map(str::to_string)),
        Err(_) => (0, None),
    }
}

/// Polls GET `host``path` until `ok` holds for (status, backend); panics naming `what`.
async fn wait_answer(
    port: u16,
    host: &str,
    path: &str,
    what: &str,
    ok: impl Fn(&(u16, Option<String>)) -> bool,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let last = get(port, host, path).await;
        if ok(&last) {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("{what}: {host}{path} still answers {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_backend(port: u16, host: &str, path: &str, want: Option<&str>, what: &str) {
    wait_answer(port, host, path, what, |(status, backend)| match want {
        Some(b) => *status == 200 && backend.as_deref() == Some(b),
        None => *status == 404,
    })
    .await
}

async fn wait_status(port: u16, host: &str, want: u16, what: &str) {
    wait_answer(port, host, "/", what, |(status, _)| *status == want).await
}

/// Puts the two gateway Services, `hello-00001` served by `v1` and the KIngress `hello`
/// (`hello.default.example.com` -> `hello-00001`) on the API server; returns the external
/// gateway's port.
fn hello_cluster(api: &FakeApiServer, v1: &Backend) -> u16 {
    let (ext_port, local_port) = gateway_ports();
    api.apply_yaml(&gateway_services(ext_port, local_port));
    serve_backend(api, "hello-00001", v1);
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com"],
        "hello-00001",
    ));
    ext_port
}

/// A VirtualService on the Knative gateway routing `vs.default.example.com` to `hello-00001`.
fn hello_virtual_service() -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: vs, namespace: {NS}}}
spec:
  gateways: [knative-serving/knative-ingress-gateway]
  hosts: [vs.default.example.com]
  http:
  - route:
    - destination: {{host: hello-00001.{NS}.svc.cluster.local, port: {{number: 80}}}}
"#
    )
}

async fn input_names(server: &Server) -> Vec<String> {
    server.get_json("/debug/inputs").await["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|o| o["object"].as_str().map(str::to_string))
        .collect()
}

/// Count of list (not watch) requests for a resource path.
fn lists_of(api: &FakeApiServer, resource: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.contains(resource) && !r.contains("watch="))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_lists_then_every_kind_reaches_envoy() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let extra_port = free_port();
    let api = FakeApiServer::start().await;
    let ext_port = hello_cluster(&api, &v1);
    // Secrets: only TLS ones are watched (field selector type=kubernetes.io/tls).
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "opaque", "namespace": NS}, "data": {}}),
    );
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "cert", "namespace": "istio-system"},
        "data": {"tls.crt": "", "tls.key": ""}}),
    );
    // ConfigMaps: only the two translation reads.
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"}, "data": {}}));

    // Nothing is served until every initial list is done.
    api.hold_lists(true);
    let server = start_server(&api, "a", &[]).await;
    eventually(WAIT, "the server to start listing", || async {
        api.requests().iter().any(|r| r.starts_with("GET /api"))
    })
    .await;
    assert_eq!(ready_status(&server).await, 503, "ready before the lists");
    api.hold_lists(false);
    eventually(WAIT, "/ready", || async {
        ready_status(&server).await == 200
    })
    .await;
    let names = input_names(&server).await;
    assert!(
        names.contains(&"Secret istio-system/cert".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("opaque") || n.contains("config-autoscaler")),
        "{names:?}"
    );
    // One list per watch, and a watch each: no per-object calls.
    let gets: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && !r.contains("leases") && !r.contains("watch="))
        .collect();
    assert_eq!(
        gets.len(),
        knative_pilot::source::kube::slots(&[]).len(),
        "{gets:#?}"
    );

    let envoy = start_gateway(
        &server,
        "istio-ingressgateway-0",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    envoy.wait_ready(WAIT).await;
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "initial KIngress",
    )
    .await;

    // EndpointSlice changes.
    api.apply(endpoint_slice(
        "hello-00001-abcde",
        "hello-00001",
        &[v2.port()],
    ));
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v2"),
        "EndpointSlice change",
    )
    .await;
    api.apply(endpoint_slice(
        "hello-00001-abcde",
        "hello-00001",
        &[v1.port()],
    ));
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "EndpointSlice back",
    )
    .await;

    // KIngress change: a second host.
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com", "hi.default.example.com"],
        "hello-00001",
    ));
    wait_backend(
        ext_port,
        "hi.default.example.com",
        "/",
        Some("v1"),
        "KIngress change",
    )
    .await;

    // Route (no KIngress, no VirtualService for it) and Revision Service added.
    serve_backend(&api, "routed-00001", &v2);
    api.apply_yaml(&route(NS, "routed", &[("routed-00001", 100, None)], false));
    wait_backend(
        ext_port,
        "routed.default.example.com",
        "/",
        Some("v2"),
        "Route added",
    )
    .await;
    // config-network: a KIngress without a class annotation is ours only when config-network's
    // ingress-class says so.
    let unannotated = one_rule("noclass", &["noclass.default.example.com"], "hello-00001")
        .replace(
            "  annotations:\n    networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev\n",
            "",
        );
    assert!(!unannotated.contains("ingress.class"), "{unannotated}");
    api.apply_yaml(&unannotated);
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-network", "namespace": "knative-serving"},
        "data": {"ingress-class": "knative-pilot.ingress.networking.knative.dev"}}));
    wait_backend(
        ext_port,
        "noclass.default.example.com",
        "/",
        Some("v1"),
        "config-network added",
    )
    .await;
    api.delete("v1", "ConfigMap", "knative-serving", "config-network");
    wait_backend(
        ext_port,
        "noclass.default.example.com",
        "/",
        None,
        "config-network deleted",
    )
    .await;

    // VirtualService added.
    api.apply_yaml(&hello_virtual_service());
    wait_backend(
        ext_port,
        "vs.default.example.com",
        "/",
        Some("v1"),
        "VirtualService added",
    )
    .await;

    // A Gateway (replacing the defaults) with a second server on port 81, which the gateway
    // Service maps to a free port.
    api.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {ext_port}}}
  - {{name: http-extra, port: 81, targetPort: {extra_port}}}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: knative-ingress-gateway, namespace: knative-serving}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: 81, name: http-extra, protocol: HTTP}}
    hosts: ["*"]
"#
    ));
    wait_backend(
        extra_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "Gateway added",
    )
    .await;
    api.delete(
        "networking.istio.io/v1beta1",
        "Gateway",
        "knative-serving",
        "knative-ingress-gateway",
    );
    let gone = wait_until(WAIT, || async {
        !envoy
            .listener_names()
            .await
            .iter()
            .any(|l| l.contains(&extra_port.to_string()))
    })
    .await;
    assert!(
        gone,
        "Gateway deleted: its listener stays: {:?}",
        envoy.listener_names().await
    );

    // Deletions.
    api.delete("networking.istio.io/v1beta1", "VirtualService", NS, "vs");
    wait_backend(
        ext_port,
        "vs.default.example.com",
        "/",
        None,
        "VirtualService deleted",
    )
    .await;
    api.delete("serving.knative.dev/v1", "Route", NS, "routed");
    wait_backend(
        ext_port,
        "routed.default.example.com",
        "/",
        None,
        "Route deleted",
    )
    .await;
    api.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        NS,
        "hello-00001-abcde",
    );
    wait_status(
        ext_port,
        "hello.default.example.com",
        503,
        "EndpointSlice deleted",
    )
    .await;
    api.delete(
        "networking.internal.knative.dev/v1alpha1",
        "Ingress",
        NS,
        "hello",
    );
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        None,
        "KIngress deleted",
    )
    .await;
    let names = input_names(&server).await;
    assert!(
        !names
            .iter()
            .any(|n| n.contains("hello ") || n.ends_with("/hello")),
        "{names:?}"
    );
}
