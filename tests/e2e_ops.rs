//! Operating the server with real Envoys: `/metrics` (Prometheus text) and the debug endpoints
//! answer with real values that move when the config changes and when an Envoy NACKs, the
//! `/debug/config_dump?proxyID=` of a connected Envoy is what that Envoy holds (`diff` says
//! equal), and `--log-format json` writes one JSON object per line with the span fields.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::cluster::*;
use common::*;
use serde_json::Value;

const NS: &str = "default";
const READY: Duration = Duration::from_secs(30);
const EXT_NODE: &str = "router~127.0.0.1~gw-ext-0.istio-system~istio-system.svc.cluster.local";
const LOCAL_NODE: &str = "router~127.0.0.1~gw-local-0.istio-system~istio-system.svc.cluster.local";

/// Samples of a Prometheus text exposition: `name{labels}` -> value.
async fn scrape(server: &Server) -> BTreeMap<String, f64> {
    let r = server.get("/metrics").await.expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn m(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

fn app(header: &str) -> String {
    kingress(
        NS,
        "app",
        None,
        &[
            KRule::external(
                &["app.default.example.com"],
                vec![KPath::any(vec![KSplit::new("app-00001", 100)]).header("X-Gen", header)],
            ),
            KRule::cluster_local(
                &["app.default.svc.cluster.local"],
                vec![KPath::any(vec![KSplit::new("app-00001", 100)]).header("X-Gen", header)],
            ),
        ],
    )
}

fn regex_virtual_service(regex: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: bad-ingress, namespace: {NS}}}
spec:
  gateways: [knative-serving/knative-ingress-gateway]
  hosts: [bad.default.example.com]
  http:
  - match:
    - uri: {{regex: "{regex}"}}
    route:
    - destination:
        host: app-00001.{NS}.svc.cluster.local
        port: {{number: 80}}
"#
    )
}

