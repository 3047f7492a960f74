//! Authenticated, authorized xDS (issue 11) against the real binary: the TLS listener with test
//! certificates (rcgen), client certificates and bearer tokens (TokenReview and
//! SubjectAccessReview by the fake API server, `--kube-auth`), and an in-process tonic ADS client
//! for every deny case, each asserting what the client receives. No response may carry a
//! private key unless the caller may have it.
//!
//! Here: client certificates (mTLS identities, refused certificates, plaintext and
//! unauthenticated callers, namespace checks). `tokens`: bearer tokens (TokenReview and its
//! cache, SubjectAccessReview denials, `--from` mode's key file) and refused callers beside
//! working streams.

#[path = "../common/mod.rs"]
mod common;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::*;
use common::fake_apiserver::FakeApiServer;
use common::pki::{Ca, Pem, SERVER_NAME};
use common::*;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const GW_SECRET: &str = "kubernetes://istio-system/gw-tls";
const DEFAULT_SECRET: &str = "kubernetes://default/other-tls";
const GW_SA: &str = "system:serviceaccount:istio-system:istio-ingressgateway";

fn base64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A kubernetes.io/tls Secret with a fresh certificate for `host`.
fn tls_secret(ns: &str, name: &str, ca: &Ca, host: &str) -> String {
    let pem = ca.server(host);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(pem.cert.as_bytes()),
        base64(pem.key.as_bytes())
    )
}

fn tls_kingress(name: &str, host: &str, secret_ns: &str, secret: &str) -> String {
    format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
  tls:
  - hosts: [{host}]
    secretName: {secret}
    secretNamespace: {secret_ns}
  rules:
  - hosts: [{host}]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {{serviceNamespace: default, serviceName: secure-00001, servicePort: 80, percent: 100}}
"#
    )
}

/// The fake API server, the server (plaintext and TLS, `--kube-auth`), and the CA.
struct Fixture {
    api: FakeApiServer,
    server: Server,
    ca: Ca,
    _certs: tempfile::TempDir,
    dir: ManifestDir,
}

impl Fixture {
    /// With `--kube-auth`, and `default` identities allowed the (knative-serving) Gateways too,
    /// so that the secret rules can be tested with a second namespace's identity.
    async fn start() -> Fixture {
        let certs = tempfile::tempdir().expect("tempdir");
        Self::start_with(
            certs,
            &[
                "--kube-auth",
                "--gateway-allow",
                "istio-system=knative-serving",
                "--gateway-allow",
                "default=knative-serving",
            ],
        )
        .await
    }

