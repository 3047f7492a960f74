//! TLS termination at the external gateway: a KIngress (our class) with `spec.tls` and
//! `httpOption: Redirected`. Envoy gets the certificate over SDS (`kubernetes://ns/name`, through
//! ADS), selects the filter chain by SNI, and plain HTTP answers 301 to https. The HTTPS client
//! is rustls (`common::tls`: a real TLS client with SNI).
//!
//! Secrets go only to authenticated callers of their own namespace whose service account may
//! list secrets there (issue 11): Envoy connects to the TLS xDS port with a client certificate
//! (`spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway`, test CA made by rcgen) or
//! with a bearer token (gRPC initial metadata), checked by the fake API server's TokenReview and
//! SubjectAccessReview; a plaintext Envoy gets everything but the secret.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::*;
use common::fake_apiserver::FakeApiServer;
use common::pki::{der_of, presented_cert, Ca, Pem, SERVER_NAME};
use common::*;

const GW_SA: &str = "system:serviceaccount:istio-system:istio-ingressgateway";
const HOST: &str = SECURE_HOST;

struct Setup {
    _backend: Backend,
    dir: ManifestDir,
    api: FakeApiServer,
    server: Server,
    ca: Ca,
    certs: tempfile::TempDir,
    http_port: u16,
    https_port: u16,
}

