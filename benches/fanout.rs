//! Fan-out: concurrent Delta ADS streams (half per gateway, in-process tonic clients over
//! loopback) against the real ADS service and hub. Each stream subscribes to every cluster
//! (wildcard) and to the load assignments of its gateway; then one endpoint changes and we
//! measure the time until every stream has received the new assignment.
//!
//! `cargo bench --bench fanout -- [STREAMS] [N] [ROUNDS]` (defaults: 1000 streams, 1000 services,
//! 5 rounds): the clients run in a child process (`fanout-clients`, see `fanout/remote.rs`), and
//! the floor, as many loopback sockets between the same two processes written the same bytes, is
//! measured in the same run.
//!
//! `cargo bench --bench fanout -- [STREAMS] [N] plain|tls|both`: the clients in the server's
//! process (tonic clients sharing its runtime). `tls` connects every stream over the TLS xDS
//! listener with mutual TLS (a test CA, a SPIFFE client certificate of `istio-system`, as an
//! istio-proxy gateway would); `both` measures plaintext and then TLS in the same run and prints
//! their ratio.
//!
//! `cargo bench --bench fanout -- idle [STREAMS] [N]` (defaults: 100 streams, 10,000 services):
//! what an idle stream costs the server. The clients run in a child process (this binary again,
//! `idle-clients`), so the server's heap (counted by this binary's allocator) and RSS hold only
//! the server: first STREAMS Delta streams that sync CDS, EDS, LDS and RDS and ACK everything,
//! then STREAMS streams that send one request and never read, then 4 streams whose nodes each
//! carry a label set of their own (an engine and a snapshot each, dropped once unused past the
//! grace period). Printed per stream and per label set, beside the size of the one shared
//! snapshot.

#[path = "../tests/common/pki.rs"]
#[allow(dead_code)]
mod pki;
#[path = "fanout/remote.rs"]
mod remote;
#[path = "../tests/common/util.rs"]
#[allow(dead_code, unused_imports)]
mod util;

use std::alloc::{GlobalAlloc, Layout};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use knative_pilot::hub::Hub;
use knative_pilot::model::parse_object;
use knative_pilot::state::{Change, Entry};
use knative_pilot::tools::synth::{Form, Synth};
use knative_pilot::translate::Options;
use knative_pilot::xds::server::{AdsService, ConnectionRegistry};
use knative_pilot::xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use tokio::sync::{mpsc, watch};

