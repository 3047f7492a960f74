//! End to end with stock Envoy (SotW and Delta) and real HTTP: one tenant's bad objects on a
//! shared gateway never hurt the other hosts. Each row of issue 12's table is written next to
//! three good services: a VirtualService regex that is not RE2, an Endpoints address that is not
//! an IP, KIngress headers Envoy refuses (line feed, NUL, `:authority`, `host`, a bad `%`
//! format), a `rewriteHost` with a line feed, and a file that does not parse. Afterwards every
//! good host still answers, the gateway still takes changes (a KIngress added later is served),
//! the Envoy NACKed nothing, the bad objects are reported on `/debug/inputs`, and a restarted
//! Envoy (empty, as a new gateway pod) serves every good host.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::fixture::ENVOY_READY;
use common::*;

const NS: &str = "default";
const CONVERGE: Duration = Duration::from_secs(20);

fn host(name: &str) -> String {
    format!("{name}.{NS}.example.com")
}

/// A KIngress of ours routing `host(name)` to revision Service `service` (port 80), with
/// `append` headers on its split and an optional `rewriteHost`.
fn ingress_with(
    name: &str,
    service: &str,
    append: &[(&str, &str)],
    rewrite: Option<&str>,
) -> String {
    let mut split = KSplit::new(service, 100);
    for (k, v) in append {
        split = split.header(k, v);
    }
    let mut doc = kingress(
        NS,
        name,
        None,
        &[KRule::external(
            &[&host(name)],
            vec![KPath::any(vec![split])],
        )],
    );
    if let Some(rw) = rewrite {
        // The path's rewriteHost, as JSON-escaped YAML (so a line feed stays in the value).
        doc = doc.replacen(
            "      - splits:",
            &format!(
                "      - rewriteHost: {}\n        splits:",
                serde_json::to_string(rw).unwrap()
            ),
            1,
        );
    }
    doc
}

fn ingress(name: &str, service: &str) -> String {
    ingress_with(name, service, &[], None)
}

/// The bad objects of the table, one file each (name, content, object that must be reported).
fn bad_files() -> Vec<(&'static str, String, Option<&'static str>)> {
    let vs = format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: bad-regex, namespace: {NS}}}
spec:
  gateways: [knative-serving/knative-ingress-gateway]
  hosts: [{}]
  http:
  - match:
    - uri: {{regex: "/(v1"}}
    route:
    - destination: {{host: good-0-00001.{NS}.svc.cluster.local, port: {{number: 80}}}}
"#,
        host("bad-regex")
    );
    let bad_ip = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: bad-ip-00001, namespace: {NS}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8012}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: bad-ip-00001, namespace: {NS}}}
subsets:
- addresses: [{{ip: 999.1.1.1}}]
  ports: [{{name: http, port: 8012}}]
"#
    );
    vec![
        (
            "bad-regex.yaml",
            vs,
            Some("VirtualService default/bad-regex"),
        ),
        ("bad-ip.yaml", bad_ip, None),
        (
            "bad-ip-ingress.yaml",
            ingress("bad-ip", "bad-ip-00001"),
            None,
        ),
        (
            "bad-lf.yaml",
            ingress_with("bad-lf", "good-0-00001", &[("x-a", "a\nInjected: 1")], None),
            Some("Ingress default/bad-lf"),
        ),
        (
            "bad-nul.yaml",
            ingress_with("bad-nul", "good-0-00001", &[("x-a", "a\0b")], None),
            Some("Ingress default/bad-nul"),
        ),
        (
            "bad-authority.yaml",
            ingress_with(
                "bad-authority",
                "good-0-00001",
                &[(":authority", "evil")],
                None,
            ),
            Some("Ingress default/bad-authority"),
        ),
        (
            "bad-host.yaml",
            ingress_with("bad-host", "good-0-00001", &[("host", "evil")], None),
            Some("Ingress default/bad-host"),
        ),
        (
            "bad-format.yaml",
            ingress_with("bad-format", "good-0-00001", &[("x-a", "100%")], None),
            Some("Ingress default/bad-format"),
        ),
        (
            "bad-rewrite.yaml",
            ingress_with("bad-rewrite", "good-0-00001", &[], Some("a\nb")),
            Some("Ingress default/bad-rewrite"),
        ),
        ("broken.yaml", "kind: [\n".to_string(), None),
    ]
}

