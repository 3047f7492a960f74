//! End to end, Knative conformance behaviour of the traffic path: KIngresses of our class,
//! translated by our server, served by stock Envoy gateways to real echo backends. Mirrors
//! knative/networking test/conformance/ingress: dispatch/percentage, headers/pre-split and
//! post-split, dispatch/path and dispatch/rule, headers/probe, retry, timeout, basics/http2,
//! websocket and websocket/split, httpoption.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use knative_pilot::model::kingress::IngressSpec;

const NS: &str = "default";

/// A running control plane with its manifest directory and the gateway Envoys.
/// Writes `files` (plus the gateway Services) into a fresh manifest directory, starts the server,
/// an external gateway Envoy speaking `ext_api` and, when `local_api` is given, a cluster-local
/// one; returns once every Envoy has ACKed the first translation.
async fn start(files: &[(&str, String)], ext_api: ApiType, local_api: Option<ApiType>) -> Gateways {
    let f = Fixture::new().files(files).external(ext_api);
    match local_api {
        Some(api) => f.local(api),
        None => f,
    }
    .start()
    .await
}

fn services(backends: &[&Backend]) -> String {
    revision_services(NS, backends)
}

/// The namespace, name and spec of a KIngress manifest, as Knative's hash sees them.
fn parse_kingress(yaml: &str) -> (String, String, IngressSpec) {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).expect("kingress yaml");
    let ns = v["metadata"]["namespace"].as_str().unwrap().to_string();
    let name = v["metadata"]["name"].as_str().unwrap().to_string();
    let spec: IngressSpec = serde_json::from_value(v["spec"].clone()).expect("kingress spec");
    (ns, name, spec)
}

/// dispatch/percentage: a 10-way split; every backend gets its share within 10 points and a 0%
/// split gets nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_way_split_follows_percentages() {
    const PERCENTS: [i64; 10] = [1, 2, 4, 8, 16, 32, 37, 0, 0, 0];
    const REQUESTS: usize = 1000;
    const CLIENTS: usize = 4;
    let mut backends = Vec::new();
    for i in 0..PERCENTS.len() {
        backends.push(Backend::start(&format!("split-{i:02}-00001")).await);
    }
    let host = "split.default.example.com";
    let splits = backends
        .iter()
        .zip(PERCENTS)
        .map(|(b, p)| KSplit::new(b.name(), p))
        .collect();
    let ing = kingress(
        NS,
        "split",
        Some("Enabled"),
        &[KRule::external(&[host], vec![KPath::any(splits)])],
    );
    let refs: Vec<&Backend> = backends.iter().collect();
    let gw = start(
        &[("services.yaml", services(&refs)), ("kingress.yaml", ing)],
        ApiType::Grpc,
        None,
    )
    .await;

    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let port = gw.ext_port;
        tasks.push(tokio::spawn(async move {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut client = HttpClient::connect(port).await.unwrap();
            for _ in 0..REQUESTS / CLIENTS {
                if client.is_closed() {
                    client = HttpClient::connect(port).await.unwrap();
                }
                let r = client.get(host, "/", &[]).await.unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
                *seen.entry(r.backend().unwrap().to_string()).or_default() += 1;
            }
            seen
        }));
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *seen.entry(k).or_default() += v;
        }
    }
    assert_eq!(seen.values().sum::<usize>(), REQUESTS);
    let mut report = String::new();
    for (b, want) in backends.iter().zip(PERCENTS) {
        let got = b.count();
        assert_eq!(
            seen.get(b.name()).copied().unwrap_or(0),
            got,
            "responses vs requests seen by {}",
            b.name()
        );
        report.push_str(&format!("{}: want {want}%, got {got}\n", b.name()));
    }
    for (b, want) in backends.iter().zip(PERCENTS) {
        let got = b.count();
        if want == 0 {
            assert_eq!(got, 0, "a 0% split must get no request:\n{report}");
        } else {
            let share = got as f64 * 100.0 / REQUESTS as f64;
            assert!(
                (share - want as f64).abs() <= 10.0,
                "{}: {share}% vs {want}%\n{report}",
                b.name()
            );
        }
    }
}

