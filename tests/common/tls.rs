//! A real TLS client for end-to-end tests (rustls over tokio): HTTPS GETs with SNI to a gateway
//! on 127.0.0.1, returning the response and the certificate chain the server presented.
//!
//! The server's certificate is checked in one of two ways: against trusted roots (full WebPKI
//! verification, for CA-issued test certificates), or by pinning (the presented leaf must be
//! exactly the expected DER, and its handshake signature must verify), for the self-signed
//! certificates of Knative TLS secrets.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::client::{read_response, Response, REQUEST_TIMEOUT};

/// How the client decides to trust the server.
#[derive(Clone)]
pub enum Trust {
    /// The presented leaf certificate must be exactly this DER.
    Pinned(CertificateDer<'static>),
    /// WebPKI verification of the chain (and the host name) against these roots.
    Roots(Vec<CertificateDer<'static>>),
}

/// Certificates (DER) of a PEM text.
pub fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

/// The certificate (leaf, DER) of a Kubernetes TLS Secret manifest (`data["tls.crt"]`).
pub fn secret_certificate(secret_yaml: &str) -> CertificateDer<'static> {
    use base64::Engine;
    let v: serde_json::Value = serde_saphyr::from_str(secret_yaml).expect("secret yaml");
    let b64 = v["data"]["tls.crt"]
        .as_str()
        .expect("secret has data.tls.crt");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("tls.crt is base64");
    pem_certs(&pem).remove(0)
}

/// The TLS Secret of the `tls-redirect` golden case (`default/secure-tls`, a self-signed
/// certificate for `secure.default.example.com`) as YAML.
pub fn testdata_secret_yaml() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/tls-redirect/input/secret.yaml"
    ))
    .expect("secret fixture")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts a server whose leaf is the pinned certificate, verifying the handshake signature.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presented another certificate than the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls versions: {e}"))?;
    Ok(match trust {
        Trust::Pinned(cert) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                cert: cert.clone(),
                provider: provider(),
            }))
            .with_no_client_auth(),
        Trust::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store
                    .add(r.clone())
                    .map_err(|e| format!("bad root certificate: {e}"))?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    })
}

/// An HTTPS response and the certificates the server presented (leaf first).
pub struct TlsResponse {
    pub response: Response,
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// `GET https://{host}{path}` to 127.0.0.1:port, SNI `host`, HTTP/1.1 over TLS. Errors (refused,
/// handshake failure, untrusted certificate, timeout) are returned as strings.
pub async fn try_https_get(
    port: u16,
    host: &str,
    path: &str,
    trust: &Trust,
) -> Result<TlsResponse, String> {
    let fut = async {
        let config = client_config(trust)?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host} on port {port}: {e}"))?;
        let peer_certificates: Vec<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let (mut sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .uri(path)
            .header(hyper::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("bad request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("GET https://{host}{path}: {e}"))?;
        Ok(TlsResponse {
            response: read_response(resp).await?,
            peer_certificates,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| format!("GET https://{host}{path} on port {port}: timed out"))?
}

/// Like [`try_https_get`], panicking on an error.
pub async fn https_get(port: u16, host: &str, path: &str, trust: &Trust) -> TlsResponse {
    try_https_get(port, host, path, trust)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
