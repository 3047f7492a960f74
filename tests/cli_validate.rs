//! `knative-pilot validate`: every listed problem is reported with kind ns/name, file and
//! document, and a one-line fix; exit codes; `-o json`.
//!
//! Fixtures: `testdata/errors/input` (problems the loader finds: parse error, duplicate key,
//! `spec: []`, a List item that is not an object, an endpoint IP that is not one; and those the
//! translator finds: split percents, missing Service, missing port, duplicate host) and `testdata/validate/manifests` (one file per
//! further problem, each commented with what it should produce).

use std::path::PathBuf;
use std::process::Command;

/// `testdata/<case>/input` (golden cases), or `testdata/validate/manifests` (not a golden case).
fn testdata(case: &str) -> PathBuf {
    let sub = if case == "validate" {
        "manifests"
    } else {
        "input"
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(case)
        .join(sub)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn validate(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run knative-pilot validate");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The finding line that starts with `head`, and the fix line under it.
fn finding<'a>(stdout: &'a str, head: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = stdout.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(head))
        .unwrap_or_else(|| panic!("no finding starting {head:?} in:\n{stdout}"));
    let fix = lines.get(i + 1).copied().unwrap_or_default();
    assert!(fix.starts_with("    fix: "), "{head}: no fix line: {fix:?}");
    (lines[i], fix)
}

/// Gateway API: listeners and HTTPRoutes left out are errors naming them; unusable backendRefs
/// (served as 500s) are warnings.
#[test]
fn gateway_api_problems_are_reported() {
    let dir = testdata("gateway-api-features");
    let r = validate(&["--from", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for (head, fix) in [
        (
            "error[invalid] gateway.networking.k8s.io/Gateway default/gw (gateway.yaml document 2): listener \"tcp\": protocol \"TCP\" is not served",
            "left out",
        ),
        (
            "error[invalid] HTTPRoute default/mirror (httproutes.yaml document 5): rule 0: filter type \"RequestMirror\" is not supported",
            "left out",
        ),
        (
            "warning[backend-500] HTTPRoute other/cross (httproutes.yaml document 4): rule 0 backendRef \"blue\": Service default/blue is in another namespace and no ReferenceGrant there allows it",
            "ReferenceGrant",
        ),
        (
            "warning[backend-500] HTTPRoute other/cross (httproutes.yaml document 4): rule 1 backendRef \"nope\": backend Service other/nope not found",
            "existing Service port",
        ),
    ] {
        let (_, fix_line) = finding(&r.stdout, head);
        assert!(fix_line.contains(fix), "{head}: {fix_line}");
    }
    assert!(
        r.stdout.contains("4 error(s), 3 warning(s)"),
        "{}",
        r.stdout
    );

    // An HTTPRoute on another controller's Gateway is not ours to serve: a warning.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("route.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: elsewhere, namespace: default}\n\
         spec: {parentRefs: [{name: istio-gateway}], rules: [{backendRefs: []}]}\n",
    )
    .unwrap();
    let r = validate(&["--from", tmp.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "warnings do not fail: {}", r.stdout);
    let (_, fix) = finding(
        &r.stdout,
        "warning[foreign-parent] HTTPRoute default/elsewhere (route.yaml document 1): no parentRef names a Gateway",
    );
    assert!(fix.contains("another controller"), "{fix}");

    // One Gateway listener takes the route, another refuses it (the status reason is named).
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("gw.yaml"),
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours}
spec: {controllerName: knative-pilot.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: ours
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: same, port: 81, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs:
  - {name: gw, namespace: infra, sectionName: http}
  - {name: gw, namespace: infra, sectionName: same}
  rules: [{backendRefs: []}]
"#,
    )
    .unwrap();
    let r = validate(&["--from", tmp.path().to_str().unwrap()]);
    let (_, fix) = finding(
        &r.stdout,
        "warning[parent-refused] HTTPRoute apps/r (gw.yaml document 3): parentRef 1 \
         (NotAllowedByListeners): listener \"same\" of Gateway infra/gw does not allow routes \
         from namespace apps",
    );
    assert!(fix.contains("allowedRoutes"), "{fix}");
}

#[test]
fn translator_problems_are_reported_with_object_file_and_fix() {
    let dir = testdata("errors");
    let r = validate(&["--from", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let cases = [
        (
            "error[parse] malformed.yaml document 2: malformed YAML",
            "fix the document as the message says (YAML syntax",
        ),
        (
            "error[split-percent] Ingress default/bad-percent (bad-percent.yaml document 1): rule 0 path 0: split percents sum to 90, not 100",
            "add up to 100",
        ),
        (
            "error[missing-port] Ingress default/bad-port (missing-port.yaml document 1): backend Service default/bad-port-00001 has no port named \"admin\"",
            "use a port the Service has",
        ),
        (
            "error[duplicate-host] Ingress default/dup-new (dup-host-a-newer.yaml document 1): host dup.default.example.com is already claimed by Ingress default/dup-old",
            "serve each host from one object",
        ),
        (
            "error[missing-service] Ingress default/missing-svc (missing-service.yaml document 1): backend Service default/missing-svc-00001 not found",
            "create the Service",
        ),
        (
            "error[parse] bad-shapes.yaml document 1: malformed YAML: duplicate key \"ports\" at line 11, column 3 (in Service default/dup-key)",
            "fix the document as the message says",
        ),
        (
            "error[invalid] Ingress default/list-spec (bad-shapes.yaml document 2): spec must be a mapping, not a list",
            "left out",
        ),
        (
            "error[parse] bad-shapes.yaml document 3 item 0: a List item must be an object (a mapping), not a string",
            "fix the document as the message says",
        ),
        (
            "error[invalid] Endpoints default/bad-ip-00001 (bad-shapes.yaml document 4): subsets[0].addresses[0].ip \"999.1.1.1\" is not an IP address",
            "left out",
        ),
    ];
    for (head, fix) in cases {
        let (_, fix_line) = finding(&r.stdout, head);
        assert!(fix_line.contains(fix), "{head}: {fix_line}");
    }
    let summary = format!(
        "9 error(s), 1 warning(s) in 25 object(s) from {}\n",
        dir.display()
    );
    assert!(r.stdout.ends_with(&summary), "{}", r.stdout);
}

#[test]
fn analyzer_problems_are_reported_and_warnings_do_not_fail() {
    let dir = testdata("validate");
    let r = validate(&["--from", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let cases = [
        (
            "error[unknown-gateway] VirtualService default/typo-gateway (unknown-gateway.yaml document 1): spec.gateways names Gateway knative-serving/knative-ingres-gateway, which does not exist",
            "create Gateway knative-serving/knative-ingres-gateway, or name one of the known gateways",
        ),
        (
            "error[envoy-rejects] VirtualService default/bad-regex (bad-regex.yaml document 1): host \"regex.default.example.com\": route 1: path regex \"/(v1\" is not valid RE2 (unclosed group) (Envoy would reject it)",
            "correct the value the message quotes",
        ),
        (
            "error[tls-secret-missing] Ingress default/nocert (tls-missing.yaml document 1): TLS Secret default/missing-tls not found",
            "create that kubernetes.io/tls Secret",
        ),
        (
            "error[tls-secret-invalid] Ingress default/halfcert (tls-invalid.yaml document 1): Secret default/half-tls is not a TLS pair",
            "tls.crt and tls.key",
        ),
        (
            "warning[no-ready-endpoints] Service default/idle-00001 (no-endpoints.yaml document 2): traffic is routed to Service default/idle-00001, which has no ready endpoint",
            "make the pods behind default/idle-00001 Ready",
        ),
        (
            "warning[foreign-class] Ingress default/contour (foreign-class.yaml document 1): ingress class is contour.ingress.networking.knative.dev",
            "set annotation networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev",
        ),
    ];
    for (head, fix) in cases {
        let (_, fix_line) = finding(&r.stdout, head);
        assert!(fix_line.contains(fix), "{head}: {fix_line}");
    }
    // The valid object and the `mesh` gateway produce nothing.
    assert!(!r.stdout.contains("default/good"), "{}", r.stdout);
    assert!(!r.stdout.contains("mesh"), "{}", r.stdout);
    assert!(
        r.stdout.contains("4 error(s), 2 warning(s)"),
        "{}",
        r.stdout
    );

    // Only warnings: exit 0.
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "istio-gateway-services.yaml",
        "no-endpoints.yaml",
        "good.yaml",
    ] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let r = validate(&["--from", tmp.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("warning[no-ready-endpoints]"));
    assert!(
        r.stdout.contains("0 error(s), 1 warning(s)"),
        "{}",
        r.stdout
    );
}

#[test]
fn json_output_for_machines() {
    let dir = testdata("validate");
    let r = validate(&["--from", dir.to_str().unwrap(), "-o", "json"]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["errors"], 4);
    assert_eq!(v["warnings"], 2);
    let findings = v["findings"].as_array().unwrap();
    let codes: Vec<&str> = findings
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    for c in [
        "unknown-gateway",
        "envoy-rejects",
        "tls-secret-missing",
        "tls-secret-invalid",
        "no-ready-endpoints",
        "foreign-class",
    ] {
        assert!(codes.contains(&c), "{codes:?}");
    }
    let vs = findings
        .iter()
        .find(|f| f["code"] == "unknown-gateway")
        .unwrap();
    assert_eq!(vs["severity"], "error");
    assert_eq!(
        vs["object"],
        serde_json::json!({"kind": "VirtualService", "namespace": "default", "name": "typo-gateway"})
    );
    assert_eq!(vs["origin"]["file"], "unknown-gateway.yaml");
    assert_eq!(vs["origin"]["doc"], 1);
    assert!(vs["fix"].as_str().unwrap().starts_with("create Gateway"));
    // Deterministic: the same input gives byte-identical output.
    assert_eq!(
        r.stdout,
        validate(&["--from", dir.to_str().unwrap(), "-o", "json"]).stdout
    );
}

#[test]
fn clean_inputs_and_usage_errors() {
    for case in ["seed-virtualservice", "seed-route", "tls-redirect"] {
        let r = validate(&["--from", testdata(case).to_str().unwrap()]);
        assert_eq!(r.code, 0, "{case}: {}", r.stdout);
        assert!(
            r.stdout.starts_with("0 error(s), 0 warning(s)"),
            "{case}: {}",
            r.stdout
        );
    }
    let r = validate(&["--from", "/nonexistent/manifests"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("/nonexistent/manifests"), "{}", r.stderr);
}

/// net-istio's current objects (`knative-local-gateway`, port 8081, on the ingress gateway pods):
/// found without flags, so nothing to report; a `--local-gateway` naming the old
/// `cluster-local-gateway` leaves the ClusterLocal rules without a gateway, which is an error
/// naming the KIngress.
#[test]
fn cluster_local_rules_without_a_local_gateway_are_an_error() {
    let dir = testdata("net-istio-current");
    let ok = validate(&["--from", dir.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{}\n{}", ok.stdout, ok.stderr);
    assert!(!ok.stdout.contains("no-local-gateway"), "{}", ok.stdout);
    let r = validate(&[
        "--from",
        dir.to_str().unwrap(),
        "--local-gateway",
        "knative-serving/cluster-local-gateway",
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let (line, fix) = finding(&r.stdout, "error[no-local-gateway] Ingress default/shared");
    assert!(line.contains("kingress.yaml document 1"), "{line}");
    assert!(
        line.contains("the local gateway knative-serving/cluster-local-gateway does not exist"),
        "{line}"
    );
    assert!(fix.contains("--local-gateway"), "{fix}");
}
