//! End to end, the scoped route layout (`--route-layout scoped`): stock Envoy gateways pick a
//! scope by the request's host (port stripped) from scoped RDS, and each scope's
//! RouteConfiguration holds one virtual host. Real Envoy, real echo backends, SotW and Delta.
//! Proves host routing (also `Host: h:port`), splits, header rules, cluster-local vs external,
//! 404 for unknown hosts, updates under load without a failed request, and that a split change
//! resends only the changed service's RouteConfiguration.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;

const NS: &str = "default";
const SRDS: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// Server in the scoped layout over `files`, an external and a cluster-local gateway speaking
/// `api`; returns once both ACKed the first translation.
async fn start(files: &[(&str, String)], api: ApiType) -> Gateways {
    Fixture::new()
        .args(&["--route-layout", "scoped"])
        .files(files)
        .external(api)
        .local(api)
        .start()
        .await
}

fn services(backends: &[&Backend]) -> String {
    revision_services(NS, backends)
}

fn ext_host(name: &str) -> String {
    format!("{name}.{NS}.example.com")
}

/// KIngress `name`: external host `<name>.default.example.com` and the cluster-local hosts,
/// split between `a` (`percent_a`) and `b`, with a path-level header `Foo: <name>`.
fn app(name: &str, a: &str, b: &str, percent_a: i64) -> String {
    let local = [
        format!("{name}.{NS}"),
        format!("{name}.{NS}.svc"),
        format!("{name}.{NS}.svc.cluster.local"),
    ];
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    let splits = || vec![KSplit::new(a, percent_a), KSplit::new(b, 100 - percent_a)];
    kingress(
        NS,
        name,
        Some("Enabled"),
        &[
            KRule::external(
                &[&ext_host(name)],
                vec![KPath::any(splits()).header("Foo", name)],
            ),
            KRule::cluster_local(&local, vec![KPath::any(splits()).header("Foo", name)]),
        ],
    )
}

/// KIngress `name` whose cluster-local hosts only exist (no external rule).
fn local_only(name: &str, backend: &str) -> String {
    let host = format!("{name}.{NS}.svc.cluster.local");
    kingress(
        NS,
        name,
        None,
        &[KRule::cluster_local(
            &[&host],
            vec![KPath::any(vec![KSplit::new(backend, 100)])],
        )],
    )
}

