//! The TLS xDS listener: server certificate re-read when its files change (new handshakes get the
//! new one, open connections keep theirs), optional client certificates verified against a CA
//! bundle (rustls `WebPkiClientVerifier`: chain, validity period, key usage), and the caller's
//! SPIFFE identity attached to each connection for the ADS service.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::identity::{Identity, IdentityError};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors setting up TLS (file names, never file contents).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the server certificate chain and its key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The certificate chain and key from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    // The parse error names the problem, not the key bytes.
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| file_err(key, e))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        TlsError::Config(format!(
            "{} and {} do not match: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(ck)
}

/// The server certificate, replaceable while serving.
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ReloadingCert {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let ck = load_certified_key(&files.cert, &files.key)?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new(Arc::new(ck)),
        }))
    }

    /// Re-reads the files; keeps the current certificate if they do not load (a rotation caught
    /// half-way through writing them).
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load_certified_key(&self.files.cert, &self.files.key)?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.cert != ck.cert {
            *cur = Arc::new(ck);
            tracing::info!(cert = %self.files.cert.display(), "xDS TLS: new server certificate loaded");
        }
        Ok(())
    }

    /// Re-reads the files whenever something in their directories changes (cert-manager and
    /// kubelet replace them through a symlink swap), quietly after a burst of events. The watcher
    /// lives as long as the returned value.
    pub fn watch(self: &Arc<Self>) -> Result<notify::RecommendedWatcher, TlsError> {
        use notify::Watcher;
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        })
        .map_err(|e| TlsError::Config(format!("file watcher: {e}")))?;
        let mut dirs: Vec<PathBuf> = [&self.files.cert, &self.files.key]
            .iter()
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            })
            .collect();
        dirs.dedup();
        for d in &dirs {
            w.watch(d, notify::RecursiveMode::NonRecursive)
                .map_err(|e| file_err(d, e))?;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let the writer finish (cert and key are two files).
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
                let Some(me) = me.upgrade() else { return };
                if let Err(e) = me.reload() {
                    tracing::warn!(error = %e, "xDS TLS: server certificate files changed but do not load; keeping the current one");
                }
            }
        });
        Ok(w)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The rustls server configuration: h2 only, our reloading certificate, and client certificates
/// optional but verified against `client_ca` when presented (a caller may authenticate with a
/// token instead); without `client_ca` none are asked for (tokens only).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(path)? {
                roots.add(c).map_err(|e| file_err(path, e))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// What the TLS listener knows about a connection; tonic puts it in each request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// `None`: no client certificate. `Some(Err)`: a verified certificate without a usable
    /// SPIFFE identity.
    pub client_identity: Option<Result<Identity, IdentityError>>,
}

/// One accepted TLS connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Called with a short reason for every failed handshake (for a metric).
pub type FailureHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Accepts TCP connections, runs each handshake in its own task (a slow client never holds up
/// the others) and yields the finished ones. Failed handshakes (no or bad client certificate
/// chain, expired, wrong protocol) are logged and reported to `on_failure`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    trust_domain: String,
    on_failure: FailureHook,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "xDS TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, td, on_failure) = (
                acceptor.clone(),
                tx.clone(),
                trust_domain.clone(),
                on_failure.clone(),
            );
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%remote, error = %e, "xDS TLS handshake failed");
                        on_failure("tls_handshake");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "xDS TLS handshake timed out");
                        on_failure("tls_handshake");
                        return;
                    }
                };
                let client_identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|leaf| Identity::from_certificate(leaf, &td));
                let info = PeerInfo {
                    remote: Some(remote),
                    client_identity,
                };
                let _ = tx.send(Ok(TlsConn { inner: tls, info })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