/// headers/pre-split and headers/post-split: path-level and split-level appendHeaders have SET
/// semantics, also on weighted clusters (2-split paths) and when merged into a single split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_headers_overwrite_client_values() {
    let a = Backend::start("hdr-a-00001").await;
    let b = Backend::start("hdr-b-00001").await;
    let host = "headers.default.example.com";
    let ing = kingress(
        NS,
        "headers",
        None,
        &[KRule::external(
            &[host],
            vec![
                // Path level, over two weighted clusters.
                KPath::prefix(
                    "/path-level",
                    vec![KSplit::new(a.name(), 50), KSplit::new(b.name(), 50)],
                )
                .header("Foo", "path"),
                // Split level, on the weighted clusters.
                KPath::prefix(
                    "/split-level",
                    vec![
                        KSplit::new(a.name(), 50).header("Foo", "split-a"),
                        KSplit::new(b.name(), 50).header("Foo", "split-b"),
                    ],
                ),
                // Both levels on one split (merged into the route).
                KPath::prefix(
                    "/single",
                    vec![KSplit::new(a.name(), 100).header("Bar", "split-single")],
                )
                .header("Foo", "path-single"),
            ],
        )],
    );
    let gw = start(
        &[
            ("services.yaml", services(&[&a, &b])),
            ("kingress.yaml", ing),
        ],
        ApiType::DeltaGrpc,
        None,
    )
    .await;

    let client_headers = [("Foo", "client"), ("Bar", "client")];
    let mut client = HttpClient::connect(gw.ext_port).await.unwrap();
    let mut backends_seen = BTreeMap::<(String, String), usize>::new();
    for path in ["/path-level", "/split-level"] {
        for _ in 0..30 {
            let r = client.get(host, path, &client_headers).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            let backend = r.backend().unwrap().to_string();
            let want = match (path, backend.as_str()) {
                ("/path-level", _) => "path",
                ("/split-level", "hdr-a-00001") => "split-a",
                ("/split-level", "hdr-b-00001") => "split-b",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(
                r.echoed_header("foo"),
                Some(want),
                "{path} via {backend}: {}",
                r.body
            );
            // Untouched by the configuration.
            assert_eq!(r.echoed_header("bar"), Some("client"), "{path}");
            *backends_seen
                .entry((path.to_string(), backend))
                .or_default() += 1;
        }
    }
    assert_eq!(
        backends_seen.len(),
        4,
        "both splits of both paths must be exercised: {backends_seen:?}"
    );

    let r = client.get(host, "/single", &client_headers).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), Some("hdr-a-00001"));
    assert_eq!(r.echoed_header("foo"), Some("path-single"), "{}", r.body);
    assert_eq!(r.echoed_header("bar"), Some("split-single"), "{}", r.body);
}

/// dispatch/path and dispatch/rule: path prefixes in order with a catch-all last, and an exact
/// header match with a catch-all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_by_path_and_exact_header() {
    let a = Backend::start("disp-a-00001").await;
    let b = Backend::start("disp-b-00001").await;
    let c = Backend::start("disp-c-00001").await;
    let blue = Backend::start("disp-blue-00001").await;
    let other = Backend::start("disp-other-00001").await;
    let path_host = "paths.default.example.com";
    let header_host = "variants.default.example.com";
    let ing = kingress(
        NS,
        "dispatch",
        Some("Enabled"),
        &[
            KRule::external(
                &[path_host],
                vec![
                    KPath::prefix("/v1", vec![KSplit::new(a.name(), 100)]),
                    KPath::prefix("/v2", vec![KSplit::new(b.name(), 100)]),
                    KPath::any(vec![KSplit::new(c.name(), 100)]),
                ],
            ),
            KRule::external(
                &[header_host],
                vec![
                    KPath::any(vec![KSplit::new(blue.name(), 100)]).matching("X-Variant", "blue"),
                    KPath::any(vec![KSplit::new(other.name(), 100)]),
                ],
            ),
        ],
    );
    let gw = start(
        &[
            ("services.yaml", services(&[&a, &b, &c, &blue, &other])),
            ("kingress.yaml", ing),
        ],
        ApiType::Grpc,
        None,
    )
    .await;

    for (path, want) in [
        ("/v1", "disp-a-00001"),
        ("/v1/deeper?x=1", "disp-a-00001"),
        ("/v2", "disp-b-00001"),
        ("/v2/x", "disp-b-00001"),
        ("/", "disp-c-00001"),
        ("/v3", "disp-c-00001"),
        ("/other/v1", "disp-c-00001"),
    ] {
        let r = http_get(gw.ext_port, path_host, path, &[]).await;
        assert_eq!(
            (r.status, r.backend()),
            (200, Some(want)),
            "GET {path}: {}",
            r.body
        );
        assert_eq!(r.body_json["path"], path, "path is not rewritten");
    }

    for (headers, want) in [
        (&[("X-Variant", "blue")][..], "disp-blue-00001"),
        (&[("x-variant", "blue")][..], "disp-blue-00001"),
        (&[("X-Variant", "green")][..], "disp-other-00001"),
        (&[("X-Variant", "Blue")][..], "disp-other-00001"),
        (&[("X-Variant", "blue-ish")][..], "disp-other-00001"),
        (&[][..], "disp-other-00001"),
    ] {
        let r = http_get(gw.ext_port, header_host, "/", headers).await;
        assert_eq!(
            (r.status, r.backend()),
            (200, Some(want)),
            "headers {headers:?}: {}",
            r.body
        );
    }
}

