//! End to end, live changes: our server watching a manifest directory, stock Envoy gateways
//! (SotW and Delta), real HTTP to real backends while the directory changes under them.
//!
//! * successive route and backend changes under continuous load (no failed request, and the first
//!   request after the Envoy ACKed a generation sees it);
//! * an endpoint move pushes EDS only;
//! * Envoy restarts and control-plane restarts (Envoy keeps serving while we are down and
//!   converges to what changed meanwhile);
//! * a route Envoy rejects (NACK);
//! * the latency from a file write to the first request served by the new config (printed).

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::*;
use common::*;

const READY: Duration = Duration::from_secs(30);
const NS: &str = "default";

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

fn ext_host(name: &str) -> String {
    format!("{name}.{NS}.example.com")
}

fn local_host(name: &str) -> String {
    format!("{name}.{NS}.svc.cluster.local")
}

fn node_id(pod: &str) -> String {
    BootstrapParams::new(0).pod(pod, "istio-system").node_id()
}

/// A KIngress of our class for `name`: the external host on the external gateway and the
/// `.svc.cluster.local` host on the cluster-local gateway, both sending everything to the revision
/// Service `revision` (port 80) and adding the request header `X-Gen: <gen>`.
fn kingress(name: &str, revision: &str, gen: &str) -> String {
    let http = format!(
        r#"    http:
      paths:
      - appendHeaders: {{X-Gen: "{gen}"}}
        splits:
        - serviceName: {revision}
          serviceNamespace: {NS}
          servicePort: 80
          percent: 100
          appendHeaders: {{Knative-Serving-Revision: {revision}, Knative-Serving-Namespace: {NS}}}
"#
    );
    format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: {name}
  namespace: {NS}
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: [{ext}]
    visibility: ExternalIP
{http}  - hosts: [{local}]
    visibility: ClusterLocal
{http}"#,
        ext = ext_host(name),
        local = local_host(name),
    )
}

/// An Istio VirtualService for `bad.default.example.com` on both gateways, matching the path with
/// the given RE2 regex and routing to the revision Service `bad-00001`.
fn regex_virtual_service(regex: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: bad-ingress, namespace: {NS}}}
spec:
  gateways: [knative-serving/knative-ingress-gateway, knative-serving/cluster-local-gateway]
  hosts: [{host}, {local}]
  http:
  - match:
    - uri: {{regex: "{regex}"}}
    route:
    - destination:
        host: bad-00001.{NS}.svc.cluster.local
        port: {{number: 80}}
"#,
        host = ext_host("bad"),
        local = local_host("bad"),
    )
}

/// The revision Service and its Endpoints as two separate manifests (so the Endpoints can be
/// rewritten alone).
fn service_and_endpoints(name: &str, ports: &[u16]) -> (String, String) {
    let both = revision_service(NS, name, ports, false);
    let (svc, eps) = both.split_once("---\n").expect("Service --- Endpoints");
    (svc.to_string(), eps.to_string())
}

/// The world most tests here change: revision Service `app-00001` and its Endpoints (on backend
/// `a`) in separate files, a KIngress `app` adding `X-Gen: <gen>`, and `extra` files; the server,
/// an external SotW and a cluster-local Delta Envoy, both synced. Returns them with the Endpoints
/// manifests of the app on `a` and on `b`.
async fn app_world(
    a: &Backend,
    b: &Backend,
    gen: &str,
    extra: &[(&str, String)],
) -> (Gateways, String, String) {
    let (svc, eps_a) = service_and_endpoints("app-00001", &[a.port()]);
    let (_, eps_b) = service_and_endpoints("app-00001", &[b.port()]);
    let gw = Fixture::new()
        .file("rev-service.yaml", svc)
        .file("rev-endpoints.yaml", eps_a.clone())
        .file("kingress.yaml", kingress("app", "app-00001", gen))
        .files(extra)
        .external(ApiType::Grpc)
        .local(ApiType::DeltaGrpc)
        .strict_re2()
        .start()
        .await;
    (gw, eps_a, eps_b)
}

