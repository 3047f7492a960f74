//! `knative-pilot serve`: the runtime that ties the stages together.
//!
//! ```text
//!  files (notify) --debounce--> reload changed files --> Inputs --> Hub::update
//!                                                                   |  translate per proxy key
//!                                                                   v
//!                                         watch::Sender<Arc<Snapshot>> per proxy key (labels)
//!                                                                   |
//!                                   ADS streams (one state machine each) <- Envoys
//! ```
//!
//! The [`Hub`] is the xDS cache: for every distinct set of proxy labels that has connected, the
//! latest snapshot in a `watch` channel (which holds only the latest value: a slow Envoy never
//! makes a queue grow). Until the first full load is translated the hub is not ready, streams are
//! answered `Unavailable` and `/ready` says 503.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::ServeArgs;
use crate::model::ObjectKey;
use crate::source::files::{self, Loaded};
use crate::source::{InputError, Sourced};
use crate::state::Inputs;
use crate::translate::{self, Options};
use crate::xds::server::{AdsService, ConnectionRegistry};
use crate::xds::{cache, ConfigSource, ProxyIdentity, Snapshot};

/// Labels identify what a proxy gets: proxies with equal labels share one snapshot channel.
type ProxyKey = BTreeMap<String, String>;

/// The xDS cache and the current inputs.
pub struct Hub {
    opts: Options,
    ready: AtomicBool,
    generation: AtomicU64,
    inputs: RwLock<Arc<Inputs>>,
    errors: RwLock<Vec<InputError>>,
    proxies: Mutex<BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>>,
    /// The last version of each object that translated without error.
    last_good: Mutex<BTreeMap<ObjectKey, Arc<crate::state::Entry>>>,
}