/// headers/probe: `K-Network-Hash: override` gets the KIngress's hash set (and echoed back by a
/// probe-aware backend); any other client value passes through untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_routes_echo_the_kingress_hash() {
    let a = Backend::start("probe-a-00001").await;
    let b = Backend::start("probe-b-00001").await;
    let host = "probe.default.example.com";
    let ing = kingress(
        NS,
        "probe",
        Some("Enabled"),
        &[KRule::external(
            &[host],
            vec![
                KPath::prefix("/single", vec![KSplit::new(a.name(), 100)])
                    .header("X-Path", "single"),
                KPath::any(vec![
                    KSplit::new(a.name(), 50).header("X-Split", "a"),
                    KSplit::new(b.name(), 50).header("X-Split", "b"),
                ]),
            ],
        )],
    );
    let (ns, name, spec) = parse_kingress(&ing);
    let hash = knative_pilot::khash::k_network_hash(&ns, &name, &spec);
    assert_eq!(hash.len(), 64);
    let gw = start(
        &[
            ("services.yaml", services(&[&a, &b])),
            ("kingress.yaml", ing),
        ],
        ApiType::DeltaGrpc,
        None,
    )
    .await;

    let probe = [
        ("K-Network-Probe", "probe"),
        ("K-Network-Hash", "override"),
        ("User-Agent", "Knative-Ingress-Probe"),
    ];
    let mut probed = BTreeMap::<String, usize>::new();
    for (path, times) in [("/single", 1), ("/healthz", 10), ("/", 10)] {
        for _ in 0..times {
            let r = http_get(gw.ext_port, host, path, &probe).await;
            assert_eq!(r.status, 200, "probe {path}: {}", r.body);
            assert_eq!(
                r.header("k-network-hash"),
                Some(hash.as_str()),
                "probe {path}: response headers {:?}",
                r.headers
            );
            assert_eq!(r.echoed_header("k-network-hash"), Some(hash.as_str()));
            // The probe copy keeps the route's own header operations.
            if path == "/single" {
                assert_eq!(r.echoed_header("x-path"), Some("single"));
            } else {
                let backend = r.backend().unwrap();
                let want = if backend == "probe-a-00001" { "a" } else { "b" };
                assert_eq!(r.echoed_header("x-split"), Some(want), "{}", r.body);
            }
            *probed.entry(r.backend().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(probed.len(), 2, "probes reach both splits: {probed:?}");

    // A random client value is neither matched nor rewritten, probe or not.
    for (path, headers) in [
        ("/single", &[("K-Network-Hash", "abc123")][..]),
        ("/", &[("K-Network-Hash", "abc123")][..]),
        (
            "/",
            &[("K-Network-Probe", "probe"), ("K-Network-Hash", "abc123")][..],
        ),
    ] {
        let r = http_get(gw.ext_port, host, path, headers).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.echoed_header("k-network-hash"),
            Some("abc123"),
            "{path} {headers:?}: {}",
            r.body
        );
    }
    // Without the header there is none.
    let r = http_get(gw.ext_port, host, "/", &[]).await;
    assert_eq!(r.echoed_header("k-network-hash"), None, "{}", r.body);
}

/// retry and timeout: a 503 from the backend reaches the client after exactly one attempt, and
/// a response slower than Envoy's default 15 s route timeout still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gateway_retry_and_no_route_timeout() {
    let flaky = Backend::start("flaky-00001").await;
    let slow = Backend::start("slow-00001").await;
    let ing = kingress(
        NS,
        "resilience",
        None,
        &[
            KRule::external(
                &["flaky.default.example.com"],
                vec![KPath::any(vec![KSplit::new(flaky.name(), 100)])],
            ),
            KRule::external(
                &["slow.default.example.com"],
                vec![KPath::any(vec![KSplit::new(slow.name(), 100)])],
            ),
        ],
    );
    let gw = start(
        &[
            ("services.yaml", services(&[&flaky, &slow])),
            ("kingress.yaml", ing),
        ],
        ApiType::Grpc,
        None,
    )
    .await;

    // The slow request first; it runs while the retry checks do.
    let port = gw.ext_port;
    let slow_req = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = try_http_get(port, "slow.default.example.com", "/delay/20", &[]).await;
        (r, t0.elapsed())
    });

    for (i, code) in [503u16, 503, 500, 502, 504].into_iter().enumerate() {
        let before = flaky.count();
        let r = http_get(
            gw.ext_port,
            "flaky.default.example.com",
            &format!("/status/{code}"),
            &[],
        )
        .await;
        assert_eq!(r.status, code, "{}", r.body);
        assert_eq!(r.backend(), Some("flaky-00001"), "the backend's own answer");
        // Retries, if any, would have happened before the response; give stragglers a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            flaky.count() - before,
            1,
            "request {i} (/status/{code}) must reach the backend exactly once"
        );
    }

    let (r, elapsed) = slow_req.await.unwrap();
    let r = r.unwrap_or_else(|e| panic!("slow request: {e}"));
    assert_eq!(r.status, 200, "after {elapsed:?}: {}", r.body);
    assert_eq!(r.backend(), Some("slow-00001"));
    assert!(elapsed >= Duration::from_secs(20), "{elapsed:?}");
    assert_eq!(slow.count(), 1);
}

