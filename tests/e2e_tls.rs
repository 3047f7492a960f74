//! TLS termination at the external gateway: a KIngress (our class) with `spec.tls` and
//! `httpOption: Redirected`. Envoy gets the certificate over SDS (`kubernetes://ns/name`, through
//! ADS), selects the filter chain by SNI, and plain HTTP answers 301 to https. The HTTPS client
//! is the system `curl` (a real TLS client with SNI).

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::*;
use common::*;

fn secret_yaml() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/tls-redirect/input/secret.yaml"
    ))
    .expect("secret fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_sni_with_sds_secret_and_http_redirects() {
    let b = Backend::start("secure-00001").await;
    let (http_port, https_port, local_port) = (free_port(), free_port(), free_port());
    let dir = ManifestDir::new();
    dir.write(
        "gateways.yaml",
        &gateway_services_with(http_port, Some(https_port), local_port),
    );
    dir.write("secret.yaml", &secret_yaml());
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

    // HTTPS by SNI with the certificate served over SDS.
    let host = "secure.default.example.com";
    let out = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{ssl_verify_result}",
        ])
        .args(["--resolve", &format!("{host}:{https_port}:127.0.0.1")])
        .arg(format!("https://{host}:{https_port}/tls"))
        .output()
        .expect("curl (a real TLS client) must be installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.trim_end().ends_with("200 18") || text.trim_end().ends_with("200 0"),
        "curl: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"backend\":\"secure-00001\""), "{text}");
    // The certificate Envoy presents is the Secret's (its subject names the host).
    let out = Command::new("curl")
        .args(["-sS", "-k", "-v", "--max-time", "10", "-o", "/dev/null"])
        .args(["--resolve", &format!("{host}:{https_port}:127.0.0.1")])
        .arg(format!("https://{host}:{https_port}/"))
        .output()
        .expect("curl");
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("CN=secure.default.example.com"),
        "{verbose}"
    );
    // The secret reached Envoy through SDS, named as Istio names it.
    let dump = envoy.config_dump().await.to_string();
    assert!(
        dump.contains("kubernetes://default/secure-tls"),
        "secret not in Envoy's config dump"
    );
}
