//! Self-test of the e2e harness in tests/common: real Envoy 1.40 in front of
//! in-process echo backends.

mod common;

use std::time::{Duration, Instant};

use common::bootstrap::STATIC_TWO_BACKENDS_TEMPLATE;
use common::*;

const READY: Duration = Duration::from_secs(20);

fn two_backends_yaml(listener_port: u16, b1: &Backend, b2: &Backend) -> String {
    fill_template(
        STATIC_TWO_BACKENDS_TEMPLATE,
        &[
            ("listener_port", listener_port.to_string()),
            ("backend1_port", b1.port().to_string()),
            ("backend2_port", b2.port().to_string()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answers_directly() {
    let b = Backend::start("direct").await;

    let r = http_get(
        b.port(),
        "x.test",
        "/p?q=1",
        &[("X-Multi", "a"), ("x-multi", "b")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("direct"));
    assert_eq!(r.header("x-backend"), Some("direct"));
    assert_eq!(r.body_json["method"], "GET");
    assert_eq!(r.body_json["path"], "/p?q=1");
    assert_eq!(r.body_json["host"], "x.test");
    assert_eq!(r.body_json["proto"], "HTTP/1.1");
    assert_eq!(r.echoed_header("x-multi"), Some("a,b"));

    let r = http2_get(b.port(), "y.test", "/h2", &[]).await;
    assert_eq!(r.body_json["proto"], "HTTP/2.0");
    assert_eq!(r.body_json["host"], "y.test");

    let r = http_get(b.port(), "x.test", "/status/418", &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.backend(), Some("direct"));

    let t = Instant::now();
    let r = http_get(b.port(), "x.test", "/delay/0.3", &[]).await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let r = http_get(
        b.port(),
        "x.test",
        "/healthz",
        &[("K-Network-Probe", "probe"), ("K-Network-Hash", "h123")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("k-network-hash"), Some("h123"));

    assert_eq!(ws_echo(b.port(), "x.test", "/ws", "ping-1").await, "ping-1");

    let r = http_request(
        b.port(),
        HttpVersion::Http1,
        "POST",
        "x.test",
        "/post",
        &[],
        "payload",
    )
    .await;
    assert_eq!(r.body_json["method"], "POST");
    assert_eq!(r.body_json["body"], "payload");

    assert_eq!(b.count(), 7);
    assert_eq!(b.requests().len(), 7);
    assert_eq!(b.last_request().unwrap()["path"], "/post");

    // stop(): the port is closed once it returns.
    let mut b = b;
    let port = b.port();
    b.stop().await;
    assert!(try_http_get(port, "x.test", "/", &[]).await.is_err());

    // and a backend can come back on the same port.
    let b2 = Backend::start_on_port("again", port).await;
    assert_eq!(
        http_get(port, "x.test", "/", &[]).await.backend(),
        Some("again")
    );
    drop(b2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_to_backends() {
    let b1 = Backend::start("v1").await;
    let mut b2 = Backend::start("v2").await;
    let yaml = two_backends_yaml(0, &b1, &b2);
    envoy_validate(&yaml).expect("good bootstrap must validate");

    let mut envoy = Envoy::start(&yaml).await;
    envoy.wait_ready(READY).await;
    assert!(envoy.is_ready().await);
    let port = envoy
        .listener_port("listener_0")
        .await
        .expect("listener_0 bound");
    assert_ne!(port, 0);

    // a.example.com -> v1 over HTTP/1.1
    let r = http_get(port, "a.example.com", "/hello?x=1", &[("x-test", "t1")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("v1"));
    assert_eq!(r.body_json["host"], "a.example.com");
    assert_eq!(r.body_json["path"], "/hello?x=1");
    assert_eq!(r.body_json["proto"], "HTTP/1.1");
    assert_eq!(r.echoed_header("x-test"), Some("t1"));
    assert_eq!(r.echoed_header("x-harness-route"), Some("a"));
    assert_eq!(r.header("x-backend"), Some("v1"));
    assert_eq!(r.header("server"), Some("envoy"), "went through envoy");

    // b.example.com -> v2 over h2c
    let r = http_get(port, "b.example.com", "/hi", &[("x-test", "t2")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("v2"));
    assert_eq!(r.body_json["host"], "b.example.com");
    assert_eq!(r.body_json["proto"], "HTTP/2.0");
    assert_eq!(r.echoed_header("x-test"), Some("t2"));
    assert_eq!(r.echoed_header("x-harness-route"), Some("b"));

    // h2c downstream, HTTP/1.1 upstream
    let r = http2_get(port, "a.example.com", "/from-h2", &[]).await;
    assert_eq!(r.backend(), Some("v1"));
    assert_eq!(r.body_json["proto"], "HTTP/1.1");

    // upstream status passes through, with the backend's body
    let r = http_get(port, "a.example.com", "/status/503", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.backend(), Some("v1"));

    // Knative probe header echo through Envoy
    let r = http_get(
        port,
        "b.example.com",
        "/",
        &[("K-Network-Probe", "probe"), ("K-Network-Hash", "abc")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("k-network-hash"), Some("abc"));

    // unknown host: Envoy's own 404, no backend involved
    let r = http_get(port, "nope.example.com", "/", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.backend(), None);

    // keep-alive client reuses one connection
    let mut c = HttpClient::connect(port).await.unwrap();
    for i in 0..3 {
        let r = c
            .get("a.example.com", &format!("/ka/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.backend(), Some("v1"));
    }
    assert!(!c.is_closed());

    // websocket through Envoy (route-level upgrade_configs)
    assert_eq!(
        ws_echo(port, "a.example.com", "/ws", "hello ws").await,
        "hello ws"
    );
    // the h2c route has no websocket upgrade enabled
    assert!(try_ws_echo(port, "b.example.com", "/ws", "x")
        .await
        .is_err());

    assert_eq!(b1.count(), 1 + 1 + 1 + 3 + 1, "v1 requests");
    assert_eq!(b2.count(), 2, "v2 requests");

    // admin API
    let dump = envoy.config_dump().await;
    assert!(dump.to_string().contains("listener_0"));
    assert_eq!(envoy.listener_names().await, vec!["listener_0".to_string()]);
    let clusters = envoy.cluster_names().await;
    assert!(clusters.contains(&"backend1".to_string()), "{clusters:?}");
    assert!(clusters.contains(&"backend2".to_string()), "{clusters:?}");
    let stats = envoy.stats().await;
    assert_eq!(stats.get("cluster.backend2.upstream_rq_total"), Some(&2));
    assert!(
        envoy
            .stat("http.ingress.downstream_rq_total")
            .await
            .unwrap()
            >= 9
    );
    assert!(
        envoy.logs().contains("starting main dispatch loop"),
        "{}",
        envoy.logs()
    );

    // a stopped backend: Envoy answers 503 itself
    b2.stop().await;
    let r = http_get(port, "b.example.com", "/", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.backend(), None);

    // restart: same bootstrap, new process, listener on a new port 0 port
    let old_pid = envoy.pid().unwrap();
    envoy.restart().await;
    assert_ne!(envoy.pid().unwrap(), old_pid);
    envoy.wait_ready(READY).await;
    let port = envoy.listener_port("listener_0").await.unwrap();
    let r = http_get(port, "a.example.com", "/again", &[]).await;
    assert_eq!(r.backend(), Some("v1"));
    assert!(envoy.logs().contains("=== harness: envoy start #2 ==="));

    // Drop kills (and reaps) the process.
    let pid = envoy.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(envoy);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn envoy_validate_rejects_broken_config() {
    let yaml = STATIC_TWO_BACKENDS_TEMPLATE
        .replace("cluster: backend2\n", "cluster: no-such-cluster\n")
        .replace("{listener_port}", "0")
        .replace("{backend1_port}", "1")
        .replace("{backend2_port}", "2");
    assert!(yaml.contains("no-such-cluster"));
    let err = envoy_validate(&yaml).expect_err("route to an undefined cluster must be rejected");
    assert!(err.contains("no-such-cluster"), "unexpected error: {err}");

    let err = envoy_validate("static_resources: {listeners: [{name: 1, bogus_field: 2}]}")
        .expect_err("unknown field must be rejected");
    assert!(!err.is_empty());
}

#[test]
fn fill_template_panics_on_missing_placeholder() {
    let r = std::panic::catch_unwind(|| {
        fill_template(
            STATIC_TWO_BACKENDS_TEMPLATE,
            &[("listener_port", "0".into())],
        )
    });
    assert!(r.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_bootstrap_renders_validates_and_starts() {
    for api in [ApiType::Grpc, ApiType::DeltaGrpc] {
        let p = BootstrapParams::new(free_port())
            .api_type(api)
            .pod("gw-1", "knative-serving")
            .labels(&[("istio", "ingressgateway"), ("app", "gw")]);
        let yaml = render_bootstrap(&p);
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).expect("rendered yaml parses");
        assert_eq!(
            v["node"]["id"].as_str(),
            Some("router~127.0.0.1~gw-1.knative-serving~knative-serving.svc.cluster.local")
        );
        assert_eq!(v["node"]["id"].as_str().unwrap(), p.node_id());
        assert_eq!(
            v["node"]["metadata"]["NAMESPACE"].as_str(),
            Some("knative-serving")
        );
        assert_eq!(
            v["node"]["metadata"]["LABELS"]["istio"].as_str(),
            Some("ingressgateway")
        );
        assert_eq!(v["node"]["metadata"]["LABELS"]["app"].as_str(), Some("gw"));
        assert_eq!(
            v["dynamic_resources"]["ads_config"]["api_type"].as_str(),
            Some(api.as_str())
        );
        assert_eq!(
            v["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
                [0]["endpoint"]["address"]["socket_address"]["port_value"]
                .as_u64(),
            Some(p.xds_port as u64)
        );
        envoy_validate(&yaml).unwrap_or_else(|e| panic!("{api:?} bootstrap invalid: {e}"));
    }

    // With no ADS server behind xds_port, Envoy runs (admin up, identity as
    // configured) but never becomes ready: it waits for CDS/LDS forever.
    let p = BootstrapParams::new(free_port());
    let envoy = Envoy::start(&render_bootstrap(&p)).await;
    let dump = envoy.config_dump().await;
    let boot = &common::envoy::dump_sections(&dump, "BootstrapConfigDump")[0]["bootstrap"];
    assert_eq!(boot["node"]["id"].as_str(), Some(p.node_id().as_str()));
    assert_eq!(
        boot["node"]["metadata"]["LABELS"]["istio"].as_str(),
        Some("ingressgateway")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !envoy.is_ready().await,
        "must not be ready without an ADS server"
    );
    assert!(envoy.listener_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "envoy exited during startup")]
async fn envoy_start_panics_on_bad_bootstrap() {
    let _ = Envoy::start("admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\nstatic_resources: {clusters: [{name: x, type: NOPE}]}").await;
}

#[test]
fn wait_until_times_out_and_succeeds() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(!wait_until(Duration::from_millis(250), || async { false }).await);
        let start = Instant::now();
        assert!(
            wait_until(Duration::from_secs(5), || async move {
                start.elapsed() > Duration::from_millis(200)
            })
            .await
        );
        eventually(Duration::from_secs(1), "true", || async { true }).await;
    });
}
