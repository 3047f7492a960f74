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
kind: Gateway
metadata: {name: gw, namespace: infra, generation: 4}
spec:
  gatewayClassName: ours
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - {name: tcp, port: 9000, protocol: TCP}
  - name: https-foreign
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: cert, namespace: certs}]}
  - name: https-missing
    port: 8443
    protocol: HTTPS
    tls: {certificateRefs: [{name: nope}]}
  - name: grpc
    port: 9001
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: GRPCRoute}]}
---
apiVersion: v1
kind: Service
metadata: {name: gw-svc, namespace: infra}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: gw}
  clusterIP: 10.0.0.9
  ports: [{port: 80}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {hostname: lb.example.com}]}}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: infra}
spec: {selector: {app: x}, clusterIP: 10.0.0.10, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: infra}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: infra, generation: 2}
spec:
  parentRefs: [{name: gw, sectionName: http}, {name: gw, sectionName: gone}, {name: elsewhere}]
  hostnames: [a.example.com]
  rules:
  - backendRefs: [{name: app, port: 8080}, {name: missing, port: 8080}]
"#;

fn gw_key() -> ObjectKey {
    ObjectKey {
        kind: Kind::K8sGateway,
        namespace: "infra".into(),
        name: "gw".into(),
    }
}

fn facts(connected: usize, acked: usize) -> GatewayFacts {
    GatewayFacts {
        progress: GatewayProgress {
            gateway: "infra/gw".into(),
            connected,
            acked,
        },
        replicas_waiting: vec![],
    }
}

fn cond<'a>(conds: &'a Value, t: &str) -> &'a Value {
    conds
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

fn listener<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == name))
        .unwrap_or(&Value::Null)
}

fn gateway(inputs: &Inputs, f: &GatewayFacts, current: Option<&Value>, now: &str) -> Value {
    let Some(Object::K8sGateway(g)) = inputs
        .get(Kind::K8sGateway, "infra", "gw")
        .map(|e| &e.object)
    else {
        panic!("gateway")
    };
    let attached = attach::attached_routes(inputs, &Options::default());
    gateway_status(
        inputs,
        &gw_key(),
        &g.spec,
        g.metadata.generation,
        current,
        f,
        &attached,
        now,
    )
}

#[test]
fn gateway_class_accepted_and_stable() {
    let s = gateway_class_status(None, Some(3), "t0");
    let c = cond(&s["conditions"], "Accepted");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("Accepted"))
    );
    assert_eq!(c["observedGeneration"], 3);
    // The API server's default (Unknown/Pending) is replaced; ours is kept once written.
    let pending = json!({"conditions": [{"type": "Accepted", "status": "Unknown", "reason": "Pending",
        "message": "Waiting for controller", "lastTransitionTime": "1970-01-01T00:00:00Z"}]});
    assert!(needs_write(Some(&pending), &s));
    assert!(!needs_write(
        Some(&s),
        &gateway_class_status(Some(&s), Some(3), "t1")
    ));
    assert!(needs_write(
        Some(&s),
        &gateway_class_status(Some(&s), Some(4), "t1")
    ));
}