async fn setup() -> Setup {
    let b = Backend::start("secure-00001").await;
    let SecureSite {
        dir,
        http_port,
        https_port,
        ..
    } = secure_site(b.port(), Some("Redirected"));
    let ca = Ca::new("mesh root");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.server("server-v1").write(certs.path(), "server");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let api = FakeApiServer::start().await;
    api.grant(GW_SA, "list", "secrets", "istio-system");
    let kubeconfig = api.kubeconfig("pilot");
    let mut args = common::pki::tls_serve_args(dir.path(), &cert, &key, &ca_file);
    args.push("--kube-auth".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_env(&args, &[("KUBECONFIG", kubeconfig.as_str())]).await;
    Setup {
        _backend: b,
        dir,
        api,
        server,
        ca,
        certs,
        http_port,
        https_port,
    }
}

impl Setup {
    /// The gateway Envoy over TLS: with a client certificate (`mtls`) or a bearer token.
    async fn envoy(&self, pod: &str, mtls: bool, token: Option<&str>) -> Envoy {
        let client_cert = mtls.then(|| {
            let (c, k) = self
                .ca
                .client("istio-system", "istio-ingressgateway")
                .write(self.certs.path(), &format!("client-{pod}"));
            (path(&c), path(&k))
        });
        let mut params = BootstrapParams::new(self.server.xds_tls_port())
            .api_type(ApiType::DeltaGrpc)
            .pod(pod, "istio-system")
            .labels(EXTERNAL_LABELS)
            .xds_tls(XdsTls {
                ca: path(&self.certs.path().join("ca.crt")),
                server_name: SERVER_NAME.to_string(),
                client_cert,
            });
        if let Some(t) = token {
            params = params.bearer_token(t);
        }
        Envoy::start(&render_bootstrap(&params)).await
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// The Secret's certificate (what Envoy must present for HOST).
fn secret_cert() -> rustls::pki_types::CertificateDer<'static> {
    secret_certificate(&secure_secret_yaml())
}

/// GET https://HOST/tls through the gateway (the Secret's certificate pinned): 200 from the
/// backend, presenting exactly the Secret's certificate.
async fn assert_https_ok(https_port: u16) {
    let cert = secret_cert();
    let r = https_get(https_port, HOST, "/tls", &Trust::Pinned(cert.clone())).await;
    assert_eq!(r.response.status, 200, "{}", r.response.body);
    assert_eq!(r.response.backend(), Some("secure-00001"));
    assert_eq!(
        r.peer_certificates.first().map(|c| c.as_ref()),
        Some(cert.as_ref())
    );
}

/// Whether HTTPS to HOST answers 200 from the backend now.
async fn https_works(https_port: u16) -> bool {
    try_https_get(https_port, HOST, "/tls", &Trust::Pinned(secret_cert()))
        .await
        .is_ok_and(|r| r.response.status == 200 && r.response.backend() == Some("secure-00001"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_sni_with_sds_secret_over_mtls_xds_and_http_redirects() {
    let s = setup().await;
    let envoy = s.envoy("istio-ingressgateway-0", true, None).await;
    envoy.wait_ready(Duration::from_secs(30)).await;
    wait_synced(&s.server, 0, 1).await;

    // Plain HTTP: 301 to https.
    let r = http_get(s.http_port, HOST, "/path", &[]).await;
    assert_eq!(r.status, 301, "{:?}", r.headers);
    assert_eq!(
        r.header("location"),
        Some("https://secure.default.example.com/path")
    );

    // HTTPS by SNI with the certificate served over SDS: the presented certificate is the
    // Secret's, byte for byte (pinned; its handshake signature is verified).
    assert_https_ok(s.https_port).await;
    // Another SNI gets no certificate of this host.
    let other = try_https_get(
        s.https_port,
        "other.default.example.com",
        "/",
        &Trust::Pinned(secret_cert()),
    )
    .await;
    assert!(
        other.is_err(),
        "an unknown SNI was served the Secret's certificate"
    );
    // The secret reached Envoy through SDS, named as Istio names it.
    let dump = envoy.config_dump().await.to_string();
    assert!(
        dump.contains("kubernetes://istio-system/secure-tls"),
        "secret not in Envoy's config dump"
    );
    // The stream is listed with its identity.
    let conns = s.server.get_json("/debug/connections").await;
    assert_eq!(
        conns["connections"][0]["identity"],
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
        "{conns:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_bearer_token_over_tls_xds() {
    let s = setup().await;
    s.api.add_token("gw-projected-token", GW_SA, &["istio-ca"]);
    let envoy = s
        .envoy("istio-ingressgateway-0", false, Some("gw-projected-token"))
        .await;
    envoy.wait_ready(Duration::from_secs(30)).await;
    wait_synced(&s.server, 0, 1).await;
    eventually(Duration::from_secs(15), "HTTPS served", || async {
        https_works(s.https_port).await
    })
    .await;
    assert_https_ok(s.https_port).await;
    let (tr, sar) = s.api.review_counts();
    assert!(
        tr >= 1 && sar >= 1,
        "TokenReview {tr}, SubjectAccessReview {sar}"
    );
    assert!(!s.server.logs().contains("gw-projected-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_envoy_gets_listeners_but_no_secret() {
    let s = setup().await;
    let params = BootstrapParams::new(s.server.xds_port())
        .api_type(ApiType::DeltaGrpc)
        .pod("istio-ingressgateway-0", "istio-system")
        .labels(EXTERNAL_LABELS);
    let envoy = Envoy::start(&render_bootstrap(&params)).await;
    // It gets its listeners, but the HTTPS one waits for a secret that never comes (as with
    // istiod's plaintext port), so the Envoy stays INITIALIZING.
    eventually(Duration::from_secs(30), "the denial counted", || async {
        s.server.get("/metrics").await.is_ok_and(|r| {
            r.body
                .contains("knative_pilot_sds_denied{reason=\"unauthenticated\"} 1")
        })
    })
    .await;
    eventually(Duration::from_secs(30), "listeners received", || async {
        envoy
            .config_dump()
            .await
            .to_string()
            .contains("dynamic_warming_listeners")
            || envoy
                .config_dump()
                .await
                .to_string()
                .contains("dynamic_listeners")
    })
    .await;
    let dump = envoy.config_dump().await;
    let secrets = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("SecretsConfigDump"))
        })
        .cloned()
        .unwrap_or_default();
    assert!(
        secrets["dynamic_active_secrets"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "a plaintext Envoy got a secret: {secrets:#}"
    );
    assert!(
        secrets
            .to_string()
            .contains("kubernetes://istio-system/secure-tls"),
        "the secret is asked for (warming): {secrets:#}"
    );
    assert!(
        !https_works(s.https_port).await,
        "HTTPS served without a secret"
    );
    let conns = s.server.get_json("/debug/syncz").await;
    assert_eq!(
        conns["connections"][0]["denied_secrets"]["kubernetes://istio-system/secure-tls"],
        "unauthenticated",
        "{conns:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_rotation_keeps_streams_and_serves_new_handshakes() {
    let s = setup().await;
    let envoy = s.envoy("istio-ingressgateway-0", true, None).await;
    envoy.wait_ready(Duration::from_secs(30)).await;
    let g = wait_synced(&s.server, 0, 1).await;
    assert_https_ok(s.https_port).await;
    let tls_port = s.server.xds_tls_port();
    let v1 = std::fs::read_to_string(s.certs.path().join("server.crt")).unwrap();
    assert_eq!(
        presented_cert(tls_port, &s.ca.cert_pem).await.unwrap(),
        der_of(&v1)
    );
    let conn_id =
        s.server.get_json("/debug/connections").await["connections"][0]["conn_id"].clone();

    // Rotate as cert-manager does: new files moved into place.
    let v2: Pem = s.ca.server("server-v2");
    let (tmp_c, tmp_k) = v2.write(s.certs.path(), "next");
    std::fs::rename(&tmp_k, s.certs.path().join("server.key")).unwrap();
    std::fs::rename(&tmp_c, s.certs.path().join("server.crt")).unwrap();
    eventually(
        Duration::from_secs(10),
        "new handshakes get the new certificate",
        || async { presented_cert(tls_port, &s.ca.cert_pem).await.ok() == Some(der_of(&v2.cert)) },
    )
    .await;
    // The Envoy's stream is the same one and still gets updates.
    let conns = s.server.get_json("/debug/connections").await;
    assert_eq!(conns["connections"][0]["conn_id"], conn_id, "{conns:#}");
    assert_https_ok(s.https_port).await;
    s.dir.write(
        "kingress2.yaml",
        &secure_kingress(Some("Redirected"))
            .replace("name: secure\n", "name: secure2\n")
            .replace("secure.default.example.com", "secure2.default.example.com"),
    );
    wait_synced(&s.server, g, 1).await;
    let conns = s.server.get_json("/debug/connections").await;
    assert_eq!(conns["connections"][0]["conn_id"], conn_id, "{conns:#}");
    assert_https_ok(s.https_port).await;
    // A gateway connecting now verifies the new certificate.
    let second = s.envoy("istio-ingressgateway-1", true, None).await;
    second.wait_ready(Duration::from_secs(30)).await;
    wait_synced(&s.server, g, 2).await;
    assert!(s.server.logs().contains("new server certificate loaded"));
}
