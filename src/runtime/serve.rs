//! `knative-pilot serve`: the runtime that ties the stages together.
//!
//! ```text
//!  source (dir: notify -> DirState reloads; kube: watchers -> KubeState)
//!     | Batch { changes, errors } on a channel
//!     v
//!  runtime::debounce (quiet / max) --> Hub::apply --> translate per proxy key
//!                                                     |
//!                                 watch::Sender<Arc<Snapshot>> per proxy key (labels)
//!                                                     |
//!                                 ADS streams (one state machine each) <- Envoys
//! ```
//!
//! A source (the manifest directory, or the Kubernetes API: [`crate::source::kube`], plus the
//! KIngress status writer [`super::status`]) only produces [`Change`](crate::state::Change)s; the
//! [`Hub`] owns what is served. The debug HTTP server is in [`super::debug`]; the stop signal and
//! the drain in [`super::shutdown`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{Debounce, KubeConfig, ServeConfig, SourceConfig, XdsAuthConfig};
use super::shutdown::{self, Stop};
use crate::hub::Hub;
use crate::source::Batch;
use crate::xds::auth::Authenticator;
use crate::xds::server::{AdsService, ConnectionRegistry};

/// Runs `serve` on a fresh tokio runtime until SIGTERM or Ctrl-C.
pub fn run_blocking(config: ServeConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run(config, shutdown::signal()))
}

/// The source, prepared before anything listens (so a bad `--from` or kubeconfig fails fast).
enum Prepared {
    Dir(PathBuf),
    Kube(Box<(kube::Client, KubeConfig)>),
}

/// Serves until `shutdown` completes.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = anyhow::Result<()>> + Send,
) -> anyhow::Result<()> {
    let prepared = match &config.source {
        SourceConfig::Dir(d) => {
            anyhow::ensure!(d.is_dir(), "--from {} is not a directory", d.display());
            Prepared::Dir(d.clone())
        }
        SourceConfig::Kube(k) => Prepared::Kube(Box::new((
            kube::Client::try_default()
                .await
                .context("--kube: no usable kubeconfig or in-cluster config")?,
            k.clone(),
        ))),
    };
    let hub = Hub::with_engine_limits(config.translate.clone(), config.engine_limits);
    let registry = Arc::new(ConnectionRegistry::default());
    let stop = Stop::new();
    // Listeners first, so that Envoys and probes find us; streams wait until their gateway is
    // translated (`--xds-not-ready-wait`).
    let listeners = Listeners::bind(&config).await?;
    let addrs = listeners.addrs()?;
    if listeners.tls.is_none() && matches!(prepared, Prepared::Kube(..)) {
        tracing::warn!("no TLS xDS listener (--tls-cert-file not given): no caller can be authenticated, so no secret is served");
    }
    let auth_client = match &prepared {
        Prepared::Kube(k) => Some(k.0.clone()),
        Prepared::Dir(_) if config.xds_auth.kube_auth => Some(
            kube::Client::try_default()
                .await
                .context("--kube-auth: no usable kubeconfig or in-cluster config")?,
        ),
        Prepared::Dir(_) => None,
    };
    // With --kube, every replica tells the status writer how far its Envoys have got.
    let progress = Arc::new(super::status::ProgressShared::default());
    let health = crate::source::Health::default();
    let servers = Servers {
        hub: hub.clone(),
        registry: registry.clone(),
        health: health.clone(),
        progress: matches!(prepared, Prepared::Kube(..)).then(|| progress.clone()),
        auth: Arc::new(authenticator(&config.xds_auth, auth_client)?),
        gateway_allow: crate::xds::auth::policy::GatewayAllowList::parse(
            &config.xds_auth.gateway_allow,
        )
        .map_err(|e| anyhow::anyhow!("--gateway-allow: {e}"))?,
        trust_domain: config.xds_auth.auth.trust_domain.clone(),
        limits: config.xds_limits,
        engine_grace: config.engine_limits.grace,
    };
    let (batches, batch_rx) = mpsc::unbounded_channel::<Batch>();
    match prepared {
        Prepared::Kube(kube) => {
            let (client, kube) = *kube;
            announce(addrs);
            let servers = servers.spawn(listeners, &stop);
            let source = tokio::spawn(crate::source::kube::run(
                client.clone(),
                kube.namespaces.clone(),
                kube.missing_retry,
                batches,
                health,
            ));
            let debounce = spawn_debounce(&hub, batch_rx, config.debounce);
            let status = kube.status.map(|status| {
                tokio::spawn(super::status::run(
                    client,
                    hub.clone(),
                    registry.clone(),
                    status,
                    progress,
                    stop.receiver(),
                ))
            });
            let result = shutdown.await;
            stop.stop();
            source.abort();
            debounce.abort();
            // It releases the Lease if it holds it.
            shutdown::drain(status.into_iter().collect(), shutdown::GRACE).await;
            // Streams end on the stop signal; give the servers a moment to finish writing.
            shutdown::drain(servers, shutdown::GRACE).await;
            result
        }
        Prepared::Dir(dir) => {
            // The watcher starts before the initial load, so no change is missed.
            let (watcher, events) = crate::source::dir::watch(&dir)
                .with_context(|| format!("watching {}", dir.display()))?;
            announce(addrs);
            let servers = servers.spawn(listeners, &stop);
            let source = tokio::spawn(crate::source::dir::run(
                dir, watcher, events, batches, health,
            ));
            let debounce = spawn_debounce(&hub, batch_rx, config.debounce);
            let result = shutdown.await;
            stop.stop();
            source.abort();
            debounce.abort();
            shutdown::drain(servers, shutdown::GRACE).await;
            result
        }
    }
}

