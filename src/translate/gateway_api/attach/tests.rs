use super::*;

fn inputs(yaml: &str) -> Inputs {
    Inputs::from_test_yaml(yaml)
}

const BASE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours}
spec: {controllerName: knative-pilot.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: theirs}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: ours
  listeners:
  - {name: same, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - name: all
    port: 8080
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes: {namespaces: {from: All}}
  - name: labelled
    port: 8081
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {env: prod}
          matchExpressions: [{key: team, operator: In, values: [a]}]
  - name: tcp
    port: 9000
    protocol: TCP
    allowedRoutes: {namespaces: {from: All}}
  - name: grpc-only
    port: 9001
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}, kinds: [{kind: GRPCRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: infra}
spec: {gatewayClassName: theirs, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {env: prod, team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev, team: a}}
"#;

fn route(ns: &str, parents: &str, hosts: &str) -> (ObjectKey, HttpRoute) {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: r, namespace: {ns}}}\n\
         spec:\n  parentRefs: {parents}\n  hostnames: {hosts}\n"
    );
    let loaded = crate::source::files::parse_text(std::path::Path::new("r.yaml"), &yaml);
    let obj = loaded.objects.into_iter().next().expect("route").object;
    match obj {
        Object::HttpRoute(r) => (obj_key(ns), *r),
        other => panic!("{other:?}"),
    }
}

fn obj_key(ns: &str) -> ObjectKey {
    ObjectKey {
        kind: Kind::HttpRoute,
        namespace: ns.to_string(),
        name: "r".to_string(),
    }
}

fn outcomes(ns: &str, parents: &str, hosts: &str) -> Vec<(ParentReason, Vec<String>, String)> {
    let inputs = inputs(BASE);
    let (key, r) = route(ns, parents, hosts);
    parent_outcomes(&inputs, &Options::default(), &key, &r.spec)
        .into_iter()
        .map(|o| {
            (
                o.reason,
                o.listeners.into_iter().map(|a| a.listener).collect(),
                o.message,
            )
        })
        .collect()
}

#[test]
fn every_parent_reason() {
    use ParentReason::*;
    let gw = |section: &str| format!("[{{name: gw, namespace: infra, sectionName: {section}}}]");
    // Same namespace only: a route of apps is refused, one of infra attached.
    let o = outcomes("apps", &gw("same"), "[a.example.com]");
    assert_eq!(o[0].0, NotAllowedByListeners, "{o:?}");
    assert_eq!(
        o[0].2,
        "listener \"same\" of Gateway infra/gw does not allow routes from namespace apps"
    );
    assert_eq!(
        outcomes("infra", &gw("same"), "[a.example.com]")[0].0,
        Accepted
    );
    // Allowed, but no hostname in common.
    let o = outcomes("apps", &gw("all"), "[a.other.org]");
    assert_eq!(o[0].0, NoMatchingListenerHostname, "{o:?}");
    assert!(o[0].2.contains("(*.example.com)"), "{}", o[0].2);
    // A sectionName or port naming no listener.
    let o = outcomes("apps", &gw("nope"), "[]");
    assert_eq!(o[0].0, NoMatchingParent);
    assert_eq!(o[0].2, "Gateway infra/gw has no listener named \"nope\"");
    let o = outcomes("apps", "[{name: gw, namespace: infra, port: 1234}]", "[]");
    assert_eq!(
        (o[0].0, o[0].2.as_str()),
        (
            NoMatchingParent,
            "Gateway infra/gw has no listener on port 1234"
        )
    );
    // A protocol or kinds that do not carry HTTPRoutes.
    for l in ["tcp", "grpc-only"] {
        assert_eq!(
            outcomes("apps", &gw(l), "[]")[0].0,
            NotAllowedByListeners,
            "{l}"
        );
    }
    // No sectionName: every listener that takes it, in listener order.
    let o = outcomes("apps", "[{name: gw, namespace: infra}]", "[a.example.com]");
    assert_eq!(
        (o[0].0, o[0].1.clone()),
        (Accepted, vec!["all".to_string(), "labelled".to_string()])
    );
    assert_eq!(o[0].2, "attached to listener \"all\", \"labelled\"");
    // Another controller's Gateway, or another kind of parent: no outcome at all.
    assert!(outcomes("infra", "[{name: other}]", "[]").is_empty());
    assert!(outcomes("infra", "[{name: gw, kind: Service, group: \"\"}]", "[]").is_empty());
    assert!(outcomes("infra", "[{name: missing}]", "[]").is_empty());
}