    /// With these flags instead of `--kube-auth` (the files they name go into `certs`).
    async fn start_with(certs: tempfile::TempDir, auth_args: &[&str]) -> Fixture {
        let backend_port = free_port();
        let ca = Ca::new("mesh root");
        let (cert, key) = ca.server("server-v1").write(certs.path(), "server");
        let ca_file = ca.write(certs.path(), "ca.crt");
        let (http_port, https_port, local_port) = (free_port(), free_port(), free_port());
        let dir = ManifestDir::new();
        dir.write(
            "gateways.yaml",
            &gateway_services_with(http_port, Some(https_port), local_port),
        );
        dir.write(
            "secrets.yaml",
            &format!(
                "{}---\n{}",
                tls_secret("istio-system", "gw-tls", &ca, "secure.default.example.com"),
                tls_secret("default", "other-tls", &ca, "other.default.example.com")
            ),
        );
        dir.write(
            "rev.yaml",
            &revision_service("default", "secure-00001", &[backend_port], false),
        );
        dir.write(
            "kingress.yaml",
            &format!(
                "{}---\n{}",
                tls_kingress(
                    "secure",
                    "secure.default.example.com",
                    "istio-system",
                    "gw-tls"
                ),
                tls_kingress("other", "other.default.example.com", "default", "other-tls")
            ),
        );
        let api = FakeApiServer::start().await;
        api.grant(GW_SA, "list", "secrets", "istio-system");
        api.grant(
            "system:serviceaccount:default:default",
            "list",
            "secrets",
            "default",
        );
        let kubeconfig = api.kubeconfig("pilot");
        let mut args = common::pki::tls_serve_args(dir.path(), &cert, &key, &ca_file);
        args.extend(auth_args.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_with_env(&args, &[("KUBECONFIG", kubeconfig.as_str())]).await;
        assert!(server.xds_tls_port() > 0, "{}", server.logs());
        eventually(Duration::from_secs(20), "server ready", || async {
            server.get("/ready").await.is_ok_and(|r| r.status == 200)
        })
        .await;
        Fixture {
            api,
            server,
            ca,
            _certs: certs,
            dir,
        }
    }
}

/// An istio-proxy node in `ns` with the external gateway's labels.
fn node(ns: &str) -> Node {
    common::node::istio_node(
        &format!("router~127.0.0.1~istio-ingressgateway-0.{ns}~{ns}.svc.cluster.local"),
        &[("istio", "ingressgateway")],
        &[("NAMESPACE", ns)],
    )
}

/// A channel over TLS (the server verified against `ca_pem`), with a client certificate if given.
async fn tls_channel(port: u16, ca_pem: &str, client: Option<&Pem>) -> Result<Channel, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some(p) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(p.cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("client cert");
            let key = PrivateKeyDer::from_pem_slice(p.key.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let name = ServerName::try_from(SERVER_NAME).expect("server name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn plain_channel(port: u16) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("plaintext connect")
}

/// An open SotW stream and its first response.
struct Stream {
    _tx: mpsc::Sender<DiscoveryRequest>,
    _rx: tonic::Streaming<DiscoveryResponse>,
    first: DiscoveryResponse,
}

/// Opens a SotW stream asking for `type_url` (`names`) as `node`; the first response, or the
/// status the stream ended with.
async fn fetch(
    channel: Channel,
    node: Node,
    type_url: &str,
    names: &[&str],
    token: Option<&str>,
) -> Result<Stream, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("queue request");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        client.stream_aggregated_resources(request),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("no response headers in 10 s"))??
    .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response in 10 s"))??
        .ok_or_else(|| tonic::Status::aborted("stream closed without a response"))?;
    Ok(Stream {
        _tx: tx,
        _rx: stream,
        first,
    })
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    r.resources
        .iter()
        .map(|a| {
            Secret::decode(a.value.as_slice())
                .map(|s| s.name)
                .unwrap_or_default()
        })
        .collect()
}

/// No private key in the response.
fn assert_no_key(r: &DiscoveryResponse) {
    let bytes = r.encode_to_vec();
    assert!(
        !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
        "a private key was sent"
    );
}

async fn metric(server: &Server, line_prefix: &str) -> u64 {
    let m = server.get("/metrics").await.expect("metrics").body;
    m.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_identity_gets_its_own_namespace_secret_only() {
    let f = Fixture::start().await;
    let cert = f.ca.client("istio-system", "istio-ingressgateway");
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(&cert))
        .await
        .expect("mTLS connect");
    let st = fetch(
        ch.clone(),
        node("istio-system"),
        SECRET,
        &[GW_SECRET, DEFAULT_SECRET],
        None,
    )
    .await
    .expect("stream");
    // Its namespace's secret, with the key; the other namespace's is simply not sent.
    assert_eq!(names(&st.first), vec![GW_SECRET.to_string()]);
    assert!(st
        .first
        .encode_to_vec()
        .windows(11)
        .any(|w| w == b"PRIVATE KEY"));
    // Other types as usual.
    let cds = fetch(ch, node("istio-system"), CLUSTER, &[], None)
        .await
        .expect("cds");
    assert!(!cds.first.resources.is_empty());
    // The debug endpoints show the identity and the denial; the metric counts it.
    let conns = f.server.get_json("/debug/syncz").await;
    let text = conns.to_string();
    assert!(
        text.contains("spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"),
        "{conns:#}"
    );
    assert!(
        text.contains("\"kubernetes://default/other-tls\":\"other_namespace\""),
        "{conns:#}"
    );
    // Counted once per stream and secret (two streams).
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_sds_denied{reason=\"other_namespace\"}"
        )
        .await,
        2
    );
    let logs = f.server.logs();
    assert!(logs.contains("secrets not sent to this caller"), "{logs}");
    assert!(!logs.contains("PRIVATE KEY"));
    // One SubjectAccessReview for both streams (cached).
    assert_eq!(f.api.review_counts(), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_caller_never_gets_a_secret() {
    let f = Fixture::start().await;
    let ch = plain_channel(f.server.xds_port()).await;
    let st = fetch(ch.clone(), node("istio-system"), SECRET, &[GW_SECRET], None)
        .await
        .expect("plaintext stream is served");
    assert!(st.first.resources.is_empty(), "{:?}", names(&st.first));
    assert_no_key(&st.first);
    // Even with a valid identity's token: a plaintext caller is anonymous.
    f.api.add_token("good", GW_SA, &["istio-ca"]);
    let st2 = fetch(
        ch.clone(),
        node("istio-system"),
        SECRET,
        &[GW_SECRET],
        Some("good"),
    )
    .await
    .expect("stream");
    assert!(st2.first.resources.is_empty());
    let cds = fetch(ch, node("istio-system"), CLUSTER, &[], None)
        .await
        .expect("cds");
    assert!(!cds.first.resources.is_empty(), "other types are served");
    // Both secrets of the snapshot, on each of the three streams.
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_sds_denied{reason=\"unauthenticated\"}"
        )
        .await,
        6
    );
    let conns = f.server.get_json("/debug/connections").await;
    assert!(
        conns["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["identity"].is_null()),
        "{conns:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_certificate_or_token_is_unauthenticated() {
    let f = Fixture::start().await;
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, None)
        .await
        .expect("TLS connect (client certificates are optional)");
    let err = fetch(ch, node("istio-system"), SECRET, &[GW_SECRET], None)
        .await
        .err()
        .expect("refused");
    eprintln!("client saw: {err:?}");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err
        .message()
        .contains("no client certificate and no bearer token"));
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_xds_auth_failures{reason=\"no_credentials\"}"
        )
        .await,
        1
    );
}