async fn routing(api: ApiType) {
    let a = Backend::start("app-a-00001").await;
    let b = Backend::start("app-b-00001").await;
    let c = Backend::start("other-00001").await;
    let d = Backend::start("private-00001").await;
    let gw = start(
        &[
            ("services.yaml", services(&[&a, &b, &c, &d])),
            ("app.yaml", app("app", a.name(), b.name(), 50)),
            ("other.yaml", app("other", c.name(), c.name(), 100)),
            ("private.yaml", local_only("private", d.name())),
        ],
        api,
    )
    .await;
    let port = gw.ext_port;

    // The Envoy holds scopes and one RouteConfiguration per host, no `http.80` table.
    let dump = gw.envoy().config_dump().await;
    let routes = common::envoy::dump_route_configs(&dump);
    assert_eq!(
        routes.keys().cloned().collect::<Vec<_>>(),
        vec![
            "http.80/app.default.example.com".to_string(),
            "http.80/other.default.example.com".to_string()
        ],
        "{dump:#}"
    );
    assert_eq!(
        common::envoy::dump_scopes(&dump),
        vec![
            "http.80/app.default.example.com".to_string(),
            "http.80/other.default.example.com".to_string()
        ]
    );

    // Host routing, with and without a port in the Host header.
    let r = http_get(port, &ext_host("other"), "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(c.name())), "{}", r.body);
    let with_port = format!("{}:{port}", ext_host("other"));
    let r = http_get(port, &with_port, "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(c.name())), "{}", r.body);
    let with_port = format!("{}:80", ext_host("app"));
    let r = http_get(port, &with_port, "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Header set: the route's value replaces the client's.
    let r = http_get(port, &ext_host("app"), "/", &[("Foo", "client")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("foo"), Some("app"), "{}", r.body);

    // 50/50 split.
    let seen = backend_spread(port, &ext_host("app"), 400).await;
    for backend in [a.name(), b.name()] {
        let n = seen.get(backend).copied().unwrap_or(0);
        assert!((120..=280).contains(&n), "{backend}: {n} of 400: {seen:?}");
    }

    // Unknown host: no scope, 404.
    let r = http_get(port, "nope.default.example.com", "/", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    // Cluster-local hosts are not on the external gateway, but on the local one.
    let r = http_get(port, "private.default.svc.cluster.local", "/", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = http_get(gw.local_port, "private.default.svc.cluster.local", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some(d.name())), "{}", r.body);
    let r = http_get(gw.local_port, "app.default.svc", "/", &[("Foo", "x")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed_header("foo"), Some("app"));
    let r = http_get(gw.local_port, &ext_host("app"), "/", &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    drop(gw.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_routing_sotw() {
    routing(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_routing_delta() {
    routing(ApiType::DeltaGrpc).await;
}

async fn ext_connection(server: &Server) -> Value {
    let v = server.get_json("/debug/syncz").await;
    v["connections"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| {
                    c["node_id"]
                        .as_str()
                        .is_some_and(|id| id.contains("istio-ingressgateway-0"))
                })
                .cloned()
        })
        .unwrap_or_else(|| panic!("no external gateway connection: {v:#}"))
}

fn counter(conn: &Value, type_url: &str, field: &str) -> u64 {
    conn["status"]["types"][type_url][field]
        .as_u64()
        .unwrap_or(0)
}

/// A split change of one of several services: the Envoy gets one RDS response carrying only
/// that service's RouteConfiguration (a few hundred bytes), no scope, listener or cluster, and
/// only that RouteConfiguration's version changes on the Envoy; traffic follows the new split.
async fn split_change_resends_one_route_configuration(api: ApiType) {
    let a = Backend::start("app-a-00001").await;
    let b = Backend::start("app-b-00001").await;
    let mut files = vec![("services.yaml", services(&[&a, &b]))];
    let names: Vec<String> = (0..8).map(|i| format!("svc{i}")).collect();
    let yamls: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("{n}.yaml"), app(n, a.name(), b.name(), 50)))
        .collect();
    for (f, y) in &yamls {
        files.push((f.as_str(), y.clone()));
    }
    let gw = start(&files, api).await;
    let before_dump = common::envoy::dump_route_configs(&gw.envoy().config_dump().await);
    assert_eq!(before_dump.len(), 8, "{before_dump:?}");
    let before = ext_connection(&gw.server).await;
    let gen = generation(&gw.server).await;

    gw.dir
        .write("svc3.yaml", &app("svc3", a.name(), b.name(), 100));
    wait_synced(&gw.server, gen, 2).await;
    let after = ext_connection(&gw.server).await;
    let delta = |t: &str, f: &str| counter(&after, t, f) - counter(&before, t, f);
    assert_eq!(delta(RDS, "responses_sent"), 1, "{after:#}");
    for t in [SRDS, LDS, CDS] {
        assert_eq!(delta(t, "responses_sent"), 0, "{t}: {after:#}");
    }
    let rds_bytes = delta(RDS, "bytes_sent");
    assert!(
        rds_bytes > 0 && rds_bytes < 8 * 1024,
        "RDS bytes for one split change: {rds_bytes}"
    );
    // On the Envoy, only svc3's RouteConfiguration changed.
    let after_dump = common::envoy::dump_route_configs(&gw.envoy().config_dump().await);
    let changed: Vec<&String> = after_dump
        .iter()
        .filter(|(n, v)| before_dump.get(*n) != Some(*v))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        changed,
        vec!["http.80/svc3.default.example.com"],
        "{before_dump:?} -> {after_dump:?}"
    );
    let seen = backend_spread(gw.ext_port, &ext_host("svc3"), 50).await;
    assert_eq!(seen.get(a.name()), Some(&50), "{seen:?}");
    eprintln!("scoped split change ({api:?}): {rds_bytes} RDS bytes on the wire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_change_resends_one_route_configuration_sotw() {
    split_change_resends_one_route_configuration(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_change_resends_one_route_configuration_delta() {
    split_change_resends_one_route_configuration(ApiType::DeltaGrpc).await;
}

/// Split changes, a new revision, a new service (new scope) and a removed service (removed
/// scope) while a client sends requests to a service: no request fails, and after each ACK the
/// first request sees the change.
async fn updates_under_load(api: ApiType) {
    let a = Backend::start("app-a-00001").await;
    let b = Backend::start("app-b-00001").await;
    let gw = start(
        &[
            ("services.yaml", services(&[&a, &b])),
            ("app.yaml", app("app", a.name(), b.name(), 100)),
            ("other.yaml", app("other", a.name(), b.name(), 100)),
        ],
        api,
    )
    .await;
    let port = gw.ext_port;
    let load = Load::start(port, &ext_host("app"));
    let other_load = Load::start(port, &ext_host("other"));
    let mut gen = generation(&gw.server).await;
    for step in 1..=10i64 {
        // Alternate the whole app between a and b; add and remove a third service.
        // One file, so that the step is one change (two files may be two generations).
        let percent_a = if step % 2 == 0 { 100 } else { 0 };
        let mut manifests = app("app", a.name(), b.name(), percent_a);
        if step % 3 == 0 {
            manifests = format!(
                "{manifests}\n---\n{}",
                app("extra", a.name(), b.name(), 100)
            );
        }
        gw.dir.write("app.yaml", &manifests);
        gen = wait_synced(&gw.server, gen, 2).await;
        let want = if percent_a == 100 { a.name() } else { b.name() };
        let r = http_get(port, &ext_host("app"), "/", &[]).await;
        assert_eq!((r.status, r.backend()), (200, Some(want)), "step {step}");
        let r = http_get(port, &ext_host("extra"), "/", &[]).await;
        let want_extra = if step % 3 == 0 { 200 } else { 404 };
        assert_eq!(r.status, want_extra, "step {step}: extra: {}", r.body);
    }
    let total = load.finish_clean(50).await;
    let other = other_load.finish_clean(50).await;
    eprintln!("scoped updates under load ({api:?}): {total} + {other} requests, 0 failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_updates_under_load_sotw() {
    updates_under_load(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_updates_under_load_delta() {
    updates_under_load(ApiType::DeltaGrpc).await;
}
