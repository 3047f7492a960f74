//! TLS termination at the external gateway: a KIngress (our class) with `spec.tls` and
//! `httpOption: Redirected`. Envoy gets the certificate over SDS (`kubernetes://ns/name`, through
//! ADS), selects the filter chain by SNI, and plain HTTP answers 301 to https. The HTTPS client
//! is rustls (`common::tls`: a real TLS client with SNI).

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_sni_with_sds_secret_and_http_redirects() {
    let b = Backend::start("secure-00001").await;
    let (http_port, https_port, local_port) = (free_port(), free_port(), free_port());
    let dir = ManifestDir::new();
    dir.write(
        "gateways.yaml",
        &gateway_services_with(http_port, Some(https_port), local_port),
    );
    dir.write("secret.yaml", &testdata_secret_yaml());
    dir.write(
        "rev.yaml",
        &revision_service("default", "secure-00001", &[b.port()], false),
    );
    dir.write(
        "kingress.yaml",
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: secure
  namespace: default
  annotations: {networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}
spec:
  httpOption: Redirected
  tls:
  - hosts: [secure.default.example.com]
    secretName: secure-tls
    secretNamespace: default
  rules:
  - hosts: [secure.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: secure-00001, servicePort: 80, percent: 100}
"#,
    );
    let server = Server::start(&[
        "--from",
        dir.path().to_str().unwrap(),
        "--bind-address",
        "127.0.0.1",
    ])
    .await;
    let envoy = start_gateway(
        &server,
        "istio-ingressgateway-0",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    envoy.wait_ready(Duration::from_secs(30)).await;
    wait_synced(&server, 0, 1).await;

    // Plain HTTP: 301 to https.
    let r = http_get(http_port, "secure.default.example.com", "/path", &[]).await;
    assert_eq!(r.status, 301, "{:?}", r.headers);
    assert_eq!(
        r.header("location"),
        Some("https://secure.default.example.com/path")
    );

    // HTTPS by SNI with the certificate served over SDS: the presented certificate is the
    // Secret's, byte for byte (pinned; its handshake signature is verified).
    let host = "secure.default.example.com";
    let secret_cert = secret_certificate(&testdata_secret_yaml());
    let r = https_get(
        https_port,
        host,
        "/tls",
        &Trust::Pinned(secret_cert.clone()),
    )
    .await;
    assert_eq!(r.response.status, 200, "{}", r.response.body);
    assert_eq!(r.response.backend(), Some("secure-00001"));
    assert_eq!(
        r.peer_certificates.first().map(|c| c.as_ref()),
        Some(secret_cert.as_ref())
    );
    // Another SNI gets no certificate of this host: the handshake does not end in this Secret.
    let other = try_https_get(
        https_port,
        "other.default.example.com",
        "/",
        &Trust::Pinned(secret_cert),
    )
    .await;
    assert!(
        other.is_err(),
        "an unknown SNI was served the Secret's certificate"
    );
    // The secret reached Envoy through SDS, named as Istio names it.
    let dump = envoy.config_dump().await.to_string();
    assert!(
        dump.contains("kubernetes://default/secure-tls"),
        "secret not in Envoy's config dump"
    );
}
