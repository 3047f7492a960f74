//! Test certificates made on the fly with rcgen (nothing private is committed): a CA, server
//! certificates for the TLS xDS listener, and SPIFFE client certificates (mTLS identities).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The name the test server certificates carry and Envoy verifies (as istiod's).
pub const SERVER_NAME: &str = "istiod.istio-system.svc";

/// `serve` arguments for a directory source with the TLS xDS listener on a free port: the
/// server certificate and key, client certificates checked against `ca`.
pub fn tls_serve_args(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    [
        "--from".to_string(),
        s(dir),
        "--bind-address".into(),
        "127.0.0.1".into(),
        "--xds-tls-addr".into(),
        "127.0.0.1:0".into(),
        "--tls-cert-file".into(),
        s(cert),
        "--tls-key-file".into(),
        s(key),
        "--client-ca-file".into(),
        s(ca),
    ]
    .into()
}

/// A certificate and its key, PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Pem {
    /// A `kubernetes.io/tls` Secret `ns/name` holding this pair, as YAML.
    pub fn secret_yaml(&self, ns: &str, name: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             type: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n",
            b64(&self.cert),
            b64(&self.key)
        )
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(self.cert.as_bytes())
            .expect("a certificate")
    }

    /// Writes `<name>.crt` and `<name>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &self.cert).expect("write cert");
        std::fs::write(&k, &self.key).expect("write key");
        (c, k)
    }
}

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl Ca {
    pub fn new(common_name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/<name>`; returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.cert_pem).expect("write ca");
        p
    }

    fn sign(&self, mut params: CertificateParams, common_name: &str) -> Pem {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `SERVER_NAME`, `localhost` and 127.0.0.1; `cn` tells versions apart.
    pub fn server(&self, cn: &str) -> Pem {
        let mut p = CertificateParams::new(vec![
            SERVER_NAME.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("params");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p, cn)
    }

    /// A server certificate for these DNS names (a gateway's TLS Secret).
    pub fn server_for(&self, hosts: &[&str], cn: &str) -> Pem {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("params");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p, cn)
    }

    /// A client certificate with the SPIFFE URI SAN `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub fn client(&self, ns: &str, sa: &str) -> Pem {
        self.client_uri(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"), false)
    }

    /// A client certificate with this URI SAN; `expired`: valid 2020-01-01..2021-01-01.
    pub fn client_uri(&self, uri: &str, expired: bool) -> Pem {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = vec![SanType::URI(uri.try_into().expect("ia5 uri"))];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.sign(p, "client")
    }
}

/// The leaf certificate (DER) the TLS server on 127.0.0.1:`port` presents to a new connection
/// (verified against `ca_pem` for `SERVER_NAME`).
pub async fn presented_cert(port: u16, ca_pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| "no server certificate".to_string())
}

/// The DER of a PEM certificate.
pub fn der_of(cert_pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("pem")
        .as_ref()
        .to_vec()
}
