//! End to end, Gateway API input: our server reading GatewayClass / Gateway / HTTPRoute /
//! ReferenceGrant manifests, stock Envoy bound to a Gateway by its pod label
//! `gateway.networking.k8s.io/gateway-name`, real HTTP to real echo backends. The behaviours
//! are those of the Gateway API core HTTPRoute conformance tests (named in each block) and of
//! net-gateway-api's Knative profile.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::cluster::{gateway_api_service as service, GATEWAY_API_CLASSES as CLASS};
use common::*;

const READY: Duration = Duration::from_secs(30);

/// Gateway `gateway-conformance-infra/same-namespace`-style: listener `http` on `port` (all
/// hosts, routes from its own namespace only) and `wildcard` on `port2` (`*.example.com`,
/// routes from every namespace).
fn gateways(port: u16, port2: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}}
spec:
  gatewayClassName: knative-pilot
  listeners:
  - {{name: http, port: {port}, protocol: HTTP}}
  - name: wildcard
    port: {port2}
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes: {{namespaces: {{from: All}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: foreign}}
spec:
  gatewayClassName: foreign
  listeners:
  - {{name: http, port: {port}, protocol: HTTP}}
"#
    )
}

fn routes() -> String {
    r#"# SimpleSameNamespace, Matching, PathMatchOrder, ExactPathMatching, HeaderMatching,
# RequestHeaderModifier, RedirectHostAndStatus, NoBackendRefs (listener http).
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: infra, creationTimestamp: "2024-01-01T00:00:01Z"}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /match}
      headers: [{name: x-regex, type: RegularExpression, value: "^[0-9]+$"}]
      queryParams: [{name: q, value: "yes"}]
      method: POST
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: add-appends-values}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: example.org, statusCode: 302}
  - matches: [{path: {type: PathPrefix, value: /nobackends}}]
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: does-not-exist, port: 8080}]
---
# HostnameIntersection, Weight, CrossNamespace, ReferenceGrant,
# InvalidCrossNamespaceBackendRef (listener wildcard, from namespace web).
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: web, creationTimestamp: "2024-01-01T00:00:02Z"}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [web.example.com, web.other.org]
  rules:
  - backendRefs: [{name: web-backend, port: 8080}]
  - matches: [{path: {value: /weights}}]
    backendRefs:
    - {name: web-backend, port: 8080, weight: 70}
    - {name: web-backend-2, port: 8080, weight: 30}
    - {name: web-backend-3, port: 8080, weight: 0}
  - matches: [{path: {value: /granted}}]
    backendRefs: [{name: infra-backend-v1, namespace: infra, port: 8080}]
  - matches: [{path: {value: /ungranted}}]
    backendRefs: [{name: secret-backend, namespace: private, port: 8080}]
  - matches: [{path: {value: /half}}]
    backendRefs:
    - {name: web-backend, port: 8080, weight: 1}
    - {name: secret-backend, namespace: private, port: 8080, weight: 1}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: web-may-use-infra, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
  to: [{group: "", kind: Service}]
---
# Namespace web may not attach to listener http (routes from its own namespace only).
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: not-allowed, namespace: web}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  hostnames: [not-allowed.test]
  rules:
  - backendRefs: [{name: web-backend, port: 8080}]
