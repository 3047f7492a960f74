//! `serve --kube` with the Gateway API: GatewayClass, Gateway, HTTPRoute and ReferenceGrant
//! from a fake API server (the real wire format, kube-rs's real watchers), served to a stock
//! Envoy bound to the Gateway by its `gateway.networking.k8s.io/gateway-name` label; changes
//! and deletions arrive through the watches. A cluster without the Gateway API CRDs (404) is
//! served as having none.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::fake_apiserver::{endpoint_slice, FakeApiServer};
use common::*;

const WAIT: Duration = Duration::from_secs(30);
const GW_LABELS: &[(&str, &str)] = &[("gateway.networking.k8s.io/gateway-name", "gw")];

async fn start_server(api: &FakeApiServer) -> Server {
    let kubeconfig = api.kubeconfig("a");
    Server::start_with_env(
        &["--kube", "--bind-address", "127.0.0.1"],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .await
}

async fn ready(server: &Server) -> bool {
    server.get("/ready").await.is_ok_and(|r| r.status == 200)
}

fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n"
    )
}

fn route(backend_ns: &str, backend: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: hello, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [hello.example.com]
  rules:
  - backendRefs: [{{name: {backend}, namespace: {backend_ns}, port: 8080}}]
"#
    )
}

/// (status, backend) of GET hello.example.com through the gateway.
async fn hello(port: u16) -> (u16, Option<String>) {
    match try_http_get(port, "hello.example.com", "/", &[]).await {
        Ok(r) => (r.status, r.backend().map(str::to_string)),
        Err(_) => (0, None),
    }
}

async fn wait_hello(port: u16, want: (u16, Option<&str>), what: &str) {
    let want = (want.0, want.1.map(str::to_string));
    eventually(WAIT, what, || {
        let want = want.clone();
        async move { hello(port).await == want }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_objects_from_the_api_server_reach_envoy_and_follow_changes() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let port = free_port();
    let api = FakeApiServer::start().await;
    api.apply_yaml(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: knative-pilot}
spec: {controllerName: knative-pilot.dev/gateway-controller}
"#,
    );
    api.apply_yaml(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: knative-pilot
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: All}}}}
"#
    ));
    for (ns, name, backend) in [("apps", "a", &a), ("shared", "b", &b)] {
        api.apply_yaml(&service(ns, name));
        api.apply(endpoint_slice(
            ns,
            &format!("{name}-x1"),
            name,
            backend.port(),
        ));
    }
    api.apply_yaml(&route("apps", "a"));
    let server = start_server(&api).await;
    eventually(WAIT, "/ready", || async { ready(&server).await }).await;
    let envoy = start_gateway(&server, "gw-0", GW_LABELS, ApiType::DeltaGrpc).await;
    envoy.wait_ready(WAIT).await;
    wait_hello(port, (200, Some("a")), "the HTTPRoute to serve backend a").await;

    // A backend in another namespace: 500 until a ReferenceGrant there allows it.
    api.apply_yaml(&route("shared", "b"));
    wait_hello(port, (500, None), "the ungranted backend to answer 500").await;
    assert_eq!(b.count(), 0);
    api.apply_yaml(
        r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps, namespace: shared}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"#,
    );
    wait_hello(port, (200, Some("b")), "the granted backend to serve").await;

    // The HTTPRoute deleted: its host is gone.
    api.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "apps", "hello");
    wait_hello(port, (404, None), "the deleted HTTPRoute to stop serving").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_gateway_api_crds_is_served() {
    let api = FakeApiServer::start().await;
    for r in [
        "apis/gateway.networking.k8s.io/v1/gatewayclasses",
        "apis/gateway.networking.k8s.io/v1/gateways",
        "apis/gateway.networking.k8s.io/v1/httproutes",
        "apis/gateway.networking.k8s.io/v1beta1/referencegrants",
    ] {
        api.set_missing(r, true);
    }
    let (ext, local) = gateway_ports();
    api.apply_yaml(&gateway_services(ext, local));
    let server = start_server(&api).await;
    eventually(WAIT, "/ready with the Gateway API not served", || async {
        ready(&server).await
    })
    .await;
}