async fn wait_metric(server: &Server, what: &str, ok: impl Fn(&BTreeMap<String, f64>) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape(server).await;
        if ok(&s) {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}: {s:#?}\n{}", server.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `diff <Envoy's admin dump> <our /debug/config_dump?proxyID=node>`: (exit code, stdout).
async fn diff_sent_and_held(server: &Server, node: &str, envoy: &Envoy) -> (i32, String) {
    let sent = server
        .get_json(&format!("/debug/config_dump?proxyID={node}"))
        .await;
    let held = envoy.config_dump().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("envoy.json"), dir.path().join("sent.json"));
    std::fs::write(&a, held.to_string()).unwrap();
    std::fs::write(&b, sent.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(["diff", a.to_str().unwrap(), b.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_debug_endpoints_answer_with_real_values() {
    let backend = Backend::start("app-00001").await;
    let (ext_port, local_port) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("gateways.yaml", &gateway_services(ext_port, local_port));
    dir.write(
        "app-rev.yaml",
        &revision_service(NS, "app-00001", &[backend.port()], false),
    );
    dir.write("app.yaml", &app("1"));
    let server = Server::start_with_env(
        &[
            "--from",
            dir.path().to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "info")],
    )
    .await;
    // The external gateway runs with a stricter RE2 program size limit than Envoy's default
    // (100), which the server assumes: a regex the server accepts is what this Envoy NACKs.
    let ext = Envoy::start(&render_bootstrap(
        &BootstrapParams::new(server.xds_port())
            .api_type(ApiType::Grpc)
            .pod("gw-ext-0", "istio-system")
            .labels(EXTERNAL_LABELS)
            .strict_re2(true),
    ))
    .await;
    let local = start_gateway(&server, "gw-local-0", LOCAL_LABELS, ApiType::DeltaGrpc).await;
    ext.wait_ready(READY).await;
    local.wait_ready(READY).await;
    let gen = wait_synced(&server, 0, 2).await;
    let r = http_get(ext_port, "app.default.example.com", "/", &[]).await;
    assert_eq!(r.echoed_header("x-gen"), Some("1"));

    // --- /metrics after the first sync.
    let s0 = scrape(&server).await;
    assert_eq!(m(&s0, "pilot_xds"), 2.0, "{s0:#?}");
    for t in ["cds", "eds", "lds", "rds"] {
        let k = format!("pilot_xds_pushes{{type=\"{t}\"}}");
        assert!(m(&s0, &k) >= 2.0, "{k}: {s0:#?}");
        let acks = format!("knative_pilot_xds_acks{{type=\"{t}\"}}");
        assert!(m(&s0, &acks) >= 2.0, "{acks}: {s0:#?}");
        let size = format!("pilot_xds_config_size_bytes_sum{{type=\"{t}\"}}");
        assert!(m(&s0, &size) > 0.0, "{size}: {s0:#?}");
        let time = format!("pilot_xds_push_time_count{{type=\"{t}\"}}");
        assert_eq!(m(&s0, &time), m(&s0, &k), "one push time per push: {s0:#?}");
    }
    assert!(m(&s0, "pilot_proxy_convergence_time_count") >= 2.0);
    assert!(m(&s0, "pilot_proxy_convergence_time_sum") > 0.0);
    // Two gateway Services and one revision Service.
    assert_eq!(m(&s0, "pilot_services"), 3.0, "{s0:#?}");
    assert_eq!(m(&s0, "knative_pilot_inputs{kind=\"Ingress\"}"), 1.0);
    assert_eq!(m(&s0, "knative_pilot_inputs{kind=\"Endpoints\"}"), 1.0);
    assert_eq!(m(&s0, "knative_pilot_input_errors"), 0.0);
    assert_eq!(m(&s0, "knative_pilot_generation"), gen as f64);
    assert_eq!(m(&s0, "pilot_total_xds_rejects{type=\"rds\"}"), 0.0);

    // --- /debug/connections and /debug/syncz.
    let c = server.get_json("/debug/connections").await;
    assert_eq!(c["count"], 2, "{c:#}");
    let ext_conn = c["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node_id"] == EXT_NODE)
        .unwrap_or_else(|| panic!("{c:#}"));
    assert_eq!(ext_conn["mode"], "sotw");
    assert_eq!(
        ext_conn["gateways"],
        serde_json::json!(["knative-serving/knative-ingress-gateway"])
    );
    let syncz = server.get_json("/debug/syncz").await;
    let local_sync = syncz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node_id"] == LOCAL_NODE)
        .unwrap_or_else(|| panic!("{syncz:#}"))
        .clone();
    assert_eq!(local_sync["mode"], "delta");
    assert_eq!(
        local_sync["gateways"],
        serde_json::json!(["knative-serving/cluster-local-gateway"])
    );
    assert!(local_sync["connected_since"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(local_sync["synced"], true);
    let rds = &local_sync["types"]["rds"];
    assert!(rds["last_sent_nonce"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    assert!(rds["last_acked_version"].is_string(), "{rds:#}");
    assert!(rds["last_nack"].is_null());

    // --- /debug/config_dump?proxyID= is what that Envoy holds.
    for (node, envoy) in [(EXT_NODE, &ext), (LOCAL_NODE, &local)] {
        let (code, stdout) = diff_sent_and_held(&server, node, envoy).await;
        assert_eq!(code, 0, "{node}: {stdout}");
    }

    // --- A change: pushes, ACKs and convergence grow; the generation gauge follows.
    dir.write("app.yaml", &app("2"));
    let gen2 = wait_synced(&server, gen, 2).await;
    let s1 = scrape(&server).await;
    // The header lives in the routes: both Envoys got a new RouteConfiguration and ACKed it.
    let k = "pilot_xds_pushes{type=\"rds\"}";
    assert!(m(&s1, k) >= m(&s0, k) + 2.0, "{k}: {s0:#?} {s1:#?}");
    let acks = "knative_pilot_xds_acks{type=\"rds\"}";
    assert!(m(&s1, acks) >= m(&s0, acks) + 2.0, "{acks}");
    assert!(
        m(&s1, "pilot_proxy_convergence_time_count")
            >= m(&s0, "pilot_proxy_convergence_time_count") + 2.0
    );
    assert_eq!(m(&s1, "knative_pilot_generation"), gen2 as f64);

    // --- A regex that is not RE2: left out by the server (Envoy would reject the shared
    // route configuration), reported by /debug/inputs and by `validate`, never sent.
    let before = m(&scrape(&server).await, "knative_pilot_generation") as u64;
    dir.write("bad-vs.yaml", &regex_virtual_service("("));
    // Both Envoys ACK the generation that left it out.
    wait_synced(&server, before, 2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = server.get_json("/debug/inputs").await;
        let errors = v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["object"] == "VirtualService default/bad-ingress")
            .map(|o| o["errors"].to_string())
            .unwrap_or_default();
        if errors.contains("is not valid RE2") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(["validate", "--bind-address", "127.0.0.1", "--from"])
        .arg(dir.path())
        .output()
        .unwrap();
    let vout = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{vout}");
    assert!(
        vout.contains("error[envoy-rejects] VirtualService default/bad-ingress (bad-vs.yaml document 1): host \"bad.default.example.com\": route 0: path regex \"(\" is not valid RE2"),
        "{vout}"
    );
    let s_bad = scrape(&server).await;
    assert_eq!(m(&s_bad, "pilot_total_xds_rejects{type=\"rds\"}"), 0.0);

    // --- A route this Envoy rejects anyway (its runtime is stricter than the server knows):
    // the NACK is counted, shown in syncz with Envoy's message and a time, and logged at WARN;
    // then contained (the VirtualService is quarantined for the gateway and the Envoy
    // converges on the rest).
    dir.write(
        "bad-vs.yaml",
        &regex_virtual_service(REGEX_OVER_STRICT_LIMIT),
    );
    wait_metric(&server, "an RDS reject", |s| {
        m(s, "pilot_total_xds_rejects{type=\"rds\"}") >= 1.0
    })
    .await;
    let syncz = server.get_json("/debug/syncz").await;
    let ext_sync = syncz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node_id"] == EXT_NODE)
        .unwrap()
        .clone();
    let nack = &ext_sync["types"]["rds"]["last_nack"];
    let msg = nack["error"].as_str().unwrap_or_default();
    assert!(msg.contains("program size"), "{nack:#}");
    assert!(
        nack["at"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{nack:#}"
    );
    // Contained: the Envoy holds exactly what it is now sent (the VirtualService left out),
    // and the rejection is reported with the object.
    eventually(READY, "the external Envoy synced again", || async {
        let syncz = server.get_json("/debug/syncz").await;
        syncz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["node_id"] == EXT_NODE && c["synced"] == true)
    })
    .await;
    let (code, stdout) = diff_sent_and_held(&server, EXT_NODE, &ext).await;
    assert_eq!(code, 0, "{stdout}");
    let inputs = server.get_json("/debug/inputs").await;
    assert!(
        inputs["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e
                .starts_with("VirtualService default/bad-ingress (bad-vs.yaml")
                && e.contains("rejected by Envoy"))),
        "{inputs:#}"
    );

    // --- /debug/inputs: objects with their file and document, and errors per object.
    dir.write(
        "broken.yaml",
        &kingress(
            NS,
            "broken",
            None,
            &[KRule::external(
                &["broken.default.example.com"],
                vec![KPath::any(vec![KSplit::new("app-00001", 90)])],
            )],
        ),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let broken = loop {
        let v = server.get_json("/debug/inputs").await;
        let found = v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["object"] == "Ingress default/broken")
            .cloned();
        if let Some(o) = found.filter(|o| !o["errors"].as_array().unwrap().is_empty()) {
            break o;
        }
        assert!(std::time::Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(broken["origin"]["file"], "broken.yaml");
    assert_eq!(broken["origin"]["doc"], 1);
    assert!(
        broken["errors"][0].as_str().unwrap().contains("90"),
        "{broken:#}"
    );
    let v = server.get_json("/debug/inputs").await;
    let app_obj = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object"] == "Ingress default/app")
        .unwrap();
    assert_eq!(app_obj["errors"], serde_json::json!([]));
    wait_metric(&server, "input errors counted", |s| {
        m(s, "knative_pilot_input_errors") >= 1.0
    })
    .await;

    // --- Logs: one JSON object per line; pushes are INFO with type, count and bytes inside the
    // connection span (node id) and the push span; the NACK is a WARN with Envoy's message.
    let logs = server.logs();
    let stderr = logs
        .split("----- stderr -----\n")
        .nth(1)
        .unwrap_or_default();
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let push = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "xDS push"
                && l["span"]["xds_type"] == "rds"
                && l["spans"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["node"] == LOCAL_NODE))
        })
        .unwrap_or_else(|| panic!("no RDS push line for the local Envoy:\n{stderr}"));
    assert_eq!(push["level"], "INFO");
    assert!(push["fields"]["bytes"].as_u64().unwrap() > 0, "{push}");
    assert!(push["fields"]["resources"].as_u64().is_some(), "{push}");
    let warn = lines
        .iter()
        .find(|l| {
            l["level"] == "WARN" && l["fields"]["message"] == "NACK: Envoy rejected the config"
        })
        .unwrap_or_else(|| panic!("no NACK WARN line:\n{stderr}"));
    assert_eq!(warn["fields"]["xds_type"], "rds");
    assert!(
        warn["fields"]["error"].as_str().unwrap().contains("regex")
            || warn["fields"]["error"]
                .as_str()
                .unwrap()
                .contains("missing )")
    );
    assert!(warn["spans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["node"].is_string()));
}