"#
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_http_route_behaviours_through_stock_envoy() {
    let v1 = Backend::start("infra-backend-v1").await;
    let v2 = Backend::start("infra-backend-v2").await;
    let v3 = Backend::start("infra-backend-v3").await;
    let w1 = Backend::start("web-backend").await;
    let w2 = Backend::start("web-backend-2").await;
    let w3 = Backend::start("web-backend-3").await;
    let hidden = Backend::start("secret-backend").await;
    let (port, port2) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("class.yaml", CLASS);
    dir.write("gateways.yaml", &gateways(port, port2));
    let mut svcs = String::new();
    for (ns, name, b) in [
        ("infra", "infra-backend-v1", &v1),
        ("infra", "infra-backend-v2", &v2),
        ("infra", "infra-backend-v3", &v3),
        ("web", "web-backend", &w1),
        ("web", "web-backend-2", &w2),
        ("web", "web-backend-3", &w3),
        ("private", "secret-backend", &hidden),
    ] {
        svcs.push_str(&service(ns, name, 8080, b.port(), false));
        svcs.push_str("---\n");
    }
    dir.write("services.yaml", &svcs);
    dir.write("routes.yaml", &routes());
    let server = serve_dir(&dir, &[]).await;
    let envoy = start_gateway(
        &server,
        "gw-istio-0",
        &[("gateway.networking.k8s.io/gateway-name", "gw")],
        ApiType::DeltaGrpc,
    )
    .await;
    envoy.wait_ready(READY).await;
    wait_synced(&server, 0, 1).await;
    let mut names = envoy.listener_names().await;
    names.sort();
    let mut want = vec![format!("127.0.0.1_{port}"), format!("127.0.0.1_{port2}")];
    want.sort();
    assert_eq!(names, want, "one listener per Gateway listener");

    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| async move {
        http_get(port, "any.test", path, headers).await
    };
    // SimpleSameNamespace + Matching.
    let r = get("/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("infra-backend-v1")));
    let r = get("/v2/x", &[]).await;
    assert_eq!(r.backend(), Some("infra-backend-v2"));
    let r = get("/", &[("version", "two")]).await;
    assert_eq!(r.backend(), Some("infra-backend-v2"), "header match");
    // PathPrefix matches whole segments: /v2example is not under /v2.
    let r = get("/v2example", &[]).await;
    assert_eq!(r.backend(), Some("infra-backend-v1"));
    // ExactPathMatching.
    assert_eq!(get("/exact", &[]).await.backend(), Some("infra-backend-v3"));
    assert_eq!(
        get("/exact/", &[]).await.backend(),
        Some("infra-backend-v1")
    );
    // PathMatchOrder / HeaderMatching: the rule with method, header and query matches comes
    // first although it is listed after the plain prefix... only when all of them match.
    let r = http_request(
        port,
        HttpVersion::Http1,
        "POST",
        "any.test",
        "/match?q=yes",
        &[("x-regex", "123")],
        "",
    )
    .await;
    assert_eq!(r.backend(), Some("infra-backend-v3"));
    for (method, path, regex) in [
        ("GET", "/match?q=yes", "123"),
        ("POST", "/match?q=no", "123"),
        ("POST", "/match?q=yes", "12a"),
    ] {
        let r = http_request(
            port,
            HttpVersion::Http1,
            method,
            "any.test",
            path,
            &[("x-regex", regex)],
            "",
        )
        .await;
        assert_eq!(
            r.backend(),
            Some("infra-backend-v2"),
            "{method} {path} {regex}"
        );
    }
    // RequestHeaderModifier.
    let r = get(
        "/headers",
        &[
            ("X-Header-Set", "old"),
            ("X-Header-Add", "first"),
            ("X-Header-Remove", "x"),
        ],
    )
    .await;
    assert_eq!(
        r.echoed_header("x-header-set"),
        Some("set-overwrites-values")
    );
    let added = r.echoed_header("x-header-add").unwrap_or("");
    assert!(
        added.contains("first") && added.contains("add-appends-values"),
        "{added:?}"
    );
    assert_eq!(r.echoed_header("x-header-remove"), None);
    // RedirectHostAndStatus.
    let r = get("/redirect/a", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.org/redirect/a"));
    // NoBackendRefs and InvalidNonExistentBackendRef: 500.
    assert_eq!(get("/nobackends", &[]).await.status, 500);
    assert_eq!(get("/missing", &[]).await.status, 500);
    // A route from namespace web is not allowed on listener http: its host falls through to
    // the listener's catch-all route.
    let r = http_get(port, "not-allowed.test", "/", &[]).await;
    assert_eq!(r.backend(), Some("infra-backend-v1"));

    // HostnameIntersection: web.example.com is under the listener's *.example.com,
    // web.other.org is not.
    let r = http_get(port2, "web.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("web-backend")));
    assert_eq!(http_get(port2, "web.other.org", "/", &[]).await.status, 404);
    assert_eq!(http_get(port2, "any.test", "/", &[]).await.status, 404);
    // CrossNamespace + ReferenceGrant.
    let r = http_get(port2, "web.example.com", "/granted", &[]).await;
    assert_eq!(r.backend(), Some("infra-backend-v1"));
    // InvalidCrossNamespaceBackendRef: no grant, 500.
    let r = http_get(port2, "web.example.com", "/ungranted", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(hidden.count(), 0, "an ungranted backend never gets traffic");
    // Weight: 70/30 (and weight 0 gets nothing); an invalid backend keeps its share as 500s.
    let (mut a, mut b, mut fail) = (0, 0, 0);
    for _ in 0..200 {
        match http_get(port2, "web.example.com", "/weights", &[])
            .await
            .backend()
        {
            Some("web-backend") => a += 1,
            Some("web-backend-2") => b += 1,
            _ => fail += 1,
        }
    }
    assert_eq!(fail, 0);
    assert_eq!(w3.count(), 0, "weight 0 gets no traffic");
    assert!(
        (110..=170).contains(&a) && (30..=90).contains(&b),
        "{a}/{b}"
    );
    let (mut ok, mut err) = (0, 0);
    for _ in 0..100 {
        match http_get(port2, "web.example.com", "/half", &[])
            .await
            .status
        {
            200 => ok += 1,
            500 => err += 1,
            s => panic!("status {s}"),
        }
    }
    assert!(ok >= 25 && err >= 25, "{ok} ok, {err} 500s");
    assert_eq!(hidden.count(), 0);
}

/// net-gateway-api's Knative profile: an h2c backend (Service appProtocol
/// `kubernetes.io/h2c`), WebSocket upgrade, a scheme redirect, host rewrite, a request timeout
/// ("0s" = none), backend header modifiers with weights, and its probe rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knative_profile_through_stock_envoy() {
    let h2 = Backend::start("h2c-backend").await;
    let blue = Backend::start("blue").await;
    let green = Backend::start("green").await;
    let (port, _) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("class.yaml", CLASS);
    dir.write(
        "gateway.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: knative-gateway, namespace: knative-serving}}
spec:
  gatewayClassName: knative-pilot
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: All}}}}
"#
        ),
    );
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}---\n{}",
            service("default", "h2c-backend", 81, h2.port(), true),
            service("default", "blue", 80, blue.port(), false),
            service("default", "green", 80, green.port(), false)
        ),
    );
    dir.write(
        "routes.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: knative.default.example.com, namespace: default}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: knative-gateway, namespace: knative-serving}]
  hostnames: [knative.default.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs:
    - name: blue
      port: 80
      weight: 50
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Knative-Serving-Revision, value: blue}]}
    - name: green
      port: 80
      weight: 50
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Knative-Serving-Revision, value: green}]}
    timeouts: {request: 0s}
  - matches: [{path: {type: PathPrefix, value: /h2c}}]
    backendRefs: [{name: h2c-backend, port: 81}]
  - matches: [{path: {type: PathPrefix, value: /short}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /delay}}
    backendRefs: [{name: blue, port: 80}]
    timeouts: {request: 500ms}
  - matches: [{path: {type: PathPrefix, value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: rewritten.example.org}
    backendRefs: [{name: blue, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /.well-known/knative/revision/default/blue}
      headers: [{type: Exact, name: K-Network-Hash, value: override}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: K-Network-Hash, value: abc123}]}
    backendRefs: [{name: blue, port: 80, weight: 100}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirect.default.example.com, namespace: default}
spec:
  parentRefs: [{name: knative-gateway, namespace: knative-serving}]
  hostnames: [redirect.default.example.com]
  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
"#,
    );
    let server = serve_dir(&dir, &[]).await;
    let envoy = start_gateway(
        &server,
        "knative-gateway-0",
        &[("gateway.networking.k8s.io/gateway-name", "knative-gateway")],
        ApiType::Grpc,
    )
    .await;
    envoy.wait_ready(READY).await;
    wait_synced(&server, 0, 1).await;
    const HOST: &str = "knative.default.example.com";

    // Backend header modifiers with weights.
    let (mut b, mut g) = (0, 0);
    for _ in 0..60 {
        let r = http_get(port, HOST, "/", &[]).await;
        match (r.backend(), r.echoed_header("knative-serving-revision")) {
            (Some("blue"), Some("blue")) => b += 1,
            (Some("green"), Some("green")) => g += 1,
            other => panic!("backend/header mismatch: {other:?}"),
        }
    }
    assert!(b > 10 && g > 10, "{b}/{g}");
    // h2c upstream.
    let r = http_get(port, HOST, "/h2c", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("h2c-backend")));
    assert_eq!(r.body_json["proto"], "HTTP/2.0", "{}", r.body);
    // WebSocket.
    assert_eq!(ws_echo(port, HOST, "/ws", "hello").await, "hello");
    // Request timeout: 500ms answers 504 for a 2 s backend (/short/2 is rewritten to /delay/2
    // by ReplacePrefixMatch); "0s" is no timeout.
    assert_eq!(http_get(port, HOST, "/short/2", &[]).await.status, 504);
    let r = http_get(port, HOST, "/delay/1.5", &[]).await;
    assert_eq!(r.status, 200, "timeouts.request 0s is no timeout");
    // Host rewrite.
    let r = http_get(port, HOST, "/rewrite", &[]).await;
    assert_eq!(r.body_json["host"], "rewritten.example.org", "{}", r.body);
    // Scheme redirect.
    let r = http_get(port, "redirect.default.example.com", "/x", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://redirect.default.example.com/x")
    );
    // The probe rule: matched by K-Network-Hash: override, which it replaces.
    let r = http_get(
        port,
        HOST,
        "/.well-known/knative/revision/default/blue",
        &[("K-Network-Hash", "override")],
    )
    .await;
    assert_eq!(r.backend(), Some("blue"));
    assert_eq!(r.echoed_header("k-network-hash"), Some("abc123"));
}