/// Waits until `host` is answered 200 by `backend`.
async fn served(port: u16, host: &str, backend: &str, envoy: &Envoy) {
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let seen = match try_http_get(port, host, "/", &[]).await {
            Ok(r) => format!("{} {}", r.status, r.backend().unwrap_or("-")),
            Err(e) => e,
        };
        if seen == format!("200 {backend}") {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{host}: not served by {backend} after {CONVERGE:?}; last: {seen}\nEnvoy log tail:\n{}",
                envoy.logs_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bad_objects_hurt_no_other_host(api: ApiType) {
    let backends = [
        Backend::start("good-0").await,
        Backend::start("good-1").await,
        Backend::start("good-2").await,
    ];
    let mut files = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let name = format!("good-{i}");
        let rev = format!("{name}-00001");
        files.push((
            format!("{name}-svc.yaml"),
            revision_service(NS, &rev, &[b.port()], false),
        ));
        files.push((format!("{name}.yaml"), ingress(&name, &rev)));
    }
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let mut gw = Fixture::new().files(&files).external(api).start().await;
    let port = gw.ext_port;
    for i in 0..3 {
        served(
            port,
            &host(&format!("good-{i}")),
            &format!("good-{i}"),
            gw.envoy(),
        )
        .await;
    }

    let before = generation(&gw.server).await;
    let bad = bad_files();
    for (name, content, _) in &bad {
        gw.dir.write(name, content);
    }
    // The Envoy ACKs the generation holding every bad object (they were left out).
    wait_synced(&gw.server, before, 1).await;
    for i in 0..3 {
        served(
            port,
            &host(&format!("good-{i}")),
            &format!("good-{i}"),
            gw.envoy(),
        )
        .await;
    }

    // The gateway still updates: a KIngress added now is served.
    let late = Backend::start("late").await;
    gw.dir.write(
        "late-svc.yaml",
        &revision_service(NS, "late-00001", &[late.port()], false),
    );
    gw.dir.write("late.yaml", &ingress("late", "late-00001"));
    served(port, &host("late"), "late", gw.envoy()).await;

    // Nothing was NACKed, and each bad object is reported by name.
    let metrics = gw.server.get("/metrics").await.expect("/metrics").body;
    let rejects: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("pilot_total_xds_rejects") && !l.ends_with(" 0"))
        .collect();
    assert!(rejects.is_empty(), "{rejects:?}");
    let inputs = gw.server.get_json("/debug/inputs").await;
    let objects = inputs["objects"].as_array().cloned().unwrap_or_default();
    for (_, _, object) in &bad {
        let Some(object) = object else { continue };
        let o = objects
            .iter()
            .find(|o| o["object"] == *object)
            .unwrap_or_else(|| panic!("{object} not on /debug/inputs: {inputs:#}"));
        let errors = o["errors"].to_string();
        assert!(
            errors.contains("Envoy would reject it"),
            "{object}: {errors}"
        );
    }
    let all = inputs.to_string();
    assert!(
        all.contains("broken.yaml"),
        "the file that does not parse is reported: {inputs:#}"
    );
    // A bad bad-ip address is never sent: its host answers 503 (no endpoint), not a NACK.
    let r = try_http_get(port, &host("bad-ip"), "/", &[])
        .await
        .expect("bad-ip answered");
    assert_eq!(r.status, 503);

    // A new gateway pod (the Envoy restarted, empty) serves every good host.
    gw.envoys[0].restart().await;
    gw.envoy().wait_ready(ENVOY_READY).await;
    for i in 0..3 {
        served(
            port,
            &host(&format!("good-{i}")),
            &format!("good-{i}"),
            gw.envoy(),
        )
        .await;
    }
    served(port, &host("late"), "late", gw.envoy()).await;
    for (_, _, object) in &bad {
        if let Some(name) = object.and_then(|o| o.strip_prefix("Ingress default/")) {
            let r = try_http_get(port, &host(name), "/", &[])
                .await
                .expect("answered");
            assert_eq!(r.status, 404, "{name} is left out");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_hurt_no_other_host_sotw() {
    bad_objects_hurt_no_other_host(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_objects_hurt_no_other_host_delta() {
    bad_objects_hurt_no_other_host(ApiType::DeltaGrpc).await;
}