/// The binary's allocator (`knative_pilot::Allocator`), counting live heap bytes (for the `idle`
/// figures).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static INNER: knative_pilot::Allocator = knative_pilot::Allocator;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// An istio-proxy gateway node; `set` adds a label `bench-set: <set>` (a label set of its own,
/// selecting the same Gateway).
fn node(i: usize, istio: &str, set: Option<usize>) -> Node {
    let label = |v: String| Value {
        kind: Some(Kind::StringValue(v)),
    };
    let mut fields: std::collections::BTreeMap<String, Value> =
        [("istio".to_string(), label(istio.to_string()))].into();
    if let Some(set) = set {
        fields.insert("bench-set".to_string(), label(set.to_string()));
    }
    let labels = Struct {
        fields: fields.into_iter().collect(),
    };
    Node {
        id: format!(
            "router~10.0.{}.{}~gw-{i}.istio-system~istio-system.svc.cluster.local",
            i / 250,
            i % 250
        ),
        metadata: Some(Struct {
            fields: [(
                "LABELS".to_string(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<usize> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    if raw.first().map(String::as_str) == Some("idle-clients") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let addr = raw[1].parse().expect("address");
        rt.block_on(idle_clients(addr, args[0], &raw[3]));
        return;
    }
    if raw.first().map(String::as_str) == Some("fanout-clients") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(remote::clients(&raw[1..]));
        return;
    }
    if raw.iter().any(|a| a == "idle") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let streams = args.first().copied().unwrap_or(100);
        let n = args.get(1).copied().unwrap_or(10_000);
        rt.block_on(idle(streams, n));
        return;
    }
    let streams = args.first().copied().unwrap_or(1000);
    let n = args.get(1).copied().unwrap_or(1000);
    let mode = raw
        .iter()
        .find(|a| ["remote", "plain", "tls", "both"].contains(&a.as_str()))
        .map_or("remote", String::as_str);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if mode == "remote" {
        let rounds = args.get(2).copied().unwrap_or(5);
        rt.block_on(remote::run(streams, n, rounds));
        return;
    }
    let mut results = Vec::new();
    for tls in [false, true] {
        if (mode == "plain" && tls) || (mode == "tls" && !tls) {
            continue;
        }
        results.push((tls, rt.block_on(run(streams, n, tls))));
    }
    if let [(_, plain), (_, tls)] = results.as_slice() {
        let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
        println!("| TLS / plaintext, same run | ratio |");
        println!("|---|---|");
        println!(
            "| stream start (connect + handshake + first sync), per stream | {:.2} |",
            ratio(plain.setup, tls.setup)
        );
        if let (Some(p), Some(t)) = (plain.median, tls.median) {
            println!("| one endpoint change, median | {:.2} |", ratio(p, t));
        }
        if let (Some(p), Some(t)) = (plain.max, tls.max) {
            println!("| one endpoint change, max | {:.2} |", ratio(p, t));
        }
    }
}

/// What one fan-out run measured.
struct Figures {
    setup: Duration,
    median: Option<Duration>,
    max: Option<Duration>,
}

/// The TLS side of a run: the server's rustls config (mutual TLS against a test CA) and a client
/// config presenting a SPIFFE certificate of `istio-system`.
struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

fn tls_configs() -> Tls {
    use knative_pilot::xds::auth::tls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pki::Ca::new("fanout-ca");
    let ca_path = ca.write(dir.path(), "ca.crt");
    let (cert, key) = ca.server(pki::SERVER_NAME).write(dir.path(), "server");
    let reloading = tls::ReloadingCert::load(tls::TlsFiles { cert, key }).expect("server cert");
    let server = tls::server_config(reloading, Some(&ca_path)).expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let id = ca.client("istio-system", "istio-ingressgateway-service-account");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(id.cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("client cert");
    let key = PrivateKeyDer::from_pem_slice(id.key.as_bytes()).expect("client key");
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    client.alpn_protocols = vec![b"h2".to_vec()];
    Tls {
        server,
        client: Arc::new(client),
        _dir: dir,
    }
}

/// A channel to the server: plaintext, or TLS with the client config.
async fn channel(
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> tonic::transport::Channel {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    match tls {
        None => endpoint.connect().await.expect("connect"),
        Some(cfg) => {
            let connector = tokio_rustls::TlsConnector::from(cfg);
            endpoint
                .connect_with_connector(tower::service_fn(move |_uri| {
                    let connector = connector.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        let name = rustls::pki_types::ServerName::try_from(pki::SERVER_NAME)
                            .expect("server name");
                        let tls = connector.connect(name, tcp).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                    }
                }))
                .await
                .expect("TLS connect")
        }
    }
}

async fn run(streams: usize, n: usize, use_tls: bool) -> Figures {
    let synth = Synth::new(n, Form::Route);
    let hub = Hub::new(Options::default());
    hub.update(synth.inputs(), Vec::new());
    let registry = Arc::new(ConnectionRegistry::new());
    let svc = AdsService::new(hub.clone(), registry)
        .with_auth(Arc::new(knative_pilot::xds::auth::Authenticator::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = use_tls.then(tls_configs);
    let server = tonic::transport::Server::builder().add_service(svc.server());
    match &tls {
        None => {
            tokio::spawn(
                server.serve_with_incoming(knative_pilot::xds::server::plain_incoming(listener)),
            );
        }
        Some(t) => {
            let incoming = knative_pilot::xds::auth::tls::incoming(
                listener,
                t.server.clone(),
                "cluster.local".to_string(),
                Arc::new(|reason| panic!("TLS handshake refused: {reason}")),
            );
            tokio::spawn(server.serve_with_incoming(incoming));
        }
    }
    // The changed endpoint: revision 1 of service n/2 (on both gateways unless cluster-local).
    let mid = n / 2;
    let target = format!(
        "outbound|80||svc-{mid}-00001.{}.svc.cluster.local",
        synth.namespace(mid)
    );
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(streams);
    let (done_tx, mut done_rx) = mpsc::channel::<Instant>(streams);
    let (go_tx, go_rx) = watch::channel(false);
    let t_setup = Instant::now();
    for i in 0..streams {
        let istio = if i % 2 == 0 {
            "ingressgateway"
        } else {
            "cluster-local-gateway"
        };
        let (ready_tx, done_tx, mut go_rx) = (ready_tx.clone(), done_tx.clone(), go_rx.clone());
        let target = target.clone();
        let node = node(i, istio, None);
        // Connect one at a time: a burst of 1,000 connects can overflow the listen backlog.
        let mut client = AggregatedDiscoveryServiceClient::new(
            channel(addr, tls.as_ref().map(|t| t.client.clone())).await,
        )
        .max_decoding_message_size(usize::MAX);
        tokio::spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
            let _ = tx.send(DeltaDiscoveryRequest {
                node: Some(node),
                type_url: CLUSTER.to_string(),
                ..Default::default()
            });
            let mut resp = client
                .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    rx,
                ))
                .await
                .expect("stream")
                .into_inner();
            let mut ready_sent = false;
            let mut eds_subscribed = false;
            while let Ok(Some(r)) = resp.message().await {
                let _ = tx.send(DeltaDiscoveryRequest {
                    type_url: r.type_url.clone(),
                    response_nonce: r.nonce.clone(),
                    ..Default::default()
                });
                if r.type_url == CLUSTER && !eds_subscribed {
                    eds_subscribed = true;
                    let _ = tx.send(DeltaDiscoveryRequest {
                        type_url: ENDPOINT.to_string(),
                        resource_names_subscribe: r
                            .resources
                            .iter()
                            .map(|x| x.name.clone())
                            .collect(),
                        ..Default::default()
                    });
                }
                if r.type_url == ENDPOINT {
                    if !ready_sent {
                        ready_sent = true;
                        let _ = ready_tx.send(()).await;
                    } else if *go_rx.borrow_and_update()
                        && r.resources.iter().any(|x| x.name == target)
                    {
                        let _ = done_tx.send(Instant::now()).await;
                    }
                }
            }
        });
    }
    for _ in 0..streams {
        ready_rx.recv().await.expect("stream ready");
    }
    let setup = t_setup.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = synth.endpoints(mid, 0, 1);
    let object = parse_object(v).ok().flatten().expect("endpoints");
    let change = vec![Change::Upsert(Arc::new(Entry {
        object,
        origin: None,
    }))];
    let _ = go_tx.send(true);
    let t0 = Instant::now();
    hub.apply(change, Vec::new());
    let mut times = Vec::new();
    for _ in 0..streams {
        match tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await {
            Ok(Some(t)) => times.push(t.duration_since(t0)),
            _ => break,
        }
    }
    times.sort();
    let pct =
        |p: f64| times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)));
    let over = if use_tls { "mutual TLS" } else { "plaintext" };
    println!("| figure ({over}) | value |");
    println!("|---|---|");
    println!(
        "| Delta streams connected and synced ({n} services), one at a time | {streams} in {:.1} s |",
        setup.as_secs_f64()
    );
    println!(
        "| one endpoint change: streams that received it | {} of {streams} |",
        times.len()
    );
    if let (Some(p50), Some(max)) = (pct(0.5), times.last()) {
        println!(
            "| one endpoint change: time until every stream has it (median / max) | {:.1} ms / {:.1} ms |",
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    Figures {
        setup,
        median: pct(0.5).copied(),
        max: times.last().copied(),
    }
}

/// Live heap bytes and RSS (bytes) of this process.
fn memory() -> (isize, isize) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<isize>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (LIVE.load(Ordering::Relaxed), rss)
}