#[test]
fn namespace_selectors_use_the_namespace_labels() {
    let gw = "[{name: gw, namespace: infra, sectionName: labelled}]";
    assert_eq!(outcomes("apps", gw, "[]")[0].0, ParentReason::Accepted);
    // env: dev, and a namespace with no object (only its name label): refused.
    assert_eq!(
        outcomes("dev", gw, "[]")[0].0,
        ParentReason::NotAllowedByListeners
    );
    assert_eq!(
        outcomes("nolabels", gw, "[]")[0].0,
        ParentReason::NotAllowedByListeners
    );
    // The name label is there without a Namespace object.
    let by_name = BASE.replace(
        "matchLabels: {env: prod}",
        "matchLabels: {kubernetes.io/metadata.name: nolabels}",
    );
    let by_name = by_name.replace(
        "matchExpressions: [{key: team, operator: In, values: [a]}]",
        "matchExpressions: []",
    );
    let inputs = inputs(&by_name);
    let (key, r) = route("nolabels", gw, "[]");
    let o = parent_outcomes(&inputs, &Options::default(), &key, &r.spec);
    assert_eq!(o[0].reason, ParentReason::Accepted);
}

#[test]
fn attached_routes_count_each_route_once_per_listener() {
    let yaml = format!(
        "{BASE}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: a, namespace: apps}}\n\
         spec:\n  parentRefs: [{{name: gw, namespace: infra}}, {{name: gw, namespace: infra, sectionName: all}}]\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: b, namespace: infra}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [x.example.com]\n"
    );
    let inputs = inputs(&yaml);
    let counts = attached_routes(&inputs, &Options::default());
    let gw = ObjectKey {
        kind: Kind::K8sGateway,
        namespace: "infra".into(),
        name: "gw".into(),
    };
    let n = |l: &str| {
        counts
            .get(&(gw.clone(), l.to_string()))
            .copied()
            .unwrap_or(0)
    };
    // b is in infra, which the selector (env: prod) does not select.
    assert_eq!((n("same"), n("all"), n("labelled"), n("tcp")), (1, 2, 1, 0));
}

#[test]
fn every_backend_reason() {
    let yaml = format!(
        "{BASE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: apps}}\n\
         spec: {{ports: [{{name: http, port: 8080}}]}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: shared}}\n\
         spec: {{ports: [{{name: http, port: 8080}}]}}\n\
         ---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: r, namespace: apps}}\n\
         spec:\n  rules:\n  - backendRefs:\n\
         \x20   - {{name: svc, port: 8080}}\n\
         \x20   - {{name: svc, port: 9999}}\n\
         \x20   - {{name: gone, port: 8080}}\n\
         \x20   - {{name: svc}}\n\
         \x20   - {{name: svc, namespace: shared, port: 8080}}\n\
         \x20   - {{name: svc, group: example.com, kind: Thing}}\n\
         \x20   - {{name: gone, port: 8080, weight: 0}}\n"
    );
    let inputs = inputs(&yaml);
    let key = obj_key("apps");
    let Some(Object::HttpRoute(r)) = inputs.get(Kind::HttpRoute, "apps", "r").map(|e| &e.object)
    else {
        panic!("route")
    };
    let got: Vec<(String, RefReason)> = unresolved_backends(&inputs, &Options::default(), &key, r)
        .into_iter()
        .map(|u| (u.to_string(), u.reason))
        .collect();
    let reasons: Vec<RefReason> = got.iter().map(|g| g.1).collect();
    use RefReason::*;
    assert_eq!(
        reasons,
        vec![
            BackendNotFound,
            BackendNotFound,
            BackendNotFound,
            RefNotPermitted,
            InvalidKind
        ],
        "{got:#?}"
    );
    assert_eq!(
        got[3].0,
        "rule 0 backendRef \"svc\": Service shared/svc is in another namespace and no \
         ReferenceGrant there allows it"
    );
    // A grant there makes it resolve.
    let granted = format!(
        "{yaml}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {{name: g, namespace: shared}}\n\
         spec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}}]\n\
         \x20 to: [{{group: \"\", kind: Service}}]\n"
    );
    let inputs = super::tests::inputs(&granted);
    let Some(Object::HttpRoute(r)) = inputs.get(Kind::HttpRoute, "apps", "r").map(|e| &e.object)
    else {
        panic!("route")
    };
    assert!(!unresolved_backends(&inputs, &Options::default(), &key, r)
        .iter()
        .any(|u| u.reason == RefNotPermitted));
}

#[test]
fn hostnames_intersect_as_the_spec_says() {
    let v = |s: &[&str]| s.iter().map(|h| h.to_string()).collect::<Vec<_>>();
    assert_eq!(hostnames(None, &[]), v(&["*"]));
    assert_eq!(hostnames(Some("*.example.com"), &[]), v(&["*.example.com"]));
    assert_eq!(
        hostnames(
            Some("*.example.com"),
            &v(&[
                "a.example.com",
                "example.com",
                "b.other.org",
                "x.y.example.com"
            ])
        ),
        v(&["a.example.com", "x.y.example.com"])
    );
    assert_eq!(
        hostnames(
            Some("very.specific.com"),
            &v(&["*.specific.com", "*.other.com"])
        ),
        v(&["very.specific.com"])
    );
    assert_eq!(
        hostnames(Some("*.example.com"), &v(&["*.foo.example.com"])),
        v(&["*.foo.example.com"])
    );
    assert!(hostnames(Some("a.example.com"), &v(&["b.example.com"])).is_empty());
}
