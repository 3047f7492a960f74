//! End to end, Gateway API listeners and backends: ListenerHostnameMatching and several
//! certificateRefs on one HTTPS listener, MultipleGateways (two Envoys bound by the
//! `gateway.networking.k8s.io/gateway-name` label) and ServiceTypes, through stock Envoy
//! (the HTTPRoute behaviours are in `e2e_gateway_api`).

mod common;

use std::time::Duration;

use common::cluster::*;
use common::cluster::{gateway_api_service as service, GATEWAY_API_CLASSES as CLASS};
use common::*;

const READY: Duration = Duration::from_secs(30);

/// ListenerHostnameMatching (four HTTP listeners on one port told apart by hostname, routes
/// attached by sectionName) and an HTTPS listener with two certificateRefs: Envoy presents the
/// one whose names match the client's SNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_by_hostname_and_several_certificates_through_stock_envoy() {
    use common::pki::Ca;
    let v1 = Backend::start("infra-backend-v1").await;
    let v2 = Backend::start("infra-backend-v2").await;
    let v3 = Backend::start("infra-backend-v3").await;
    let (http_port, https_port) = gateway_ports();
    let ca = Ca::new("mesh root");
    let site_a = ca.server_for(&["a.secure.test"], "site-a");
    let site_b = ca.server_for(&["b.secure.test"], "site-b");
    let dir = ManifestDir::new();
    dir.write("class.yaml", CLASS);
    dir.write(
        "secrets.yaml",
        &format!(
            "{}---\n{}",
            site_a.secret_yaml("istio-system", "site-a"),
            site_b.secret_yaml("istio-system", "site-b")
        ),
    );
    dir.write(
        "gateway.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: hostnames, namespace: istio-system}}
spec:
  gatewayClassName: knative-pilot
  listeners:
  - {{name: listener-1, port: {http_port}, protocol: HTTP, hostname: bar.com}}
  - {{name: listener-2, port: {http_port}, protocol: HTTP, hostname: foo.bar.com}}
  - {{name: listener-3, port: {http_port}, protocol: HTTP, hostname: "*.bar.com"}}
  - {{name: listener-4, port: {http_port}, protocol: HTTP, hostname: "*.foo.com"}}
  - name: https
    port: {https_port}
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: site-a}}, {{kind: Secret, name: site-b}}]}}
"#
        ),
    );
    let mut svcs = String::new();
    for (name, b) in [
        ("infra-backend-v1", &v1),
        ("infra-backend-v2", &v2),
        ("infra-backend-v3", &v3),
    ] {
        svcs.push_str(&service("istio-system", name, 8080, b.port(), false));
        svcs.push_str("---\n");
    }
    dir.write("services.yaml", &svcs);
    dir.write(
        "routes.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v1, namespace: istio-system}
spec:
  parentRefs: [{name: hostnames, sectionName: listener-1}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v2, namespace: istio-system}
spec:
  parentRefs: [{name: hostnames, sectionName: listener-2}]
  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v3, namespace: istio-system}
