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

use super::config::{Debounce, KubeConfig, ServeConfig, SourceConfig};
use super::shutdown::{self, Stop};
use crate::hub::Hub;
use crate::source::Batch;
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
    let hub = Hub::new(config.translate.clone());
    let registry = Arc::new(ConnectionRegistry::default());
    let stop = Stop::new();
    // Listeners first, so that Envoys and probes find us; streams get Unavailable until ready.
    let xds_listener = TcpListener::bind(&config.xds_addr)
        .await
        .with_context(|| format!("binding --xds-addr {}", config.xds_addr))?;
    let debug_listener = TcpListener::bind(&config.debug_addr)
        .await
        .with_context(|| format!("binding --debug-addr {}", config.debug_addr))?;
    let addrs = (xds_listener.local_addr()?, debug_listener.local_addr()?);
    // With --kube, every replica tells the status writer how far its Envoys have got.
    let progress = Arc::new(super::status::ProgressShared::default());
    let servers = Servers {
        hub: hub.clone(),
        registry: registry.clone(),
        progress: matches!(prepared, Prepared::Kube(..)).then(|| progress.clone()),
    };
    let (batches, batch_rx) = mpsc::unbounded_channel::<Batch>();
    match prepared {
        Prepared::Kube(kube) => {
            let (client, kube) = *kube;
            announce(addrs);
            let servers = servers.spawn(xds_listener, debug_listener, &stop);
            let source = tokio::spawn(crate::source::kube::run(
                client.clone(),
                kube.namespaces.clone(),
                kube.missing_retry,
                batches,
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
            let servers = servers.spawn(xds_listener, debug_listener, &stop);
            let source = tokio::spawn(crate::source::dir::run(dir, events, batches));
            let debounce = spawn_debounce(&hub, batch_rx, config.debounce);
            let result = shutdown.await;
            stop.stop();
            source.abort();
            debounce.abort();
            shutdown::drain(servers, shutdown::GRACE).await;
            drop(watcher);
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

/// What the ADS and debug servers serve.
struct Servers {
    hub: Arc<Hub>,
    registry: Arc<ConnectionRegistry>,
    /// With `--kube`: this replica's per-KIngress progress, on `/debug/kingress_progress`.
    progress: Option<Arc<super::status::ProgressShared>>,
}

impl Servers {
    /// Starts the ADS server (its streams end on `stop`) and the debug HTTP server.
    fn spawn(self, xds: TcpListener, debug: TcpListener, stop: &Stop) -> Vec<JoinHandle<()>> {
        let metrics = Arc::new(super::metrics::Metrics::new());
        let ads = AdsService::new(self.hub.clone(), self.registry.clone())
            .with_shutdown(stop.receiver())
            .with_observer(metrics.clone());
        let xds = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads.server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(xds),
                stop.stopped(),
            );
        let mut app = super::debug::router(super::debug::DebugState {
            hub: self.hub,
            registry: self.registry,
            metrics,
        });
        if let Some(progress) = self.progress {
            app = app.merge(super::status::router(progress));
        }
        let debug = axum::serve(debug, app).with_graceful_shutdown(stop.stopped());
        vec![
            tokio::spawn(async move {
                let _ = xds.await;
            }),
            tokio::spawn(async move {
                let _ = debug.await;
            }),
        ]
    }
}

/// Prints the listening lines (tests and the demo read the ports from them).
fn announce((xds_local, debug_local): (SocketAddr, SocketAddr)) {
    println!("xds listening on {xds_local}");
    println!("debug listening on {debug_local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%xds_local, %debug_local, "serving");
}