impl Hub {
    pub fn new(opts: Options) -> Arc<Hub> {
        Arc::new(Hub {
            opts,
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            inputs: RwLock::new(Arc::new(Inputs::default())),
            errors: RwLock::new(Vec::new()),
            proxies: Mutex::new(BTreeMap::new()),
            last_good: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn inputs(&self) -> Arc<Inputs> {
        self.inputs.read().map(|i| i.clone()).unwrap_or_default()
    }

    pub fn errors(&self) -> Vec<InputError> {
        self.errors.read().map(|e| e.clone()).unwrap_or_default()
    }

    fn translate_for(
        &self,
        inputs: &Inputs,
        labels: &ProxyKey,
        generation: u64,
    ) -> (Snapshot, Vec<InputError>) {
        let t = translate::translate(inputs, &self.opts, labels);
        (cache::snapshot(generation, &t.config), t.errors)
    }

    /// The snapshot a proxy with these labels would get now (for debug endpoints).
    pub fn snapshot_for(&self, labels: &ProxyKey) -> Snapshot {
        let inputs = self.inputs();
        self.translate_for(&inputs, labels, self.generation()).0
    }

    /// Installs new inputs: translates for every connected proxy key and publishes the new
    /// snapshots. Marks the hub ready after the first call.
    ///
    /// Nothing already served is lost to bad input: an object that now fails to translate is
    /// reported, and its last version that translated cleanly keeps being served (until the
    /// object is deleted or fixed).
    pub fn update(&self, inputs: Inputs, load_errors: Vec<InputError>) {
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let started = Instant::now();
        let mut proxies = match self.proxies.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        // Forget proxy keys nobody listens to any more.
        proxies.retain(|_, tx| tx.receiver_count() > 0);
        let mut keys: Vec<ProxyKey> = proxies.keys().cloned().collect();
        // Errors of objects no connected proxy sees still matter: translate the two gateways.
        for gw in [&self.opts.external_gateway, &self.opts.local_gateway] {
            if let Some(labels) = translate::gateway_labels(&inputs, &self.opts, gw) {
                if !keys.contains(&labels) {
                    keys.push(labels);
                }
            }
        }
        let translate_all = |inputs: &Inputs| -> (BTreeMap<ProxyKey, Snapshot>, Vec<InputError>) {
            let mut snaps = BTreeMap::new();
            let mut errors = Vec::new();
            for labels in &keys {
                let (snap, errs) = self.translate_for(inputs, labels, generation);
                errors.extend(errs);
                snaps.insert(labels.clone(), snap);
            }
            (snaps, errors)
        };
        let (mut snaps, translate_errors) = translate_all(&inputs);
        let bad: BTreeSet<ObjectKey> = translate_errors
            .iter()
            .filter_map(|e| e.object.clone())
            .collect();
        let mut errors = load_errors;
        errors.extend(translate_errors);
        let mut served = inputs;
        {
            let mut last_good = match self.last_good.lock() {
                Ok(l) => l,
                Err(l) => l.into_inner(),
            };
            let mut kept = Vec::new();
            for key in &bad {
                if let (Some(prev), Some(now)) = (
                    last_good.get(key),
                    served.get(key.kind, &key.namespace, &key.name),
                ) {
                    if prev.object != now.object {
                        kept.push(prev.clone());
                    }
                }
            }
            // Remember what translated cleanly; forget what was deleted.
            last_good.retain(|k, _| served.get(k.kind, &k.namespace, &k.name).is_some());
            for (k, e) in served.entries() {
                if !bad.contains(k) {
                    last_good.insert(k.clone(), e.clone());
                }
            }
            if !kept.is_empty() {
                for e in &mut errors {
                    if e.object
                        .as_ref()
                        .is_some_and(|k| kept.iter().any(|p| &p.object.key() == k))
                    {
                        e.message.push_str("; its previous version is still served");
                    }
                }
                for prev in kept {
                    served.insert_entry(prev);
                }
                snaps = translate_all(&served).0;
            }
        }
        for (labels, tx) in proxies.iter() {
            if let Some(snap) = snaps.remove(labels) {
                tx.send_replace(Arc::new(snap));
            }
        }
        errors.sort();
        errors.dedup();
        for e in &errors {
            tracing::warn!(error = %e, "input left out");
        }
        if let Ok(mut w) = self.inputs.write() {
            *w = Arc::new(served);
        }
        if let Ok(mut w) = self.errors.write() {
            *w = errors;
        }
        self.generation.store(generation, Ordering::Release);
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            generation,
            proxies = proxies.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "translated"
        );
    }
}

impl ConfigSource for Hub {
    fn subscribe(&self, proxy: &ProxyIdentity) -> Option<watch::Receiver<Arc<Snapshot>>> {
        if !self.is_ready() {
            return None;
        }
        let mut proxies = match self.proxies.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        if let Some(tx) = proxies.get(&proxy.labels) {
            return Some(tx.subscribe());
        }
        let inputs = self.inputs();
        let t = translate::translate(&inputs, &self.opts, &proxy.labels);
        if t.gateways.is_empty() {
            tracing::warn!(node = %proxy.id, labels = ?proxy.labels, "no Gateway selects this proxy; serving it an empty config");
        }
        let snap = cache::snapshot(self.generation(), &t.config);
        let (tx, rx) = watch::channel(Arc::new(snap));
        proxies.insert(proxy.labels.clone(), tx);
        Some(rx)
    }
}

/// The manifest directory as per-file object sets, so that one file's change touches only that
/// file's objects, and a file that stops parsing keeps serving what it served before.
#[derive(Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, Loaded>,
}

impl DirState {
    /// Re-reads the given files (relative paths); `None` re-reads the whole directory.
    pub fn reload(&mut self, dir: &Path, changed: Option<&BTreeSet<PathBuf>>) {
        let paths: BTreeSet<PathBuf> = match changed {
            Some(c) => c.clone(),
            None => {
                let now: BTreeSet<PathBuf> = files::list_files(dir)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                self.files.retain(|p, _| now.contains(p));
                now
            }
        };
        for rel in paths {
            if !dir.join(&rel).is_file() {
                self.files.remove(&rel);
                continue;
            }
            let mut loaded = files::load_file(dir, &rel);
            let broken = loaded.errors.iter().any(|e| e.object.is_none());
            if broken {
                // Keep what this file served before for objects the new text no longer yields.
                if let Some(prev) = self.files.get(&rel) {
                    let now: BTreeSet<ObjectKey> =
                        loaded.objects.iter().map(|s| s.object.key()).collect();
                    for s in &prev.objects {
                        if !now.contains(&s.object.key()) {
                            loaded.objects.push(s.clone());
                        }
                    }
                    for e in &mut loaded.errors {
                        if e.object.is_none() {
                            e.message
                                .push_str("; the file's previous objects are still served");
                        }
                    }
                }
            }
            self.files.insert(rel, loaded);
        }
    }

