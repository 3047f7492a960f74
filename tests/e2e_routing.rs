//! End to end: our server, stock Envoy gateways (external and cluster-local), real HTTP to
//! real backends. Inputs are a manifest directory (there is no Kubernetes API server here).

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

const READY: Duration = Duration::from_secs(30);

/// The seed services given as Routes: the external gateway serves the external host and answers
/// 404 for cluster-local hosts; the cluster-local gateway serves them. The external Envoy speaks
/// SotW, the local one Delta.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_services_route_by_host_and_visibility() {
    let v1 = Backend::start("my-service-00001-nex").await;
    let v2 = Backend::start("internal-my-service-00001-sub").await;
    let (ext_port, local_port) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("gateways.yaml", &gateway_services(ext_port, local_port));
    dir.write(
        "my-service.yaml",
        &format!(
            "{}---\n{}",
            revision_service("default", "my-service-00001-nex", &[v1.port()], false),
            route(
                "default",
                "my-service",
                &[("my-service-00001-nex", 100, None)],
                false
            )
        ),
    );
    dir.write(
        "internal.yaml",
        &format!(
            "{}---\n{}",
            revision_service(
                "default",
                "internal-my-service-00001-sub",
                &[v2.port()],
                false
            ),
            route(
                "default",
                "internal-my-service",
                &[("internal-my-service-00001-sub", 100, None)],
                true
            )
        ),
    );
    let server = serve_dir(&dir, &[]).await;
    let ext = start_gateway(
        &server,
        "istio-ingressgateway-0",
        EXTERNAL_LABELS,
        ApiType::Grpc,
    )
    .await;
    let local = start_gateway(
        &server,
        "cluster-local-gateway-0",
        LOCAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    ext.wait_ready(READY).await;
    local.wait_ready(READY).await;
    wait_synced(&server, 0, 2).await;

    assert_eq!(
        ext.listener_names().await,
        vec![format!("127.0.0.1_{ext_port}")]
    );
    let r = http_get(ext_port, "my-service.default.example.com", "/hello", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), Some("my-service-00001-nex"));
    assert_eq!(
        r.echoed_header("knative-serving-revision"),
        Some("my-service-00001-nex")
    );
    assert_eq!(
        r.echoed_header("knative-serving-namespace"),
        Some("default")
    );
    assert_eq!(r.body_json["path"], "/hello");

    // Cluster-local hosts are never reachable through the external gateway.
    for host in [
        "internal-my-service.default.svc.cluster.local",
        "internal-my-service.default",
        "my-service.default.svc.cluster.local",
    ] {
        let r = http_get(ext_port, host, "/", &[]).await;
        assert_eq!(r.status, 404, "external gateway must not serve {host}");
    }
    // ... and are served by the local gateway.
    for (host, backend) in [
        (
            "internal-my-service.default.svc.cluster.local",
            "internal-my-service-00001-sub",
        ),
        (
            "internal-my-service.default.svc",
            "internal-my-service-00001-sub",
        ),
        (
            "internal-my-service.default",
            "internal-my-service-00001-sub",
        ),
        (
            "my-service.default.svc.cluster.local",
            "my-service-00001-nex",
        ),
    ] {
        let r = http_get(local_port, host, "/", &[]).await;
        assert_eq!(r.status, 200, "local gateway must serve {host}: {}", r.body);
        assert_eq!(r.backend(), Some(backend));
    }
    // The external host is not on the local gateway.
    let r = http_get(local_port, "my-service.default.example.com", "/", &[]).await;
    assert_eq!(r.status, 404);
}

/// The other common layout: one Envoy serves both gateways, the local one on port 8081 (given as
/// Gateway objects with the same selector).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_envoy_serves_external_and_local_on_two_ports() {
    let b = Backend::start("shared-00001").await;
    let (ext_port, local_port) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write(
        "gateways.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: knative-ingress-gateway, namespace: knative-serving}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: cluster-local-gateway, namespace: knative-serving}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8081, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {ext_port}}}
  - {{name: http-local, port: 8081, targetPort: {local_port}}}
"#
        ),
    );
    dir.write(
        "shared.yaml",
        &format!(
            "{}---\n{}",
            revision_service("default", "shared-00001", &[b.port()], false),
            route("default", "shared", &[("shared-00001", 100, None)], false)
        ),
    );
    let server = serve_dir(&dir, &[]).await;
    let envoy = start_gateway(
        &server,
        "istio-ingressgateway-0",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    envoy.wait_ready(READY).await;
    wait_synced(&server, 0, 1).await;
    let mut names = envoy.listener_names().await;
    names.sort();
    let mut want = vec![
        format!("127.0.0.1_{ext_port}"),
        format!("127.0.0.1_{local_port}"),
    ];
    want.sort();
    assert_eq!(names, want);

    let r = http_get(ext_port, "shared.default.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("shared-00001")));
    let r = http_get(ext_port, "shared.default.svc.cluster.local", "/", &[]).await;
    assert_eq!(r.status, 404, "cluster-local host on the external port");
    let r = http_get(local_port, "shared.default.svc.cluster.local", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("shared-00001")));
    let r = http_get(local_port, "shared.default.example.com", "/", &[]).await;
    assert_eq!(r.status, 404, "external host on the local port");
}