#[test]
fn programmed_only_once_every_connected_envoy_acked() {
    let inputs = inputs(BASE);
    let s = gateway(&inputs, &facts(0, 0), None, "t0");
    let p = cond(&s["conditions"], "Programmed");
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("False"), Some("Pending"))
    );
    assert_eq!(
        p["message"],
        "no Envoy of Gateway infra/gw is connected (pods labelled \
         gateway.networking.k8s.io/gateway-name: gw)"
    );
    let s = gateway(&inputs, &facts(2, 1), Some(&s), "t1");
    let p = cond(&s["conditions"], "Programmed");
    assert_eq!(
        p["message"],
        "1 of 2 Envoys of Gateway infra/gw have ACKed the config carrying it"
    );
    assert_eq!(
        p["lastTransitionTime"], "t0",
        "still False: the time is kept"
    );
    let s = gateway(&inputs, &facts(2, 2), Some(&s), "t2");
    let p = cond(&s["conditions"], "Programmed");
    assert_eq!(
        (p["status"].as_str(), p["lastTransitionTime"].as_str()),
        (Some("True"), Some("t2"))
    );
    assert_eq!(
        cond(&listener(&s, "http")["conditions"], "Programmed")["status"],
        "True"
    );
    // Another replica not there yet holds it back.
    let mut waiting = facts(2, 2);
    waiting.replicas_waiting =
        vec!["replica 10.0.0.2:15014 has not seen this generation yet".into()];
    let w = gateway(&inputs, &waiting, Some(&s), "t3");
    assert_eq!(cond(&w["conditions"], "Programmed")["status"], "False");
    // Nothing changed: computed again equal, no write.
    assert!(!needs_write(
        Some(&s),
        &gateway(&inputs, &facts(2, 2), Some(&s), "t4")
    ));
    // Every condition carries the Gateway's generation.
    let all = s["conditions"].as_array().into_iter().flatten().chain(
        s["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["conditions"].as_array().into_iter().flatten()),
    );
    for c in all {
        assert_eq!(c["observedGeneration"], 4, "{c}");
    }
}

#[test]
fn listener_conditions_addresses_and_attached_routes() {
    let inputs = inputs(BASE);
    let s = gateway(&inputs, &facts(1, 1), None, "t0");
    let reasons = |name: &str| {
        let l = listener(&s, name);
        ["Accepted", "ResolvedRefs", "Programmed"].map(|t| {
            let c = cond(&l["conditions"], t);
            format!(
                "{}/{}",
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            )
        })
    };
    assert_eq!(
        reasons("http"),
        ["True/Accepted", "True/ResolvedRefs", "True/Programmed"]
    );
    assert_eq!(
        reasons("tcp"),
        [
            "False/UnsupportedProtocol",
            "True/ResolvedRefs",
            "False/Invalid"
        ]
    );
    assert_eq!(
        reasons("https-foreign"),
        ["True/Accepted", "False/RefNotPermitted", "False/Invalid"]
    );
    assert_eq!(
        reasons("https-missing"),
        [
            "True/Accepted",
            "False/InvalidCertificateRef",
            "False/Invalid"
        ]
    );
    assert_eq!(
        reasons("grpc"),
        ["True/Accepted", "False/InvalidRouteKinds", "False/Invalid"]
    );
    assert_eq!(
        cond(&listener(&s, "https-missing")["conditions"], "ResolvedRefs")["message"],
        "listener \"https-missing\": certificateRef Secret infra/nope not found"
    );
    assert_eq!(listener(&s, "http")["attachedRoutes"], 1);
    assert_eq!(listener(&s, "tcp")["attachedRoutes"], 0);
    assert_eq!(
        listener(&s, "http")["supportedKinds"],
        json!([{"group": GROUP, "kind": "HTTPRoute"}])
    );
    assert_eq!(listener(&s, "tcp")["supportedKinds"], json!([]));
    let a = cond(&s["conditions"], "Accepted");
    assert_eq!(
        (a["status"].as_str(), a["reason"].as_str()),
        (Some("True"), Some("ListenersNotValid"))
    );
    assert_eq!(
        s["addresses"],
        json!([{"type": "IPAddress", "value": "192.0.2.1"}, {"type": "Hostname", "value": "lb.example.com"}])
    );
    // Without a load balancer: the cluster IP.
    let no_lb = inputs_without_lb();
    assert_eq!(
        gateway_addresses(&no_lb, &gw_key()),
        vec![json!({"type": "IPAddress", "value": "10.0.0.9"})]
    );
}

fn inputs_without_lb() -> Inputs {
    inputs(&BASE.replace(
        "status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {hostname: lb.example.com}]}}\n",
        "",
    ))
}