spec:
  parentRefs:
  - {name: hostnames, sectionName: listener-3}
  - {name: hostnames, sectionName: listener-4}
  rules: [{backendRefs: [{name: infra-backend-v3, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: istio-system}
spec:
  parentRefs: [{name: hostnames, sectionName: https}]
  hostnames: [a.secure.test, b.secure.test]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"#,
    );
    let _gw = start_tls_gateway_api(&ca, dir.path(), "hostnames", READY).await;

    // ListenerHostnameMatching, the conformance test's cases.
    for (host, want) in [
        ("bar.com", Some("infra-backend-v1")),
        ("foo.bar.com", Some("infra-backend-v2")),
        ("baz.bar.com", Some("infra-backend-v3")),
        ("boo.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.foo.com", Some("infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        let r = http_get(http_port, host, "/", &[]).await;
        match want {
            Some(b) => assert_eq!((r.status, r.backend()), (200, Some(b)), "{host}"),
            None => assert_eq!(r.status, 404, "{host}"),
        }
    }

    // Both certificateRefs are served; each SNI gets its own certificate.
    for (host, pem) in [("a.secure.test", &site_a), ("b.secure.test", &site_b)] {
        let r = https_get(https_port, host, "/", &Trust::Pinned(pem.cert_der())).await;
        assert_eq!(r.response.status, 200, "{host}: {}", r.response.body);
        assert_eq!(r.response.backend(), Some("infra-backend-v1"));
    }
}

/// MultipleGateways (two Gateways of our class, each served by its own Envoy, bound by the
/// `gateway.networking.k8s.io/gateway-name` label: each serves only the routes attached to it)
/// and ServiceTypes (backends of type ClusterIP with a selector, without one and with manual
/// Endpoints or EndpointSlices, and headless ones, the endpoints' port being the one used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_bound_by_label_and_service_types_through_stock_envoy() {
    let v1 = Backend::start("infra-backend-v1").await;
    let (port_a, port_b) = gateway_ports();
    let p = v1.port();
    let dir = ManifestDir::new();
    dir.write("class.yaml", CLASS);
    dir.write(
        "gateways.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: infra}}
spec:
  gatewayClassName: knative-pilot
  listeners: [{{name: http, port: {port_a}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: second, namespace: infra}}
spec:
  gatewayClassName: knative-pilot
  listeners: [{{name: http, port: {port_b}, protocol: HTTP}}]
"#
        ),
    );
    let svc = |name: &str, headless: bool, selector: bool| {
        let ip = if headless { "clusterIP: None\n  " } else { "" };
        let sel = if selector {
            "selector: {app: infra-backend-v1}\n  "
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  \
             {ip}{sel}ports: [{{name: first-port, protocol: TCP, port: 8080, targetPort: 3000}}]\n---\n"
        )
    };
    let endpoints = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: infra}}\n\
             subsets: [{{addresses: [{{ip: 127.0.0.1}}], ports: [{{name: first-port, port: {p}}}]}}]\n---\n"
        )
    };
    let slice = |name: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abcde\n  \
             namespace: infra\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\n\
             ports: [{{name: first-port, port: {p}, protocol: TCP}}]\n\
             endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true, serving: true, terminating: false}}}}]\n---\n"
        )
    };
    let mut objects = String::new();
    for (name, headless, selector) in [
        ("selected", false, true),
        ("manual-endpoints", false, false),
        ("manual-endpointslices", false, false),
        ("headless", true, true),
        ("headless-manual-endpoints", true, false),
        ("headless-manual-endpointslices", true, false),
    ] {
        objects.push_str(&svc(name, headless, selector));
        if name.ends_with("-endpoints") {
            objects.push_str(&endpoints(name));
        } else {
            // What the EndpointSlice controller writes for a selector, or a manual slice.
            objects.push_str(&slice(name));
        }
    }
    dir.write("services.yaml", &objects);
    dir.write(
        "routes.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: service-types, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: Exact, value: /selected}}]
    backendRefs: [{name: selected, port: 8080}]
  - matches: [{path: {type: Exact, value: /manual-endpoints}}]
    backendRefs: [{name: manual-endpoints, port: 8080}]
  - matches: [{path: {type: Exact, value: /manual-endpointslices}}]
    backendRefs: [{name: manual-endpointslices, port: 8080}]
  - matches: [{path: {type: Exact, value: /headless}}]
    backendRefs: [{name: headless, port: 8080}]
  - matches: [{path: {type: Exact, value: /headless-manual-endpoints}}]
    backendRefs: [{name: headless-manual-endpoints, port: 8080}]
  - matches: [{path: {type: Exact, value: /headless-manual-endpointslices}}]
    backendRefs: [{name: headless-manual-endpointslices, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: on-second, namespace: infra}
spec:
  parentRefs: [{name: second}]
  hostnames: [second.test]
  rules: [{backendRefs: [{name: selected, port: 8080}]}]
"#,
    );
    let server = serve_dir(&dir, &[]).await;
    let a = start_gateway(
        &server,
        "same-namespace-0",
        &[("gateway.networking.k8s.io/gateway-name", "same-namespace")],
        ApiType::DeltaGrpc,
    )
    .await;
    let b = start_gateway(
        &server,
        "second-0",
        &[("gateway.networking.k8s.io/gateway-name", "second")],
        ApiType::Grpc,
    )
    .await;
    a.wait_ready(READY).await;
    b.wait_ready(READY).await;
    wait_synced(&server, 0, 2).await;
    assert_eq!(
        a.listener_names().await,
        [format!("127.0.0.1_{port_a}")],
        "each Envoy has only its Gateway's listener"
    );
    assert_eq!(b.listener_names().await, [format!("127.0.0.1_{port_b}")]);

    // ServiceTypes.
    for path in [
        "/selected",
        "/manual-endpoints",
        "/manual-endpointslices",
        "/headless",
        "/headless-manual-endpoints",
        "/headless-manual-endpointslices",
    ] {
        let r = http_get(port_a, "any.test", path, &[]).await;
        assert_eq!(
            (r.status, r.backend()),
            (200, Some("infra-backend-v1")),
            "{path}"
        );
    }
    // MultipleGateways: each route on its own Gateway's Envoy only.
    let r = http_get(port_b, "second.test", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("infra-backend-v1")));
    assert_eq!(
        http_get(port_b, "any.test", "/selected", &[]).await.status,
        404
    );
    assert_eq!(http_get(port_a, "second.test", "/", &[]).await.status, 404);
}