/// HTTPSListener: a listener with `protocol: HTTPS` terminates TLS with its certificateRef's
/// Secret, which Envoy gets over SDS (an mTLS xDS client of the Secret's namespace, as
/// `e2e_tls`), selected by SNI; the HTTP listener of the same Gateway serves the route too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_terminates_tls_with_its_certificate_over_sds() {
    use common::pki::Ca;
    let b = Backend::start("secure-backend").await;
    let (http_port, https_port) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("class.yaml", CLASS);
    // The Secret in istio-system, the Gateway's namespace and its Envoy's identity's.
    dir.write("secret.yaml", &secure_secret_yaml());
    dir.write(
        "gateway.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: secure-gw, namespace: istio-system}}
spec:
  gatewayClassName: knative-pilot
  listeners:
  - name: http
    port: {http_port}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: All}}}}
  - name: https
    port: {https_port}
    protocol: HTTPS
    hostname: {SECURE_HOST}
    tls: {{certificateRefs: [{{kind: Secret, name: secure-tls}}]}}
    allowedRoutes: {{namespaces: {{from: All}}}}
"#
        ),
    );
    dir.write(
        "services.yaml",
        &service("apps", "secure-backend", 8080, b.port(), false),
    );
    dir.write(
        "route.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: apps}}
spec:
  parentRefs: [{{name: secure-gw, namespace: istio-system}}]
  hostnames: [{SECURE_HOST}]
  rules:
  - backendRefs: [{{name: secure-backend, port: 8080}}]
"#
        ),
    );
    let ca = Ca::new("mesh root");
    let _gw = start_tls_gateway_api(&ca, dir.path(), "secure-gw", READY).await;

    let want = secret_certificate(&secure_secret_yaml());
    let r = https_get(
        https_port,
        SECURE_HOST,
        "/tls",
        &Trust::Pinned(want.clone()),
    )
    .await;
    assert_eq!(r.response.status, 200, "{}", r.response.body);
    assert_eq!(r.response.backend(), Some("secure-backend"));
    assert_eq!(
        r.peer_certificates.first().map(|c| c.as_ref()),
        Some(want.as_ref()),
        "the certificateRef's certificate"
    );
    let r = http_get(http_port, SECURE_HOST, "/plain", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("secure-backend")));
}