fn spawn_debounce(
    hub: &Arc<Hub>,
    rx: mpsc::UnboundedReceiver<Batch>,
    window: Debounce,
) -> JoinHandle<()> {
    tokio::spawn(super::debounce::run(hub.clone(), rx, window))
}

/// The authenticator of both xDS listeners: TokenReview / SubjectAccessReview through `client`
/// when there is one, local JWT verification with `--token-jwks-file`.
fn authenticator(
    config: &XdsAuthConfig,
    client: Option<kube::Client>,
) -> anyhow::Result<Authenticator> {
    if client.is_none() {
        tracing::info!("xDS auth: no Kubernetes API (--kube-auth not given): bearer tokens are verified only with --token-jwks-file; authenticated identities get the secrets of their own namespace without a SubjectAccessReview");
    }
    let mut authenticator = Authenticator::new(config.auth.clone(), client);
    if let Some(path) = &config.token_jwks_file {
        authenticator = authenticator.with_jwt(crate::xds::auth::jwt::JwtVerifier::from_file(
            path,
            config.auth.audiences.clone(),
            config.token_issuer.clone(),
            config.auth.trust_domain.clone(),
        )?);
    }
    Ok(authenticator)
}

/// The bound listeners: plaintext xDS (unless off), TLS xDS (with a certificate), debug HTTP.
struct Listeners {
    plain: Option<TcpListener>,
    tls: Option<TlsListener>,
    debug: TcpListener,
}

/// The TLS xDS listener's parts (see [`Listeners::bind`]).
struct TlsListener {
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    /// Re-reads the certificate files when they change; dropped with the listener.
    watcher: notify::RecommendedWatcher,
}

impl Listeners {
    async fn bind(config: &ServeConfig) -> anyhow::Result<Listeners> {
        let plain = match &config.xds_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding --xds-addr {addr}"))?,
            ),
            None => None,
        };
        let tls = bind_tls(&config.xds_auth).await?;
        anyhow::ensure!(
            plain.is_some() || tls.is_some(),
            "--xds-addr off needs --tls-cert-file (no xDS listener otherwise)"
        );
        let debug = TcpListener::bind(&config.debug_addr)
            .await
            .with_context(|| format!("binding --debug-addr {}", config.debug_addr))?;
        Ok(Listeners { plain, tls, debug })
    }

    fn addrs(&self) -> anyhow::Result<Addrs> {
        Ok(Addrs {
            xds: self.plain.as_ref().map(|l| l.local_addr()).transpose()?,
            tls: self
                .tls
                .as_ref()
                .map(|t| t.listener.local_addr())
                .transpose()?,
            debug: self.debug.local_addr()?,
        })
    }
}

/// Binds `--xds-tls-addr` and loads the certificate (watched for changes) when
/// `--tls-cert-file` is given.
async fn bind_tls(config: &XdsAuthConfig) -> anyhow::Result<Option<TlsListener>> {
    use crate::xds::auth::tls;
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let reloading = tls::ReloadingCert::load(tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    })?;
    let watcher = reloading.watch()?;
    let server_config = tls::server_config(reloading, config.client_ca_file.as_deref())?;
    let listener = TcpListener::bind(&config.tls_addr)
        .await
        .with_context(|| format!("binding --xds-tls-addr {}", config.tls_addr))?;
    Ok(Some(TlsListener {
        listener,
        config: server_config,
        watcher,
    }))
}