/// basics/http2: a revision Service port named `http2` is spoken to with h2c, an `http` one with
/// HTTP/1.1, whatever the client speaks, also when both are splits of one path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_for_http2_ports() {
    let h2 = Backend::start("h2c-00001").await;
    let h1 = Backend::start("h1-00001").await;
    let ing = kingress(
        NS,
        "protocols",
        None,
        &[
            KRule::external(
                &["h2c.default.example.com"],
                vec![KPath::any(vec![KSplit::new(h2.name(), 100).port(81)])],
            ),
            KRule::external(
                &["h1.default.example.com"],
                vec![KPath::any(vec![KSplit::new(h1.name(), 100)])],
            ),
            KRule::external(
                &["mixed.default.example.com"],
                vec![KPath::any(vec![
                    KSplit::new(h2.name(), 50).port(81),
                    KSplit::new(h1.name(), 50),
                ])],
            ),
        ],
    );
    let svcs = format!(
        "{}---\n{}",
        revision_service(NS, h2.name(), &[h2.port()], true),
        revision_service(NS, h1.name(), &[h1.port()], false)
    );
    let gw = start(
        &[("services.yaml", svcs), ("kingress.yaml", ing)],
        ApiType::DeltaGrpc,
        None,
    )
    .await;

    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        for (host, backend, proto) in [
            ("h2c.default.example.com", "h2c-00001", "HTTP/2.0"),
            ("h1.default.example.com", "h1-00001", "HTTP/1.1"),
        ] {
            let r = http_request(gw.ext_port, version, "GET", host, "/", &[], "").await;
            assert_eq!((r.status, r.backend()), (200, Some(backend)), "{}", r.body);
            assert_eq!(
                r.body_json["proto"], proto,
                "{host} with client {version:?}"
            );
        }
    }
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let r = http_get(gw.ext_port, "mixed.default.example.com", "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let backend = r.backend().unwrap().to_string();
        let want = if backend == "h2c-00001" {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(r.body_json["proto"], want, "mixed split via {backend}");
        *seen.entry(backend).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// websocket and websocket/split: upgrades pass through the gateway, also on weighted clusters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_gateway_and_split() {
    let a = Backend::start("ws-a-00001").await;
    let b = Backend::start("ws-b-00001").await;
    let ing = kingress(
        NS,
        "websocket",
        None,
        &[
            KRule::external(
                &["ws.default.example.com"],
                vec![KPath::any(vec![KSplit::new(a.name(), 100)])],
            ),
            KRule::external(
                &["ws-split.default.example.com"],
                vec![KPath::any(vec![
                    KSplit::new(a.name(), 50),
                    KSplit::new(b.name(), 50),
                ])],
            ),
        ],
    );
    let gw = start(
        &[
            ("services.yaml", services(&[&a, &b])),
            ("kingress.yaml", ing),
        ],
        ApiType::Grpc,
        None,
    )
    .await;

    for i in 0..3 {
        let msg = format!("hello {i}");
        let reply = ws_echo(gw.ext_port, "ws.default.example.com", "/ws", &msg).await;
        assert_eq!(reply, msg);
    }
    assert_eq!(a.count(), 3, "each websocket is one upgrade request");
    assert_eq!(a.last_request().unwrap()["headers"]["upgrade"], "websocket");

    let (a0, b0) = (a.count(), b.count());
    for i in 0..20 {
        let msg = format!("split {i}");
        let reply = ws_echo(gw.ext_port, "ws-split.default.example.com", "/", &msg).await;
        assert_eq!(reply, msg);
    }
    let (da, db) = (a.count() - a0, b.count() - b0);
    assert_eq!(da + db, 20);
    assert!(
        da > 0 && db > 0,
        "both splits serve websockets: a={da} b={db}"
    );
}

/// httpoption: `Redirected` answers plain HTTP on the external gateway with a 301 to https
/// (never reaching the backend); the cluster-local gateway keeps serving plain HTTP, and an
/// `Enabled` KIngress is served on the external one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_option_redirected_answers_301() {
    let secure = Backend::start("secure-00001").await;
    let open = Backend::start("open-00001").await;
    let redirected = kingress(
        NS,
        "secure",
        Some("Redirected"),
        &[
            KRule::cluster_local(
                &[
                    "secure.default",
                    "secure.default.svc",
                    "secure.default.svc.cluster.local",
                ],
                vec![KPath::any(vec![KSplit::new(secure.name(), 100)])],
            ),
            KRule::external(
                &["secure.default.example.com"],
                vec![KPath::any(vec![KSplit::new(secure.name(), 100)])],
            ),
        ],
    );
    let enabled = kingress(
        NS,
        "open",
        Some("Enabled"),
        &[KRule::external(
            &["open.default.example.com"],
            vec![KPath::any(vec![KSplit::new(open.name(), 100)])],
        )],
    );
    let gw = start(
        &[
            ("services.yaml", services(&[&secure, &open])),
            ("secure.yaml", redirected),
            ("open.yaml", enabled),
        ],
        ApiType::DeltaGrpc,
        Some(ApiType::Grpc),
    )
    .await;

    for path in ["/", "/some/path?x=1"] {
        let r = http_get(gw.ext_port, "secure.default.example.com", path, &[]).await;
        assert_eq!(r.status, 301, "{path}: {:?} {}", r.headers, r.body);
        assert_eq!(
            r.header("location"),
            Some(format!("https://secure.default.example.com{path}").as_str()),
            "{path}"
        );
    }
    assert_eq!(secure.count(), 0, "a redirect never reaches the backend");

    let r = http_get(gw.ext_port, "open.default.example.com", "/", &[]).await;
    assert_eq!(
        (r.status, r.backend()),
        (200, Some("open-00001")),
        "{}",
        r.body
    );

    let r = http_get(gw.local_port, "secure.default.svc.cluster.local", "/", &[]).await;
    assert_eq!(
        (r.status, r.backend()),
        (200, Some("secure-00001")),
        "cluster-local traffic is not redirected: {}",
        r.body
    );
}