    /// The indexed inputs and every load error.
    pub fn inputs(&self) -> (Inputs, Vec<InputError>) {
        let objects: Vec<Sourced> = self
            .files
            .values()
            .flat_map(|l| l.objects.iter().cloned())
            .collect();
        let (inputs, mut errors) = Inputs::from_sourced(objects);
        errors.extend(self.files.values().flat_map(|l| l.errors.iter().cloned()));
        (inputs, errors)
    }
}

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

/// Shared state of the debug server.
#[derive(Clone)]
struct DebugState {
    hub: Arc<Hub>,
    registry: Arc<ConnectionRegistry>,
}

/// Serves until `shutdown` completes.
pub async fn run(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = anyhow::Result<()>> + Send,
) -> anyhow::Result<()> {
    let dir = args.from.clone();
    anyhow::ensure!(dir.is_dir(), "--from {} is not a directory", dir.display());
    let hub = Hub::new(args.translate.options());
    let registry = Arc::new(ConnectionRegistry::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    // Listeners first, so that Envoys and probes find us; streams get Unavailable until ready.
    let xds_listener = tokio::net::TcpListener::bind(&args.xds_addr)
        .await
        .with_context(|| format!("binding --xds-addr {}", args.xds_addr))?;
    let debug_listener = tokio::net::TcpListener::bind(&args.debug_addr)
        .await
        .with_context(|| format!("binding --debug-addr {}", args.debug_addr))?;
    let xds_local: SocketAddr = xds_listener.local_addr()?;
    let debug_local: SocketAddr = debug_listener.local_addr()?;

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

    let ads = AdsService::new(hub.clone(), registry.clone()).with_shutdown(stop_rx.clone());
    let mut xds_stop = stop_rx.clone();
    let xds = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ads.server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(xds_listener),
            async move {
                let _ = xds_stop.wait_for(|s| *s).await;
            },
        );
    let debug_app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/syncz", get(syncz))
        .route("/debug/inputs", get(inputs_debug))
        .with_state(DebugState {
            hub: hub.clone(),
            registry: registry.clone(),
        });
    let mut debug_stop = stop_rx.clone();
    let debug = axum::serve(debug_listener, debug_app).with_graceful_shutdown(async move {
        let _ = debug_stop.wait_for(|s| *s).await;
    });

    println!("xds listening on {xds_local}");
    println!("debug listening on {debug_local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%xds_local, %debug_local, "serving");

    let xds_task = tokio::spawn(xds);
    let debug_task = tokio::spawn(async move { debug.await });

    // The first full load. Until it is translated, streams are answered Unavailable and
    // /ready says 503: an Envoy never gets an empty config because we just started.
    let load_dir = dir.clone();
    let (state, inputs, errors) = tokio::task::spawn_blocking(move || {
        let mut state = DirState::default();
        state.reload(&load_dir, None);
        let (inputs, errors) = state.inputs();
        (state, inputs, errors)
    })
    .await
    .context("initial load")?;
    tracing::info!(objects = inputs.len(), errors = errors.len(), dir = %dir.display(), "initial load");
    let hub2 = hub.clone();
    tokio::task::spawn_blocking(move || hub2.update(inputs, errors))
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
            if rescan {
                state.reload(&dir, None);
            } else {
                state.reload(&dir, Some(&changed));
            }
            let (inputs, errors) = state.inputs();
            tracing::info!(files = changed.len(), rescan, "inputs changed");
            hub.update(inputs, errors);
        });
    }
}

async fn ready(State(s): State<DebugState>) -> Response {
    if s.hub.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: initial load not translated yet\n",
        )
            .into_response()
    }
}