fn mib(b: isize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Label sets of their own measured by the idle figures (each is a full translation).
const LABEL_SETS: usize = 4;

/// The server side of the idle figures (see the module docs).
async fn idle(streams: usize, n: usize) {
    let synth = Synth::new(n, Form::Route);
    let hub = Hub::new(Options::default());
    hub.update(synth.inputs(), Vec::new());
    let registry = Arc::new(ConnectionRegistry::new());
    let svc = AdsService::new(hub.clone(), registry.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc.server())
            .serve_with_incoming(knative_pilot::xds::server::plain_incoming(listener)),
    );
    let snapshot_bytes: usize = {
        let labels = [("istio".to_string(), "ingressgateway".to_string())].into();
        let snap = hub.snapshot_for(&labels);
        snap.resources
            .values()
            .flat_map(|m| m.values())
            .map(|r| r.body.value.len() + r.name.len() + r.version.len())
            .sum()
    };
    println!("| idle streams, {n} services, server only | value |");
    println!("|---|---|");
    println!(
        "| one gateway's snapshot (resource bodies, names, versions), shared by its streams | {:.1} MiB |",
        mib(snapshot_bytes as isize)
    );
    for mode in ["read", "noread", "labelsets"] {
        let read = mode != "noread";
        let streams = if mode == "labelsets" {
            LABEL_SETS
        } else {
            streams
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let base = memory();
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "idle-clients",
                &addr.to_string(),
                &streams.to_string(),
                mode,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("client process");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let t0 = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(l)) if l == "ready" => break,
                Some(Ok(_)) => {}
                _ => panic!("client process ended before its streams were ready"),
            }
        }
        let setup = t0.elapsed();
        // Every stream registered (and, when reading, everything ACKed); then quiet.
        for _ in 0..600 {
            if registry.len() == streams && (!read || registry.all_acked(hub.generation())) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = memory();
        let what = match mode {
            "read" => "synced Delta streams (CDS, EDS, LDS, RDS ACKed), idle",
            "noread" => "streams that sent one CDS request and never read",
            _ => "label sets of their own (one synced stream each: its engine and snapshot)",
        };
        let per = if mode == "labelsets" {
            "label set"
        } else {
            "stream"
        };
        println!(
            "| {what}: {streams}, server heap / RSS per {per} | {:.1} KiB / {:.1} KiB (setup {:.1} s) |",
            (held.0 - base.0) as f64 / 1024.0 / streams as f64,
            (held.1 - base.1) as f64 / 1024.0 / streams as f64,
            setup.as_secs_f64()
        );
        drop(child.stdin.take());
        let _ = child.wait();
        for _ in 0..600 {
            if registry.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if mode == "labelsets" {
            // Their engines outlive the streams for the grace period (`--xds-label-set-grace`).
            let later = Instant::now() + Duration::from_secs(24 * 3600);
            hub.collect_unused(Instant::now());
            hub.collect_unused(later);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = memory();
        println!(
            "| … after they disconnected: server heap / RSS above the start | {:.1} MiB / {:.1} MiB |",
            mib(after.0 - base.0),
            mib(after.1 - base.1)
        );
    }
    let _ = std::io::stdout().flush();
}

/// What a Delta client answers to a response as an Envoy would: an ACK, and after its first
/// CDS response, subscriptions to the assignments of its clusters, to listeners and to routes.
fn answer_as_envoy(
    tx: &mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    r: &DeltaDiscoveryResponse,
    subscribed: &mut bool,
) {
    let _ = tx.send(DeltaDiscoveryRequest {
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    });
    if r.type_url == CLUSTER && !*subscribed {
        *subscribed = true;
        let names = r.resources.iter().map(|x| x.name.clone()).collect();
        for (type_url, names) in [
            (ENDPOINT, names),
            (LISTENER, Vec::new()),
            (ROUTE, vec!["http.80".to_string(), "http.8081".to_string()]),
        ] {
            let _ = tx.send(DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                resource_names_subscribe: names,
                ..Default::default()
            });
        }
    }
}