async fn ext_gateway(server: &Server, api: ApiType) -> Envoy {
    let e = start_gateway(server, EXT_POD, EXTERNAL_LABELS, api).await;
    e.wait_ready(READY).await;
    e
}

async fn local_gateway(server: &Server, api: ApiType) -> Envoy {
    let e = start_gateway(server, LOCAL_POD, LOCAL_LABELS, api).await;
    e.wait_ready(READY).await;
    e
}

/// A keep-alive client for the checks made by the test itself (reconnects when closed).
struct Checker {
    port: u16,
    client: Option<HttpClient>,
}

impl Checker {
    fn new(port: u16) -> Checker {
        Checker { port, client: None }
    }

    async fn get(&mut self, host: &str) -> Response {
        for _ in 0..3 {
            if self.client.as_ref().is_none_or(HttpClient::is_closed) {
                self.client = Some(
                    HttpClient::connect(self.port)
                        .await
                        .unwrap_or_else(|e| panic!("check {host}: {e}")),
                );
            }
            match self.client.as_mut().unwrap().get(host, "/", &[]).await {
                Ok(r) => return r,
                Err(e) if e.starts_with("connection not ready") => self.client = None,
                Err(e) => panic!("check {host} via port {}: {e}", self.port),
            }
        }
        panic!("check {host}: connection kept closing");
    }

    /// (status, backend, X-Gen as seen by the backend)
    async fn seen(&mut self, host: &str) -> (u16, Option<String>, Option<String>) {
        let r = self.get(host).await;
        (
            r.status,
            r.backend().map(str::to_string),
            r.echoed_header("x-gen").map(str::to_string),
        )
    }
}

fn want(backend: &str, gen: &str) -> (u16, Option<String>, Option<String>) {
    (200, Some(backend.to_string()), Some(gen.to_string()))
}

// ----- /debug/syncz -----

async fn connection(server: &Server, pod: &str) -> Value {
    let id = node_id(pod);
    let v = server.get_json("/debug/syncz").await;
    v["connections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["node_id"] == id.as_str()).cloned())
        .unwrap_or_else(|| panic!("no connection of {id} in /debug/syncz: {v:#}"))
}

fn type_status<'a>(conn: &'a Value, type_url: &str) -> &'a Value {
    &conn["status"]["types"][type_url]
}

