//! End to end: a VirtualService that a real Envoy rejects (NACKs) while our translator accepts
//! it is contained: quarantined for that gateway, reported, and every other host keeps being
//! served and updated, also by a gateway Envoy started afterwards against a fresh server.
//!
//! The test vector: the gateway Envoys run with a stricter runtime than the translator assumes
//! (`re2.max_program_size.error_level: 10` in a static runtime layer; Envoy's default is 100),
//! so a path regex of moderate size is valid RE2 within the default limit (translation accepts
//! it) but over this Envoy's: it NACKs the shared `http.80` RouteConfiguration. Run for SotW and
//! Delta (the NACKed response names differ: whole RouteConfiguration in both, one stream each).

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use serde_json::Value;

const NS: &str = "default";
const READY: Duration = Duration::from_secs(30);
const SERVED: Duration = Duration::from_secs(30);

/// Within RE2's default program-size limit (100), over the test Envoy's (10).
const COMPLEX_REGEX: &str = "/(alpha|beta|gamma)/[a-z]+";

fn host(name: &str) -> String {
    format!("{name}.{NS}.example.com")
}

/// A KIngress for `name`'s host, routing to the revision Service `name-00001`.
fn app(name: &str) -> String {
    let rev = format!("{name}-00001");
    kingress(
        NS,
        name,
        None,
        &[KRule::external(
            &[&host(name)],
            vec![KPath::any(vec![KSplit::new(&rev, 100)])],
        )],
    )
}

/// The VirtualService `bad` for `bad.default.example.com` on the external gateway, matching
/// `uri` (`regex: ...` or `prefix: ...`), routing to `one-00001`.
fn virtual_service(uri: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: bad, namespace: {NS}}}
spec:
  gateways: [knative-serving/knative-ingress-gateway]
  hosts: [{host}]
  http:
  - match:
    - uri: {{{uri}}}
    route:
    - destination:
        host: one-00001.{NS}.svc.cluster.local
        port: {{number: 80}}
"#,
        host = host("bad"),
    )
}

/// The external gateway's bootstrap with the stricter RE2 program-size limit.
fn strict_bootstrap(server: &Server, pod: &str, api: ApiType) -> String {
    let params = BootstrapParams::new(server.xds_port())
        .api_type(api)
        .pod(pod, "istio-system")
        .labels(EXTERNAL_LABELS);
    format!(
        "{}\nlayered_runtime:\n  layers:\n  - name: strict-re2\n    static_layer:\n      re2.max_program_size.error_level: 10\n",
        render_bootstrap(&params)
    )
}

async fn strict_envoy(server: &Server, pod: &str, api: ApiType) -> Envoy {
    let envoy = Envoy::start(&strict_bootstrap(server, pod, api)).await;
    envoy.wait_ready(READY).await;
    envoy
}

/// Waits until `host` answers 200 from `backend` through the gateway on `port`.
async fn served(port: u16, name: &str, backend: &str) {
    eventually(SERVED, &format!("{name} served by {backend}"), || async {
        try_http_get(port, &host(name), "/alpha/x", &[])
            .await
            .is_ok_and(|r| r.status == 200 && r.backend() == Some(backend))
    })
    .await;
}

