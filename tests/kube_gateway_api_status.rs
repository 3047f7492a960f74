//! Gateway API status with `serve --kube`: written through the status subresource of a fake
//! API server that speaks the real wire format (no Kubernetes API server exists on these
//! machines; kube-rs's real client and watchers talk to it), by the Lease holder, only for
//! objects of our controller. A Gateway is Programmed only once its real Envoy has ACKed the
//! config carrying it; HTTPRoute parents carry the spec's reasons, and another controller's
//! entry is left as it was.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::fake_apiserver::{endpoint_slice, FakeApiServer};
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const V1: &str = "gateway.networking.k8s.io/v1";
const GW_LABELS: &[(&str, &str)] = &[("gateway.networking.k8s.io/gateway-name", "gw")];
const OURS: &str = "knative-pilot.dev/gateway-controller";

async fn start_server(api: &FakeApiServer) -> Server {
    let kubeconfig = api.kubeconfig("a");
    Server::start_with_env(
        &[
            "--kube",
            "--bind-address",
            "127.0.0.1",
            "--identity",
            "a",
            "--lease-duration",
            "2s",
            "--lease-renew",
            "200ms",
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .await
}

fn status(api: &FakeApiServer, kind: &str, ns: &str, name: &str) -> Value {
    api.get(V1, kind, ns, name)
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

fn cond<'a>(conds: &'a Value, t: &str) -> &'a Value {
    conds
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

/// `status/reason` of condition `t`.
fn sr(conds: &Value, t: &str) -> String {
    let c = cond(conds, t);
    format!(
        "{}/{}",
        c["status"].as_str().unwrap_or(""),
        c["reason"].as_str().unwrap_or("")
    )
}

/// Our entries of an HTTPRoute's `status.parents`.
fn our_parents(s: &Value) -> Vec<Value> {
    s["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == OURS)
        .cloned()
        .collect()
}

async fn wait_for(
    api: &FakeApiServer,
    kind: &str,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = status(api, kind, ns, name);
        if ok(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: status of {kind} {ns}/{name} is {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until route `name`'s first entry of ours has (Accepted, ResolvedRefs) = `want`.
async fn wait_route(api: &FakeApiServer, name: &str, want: (&str, &str)) -> Value {
    wait_for(api, "HTTPRoute", "apps", name, &format!("{want:?}"), |s| {
        our_parents(s).first().is_some_and(|p| {
            sr(&p["conditions"], "Accepted") == want.0
                && sr(&p["conditions"], "ResolvedRefs") == want.1
        })
    })
    .await
}

fn route(name: &str, parents: &str, hosts: &str, backend: &str) -> String {
    format!(
        "apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec:\n  parentRefs: {parents}\n  hostnames: {hosts}\n\
         \x20 rules:\n  - backendRefs: [{backend}]\n"
    )
}

fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_status_for_our_objects_programmed_once_acked() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (port, selected_port) = gateway_ports();
    let same_port = free_port();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&format!(
        r#"apiVersion: {V1}
kind: GatewayClass
metadata: {{name: knative-pilot}}
spec: {{controllerName: {OURS}}}
---
apiVersion: {V1}
kind: GatewayClass
metadata: {{name: theirs}}
spec: {{controllerName: example.com/other}}
---
apiVersion: {V1}
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: knative-pilot
  listeners:
  - {{name: http, port: {port}, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {{namespaces: {{from: All}}}}}}
  - {{name: same, port: {same_port}, protocol: HTTP}}
  - name: selected
    port: {selected_port}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchExpressions: [{{key: env, operator: In, values: [prod]}}]}}}}}}
---
apiVersion: {V1}
kind: Gateway
metadata: {{name: theirs-gw, namespace: infra}}
spec: {{gatewayClassName: theirs, listeners: [{{name: http, port: 80, protocol: HTTP}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: gw, namespace: infra}}
spec:
  selector: {{gateway.networking.k8s.io/gateway-name: gw}}
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: {port}, targetPort: {port}}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: apps, labels: {{env: prod}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: dev, labels: {{env: dev}}}}
"#
    ));
    for (ns, name, backend) in [("apps", "a", &a), ("shared", "b", &b)] {
        api.apply_yaml(&service(ns, name));
        api.apply(endpoint_slice(
            ns,
            &format!("{name}-x1"),
            name,
            backend.port(),
        ));
    }
    let gw = |section: &str| format!("{{name: gw, namespace: infra, sectionName: {section}}}");
    // A route already holding another controller's entry.
    let mut hello: Value = serde_yaml_value(&route(
        "hello",
        &format!("[{}, {}]", gw("http"), gw("selected")),
        "[hello.example.com]",
        "{name: a, port: 8080}",
    ));
    let foreign = json!({"parentRef": {"name": "elsewhere", "namespace": "infra"},
        "controllerName": "example.com/other",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]});
    hello["status"] = json!({"parents": [foreign]});
    api.apply(hello);
    api.apply_yaml(&route(
        "same-ns",
        &format!("[{}]", gw("same")),
        "[]",
        "{name: a, port: 8080}",
    ));
    api.apply_yaml(&route(
        "other-host",
        &format!("[{}]", gw("http")),
        "[x.other.org]",
        "{name: a, port: 8080}",
    ));
    api.apply_yaml(&route(
        "cross",
        &format!("[{}]", gw("http")),
        "[cross.example.com]",
        "{name: b, namespace: shared, port: 8080}",
    ));
    api.apply_yaml(&route(
        "missing",
        &format!("[{}]", gw("http")),
        "[missing.example.com]",
        "{name: nope, port: 8080}",
    ));
    api.apply_yaml(&route(
        "theirs",
        "[{name: theirs-gw, namespace: infra}]",
        "[]",
        "{name: a, port: 8080}",
    ));
    api.apply_yaml(
        &route(
            "dev-route",
            &format!("[{}]", gw("selected")),
            "[]",
            "{name: a, port: 8080}",
        )
        .replace("namespace: apps}", "namespace: dev}"),
    );

    let _server = start_server(&api).await;
    // GatewayClass: Accepted.
    let s = wait_for(
        &api,
        "GatewayClass",
        "",
        "knative-pilot",
        "class accepted",
        |s| sr(&s["conditions"], "Accepted") == "True/Accepted",
    )
    .await;
    assert_eq!(cond(&s["conditions"], "Accepted")["observedGeneration"], 1);
    // No Envoy yet: Accepted, not Programmed, and the reason says why.
    let s = wait_for(&api, "Gateway", "infra", "gw", "gateway accepted", |s| {
        sr(&s["conditions"], "Accepted") == "True/Accepted"
    })
    .await;
    assert_eq!(sr(&s["conditions"], "Programmed"), "False/Pending");
    assert_eq!(
        cond(&s["conditions"], "Programmed")["message"],
        "no Envoy of Gateway infra/gw is connected (pods labelled \
         gateway.networking.k8s.io/gateway-name: gw)"
    );
    assert_eq!(
        s["addresses"],
        json!([{"type": "IPAddress", "value": "10.96.0.10"}])
    );

    // HTTPRoutes, with the spec's reasons.
    let s = wait_route(&api, "hello", ("True/Accepted", "True/ResolvedRefs")).await;
    let ours = our_parents(&s);
    assert_eq!(ours.len(), 2, "{s:#}");
    assert_eq!(
        ours[1]["parentRef"],
        json!({"name": "gw", "namespace": "infra", "sectionName": "selected"})
    );
    assert_eq!(sr(&ours[1]["conditions"], "Accepted"), "True/Accepted");
    assert_eq!(
        s["parents"][0], foreign,
        "another controller's entry is left as it was"
    );
    for p in &ours {
        for c in p["conditions"].as_array().into_iter().flatten() {
            assert_eq!(c["observedGeneration"], 1, "{c}");
        }
    }
    wait_route(
        &api,
        "same-ns",
        ("False/NotAllowedByListeners", "True/ResolvedRefs"),
    )
    .await;
    wait_route(
        &api,
        "other-host",
        ("False/NoMatchingListenerHostname", "True/ResolvedRefs"),
    )
    .await;
    let s = wait_route(&api, "missing", ("True/Accepted", "False/BackendNotFound")).await;
    assert!(
        cond(&our_parents(&s)[0]["conditions"], "ResolvedRefs")["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope")),
        "{s:#}"
    );
    wait_route(&api, "cross", ("True/Accepted", "False/RefNotPermitted")).await;
    wait_for(
        &api,
        "HTTPRoute",
        "dev",
        "dev-route",
        "dev not selected",
        |s| {
            our_parents(s)
                .first()
                .is_some_and(|p| sr(&p["conditions"], "Accepted") == "False/NotAllowedByListeners")
        },
    )
    .await;

    // A real Envoy of the Gateway: Programmed once it has ACKed, and then it serves.
    let envoy = start_gateway(&_server, "gw-0", GW_LABELS, ApiType::DeltaGrpc).await;
    let s = wait_for(
        &api,
        "Gateway",
        "infra",
        "gw",
        "programmed once ACKed",
        |s| sr(&s["conditions"], "Programmed") == "True/Programmed",
    )
    .await;
    let r = http_get(port, "hello.example.com", "/", &[]).await;
    assert_eq!(
        (r.status, r.backend()),
        (200, Some("a")),
        "Programmed means served"
    );
    let listener = |s: &Value, name: &str| {
        s["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let http = listener(&s, "http");
    assert_eq!(sr(&http["conditions"], "Programmed"), "True/Programmed");
    assert_eq!(
        http["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    // hello, missing, cross (other-host shares no hostname; same-ns is not allowed).
    assert_eq!(http["attachedRoutes"], 3, "{s:#}");
    assert_eq!(listener(&s, "selected")["attachedRoutes"], 1);
    assert_eq!(listener(&s, "same")["attachedRoutes"], 0);

    // A ReferenceGrant resolves the cross-namespace backend; the first status write after it
    // hits a conflict, and is re-read and retried.
    api.force_status_conflicts(1);
    api.apply_yaml(
        r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps, namespace: shared}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"#,
    );
    wait_route(&api, "cross", ("True/Accepted", "True/ResolvedRefs")).await;
    let conflicts: Vec<String> = api
        .writes()
        .into_iter()
        .filter(|w| w.path.ends_with("/status") && w.code == 409)
        .map(|w| w.path)
        .collect();
    assert!(!conflicts.is_empty(), "a conflict was answered");
    // The dev Namespace relabelled: its route is now selected.
    api.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: dev, labels: {env: prod}}\n");
    wait_for(&api, "HTTPRoute", "dev", "dev-route", "dev selected", |s| {
        our_parents(s)
            .first()
            .is_some_and(|p| sr(&p["conditions"], "Accepted") == "True/Accepted")
    })
    .await;
    wait_for(&api, "Gateway", "infra", "gw", "two on selected", |s| {
        listener(s, "selected")["attachedRoutes"] == 2
    })
    .await;

    // A spec change: observedGeneration follows, Programmed again for the new generation.
    api.apply_yaml(&format!(
        r#"apiVersion: {V1}
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: knative-pilot
  listeners:
  - {{name: http, port: {port}, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {{namespaces: {{from: All}}}}}}
"#
    ));
    let s = wait_for(
        &api,
        "Gateway",
        "infra",
        "gw",
        "generation 2 programmed",
        |s| {
            let p = cond(&s["conditions"], "Programmed");
            p["observedGeneration"] == 2 && p["status"] == "True"
        },
    )
    .await;
    assert_eq!(s["listeners"].as_array().map(Vec::len), Some(1), "{s:#}");
    wait_route(
        &api,
        "same-ns",
        ("False/NoMatchingParent", "True/ResolvedRefs"),
    )
    .await;
    let r = http_get(port, "hello.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("a")));
    drop(envoy);

    // The other controller's objects were never written.
    let writes: Vec<String> = api
        .writes()
        .into_iter()
        .filter(|w| w.path.ends_with("/status"))
        .map(|w| w.path)
        .collect();
    for theirs in [
        "/gatewayclasses/theirs/",
        "/gateways/theirs-gw/",
        "/httproutes/theirs/",
    ] {
        assert!(
            !writes.iter().any(|w| w.contains(theirs)),
            "{theirs} written: {writes:#?}"
        );
    }
    assert_eq!(status(&api, "GatewayClass", "", "theirs"), Value::Null);
    assert_eq!(status(&api, "Gateway", "infra", "theirs-gw"), Value::Null);
    assert_eq!(status(&api, "HTTPRoute", "apps", "theirs"), Value::Null);
}

fn serde_yaml_value(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).expect("yaml")
}
