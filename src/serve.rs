//! `knative-pilot serve`: the runtime that ties the stages together.
//!
//! ```text
//!  files (notify) --debounce--> DirState reloads changed files --> Vec<Change> --> Hub::apply
//!                                                                                  |  translate
//!                                                                                  v  per proxy key
//!                                              watch::Sender<Arc<Snapshot>> per proxy key (labels)
//!                                                                                  |
//!                                              ADS streams (one state machine each) <- Envoys
//! ```
//!
//! A source (the manifest directory with `--from`, or the Kubernetes API with `--kube`:
//! [`crate::source::kube`], plus the KIngress status writer [`crate::status`]) only produces
//! [`Change`](crate::state::Change)s; the [`Hub`](crate::hub::Hub) owns what is served. The debug
//! HTTP server is in [`crate::debug`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::cli::ServeArgs;
use crate::hub::Hub;
use crate::source::dir::DirState;
use crate::source::files;
use crate::xds::server::{AdsService, ConnectionRegistry};

/// Runs `serve` on a fresh tokio runtime until SIGTERM or Ctrl-C.
pub fn run_blocking(args: ServeArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run(args, shutdown_signal()))
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {},
            r = tokio::signal::ctrl_c() => r?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    Ok(())
}

/// Serves until `shutdown` completes.
pub async fn run(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = anyhow::Result<()>> + Send,
) -> anyhow::Result<()> {
    let dir = match (&args.from, args.kube) {
        (_, true) => None,
        (Some(d), false) => {
            anyhow::ensure!(d.is_dir(), "--from {} is not a directory", d.display());
            Some(d.clone())
        }
        (None, false) => anyhow::bail!("serve needs --from DIR or --kube"),
    };
    let kube_client = if args.kube || args.xds_auth.kube_auth {
        Some(
            kube::Client::try_default()
                .await
                .context("--kube: no usable kubeconfig or in-cluster config")?,
        )
    } else {
        None
    };
    let hub = Hub::new(args.translate.options());
    let registry = Arc::new(ConnectionRegistry::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    // Listeners first, so that Envoys and probes find us; streams get Unavailable until ready.
    let xds_listener = if args.xds_addr == "off" {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&args.xds_addr)
                .await
                .with_context(|| format!("binding --xds-addr {}", args.xds_addr))?,
        )
    };
    let tls = bind_tls(&args.xds_auth).await?;
    anyhow::ensure!(
        xds_listener.is_some() || tls.is_some(),
        "--xds-addr off needs --tls-cert-file (no xDS listener otherwise)"
    );
    if tls.is_none() && args.kube {
        tracing::warn!("no TLS xDS listener (--tls-cert-file not given): no caller can be authenticated, so no secret is served");
    }
    let debug_listener = tokio::net::TcpListener::bind(&args.debug_addr)
        .await
        .with_context(|| format!("binding --debug-addr {}", args.debug_addr))?;
    let xds_local: Option<SocketAddr> =
        xds_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let tls_local: Option<SocketAddr> = tls.as_ref().map(|t| t.local_addr);
    let debug_local: SocketAddr = debug_listener.local_addr()?;

    let metrics = Arc::new(crate::metrics::Metrics::new());
    if kube_client.is_none() {
        tracing::info!("xDS auth: no Kubernetes API (--kube-auth not given): bearer tokens are verified only with --token-jwks-file; authenticated identities get the secrets of their own namespace without a SubjectAccessReview");
    }
    let mut authenticator =
        crate::xds::auth::Authenticator::new(args.xds_auth.auth_config(), kube_client.clone());
    if let Some(path) = &args.xds_auth.token_jwks_file {
        authenticator = authenticator.with_jwt(crate::xds::auth::jwt::JwtVerifier::from_file(
            path,
            args.xds_auth.token_audiences.clone(),
            args.xds_auth.token_issuer.clone(),
            args.xds_auth.trust_domain.clone(),
        )?);
    }
    let auth = Arc::new(authenticator);
    let ads = || {
        AdsService::new(hub.clone(), registry.clone())
            .with_shutdown(stop_rx.clone())
            .with_metrics(metrics.clone())
            .with_auth(auth.clone())
    };
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let builder = || {
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)))
    };
    let plain = xds_listener.map(|l| {
        builder()
            .add_service(ads().server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                stopped(stop_rx.clone()),
            )
    });
    let mut _cert_watcher = None;
    let secure = match tls {
        Some(t) => {
            _cert_watcher = Some(t.watcher);
            let m = metrics.clone();
            let incoming = crate::xds::auth::tls::incoming(
                t.listener,
                t.config,
                args.xds_auth.trust_domain.clone(),
                Arc::new(move |reason| m.record_auth_failure(reason)),
            );
            Some(
                builder()
                    // As istiod: streams move to a new connection every 30 minutes, so the
                    // identity and the SubjectAccessReview answer are taken again.
                    .max_connection_age(Duration::from_secs(30 * 60))
                    .max_connection_age_grace(Duration::from_secs(10))
                    .add_service(ads().server())
                    .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
            )
        }
        None => None,
    };
    let xds = async move {
        let (a, b) = tokio::join!(
            async move {
                match plain {
                    Some(p) => p.await,
                    None => Ok(()),
                }
            },
            async move {
                match secure {
                    Some(s) => s.await,
                    None => Ok(()),
                }
            }
        );
        a.and(b)
    };
    let mut debug_app = crate::debug::router(crate::debug::DebugState {
        hub: hub.clone(),
        registry: registry.clone(),
        metrics,
    });
    // With --kube, every replica tells the status writer how far its Envoys have got.
    let progress = Arc::new(crate::status::ProgressShared::default());
    if args.kube {
        debug_app = debug_app.merge(crate::status::router(progress.clone()));
    }
    let mut debug_stop = stop_rx.clone();
    let debug = axum::serve(debug_listener, debug_app).with_graceful_shutdown(async move {
        let _ = debug_stop.wait_for(|s| *s).await;
    });

    let Some(dir) = dir else {
        // The kube source: watchers (and, unless --no-status, the status writer).
        let client = kube_client.context("kube client")?;
        announce(xds_local, tls_local, debug_local);
        let xds_task = tokio::spawn(xds);
        let debug_task = tokio::spawn(async move { debug.await });
        let source = tokio::spawn(crate::source::kube::run(
            client.clone(),
            args.namespace.clone(),
            hub.clone(),
            args.debounce_after,
            args.debounce_max,
            args.missing_retry,
        ));
        let status = (!args.status.no_status).then(|| {
            tokio::spawn(crate::status::run(
                client,
                hub.clone(),
                registry.clone(),
                args.status.clone(),
                progress.clone(),
                stop_rx.clone(),
            ))
        });
        let result = shutdown.await;
        let _ = stop_tx.send(true);
        source.abort();
        if let Some(s) = status {
            // It releases the Lease if it holds it.
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = xds_task.await;
            let _ = debug_task.await;
        })
        .await;
        return result;
    };

    // The file watcher feeds changed paths into the debounce loop.
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Option<PathBuf>>();
    let mut watcher = {
        use notify::Watcher;
        let tx = ev_tx.clone();
        let root = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let mut w =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(ev) => {
                    if matches!(ev.kind, notify::EventKind::Access(_)) {
                        return;
                    }
                    if ev.need_rescan() {
                        let _ = tx.send(None);
                    }
                    for p in ev.paths {
                        let Ok(rel) = p.strip_prefix(&root).map(|r| r.to_path_buf()) else {
                            continue;
                        };
                        let hidden = rel
                            .components()
                            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
                        if files::is_manifest(&rel) {
                            let _ = tx.send(Some(rel));
                        } else if !hidden
                            && !rel.as_os_str().is_empty()
                            && (p.is_dir() || (!p.exists() && rel.extension().is_none()))
                        {
                            // A directory came or went: rescan.
                            let _ = tx.send(None);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "file watch error; rescanning");
                    let _ = tx.send(None);
                }
            })
            .context("starting the file watcher")?;
        w.watch(&dir, notify::RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        w
    };

    announce(xds_local, tls_local, debug_local);

    let xds_task = tokio::spawn(xds);
    let debug_task = tokio::spawn(async move { debug.await });

    // The first full load. Until it is translated, streams are answered Unavailable and
    // /ready says 503: an Envoy never gets an empty config because we just started.
    let load_dir = dir.clone();
    let (state, changes, errors) = tokio::task::spawn_blocking(move || {
        let mut state = DirState::default();
        let changes = state.reload(&load_dir, None);
        let errors = state.errors();
        (state, changes, errors)
    })
    .await
    .context("initial load")?;
    tracing::info!(objects = changes.len(), errors = errors.len(), dir = %dir.display(), "initial load");
    let hub2 = hub.clone();
    tokio::task::spawn_blocking(move || hub2.apply(changes, errors))
        .await
        .context("initial translation")?;
    let reload_task = tokio::spawn(reload_loop(
        dir.clone(),
        state,
        hub.clone(),
        ev_rx,
        args.debounce_after,
        args.debounce_max,
    ));
    let result = shutdown.await;
    let _ = stop_tx.send(true);
    reload_task.abort();
    // Streams end on the stop signal; give the servers a moment to finish writing.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = xds_task.await;
        let _ = debug_task.await;
    })
    .await;
    watcher_unwatch(&mut watcher, &dir);
    result
}