/// What the ADS and debug servers serve.
struct Servers {
    hub: Arc<Hub>,
    registry: Arc<ConnectionRegistry>,
    /// The input source's health, for `/ready`.
    health: crate::source::Health,
    /// With `--kube`: this replica's per-KIngress progress, on `/debug/kingress_progress`.
    progress: Option<Arc<super::status::ProgressShared>>,
    auth: Arc<Authenticator>,
    gateway_allow: crate::xds::auth::policy::GatewayAllowList,
    trust_domain: String,
    limits: crate::xds::limits::Limits,
    /// `--xds-label-set-grace`: how often unused engines are collected follows from it.
    engine_grace: Duration,
}

impl Servers {
    /// Starts the ADS servers (plaintext and TLS; their streams end on `stop`) and the debug
    /// HTTP server.
    fn spawn(self, listeners: Listeners, stop: &Stop) -> Vec<JoinHandle<()>> {
        let metrics = Arc::new(super::metrics::Metrics::new());
        // One body cache for both listeners: a gateway's replicas may use either.
        let encoder = Arc::new(crate::xds::encoder::Encoder::new());
        let ads = || {
            AdsService::new(self.hub.clone(), self.registry.clone())
                .with_encoder(encoder.clone())
                .with_shutdown(stop.receiver())
                .with_observer(metrics.clone())
                .with_auth(self.auth.clone())
                .with_gateway_allow_list(self.gateway_allow.clone())
                .with_limits(self.limits)
        };
        let builder = || {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
        };
        let mut tasks = Vec::new();
        if let Some(l) = listeners.plain {
            let xds = builder()
                .add_service(ads().server())
                .serve_with_incoming_shutdown(
                    crate::xds::server::plain_incoming(l),
                    stop.stopped(),
                );
            tasks.push(tokio::spawn(async move {
                let _ = xds.await;
            }));
        }
        if let Some(t) = listeners.tls {
            let m = metrics.clone();
            let incoming = crate::xds::auth::tls::incoming(
                t.listener,
                t.config,
                self.trust_domain.clone(),
                Arc::new(move |reason| m.record_auth_failure(reason)),
            );
            let xds = builder()
                // As istiod: streams move to a new connection every 30 minutes, so the
                // identity and the SubjectAccessReview answer are taken again.
                .max_connection_age(Duration::from_secs(30 * 60))
                .max_connection_age_grace(Duration::from_secs(10))
                .add_service(ads().server())
                .serve_with_incoming_shutdown(incoming, stop.stopped());
            let watcher = t.watcher;
            tasks.push(tokio::spawn(async move {
                let _ = xds.await;
                drop(watcher);
            }));
        }
        tasks.push(tokio::spawn(collect_unused_engines(
            self.hub.clone(),
            self.engine_grace,
            stop.stopped(),
        )));
        let mut app = super::debug::router(super::debug::DebugState {
            hub: self.hub,
            registry: self.registry,
            metrics,
            source: self.health,
        });
        if let Some(progress) = self.progress {
            app = app.merge(super::status::router(progress));
        }
        let debug = axum::serve(listeners.debug, app).with_graceful_shutdown(stop.stopped());
        tasks.push(tokio::spawn(async move {
            let _ = debug.await;
        }));
        tasks
    }
}

/// Drops the engines of label sets no Envoy has used for `grace` (checked every quarter of it,
/// between 1 s and 1 min), until `stopped`.
async fn collect_unused_engines(
    hub: Arc<Hub>,
    grace: Duration,
    stopped: impl Future<Output = ()> + Send,
) {
    let mut every =
        tokio::time::interval((grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = every.tick() => {
                hub.collect_unused(std::time::Instant::now());
            }
        }
    }
}

/// The bound addresses.
struct Addrs {
    xds: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    debug: SocketAddr,
}

/// Prints the listening lines (tests and the demo read the ports from them).
fn announce(a: Addrs) {
    if let Some(x) = a.xds {
        println!("xds listening on {x}");
    }
    if let Some(t) = a.tls {
        println!("xds-tls listening on {t}");
    }
    println!("debug listening on {}", a.debug);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(xds = ?a.xds, tls = ?a.tls, debug = %a.debug, "serving");
}