/// HTTPRouteRewritePath (URLRewrite `ReplacePrefixMatch` and `ReplaceFullPath`, the backend
/// echoes the path it got), HTTPRouteRedirectPath and HTTPRouteRedirectPort (the Location), and
/// MatchingAcrossRoutes (two HTTPRoutes on one listener, one of them for `*.com`: a request
/// for example.com is matched by both routes' rules, in the spec's precedence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_and_rules_merged_across_routes_through_stock_envoy() {
    let v1 = Backend::start("infra-backend-v1").await;
    let v2 = Backend::start("infra-backend-v2").await;
    let (port, _) = gateway_ports();
    let dir = ManifestDir::new();
    dir.write("class.yaml", CLASS);
    dir.write(
        "gateway.yaml",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: infra}}
spec:
  gatewayClassName: knative-pilot
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
"#
        ),
    );
    dir.write(
        "services.yaml",
        &format!(
            "{}---\n{}",
            service("infra", "infra-backend-v1", 8080, v1.port(), false),
            service("infra", "infra-backend-v2", 8080, v2.port(), false)
        ),
    );
    dir.write(
        "routes.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrite-path, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [rewrite.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  # HTTPRouteRedirectPath, HTTPRouteRedirectPort.
  - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}
  - matches: [{path: {type: PathPrefix, value: /full-path-original}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}
  - matches: [{path: {type: PathPrefix, value: /strip-redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}, statusCode: 302}
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8083}
  - matches: [{path: {type: PathPrefix, value: /scheme-and-port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.org, port: 443}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part1, namespace: infra, creationTimestamp: "2024-01-01T00:00:02Z"}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [example.com, example.net]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part2, namespace: infra, creationTimestamp: "2024-01-01T00:00:01Z"}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: ["*.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"#,
    );
    let server = serve_dir(&dir, &[]).await;
    let envoy = start_gateway(
        &server,
        "same-namespace-0",
        &[("gateway.networking.k8s.io/gateway-name", "same-namespace")],
        ApiType::DeltaGrpc,
    )
    .await;
    envoy.wait_ready(READY).await;
    wait_synced(&server, 0, 1).await;

    // HTTPRouteRewritePath, and the prefix "/" under a "/" match.
    for (path, want) in [
        ("/prefix/one/two", "/one/two"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/strip-prefix/", "/"),
        ("/strip-prefix/a?q=1", "/a?q=1"),
        ("/foo", "/v2/foo"),
        ("/foo/bar", "/v2/foo/bar"),
        ("/full/one/two", "/one"),
        ("/full/one?q=1", "/one?q=1"),
    ] {
        let r = http_get(port, "rewrite.test", path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.body_json["path"], want, "{path} reaches the backend as");
    }
    // Redirects with a path and a port (a scheme's own port is left out of the Location).
    for (path, status, location) in [
        (
            "/original-prefix/lemon",
            301,
            "http://rewrite.test/replacement-prefix/lemon",
        ),
        (
            "/full-path-original/x",
            301,
            "http://rewrite.test/full-path-replacement",
        ),
        ("/strip-redirect/x", 302, "http://rewrite.test/x"),
        ("/strip-redirect", 302, "http://rewrite.test/"),
        ("/port", 301, "http://rewrite.test:8083/port"),
        (
            "/scheme-and-port",
            301,
            "https://example.org/scheme-and-port",
        ),
    ] {
        let r = http_get(port, "rewrite.test", path, &[]).await;
        assert_eq!(
            (r.status, r.header("location")),
            (status, Some(location)),
            "{path}"
        );
    }

    // MatchingAcrossRoutes, the conformance test's cases.
    for (host, path, version, want) in [
        ("example.com", "/", None, "infra-backend-v1"),
        ("example.com", "/example", None, "infra-backend-v1"),
        ("example.net", "/example", None, "infra-backend-v1"),
        ("example.com", "/example", Some("one"), "infra-backend-v1"),
        ("example.com", "/v2", None, "infra-backend-v2"),
        ("example.net", "/v2", None, "infra-backend-v1"),
        ("example.com", "/v2/example", None, "infra-backend-v2"),
        ("example.com", "/", Some("two"), "infra-backend-v2"),
        ("other.com", "/v2", None, "infra-backend-v2"),
    ] {
        let headers: Vec<(&str, &str)> = version.iter().map(|v| ("version", *v)).collect();
        let r = http_get(port, host, path, &headers).await;
        assert_eq!(r.backend(), Some(want), "{host}{path} version {version:?}");
    }
}