/// `/debug/config_dump?gateway=external|local|ns/name` or `?proxyID=<node id>`.
async fn config_dump(
    State(s): State<DebugState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let labels = if let Some(id) = q.get("proxyID") {
        match s.registry.list().into_iter().find(|c| &c.node_id == id) {
            Some(c) => c.labels.clone(),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    format!("no connected proxy {id:?}\n"),
                )
                    .into_response()
            }
        }
    } else {
        let gw = q.get("gateway").map(String::as_str).unwrap_or("external");
        let inputs = s.hub.inputs();
        match translate::gateway_labels(&inputs, &s.hub.opts, gw) {
            Some(l) => l,
            None => return (StatusCode::NOT_FOUND, format!("no gateway {gw:?}\n")).into_response(),
        }
    };
    let snap = s.hub.snapshot_for(&labels);
    match crate::dump::config_dump(&snap) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn syncz(State(s): State<DebugState>) -> Response {
    Json(json!({
        "ready": s.hub.is_ready(),
        "generation": s.hub.generation(),
        "connections": s.registry.list(),
    }))
    .into_response()
}

async fn inputs_debug(State(s): State<DebugState>) -> Response {
    let inputs = s.hub.inputs();
    let objects: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(k, e)| json!({"object": k.to_string(), "origin": e.origin}))
        .collect();
    let errors: Vec<String> = s.hub.errors().iter().map(|e| e.to_string()).collect();
    Json(json!({"generation": s.hub.generation(), "objects": objects, "errors": errors}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::files::parse_text;
    use crate::xds::ROUTE;

    fn inputs(yaml: &str) -> Inputs {
        Inputs::from_sourced(parse_text(Path::new("t.yaml"), yaml).objects).0
    }

    fn kingress(percent: i64) -> String {
        format!(
            r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: [hello.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {{serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: {percent}}}
---
apiVersion: v1
kind: Service
metadata: {{name: hello-00001, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8012}}]
"#
        )
    }

    fn proxy() -> ProxyIdentity {
        ProxyIdentity {
            id: "router~1~gw.istio-system~istio-system.svc.cluster.local".into(),
            namespace: Some("istio-system".into()),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        }
    }

    fn route_bytes(rx: &watch::Receiver<Arc<Snapshot>>) -> Vec<u8> {
        rx.borrow()
            .of_type(ROUTE)
            .and_then(|m| m.get("http.80"))
            .map(|r| r.body.value.clone())
            .unwrap_or_default()
    }

    #[test]
    fn not_ready_until_the_first_update() {
        let hub = Hub::new(Options::default());
        assert!(hub.subscribe(&proxy()).is_none());
        hub.update(inputs(&kingress(100)), vec![]);
        assert!(hub.subscribe(&proxy()).is_some());
    }

    #[test]
    fn a_broken_object_keeps_its_last_good_version_until_deleted() {
        let hub = Hub::new(Options::default());
        hub.update(inputs(&kingress(100)), vec![]);
        let rx = hub.subscribe(&proxy()).unwrap();
        let good = route_bytes(&rx);
        assert!(String::from_utf8_lossy(&good).contains("hello.default.example.com"));

        hub.update(inputs(&kingress(90)), vec![]);
        assert_eq!(
            route_bytes(&rx),
            good,
            "the last good KIngress is still served"
        );
        let errors = hub.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("sum to 90"), "{}", errors[0]);
        assert!(errors[0]
            .to_string()
            .contains("previous version is still served"));

        // Deleted: gone for real.
        hub.update(Inputs::default(), vec![]);
        assert!(!String::from_utf8_lossy(&route_bytes(&rx)).contains("hello.default.example.com"));
        // A broken object with no good past is simply left out.
        hub.update(inputs(&kingress(90)), vec![]);
        assert!(!String::from_utf8_lossy(&route_bytes(&rx)).contains("hello.default.example.com"));
    }

    #[test]
    fn a_file_that_stops_parsing_keeps_serving_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), kingress(100)).unwrap();
        let mut state = DirState::default();
        state.reload(dir.path(), None);
        assert_eq!(state.inputs().0.len(), 2);
        std::fs::write(dir.path().join("a.yaml"), "kind: [broken\n").unwrap();
        state.reload(dir.path(), Some(&BTreeSet::from([PathBuf::from("a.yaml")])));
        let (inputs, errors) = state.inputs();
        assert_eq!(inputs.len(), 2, "previous objects kept");
        assert!(
            errors[0]
                .to_string()
                .contains("a.yaml document 1: malformed YAML"),
            "{}",
            errors[0]
        );
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        state.reload(dir.path(), Some(&BTreeSet::from([PathBuf::from("a.yaml")])));
        assert_eq!(state.inputs().0.len(), 0, "a deleted file's objects go");
    }
}