/// A client certificate the server does not accept fails the TLS handshake: the client sees a
/// transport error, never a response.
async fn assert_handshake_refused(f: &Fixture, cert: &Pem, what: &str) {
    let res = match tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(cert)).await {
        Err(e) => Err(e),
        Ok(ch) => fetch(ch, node("istio-system"), SECRET, &[GW_SECRET], None)
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
    };
    let err = res.err().unwrap_or_else(|| panic!("{what}: was served"));
    eprintln!("{what}: client saw: {err}");
    eventually(
        Duration::from_secs(5),
        "handshake failure counted",
        || async {
            metric(
                &f.server,
                "knative_pilot_xds_auth_failures{reason=\"tls_handshake\"}",
            )
            .await
                >= 1
        },
    )
    .await;
    assert!(f.server.logs().contains("xDS TLS handshake failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let f = Fixture::start().await;
    let other = Ca::new("someone else");
    let cert = other.client("istio-system", "istio-ingressgateway");
    assert_handshake_refused(&f, &cert, "other CA").await;
    assert!(
        f.server.logs().contains("UnknownIssuer"),
        "{}",
        f.server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    let f = Fixture::start().await;
    let cert = f.ca.client_uri(
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
        true,
    );
    assert_handshake_refused(&f, &cert, "expired").await;
    assert!(
        f.server.logs().contains("certificate expired"),
        "{}",
        f.server.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_of_another_namespace_gets_not_this_namespaces_secret() {
    let f = Fixture::start().await;
    // A valid identity in `default` (whose SA may list secrets in default), node in default.
    let cert = f.ca.client("default", "default");
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(&cert))
        .await
        .expect("connect");
    let st = fetch(
        ch,
        node("default"),
        SECRET,
        &[GW_SECRET, DEFAULT_SECRET],
        None,
    )
    .await
    .expect("stream");
    assert_eq!(names(&st.first), vec![DEFAULT_SECRET.to_string()]);
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_sds_denied{reason=\"other_namespace\"}"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_claiming_another_namespaces_node_is_permission_denied() {
    let f = Fixture::start().await;
    let cert = f.ca.client("default", "default");
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(&cert))
        .await
        .expect("connect");
    let err = fetch(ch.clone(), node("istio-system"), SECRET, &[GW_SECRET], None)
        .await
        .err()
        .expect("refused");
    eprintln!("client saw: {err:?}");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err
        .message()
        .contains("spiffe://cluster.local/ns/default/sa/default"));
    let logs = f.server.logs();
    assert!(
        logs.contains("ADS stream refused: the node is not the caller's")
            && logs.contains("istio-ingressgateway-0.istio-system"),
        "{logs}"
    );
    // A token identity likewise; the token itself is never logged.
    f.api.add_token(
        "secret-token-value",
        "system:serviceaccount:default:default",
        &["istio-ca"],
    );
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, None)
        .await
        .expect("connect");
    let err = fetch(
        ch,
        node("istio-system"),
        SECRET,
        &[GW_SECRET],
        Some("secret-token-value"),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(!f.server.logs().contains("secret-token-value"));
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_xds_auth_failures{reason=\"node_mismatch\"}"
        )
        .await,
        2
    );
}