/// The `/debug/inputs` entry of the VirtualService `default/bad`.
async fn bad_entry(server: &Server) -> Value {
    let v = server.get_json("/debug/inputs").await;
    v["objects"]
        .as_array()
        .and_then(|o| {
            o.iter()
                .find(|e| e["object"] == "VirtualService default/bad")
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// The rejection error `/debug/inputs` reports for the VirtualService, if any.
async fn rejection(server: &Server) -> Option<String> {
    let e = bad_entry(server).await;
    e["errors"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|m| m.contains("rejected by Envoy"))
        .map(str::to_string)
}

/// Waits until `/debug/inputs` reports the VirtualService as rejected by Envoy; returns its
/// error.
async fn reported_rejected(server: &Server) -> String {
    eventually(SERVED, "the rejected VirtualService reported", || async {
        rejection(server).await.is_some()
    })
    .await;
    rejection(server).await.unwrap_or_default()
}

async fn contains_a_nack(api: ApiType) {
    let backends = [
        Backend::start("one-00001").await,
        Backend::start("two-00001").await,
        Backend::start("three-00001").await,
        Backend::start("four-00001").await,
    ];
    let mut fixture = Fixture::new();
    for (name, b) in ["one", "two", "three"].iter().zip(&backends) {
        fixture = fixture.file(
            &format!("{name}.yaml"),
            format!(
                "{}---\n{}",
                revision_service(NS, &format!("{name}-00001"), &[b.port()], false),
                app(name)
            ),
        );
    }
    let gw = fixture.start().await;
    let (server, dir, port) = (&gw.server, &gw.dir, gw.ext_port);
    let mut envoy = strict_envoy(server, EXT_POD, api).await;
    wait_synced(server, 0, 1).await;
    for name in ["one", "two", "three"] {
        served(port, name, &format!("{name}-00001")).await;
    }

    // The VirtualService this Envoy rejects arrives: it is reported, by name, with Envoy's
    // message and the gateway; every other host keeps answering.
    dir.write(
        "bad.yaml",
        &virtual_service(&format!("regex: {COMPLEX_REGEX:?}")),
    );
    let err = reported_rejected(server).await;
    eprintln!("reported: {err}");
    assert!(err.contains("program size"), "Envoy's message: {err}");
    assert!(
        err.contains("knative-serving/knative-ingress-gateway"),
        "the gateway: {err}"
    );
    assert!(err.contains("until the object changes"), "{err}");
    let all = server.get_json("/debug/inputs").await;
    assert!(
        all["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|l| l.as_str().is_some_and(|l| l
                .starts_with("VirtualService default/bad (")
                && l.contains("bad.yaml")))),
        "the error line names the object and its file: {all:#}"
    );
    for name in ["one", "two", "three"] {
        served(port, name, &format!("{name}-00001")).await;
    }
    assert_eq!(
        http_get(port, &host("bad"), "/alpha/x", &[]).await.status,
        404
    );

    // ... and still updates: a KIngress added afterwards is served.
    dir.write(
        "four.yaml",
        &format!(
            "{}---\n{}",
            revision_service(NS, "four-00001", &[backends[3].port()], false),
            app("four")
        ),
    );
    served(port, "four", "four-00001").await;
    // The gateway converges on what it accepts.
    let g = generation(server).await;
    wait_synced(server, g - 1, 1).await;

    // A restarted gateway pod against a restarted server (which has never seen this Envoy
    // accept anything): every good host is served, the bad one is found again.
    envoy.stop();
    let server2 = serve_dir(dir, &[]).await;
    let _envoy2 = strict_envoy(&server2, EXT_POD, api).await;
    for name in ["one", "two", "three", "four"] {
        served(port, name, &format!("{name}-00001")).await;
    }
    let err = reported_rejected(&server2).await;
    assert!(err.contains("program size"), "{err}");
    eprintln!(
        "fresh server and Envoy: every good host served after {} generations (1 = the load)",
        generation(&server2).await
    );
    assert_eq!(
        http_get(port, &host("bad"), "/alpha/x", &[]).await.status,
        404
    );

    // Fixing the object makes it served (it is tried again because it changed).
    dir.write("bad.yaml", &virtual_service("prefix: /alpha"));
    served(port, "bad", "one-00001").await;
    let e = bad_entry(&server2).await;
    assert_eq!(e["errors"], Value::Array(vec![]), "{e:#}");
    for name in ["one", "two", "three", "four"] {
        served(port, name, &format!("{name}-00001")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_gateway_keeps_serving_and_updating_around_a_rejected_virtual_service() {
    contains_a_nack(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_gateway_keeps_serving_and_updating_around_a_rejected_virtual_service() {
    contains_a_nack(ApiType::DeltaGrpc).await;
}