/// The client process of the idle figures: STREAMS Delta streams, half per gateway, connected
/// one at a time; prints `ready` once each is synced (or has sent its request, `noread`), then
/// holds them until stdin closes.
async fn idle_clients(addr: std::net::SocketAddr, streams: usize, mode: &str) {
    let read = mode != "noread";
    let sets = mode == "labelsets";
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(streams);
    let mut held = Vec::new();
    for i in 0..streams {
        let istio = if i % 2 == 0 || sets {
            "ingressgateway"
        } else {
            "cluster-local-gateway"
        };
        let mut client = AggregatedDiscoveryServiceClient::new(channel(addr, None).await)
            .max_decoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
        let _ = tx.send(DeltaDiscoveryRequest {
            node: Some(node(i, istio, sets.then_some(i))),
            type_url: CLUSTER.to_string(),
            ..Default::default()
        });
        let mut resp = client
            .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        if !read {
            held.push((client, tx, resp));
            let _ = ready_tx.send(()).await;
            continue;
        }
        let ready_tx = ready_tx.clone();
        tokio::spawn(async move {
            let mut subscribed = false;
            let mut ready_sent = false;
            while let Ok(Some(r)) = resp.message().await {
                answer_as_envoy(&tx, &r, &mut subscribed);
                if r.type_url == ROUTE && !ready_sent {
                    ready_sent = true;
                    let _ = ready_tx.send(()).await;
                }
            }
            drop(client);
        });
    }
    for _ in 0..streams {
        ready_rx.recv().await.expect("stream ready");
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
}