/// Prints the listening lines (tests and the demo read the ports from them).
fn announce(xds_local: Option<SocketAddr>, tls_local: Option<SocketAddr>, debug_local: SocketAddr) {
    if let Some(a) = xds_local {
        println!("xds listening on {a}");
    }
    if let Some(a) = tls_local {
        println!("xds-tls listening on {a}");
    }
    println!("debug listening on {debug_local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(?xds_local, ?tls_local, %debug_local, "serving");
}

/// The TLS xDS listener's parts (see [`bind_tls`]).
pub struct TlsListener {
    pub listener: tokio::net::TcpListener,
    pub local_addr: SocketAddr,
    pub config: Arc<rustls::ServerConfig>,
    pub watcher: notify::RecommendedWatcher,
}

/// Binds `--xds-tls-addr` and loads the certificate (watched for changes) when
/// `--tls-cert-file` is given.
async fn bind_tls(args: &crate::cli::XdsAuthArgs) -> anyhow::Result<Option<TlsListener>> {
    use crate::xds::auth::tls;
    let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
        return Ok(None);
    };
    let reloading = tls::ReloadingCert::load(tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    })?;
    let watcher = reloading.watch()?;
    let config = tls::server_config(reloading, args.client_ca_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&args.xds_tls_addr)
        .await
        .with_context(|| format!("binding --xds-tls-addr {}", args.xds_tls_addr))?;
    Ok(Some(TlsListener {
        local_addr: listener.local_addr()?,
        listener,
        config,
        watcher,
    }))
}