fn responses_sent(conn: &Value, type_url: &str) -> u64 {
    type_status(conn, type_url)["responses_sent"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the node is connected through a connection other than `not_conn` and has ACKed
/// a generation >= `gen`; returns that connection.
async fn wait_reconnected(server: &Server, pod: &str, not_conn: u64, gen: u64) -> Value {
    let id = node_id(pod);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = server.get_json("/debug/syncz").await;
        let found = v["connections"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| {
                    c["node_id"] == id.as_str()
                        && c["conn_id"].as_u64() != Some(not_conn)
                        && c["status"]["acked_generation"]
                            .as_u64()
                            .is_some_and(|a| a >= gen)
                })
                .cloned()
        });
        if let Some(c) = found {
            return c;
        }
        if Instant::now() > deadline {
            panic!("{id} did not reconnect (other than conn {not_conn}) and ACK {gen}: {v:#}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- 1. changes under continuous load -----

/// Waits until the server holds the whole change (`revision`'s Service given, `removed`'s gone)
/// and every Envoy ACKed a generation that carries it; returns that generation. A change of
/// several files is normally one generation (the source's write settle), but a loaded machine
/// may delay the writer past the settle and split it: each part is served as it comes (the
/// load sees no failure either way), and the test waits for the last part instead of failing
/// on the split. `/debug/inputs` reads the objects under the lock the generation is published
/// under, so its generation carries the objects it lists.
async fn wait_change_synced(
    server: &Server,
    after: u64,
    revision: &str,
    removed: Option<&String>,
) -> u64 {
    let has = |inputs: &Value, name: &str| {
        let object = format!("Service {NS}/{name}");
        inputs["objects"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["object"] == object.as_str()))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let carried = loop {
        let inputs = server.get_json("/debug/inputs").await;
        let g = inputs["generation"].as_u64().unwrap_or(0);
        if g > after && has(&inputs, revision) && !removed.is_some_and(|r| has(&inputs, r)) {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "the server never held the change to {revision} (after generation {after}): {inputs:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    wait_synced(server, carried - 1, 1).await
}

/// 20 successive changes while a client sends requests without pause to the external host:
/// odd changes rewrite the KIngress header (`X-Gen: <n>`, RDS only), even ones move the traffic to
/// a new revision Service `app-000<n>` on a fresh backend and remove the old revision Service's
/// file in the same change (new cluster, route switch, old cluster removed after the routes are
/// ACKed). After every change, once the Envoy ACKed it, the very first request sees it. No request
/// fails, including while a change split over two generations is half served.
async fn updates_under_load(api: ApiType) {
    let (ext_port, local_port) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("gateways.yaml", &gateway_services(ext_port, local_port));
    let mut revision = "app-00001".to_string();
    let mut backends = vec![Backend::start(&revision).await];
    dir.write(
        &format!("rev-{revision}.yaml"),
        &revision_service(NS, &revision, &[backends[0].port()], false),
    );
    dir.write("kingress.yaml", &kingress("app", &revision, "0"));
    let server = serve_dir(&dir, &[]).await;
    let envoy = ext_gateway(&server, api).await;
    let mut gen = wait_synced(&server, 0, 1).await;
    let host = ext_host("app");
    let mut check = Checker::new(ext_port);
    assert_eq!(check.seen(&host).await, want(&revision, "0"));

    let load = Load::start(ext_port, &host);
    let mut header = "0".to_string();
    let mut removed: Vec<String> = Vec::new();
    let mut splits = 0;
    let started = Instant::now();
    for n in 1..=20u32 {
        if n % 2 == 1 {
            header = n.to_string();
            dir.write("kingress.yaml", &kingress("app", &revision, &header));
        } else {
            let next = format!("app-{n:05}");
            let b = Backend::start(&next).await;
            dir.write(
                &format!("rev-{next}.yaml"),
                &revision_service(NS, &next, &[b.port()], false),
            );
            dir.write("kingress.yaml", &kingress("app", &next, &header));
            dir.remove(&format!("rev-{revision}.yaml"));
            backends.push(b);
            removed.push(std::mem::replace(&mut revision, next));
        }
        let before = gen;
        gen = wait_change_synced(&server, gen, &revision, removed.last()).await;
        splits += gen - before - 1;
        assert_eq!(
            check.seen(&host).await,
            want(&revision, &header),
            "change {n}: the first request after the Envoy ACKed generation {gen}"
        );
    }
    let elapsed = started.elapsed();
    // Removed revisions' clusters are gone from the Envoy (make-before-break finished).
    let clusters = envoy.cluster_names().await;
    for old in &removed {
        assert!(
            !clusters
                .iter()
                .any(|c| c.contains(&format!("|{old}.{NS}."))),
            "cluster of removed revision {old} still on the Envoy: {clusters:?}"
        );
    }
    assert!(
        clusters
            .iter()
            .any(|c| c.contains(&format!("|{revision}.{NS}."))),
        "{clusters:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let total = load.finish_clean(100).await;
    eprintln!(
        "updates_under_load({api:?}): 20 changes in {elapsed:?} ({splits} extra generations), \
         {total} requests, 0 failed; requests per backend: {:?}",
        backends
            .iter()
            .map(|b| (b.name().to_string(), b.count()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_under_load_sotw() {
    updates_under_load(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_under_load_delta() {
    updates_under_load(ApiType::DeltaGrpc).await;
}

// ----- 2. endpoint move -----

/// Only the Endpoints of the revision Service change (backend A -> backend B): traffic follows on
/// both gateways (external SotW, cluster-local Delta) without a failed request, and only EDS was
/// pushed for that change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_move_follows_traffic_with_eds_only() {
    let mut a = Backend::start("backend-a").await;
    let b = Backend::start("backend-b").await;
    let (gw, _, eps_b) = app_world(&a, &b, "1", &[]).await;
    let (ext_port, local_port, gen) = (gw.ext_port, gw.local_port, gw.generation);
    let (server, dir) = (&gw.server, &gw.dir);
    let mut ext_check = Checker::new(ext_port);
    let mut local_check = Checker::new(local_port);
    assert_eq!(
        ext_check.seen(&ext_host("app")).await,
        want("backend-a", "1")
    );
    assert_eq!(
        local_check.seen(&local_host("app")).await,
        want("backend-a", "1")
    );

    let ext_load = Load::start(ext_port, &ext_host("app"));
    let local_load = Load::start(local_port, &local_host("app"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = [
        connection(server, EXT_POD).await,
        connection(server, LOCAL_POD).await,
    ];
    dir.write("rev-endpoints.yaml", &eps_b);
    let gen2 = wait_synced(server, gen, 2).await;
    assert_eq!(
        ext_check.seen(&ext_host("app")).await,
        want("backend-b", "1")
    );
    assert_eq!(
        local_check.seen(&local_host("app")).await,
        want("backend-b", "1")
    );
    let after = [
        connection(server, EXT_POD).await,
        connection(server, LOCAL_POD).await,
    ];
    for (b4, af) in before.iter().zip(&after) {
        let who = format!("{} ({})", af["node_id"], af["mode"]);
        assert_eq!(b4["conn_id"], af["conn_id"], "{who} reconnected");
        assert!(
            responses_sent(af, EDS) > responses_sent(b4, EDS),
            "{who}: no EDS response for generation {gen2}: before {b4:#}\nafter {af:#}"
        );
        for t in [CDS, LDS, RDS] {
            assert_eq!(
                responses_sent(af, t),
                responses_sent(b4, t),
                "{who}: {t} was pushed for an endpoint-only change: before {b4:#}\nafter {af:#}"
            );
        }
    }
    // A is gone now: nothing may still be sent to it.
    let a_count = a.count();
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ext_load.finish_clean(50).await;
    local_load.finish_clean(50).await;
    assert_eq!(a.count(), a_count);
    assert!(b.count() > 2);
    drop(gw);
}

// ----- 3. restarts -----

/// Envoy restarts reconnect and serve again; while our server is down both Envoys keep serving the
/// last config without a failed request; a server started again on the same xDS port and the same
/// directory brings them to what changed while it was down (a new revision on a new backend, the
/// old revision removed, a new header). Reconnecting with such a change is not yet hitless (the
/// new process removes the old cluster before the routes move), so there is no load then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_restart_and_server_restart() {
    let old = Backend::start("app-00001").await;
    let new = Backend::start("app-00002").await;
    let (ext_port, local_port) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("gateways.yaml", &gateway_services(ext_port, local_port));
    dir.write(
        "rev-app-00001.yaml",
        &revision_service(NS, "app-00001", &[old.port()], false),
    );
    dir.write("kingress.yaml", &kingress("app", "app-00001", "1"));
    let xds_addr = format!("127.0.0.1:{}", free_port());
    let mut server = serve_dir(&dir, &["--xds-addr", &xds_addr]).await;
    let mut ext = ext_gateway(&server, ApiType::Grpc).await;
    let mut local = local_gateway(&server, ApiType::DeltaGrpc).await;
    let gen = wait_synced(&server, 0, 2).await;
    let (eh, lh) = (ext_host("app"), local_host("app"));

    // Envoy restarts.
    let ext_conn = connection(&server, EXT_POD).await["conn_id"]
        .as_u64()
        .unwrap();
    let local_conn = connection(&server, LOCAL_POD).await["conn_id"]
        .as_u64()
        .unwrap();
    ext.restart().await;
    local.restart().await;
    ext.wait_ready(READY).await;
    local.wait_ready(READY).await;
    wait_reconnected(&server, EXT_POD, ext_conn, gen).await;
    wait_reconnected(&server, LOCAL_POD, local_conn, gen).await;
    assert_eq!(
        Checker::new(ext_port).seen(&eh).await,
        want("app-00001", "1")
    );
    assert_eq!(
        Checker::new(local_port).seen(&lh).await,
        want("app-00001", "1")
    );

    // Our server goes away.
    let ext_load = Load::start(ext_port, &eh);
    let local_load = Load::start(local_port, &lh);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (e0, l0) = (ext_load.counts(), local_load.counts());
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Changed while it is down: new revision on a new backend, old one removed, new header.
    dir.write(
        "rev-app-00002.yaml",
        &revision_service(NS, "app-00002", &[new.port()], false),
    );
    dir.write("kingress.yaml", &kingress("app", "app-00002", "2"));
    dir.remove("rev-app-00001.yaml");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (e1, l1) = (ext_load.counts(), local_load.counts());
    assert_eq!(
        Checker::new(ext_port).seen(&eh).await,
        want("app-00001", "1"),
        "external Envoy while the server is down"
    );
    assert_eq!(
        Checker::new(local_port).seen(&lh).await,
        want("app-00001", "1"),
        "local Envoy while the server is down"
    );
    eprintln!(
        "server down ~1.4s: external {} requests, {} failed; local {} requests, {} failed",
        e1.0 - e0.0,
        e1.1 - e0.1,
        l1.0 - l0.0,
        l1.1 - l0.1
    );
    assert_eq!(
        (e1.1 - e0.1, l1.1 - l0.1),
        (0, 0),
        "failures while the server was down: {:#?} {:#?}",
        ext_load.samples(),
        local_load.samples()
    );
    assert!(e1.0 - e0.0 > 10 && l1.0 - l0.0 > 10, "no load while down");
    // SotW: the load stops before the new server starts. A reconnecting SotW Envoy does not say
    // which clusters it holds (only a version string), so the new process's first CDS response
    // removes the old revision's cluster before RDS moves the routes: a few 503s (known
    // limitation). Delta Envoys send `initial_resource_versions`; the server keeps those clusters
    // until the Envoy has taken the new listeners and routes, so the Delta gateway stays under
    // load through the reconnection and the switch.
    ext_load.finish_clean(50).await;

    // Back on the same port, same directory: a new process, generations start again.
    let server2 = serve_dir(&dir, &["--xds-addr", &xds_addr]).await;
    assert_eq!(server2.xds_port(), server.xds_port());
    wait_synced(&server2, 0, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    local_load.finish_clean(50).await;
    assert_eq!(
        Checker::new(ext_port).seen(&eh).await,
        want("app-00002", "2")
    );
    assert_eq!(
        Checker::new(local_port).seen(&lh).await,
        want("app-00002", "2")
    );
    let clusters = ext.cluster_names().await;
    assert!(
        !clusters.iter().any(|c| c.contains("|app-00001.")),
        "removed revision's cluster still on the external Envoy: {clusters:?}"
    );
}

// ----- 4. NACK -----

/// Waits until the node's last RDS response is NACKed; returns its `last_nack`.
async fn wait_rds_nack(server: &Server, pod: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = connection(server, pod).await;
        let t = type_status(&c, RDS);
        if !t["last_nack"].is_null() {
            return t["last_nack"].clone();
        }
        if Instant::now() > deadline {
            panic!("no RDS NACK from {pod}: {c:#}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A route Envoy rejects while another service changes in the same generation.
///
/// Our translator emits a VirtualService path regex `(` (invalid RE2) as is, and Envoy NACKs the
/// shared RouteConfiguration (`http.80`, in SotW and in Delta alike). The hub contains the NACK
/// (`hub/contain.rs`; `tests/e2e_nack.rs` has the full story): on an external SotW and a
/// cluster-local Delta Envoy,
/// * the NACK is visible in `/debug/syncz` (`last_nack` with Envoy's message, naming `http.80`);
/// * the VirtualService is quarantined for each gateway as the version its Envoy accepted (the
///   `/.*` regex): its host keeps answering (zero failed requests) and the changes of that
///   generation are all served: the route change (`X-Gen: 2`), the endpoint move of `app` to
///   backend B, the new KIngress `extra`; every type is in sync again;
/// * fixing the regex converges everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_route_is_contained_and_later_fix_converges() {
    let a = Backend::start("backend-a").await;
    let b = Backend::start("backend-b").await;
    let bad = Backend::start("bad-00001").await;
    let extra = Backend::start("extra-00001").await;
    let extra_files = [
        (
            "rev-bad.yaml",
            revision_service(NS, "bad-00001", &[bad.port()], false),
        ),
        ("bad-vs.yaml", regex_virtual_service("/.*")),
    ];
    let (gw, _, eps_b) = app_world(&a, &b, "1", &extra_files).await;
    let (ext_port, local_port, gen) = (gw.ext_port, gw.local_port, gw.generation);
    let (server, dir) = (&gw.server, &gw.dir);
    let mut ext_check = Checker::new(ext_port);
    let mut local_check = Checker::new(local_port);
    assert_eq!(
        ext_check.seen(&ext_host("app")).await,
        want("backend-a", "1")
    );
    assert_eq!(
        local_check.seen(&local_host("app")).await,
        want("backend-a", "1")
    );
    assert_eq!(
        ext_check.get(&ext_host("bad")).await.backend(),
        Some("bad-00001")
    );

    let ext_load = Load::start(ext_port, &ext_host("app"));
    let local_load = Load::start(local_port, &local_host("app"));
    let bad_load = Load::start(ext_port, &ext_host("bad"));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // One generation: the bad regex, app's endpoints move to B, app's header changes, and a new
    // KIngress `extra` with its own revision Service.
    // A regex these (strict) Envoys reject and the server accepts: the server leaves out
    // whatever a default Envoy would reject, so only a stricter Envoy NACKs.
    dir.write(
        "bad-vs.yaml",
        &regex_virtual_service(REGEX_OVER_STRICT_LIMIT),
    );
    dir.write("rev-endpoints.yaml", &eps_b);
    dir.write("kingress.yaml", &kingress("app", "app-00001", "2"));
    dir.write(
        "rev-extra.yaml",
        &revision_service(NS, "extra-00001", &[extra.port()], false),
    );
    dir.write(
        "kingress-extra.yaml",
        &kingress("extra", "extra-00001", "1"),
    );
    for (pod, who) in [(EXT_POD, "external SotW"), (LOCAL_POD, "local Delta")] {
        let nack = wait_rds_nack(server, pod).await;
        eprintln!("{who} RDS NACK: {nack}");
        let msg = nack["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("regex") || msg.contains("missing )"),
            "{who}: NACK message does not name the bad regex: {nack:#}"
        );
        assert!(
            nack["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|n| n == "http.80")),
            "{who}: {nack:#}"
        );
    }
    // Contained: the rest of that generation is served, the bad VirtualService as its last
    // accepted version, and both Envoys converge.
    wait_synced(server, gen + 1, 2).await;
    assert_eq!(
        ext_check.seen(&ext_host("app")).await,
        want("backend-b", "2")
    );
    assert_eq!(
        local_check.seen(&local_host("app")).await,
        want("backend-b", "2")
    );
    assert_eq!(
        ext_check.seen(&ext_host("extra")).await,
        want("extra-00001", "1")
    );
    assert_eq!(
        ext_check.get(&ext_host("bad")).await.backend(),
        Some("bad-00001")
    );
    let inputs = server.get_json("/debug/inputs").await;
    let rejected: Vec<&str> = inputs["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|e| e.contains("rejected by Envoy"))
        .collect();
    assert_eq!(rejected.len(), 2, "one per gateway: {inputs:#}");
    assert!(
        rejected
            .iter()
            .all(|e| e.starts_with("VirtualService default/bad-ingress")
                && e.contains("last accepted is served")),
        "{rejected:?}"
    );
    for (pod, want_mode) in [(EXT_POD, "sotw"), (LOCAL_POD, "delta")] {
        let c = connection(server, pod).await;
        assert_eq!(c["mode"], want_mode);
        for t in [CDS, EDS, LDS, RDS] {
            assert_eq!(type_status(&c, t)["in_sync"], true, "{pod} {t}: {c:#}");
        }
    }

    // The fix converges.
    let fixed_after = generation(server).await;
    dir.write("bad-vs.yaml", &regex_virtual_service("/.*"));
    wait_synced(server, fixed_after, 2).await;
    assert_eq!(
        ext_check.seen(&ext_host("app")).await,
        want("backend-b", "2")
    );
    assert_eq!(
        local_check.seen(&local_host("app")).await,
        want("backend-b", "2")
    );
    assert_eq!(
        ext_check.seen(&ext_host("extra")).await,
        want("extra-00001", "1")
    );
    assert_eq!(
        local_check.seen(&local_host("bad")).await.1.as_deref(),
        Some("bad-00001")
    );
    ext_load.finish_clean(50).await;
    local_load.finish_clean(50).await;
    bad_load.finish_clean(50).await;
}

// ----- 5. latency -----

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Polls (every 5 ms, keep-alive) until `ok` holds for the response; returns the time since `t0`.
async fn first_served(
    port: u16,
    host: &str,
    t0: Instant,
    ok: impl Fn(&(u16, Option<String>, Option<String>)) -> bool,
) -> Duration {
    let mut c = Checker::new(port);
    loop {
        if ok(&c.seen(host).await) {
            return t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(20) {
            panic!("{host} via {port}: change not served after 20s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Time from a file write to the first request served by the new config, on an external SotW and
/// a cluster-local Delta Envoy, for a route change (KIngress header, RDS) and for an endpoint move
/// (EDS). Includes the server's debounce (default 100ms quiet). Printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_from_write_to_first_served_request() {
    let a = Backend::start("backend-a").await;
    let b = Backend::start("backend-b").await;
    let (gw, eps_a, eps_b) = app_world(&a, &b, "0", &[]).await;
    let (ext_port, local_port, mut gen) = (gw.ext_port, gw.local_port, gw.generation);
    let (server, dir) = (&gw.server, &gw.dir);
    let (eh, lh) = (ext_host("app"), local_host("app"));

    let (mut rds_sotw, mut rds_delta, mut eds_sotw, mut eds_delta) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut backend = "backend-a";
    for i in 1..=5 {
        // Route change.
        let g = i.to_string();
        let t0 = Instant::now();
        dir.write("kingress.yaml", &kingress("app", "app-00001", &g));
        let hdr = |s: &(u16, Option<String>, Option<String>)| s.2.as_deref() == Some(g.as_str());
        let (s, d) = tokio::join!(
            first_served(ext_port, &eh, t0, hdr),
            first_served(local_port, &lh, t0, hdr)
        );
        rds_sotw.push(s);
        rds_delta.push(d);
        gen = wait_synced(server, gen, 2).await;

        // Endpoint move.
        let (eps, next) = if backend == "backend-a" {
            (&eps_b, "backend-b")
        } else {
            (&eps_a, "backend-a")
        };
        backend = next;
        let t0 = Instant::now();
        dir.write("rev-endpoints.yaml", eps);
        let moved = |s: &(u16, Option<String>, Option<String>)| s.1.as_deref() == Some(next);
        let (s, d) = tokio::join!(
            first_served(ext_port, &eh, t0, moved),
            first_served(local_port, &lh, t0, moved)
        );
        eds_sotw.push(s);
        eds_delta.push(d);
        gen = wait_synced(server, gen, 2).await;
    }
    eprintln!(
        "latency write -> first served request (median of 5, debounce 100ms included): \
         route change SotW {:?} Delta {:?}; endpoint move SotW {:?} Delta {:?}\n  \
         route SotW {rds_sotw:?}\n  route Delta {rds_delta:?}\n  \
         endpoints SotW {eds_sotw:?}\n  endpoints Delta {eds_delta:?}",
        median(&mut rds_sotw.clone()),
        median(&mut rds_delta.clone()),
        median(&mut eds_sotw.clone()),
        median(&mut eds_delta.clone()),
    );
}