fn route_status(inputs: &Inputs, error: Option<&str>, current: Option<&Value>) -> Option<Value> {
    let key = ObjectKey {
        kind: Kind::HttpRoute,
        namespace: "infra".into(),
        name: "r".into(),
    };
    let Some(Object::HttpRoute(r)) = inputs.get(Kind::HttpRoute, "infra", "r").map(|e| &e.object)
    else {
        panic!("route")
    };
    http_route_status(inputs, &Options::default(), &key, r, error, current, "t0")
}

#[test]
fn route_parents_with_the_specs_reasons_and_foreign_entries_kept() {
    let inputs = inputs(BASE);
    let foreign = json!({"parentRef": {"name": "elsewhere"}, "controllerName": "example.com/other",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]});
    let stale_ours = json!({"parentRef": {"name": "old"}, "controllerName": DEFAULT,
        "conditions": []});
    let current = json!({"parents": [foreign, stale_ours]});
    let s = route_status(&inputs, None, Some(&current)).expect("ours");
    let parents = s["parents"].as_array().cloned().unwrap_or_default();
    assert_eq!(parents.len(), 3, "{s:#}");
    assert_eq!(
        parents[0], foreign,
        "the other controller's entry, untouched"
    );
    let summary: Vec<(Value, String, String)> = parents[1..]
        .iter()
        .map(|p| {
            let a = cond(&p["conditions"], "Accepted");
            let r = cond(&p["conditions"], "ResolvedRefs");
            (
                p["parentRef"].clone(),
                format!(
                    "{}/{}",
                    a["status"].as_str().unwrap_or(""),
                    a["reason"].as_str().unwrap_or("")
                ),
                format!(
                    "{}/{}",
                    r["status"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or("")
                ),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!({"name": "gw", "sectionName": "http"}),
                "True/Accepted".into(),
                "False/BackendNotFound".into()
            ),
            (
                json!({"name": "gw", "sectionName": "gone"}),
                "False/NoMatchingParent".into(),
                "False/BackendNotFound".into()
            ),
        ]
    );
    for p in &parents[1..] {
        assert_eq!(p["controllerName"], DEFAULT);
        for c in p["conditions"].as_array().into_iter().flatten() {
            assert_eq!(c["observedGeneration"], 2);
        }
    }
    assert!(cond(&parents[1]["conditions"], "ResolvedRefs")["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("rule 0 backendRef \"missing\": ")));
    // A translation error: not Accepted, saying why.
    let s = route_status(
        &inputs,
        Some("rule 0: filter type \"X\" is not supported"),
        None,
    )
    .expect("ours");
    let a = cond(&s["parents"][0]["conditions"], "Accepted");
    assert_eq!(
        (a["status"].as_str(), a["reason"].as_str()),
        (Some("False"), Some("UnsupportedValue"))
    );
    // Written, then computed again: no write.
    let s = route_status(&inputs, None, Some(&current)).expect("ours");
    assert!(!needs_write(
        Some(&s),
        &route_status(&inputs, None, Some(&s)).expect("ours")
    ));
}

const DEFAULT: &str = crate::model::gateway_api::DEFAULT_CONTROLLER;

#[test]
fn routes_of_no_gateway_of_ours_get_nothing_and_stale_entries_go() {
    let theirs = BASE.replace(
        "spec: {controllerName: knative-pilot.dev/gateway-controller}",
        "spec: {controllerName: example.com/other}",
    );
    let inputs = inputs(&theirs);
    assert_eq!(route_status(&inputs, None, None), None);
    let foreign = json!({"parentRef": {"name": "gw"}, "controllerName": "example.com/other", "conditions": []});
    assert_eq!(
        route_status(&inputs, None, Some(&json!({"parents": [foreign]}))),
        None
    );
    let ours = json!({"parentRef": {"name": "gw"}, "controllerName": DEFAULT, "conditions": []});
    assert_eq!(
        route_status(&inputs, None, Some(&json!({"parents": [foreign, ours]}))),
        Some(json!({"parents": [foreign]}))
    );
}