fn watcher_unwatch(w: &mut notify::RecommendedWatcher, dir: &Path) {
    use notify::Watcher;
    let _ = w.unwatch(dir);
}

/// Debounces file events (`quiet` after the last one, at most `max` after the first), then
/// reloads the changed files and publishes.
async fn reload_loop(
    dir: PathBuf,
    mut state: DirState,
    hub: Arc<Hub>,
    mut events: mpsc::UnboundedReceiver<Option<PathBuf>>,
    quiet: Duration,
    max: Duration,
) {
    loop {
        let Some(first) = events.recv().await else {
            return;
        };
        let started = Instant::now();
        let mut changed: BTreeSet<PathBuf> = BTreeSet::new();
        let mut rescan = false;
        let mut note = |e: Option<PathBuf>, changed: &mut BTreeSet<PathBuf>| match e {
            Some(p) => {
                changed.insert(p);
            }
            None => rescan = true,
        };
        note(first, &mut changed);
        let mut last = Instant::now();
        loop {
            let deadline = (last + quiet).min(started + max);
            match tokio::time::timeout_at(deadline.into(), events.recv()).await {
                Ok(Some(e)) => {
                    note(e, &mut changed);
                    last = Instant::now();
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        // Reading and translating is CPU work: keep it off the async workers' hot path.
        tokio::task::block_in_place(|| {
            let changes = if rescan {
                state.reload(&dir, None)
            } else {
                state.reload(&dir, Some(&changed))
            };
            let errors = state.errors();
            tracing::info!(
                files = changed.len(),
                rescan,
                changes = changes.len(),
                "inputs changed"
            );
            hub.apply(changes, errors);
        });
    }
}
