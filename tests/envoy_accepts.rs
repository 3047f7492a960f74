//! Property: whatever objects come in, valid or hostile, stock Envoy accepts every gateway
//! config the translator renders (`envoy --mode validate` on a static bootstrap holding it), and
//! every object made only of valid values is served. This is what keeps one tenant's bad object
//! from making Envoy reject a resource every other tenant shares.
//!
//! Each case draws about a dozen KIngresses, VirtualServices, HTTPRoutes (on a Gateway API
//! Gateway), Services and Endpoints from pools
//! of valid and hostile values (header names and values Envoy refuses, regexes that are not RE2
//! or too big, control characters in hosts and rewrites, durations and weights out of range,
//! addresses that are not IPs, TLS hosts that overlap or have partial wildcards).
//! `ENVOY_PROPERTY_CASES` cases run (default 12), from seed `ENVOY_PROPERTY_SEED` (default 1).
//! A failing case prints its seed and objects; add them to `testdata/blast-radius/` as a
//! regression case. The test fails when Envoy is missing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use knative_pilot::pipeline;
use knative_pilot::state::Inputs;
use knative_pilot::translate::{self, Options, RouteLayout};
use knative_pilot::xds::dump::any_to_json;
use knative_pilot::xds::ROUTE;
use serde_json::{json, Value};

/// xorshift64*: a small deterministic generator (the cases must be reproducible by seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    /// A value from a pool of (value, valid) pairs, hostile ones with probability `hostile` %.
    fn pick<T: Clone>(&mut self, pool: &[(T, bool)], hostile: u64) -> (T, bool) {
        let want_bad = self.chance(hostile);
        let candidates: Vec<&(T, bool)> = pool.iter().filter(|(_, ok)| *ok != want_bad).collect();
        let c = candidates[self.below(candidates.len())];
        (c.0.clone(), c.1)
    }
}

const HEADER_NAMES: &[(&str, bool)] = &[
    ("x-tenant", true),
    ("X-Mixed-Case", true),
    ("x with space", true),
    (":authority", false),
    ("host", false),
    ("Host", false),
    ("bad\nname", false),
    ("nul\0name", false),
    ("", false),
];

const HEADER_VALUES: &[(&str, bool)] = &[
    ("v", true),
    ("50%% off", true),
    ("%REQ(x-a)%", true),
    ("%DOWNSTREAM_REMOTE_ADDRESS%", true),
    ("tab\there é", true),
    ("", true),
    ("100%", false),
    ("%FOO%", false),
    ("%REQ%", false),
    ("a\r\nInjected: 1", false),
    ("nul\0", false),
];

const REGEXES: &[(&str, bool)] = &[
    ("^/ok/[0-9]+$", true),
    ("/(v1|v2)/.*", true),
    (r"(?i)^/\w+$", true),
    (r"\pL+", true),
    ("(", false),
    ("(?<=a)b", false),
    ("[a-z]{200}", false),
    ("a{2}{3}", false),
    ("", false),
    (r"(a)\1", false),
];

const REWRITES: &[(&str, bool)] = &[
    ("rewritten.example.com", true),
    ("a b", true),
    ("line\nfeed", false),
    ("cr\rx", false),
];

const TIMEOUTS: &[(&str, bool)] = &[
    ("10s", true),
    ("0s", true),
    ("1h30m", true),
    ("2562047h", true),
    ("-1s", false),
    ("forever", false),
];

const IPS: &[(&str, bool)] = &[
    ("10.0.0.1", true),
    ("10.0.0.2", true),
    ("fd00::1", true),
    ("999.1.1.1", false),
    ("1.2.3", false),
    ("01.2.3.4", false),
    ("not-an-ip", false),
];

/// One generated case: the objects (as JSON documents) and the hosts that must be served on
/// the external gateway, and on the Gateway API Gateway `default/gw`.
struct Case {
    docs: Vec<Value>,
    served_hosts: BTreeSet<String>,
    gateway_api_hosts: BTreeSet<String>,
}

/// Our GatewayClass and Gateway `default/gw` (HTTP on port 80, routes from every namespace).
fn gateway_api_gateway() -> Vec<Value> {
    vec![
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "knative-pilot"},
               "spec": {"controllerName": "knative-pilot.dev/gateway-controller"}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": meta("gw", json!({})),
               "spec": {"gatewayClassName": "knative-pilot", "listeners": [
                   {"name": "http", "port": 80, "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}}}]}}),
    ]
}

/// An HTTPRoute on `default/gw`; its host must be served when every value is valid (an
/// unusable backend only answers 500 for its share).
fn http_route(rng: &mut Rng, i: usize, services: &[(String, bool)]) -> (Value, Option<String>) {
    let (host, mut ok) = rng.pick(
        &[
            (format!("hr-{i}.example.com"), true),
            (format!("hr-{i}\t.example.com"), false),
        ],
        10,
    );
    let mut m = serde_json::Map::new();
    match rng.below(3) {
        0 => {
            m.insert(
                "path".into(),
                json!({"type": "PathPrefix", "value": "/api"}),
            );
        }
        1 => {
            let (rx, rx_ok) = rng.pick(REGEXES, 35);
            ok &= rx_ok;
            m.insert(
                "path".into(),
                json!({"type": "RegularExpression", "value": rx}),
            );
        }
        _ => {
            let (rx, rx_ok) = rng.pick(REGEXES, 35);
            ok &= rx_ok;
            m.insert(
                "headers".into(),
                json!([{"type": "RegularExpression", "name": "x-version", "value": rx}]),
            );
        }
    }
    let mut rule = json!({"matches": [Value::Object(m)]});
    let n = 1 + rng.below(2);
    let mut backends = Vec::new();
    for _ in 0..n {
        let (svc, _) = services[rng.below(services.len())].clone();
        let weight = if n == 2 && rng.chance(10) {
            ok = false;
            4_000_000_000u64
        } else {
            50
        };
        let k = rng.below(2);
        let (set, h_ok) = headers(rng, k);
        ok &= h_ok;
        let set: Vec<Value> = set
            .into_iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        backends.push(json!({"name": svc, "port": 80, "weight": weight,
            "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": set}}]}));
    }
    rule["backendRefs"] = json!(backends);
    let mut filters = Vec::new();
    if rng.chance(30) {
        let (set, h_ok) = headers(rng, 1);
        ok &= h_ok;
        let (rm, rm_ok) = rng.pick(HEADER_NAMES, 20);
        ok &= rm_ok;
        let set: Vec<Value> = set
            .into_iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        filters.push(json!({"type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": set, "remove": [rm]}}));
    }
    if rng.chance(20) {
        let (rw, rw_ok) = rng.pick(REWRITES, 30);
        ok &= rw_ok;
        filters.push(json!({"type": "URLRewrite", "urlRewrite": {"hostname": rw}}));
    }
    rule["filters"] = json!(filters);
    if rng.chance(40) {
        let (t, t_ok) = rng.pick(TIMEOUTS, 30);
        ok &= t_ok;
        rule["timeouts"] = json!({"request": t});
    }
    let doc = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": meta(&format!("hr-{i}"), json!({})),
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host], "rules": [rule]},
    });
    (doc, ok.then_some(host))
}

fn meta(name: &str, extra: Value) -> Value {
    let mut m =
        json!({"name": name, "namespace": "default", "creationTimestamp": "2025-01-01T00:00:00Z"});
    if let (Value::Object(m), Value::Object(e)) = (&mut m, extra) {
        m.extend(e);
    }
    m
}

fn gateways() -> Vec<Value> {
    ["knative-ingress-gateway", "knative-local-gateway"]
        .iter()
        .zip(["ingressgateway", "local"])
        .map(|(name, sel)| {
            json!({
                "apiVersion": "networking.istio.io/v1beta1", "kind": "Gateway",
                "metadata": {"name": name, "namespace": "knative-serving"},
                "spec": {"selector": {"istio": sel},
                         "servers": [{"hosts": ["*"], "port": {"name": "http", "number": 80, "protocol": "HTTP"}}]}
            })
        })
        .collect()
}

/// Secret `default/tls`: a real self-signed pair.
fn tls_secret() -> Value {
    use base64::Engine;
    let c = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).expect("cert");
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": meta("tls", json!({})),
           "data": {"tls.crt": b64(c.cert.pem()), "tls.key": b64(c.signing_key.serialize_pem())}})
}

/// A Service (and its Endpoints) named `svc-<i>`; valid when every value is.
fn service(rng: &mut Rng, i: usize) -> (Vec<Value>, bool) {
    let name = format!("svc-{i}");
    let h2c = rng.chance(30);
    let (ip, _) = rng.pick(IPS, 20);
    let (port, port_ok) = rng.pick(&[(80, true), (0, false), (70000, false)], 10);
    let mut port_spec =
        json!({"name": if h2c { "http2" } else { "http" }, "port": port, "targetPort": 8080});
    if h2c {
        port_spec["appProtocol"] = json!("kubernetes.io/h2c");
    }
    if rng.chance(10) {
        let (ext, ext_ok) = rng.pick(&[("backend.example.com", true), ("", false)], 30);
        return (
            vec![
                json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(&name, json!({})),
                "spec": {"type": "ExternalName", "externalName": ext, "ports": [port_spec]}}),
            ],
            ext_ok && port_ok,
        );
    }
    (
        vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(&name, json!({})),
                "spec": {"ports": [port_spec]}}),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta(&name, json!({})),
                "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": if h2c { "http2" } else { "http" }, "port": 8080}]}]}),
        ],
        // A bad endpoint address is dropped, not the Service: it still serves (no endpoints).
        port_ok,
    )
}

fn headers(rng: &mut Rng, n: usize) -> (serde_json::Map<String, Value>, bool) {
    let mut out = serde_json::Map::new();
    let mut ok = true;
    for _ in 0..n {
        let (k, k_ok) = rng.pick(HEADER_NAMES, 15);
        let (v, v_ok) = rng.pick(HEADER_VALUES, 15);
        ok &= k_ok && v_ok;
        out.insert(k.to_string(), json!(v));
    }
    (out, ok)
}

fn kingress(rng: &mut Rng, i: usize, services: &[(String, bool)]) -> (Value, Option<String>) {
    let name = format!("ki-{i}");
    let (host, host_ok) = rng.pick(
        &[
            (format!("ki-{i}.example.com"), true),
            (format!("KI-{i}.Example.com"), true),
            (format!("ki-{i}\n.example.com"), false),
        ],
        10,
    );
    let mut ok = host_ok;
    let (svc, svc_ok) = services[rng.below(services.len())].clone();
    ok &= svc_ok;
    let n = rng.below(3);
    let (append, h_ok) = headers(rng, n);
    ok &= h_ok;
    let mut path = json!({"splits": [{"serviceName": svc, "serviceNamespace": "default", "servicePort": 80, "percent": 100,
                                       "appendHeaders": append}]});
    if rng.chance(30) {
        let (rw, rw_ok) = rng.pick(REWRITES, 30);
        ok &= rw_ok;
        path["rewriteHost"] = json!(rw);
    }
    if rng.chance(30) {
        // An exact header match takes any value (Envoy checks only names there).
        let (v, _) = rng.pick(HEADER_VALUES, 30);
        path["headers"] = json!({"x-match": {"exact": v}});
    }
    let mut spec = json!({"rules": [{"hosts": [host], "visibility": "ExternalIP", "http": {"paths": [path]}}]});
    if rng.chance(15) {
        // A TLS host two KIngresses share, or a partial wildcard, leaves that TLS server out
        // (the plain-HTTP host stays); a missing Secret likewise.
        let (tls_host, _) = rng.pick(
            &[
                (format!("ki-{i}.example.com"), true),
                ("shared.example.com".to_string(), false),
                (format!("a*-{i}.example.com"), false),
            ],
            40,
        );
        let secret = if rng.chance(80) { "tls" } else { "missing" };
        spec["tls"] =
            json!([{"hosts": [tls_host], "secretName": secret, "secretNamespace": "default"}]);
    }
    let doc = json!({
        "apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
        "metadata": meta(&name, json!({"annotations": {"networking.knative.dev/ingress.class": "knative-pilot.ingress.networking.knative.dev"}})),
        "spec": spec,
    });
    (doc, ok.then(|| host.to_ascii_lowercase()))
}

fn virtual_service(
    rng: &mut Rng,
    i: usize,
    services: &[(String, bool)],
) -> (Value, Option<String>) {
    let host = format!("vs-{i}.example.com");
    let mut ok = true;
    let mut m = serde_json::Map::new();
    match rng.below(3) {
        0 => {
            m.insert("uri".into(), json!({"prefix": "/"}));
        }
        1 => {
            let (rx, rx_ok) = rng.pick(REGEXES, 35);
            ok &= rx_ok;
            m.insert("uri".into(), json!({"regex": rx}));
        }
        _ => {
            let (rx, rx_ok) = rng.pick(REGEXES, 35);
            ok &= rx_ok;
            m.insert("headers".into(), json!({"x-version": {"regex": rx}}));
        }
    }
    let mut route = serde_json::Map::new();
    route.insert("match".into(), json!([m]));
    let n = 1 + rng.below(2);
    let mut dests = Vec::new();
    for d in 0..n {
        let (svc, svc_ok) = services[rng.below(services.len())].clone();
        ok &= svc_ok;
        let weight = if n == 1 {
            100
        } else if rng.chance(10) {
            ok = false;
            4_000_000_000u64
        } else if d == 0 {
            60
        } else {
            40
        };
        let k = rng.below(2);
        let (set, h_ok) = headers(rng, k);
        ok &= h_ok;
        dests.push(json!({"destination": {"host": format!("{svc}.default.svc.cluster.local"), "port": {"number": 80}},
                          "weight": weight, "headers": {"request": {"set": set}}}));
    }
    route.insert("route".into(), json!(dests));
    if rng.chance(40) {
        let (t, t_ok) = rng.pick(TIMEOUTS, 30);
        ok &= t_ok;
        route.insert("timeout".into(), json!(t));
    }
    if rng.chance(30) {
        let (set, h_ok) = headers(rng, 1);
        ok &= h_ok;
        let (rm, rm_ok) = rng.pick(HEADER_NAMES, 20);
        ok &= rm_ok;
        route.insert(
            "headers".into(),
            json!({"request": {"set": set, "remove": [rm]}}),
        );
    }
    if rng.chance(20) {
        let (rw, rw_ok) = rng.pick(REWRITES, 30);
        ok &= rw_ok;
        route.insert("rewrite".into(), json!({"authority": rw}));
    }
    let doc = json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": meta(&format!("vs-{i}"), json!({})),
        "spec": {"gateways": ["knative-serving/knative-ingress-gateway"], "hosts": [host], "http": [Value::Object(route)]},
    });
    (doc, ok.then_some(host))
}

fn case(seed: u64) -> Case {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut docs = gateways();
    docs.extend(gateway_api_gateway());
    docs.push(tls_secret());
    let mut services = Vec::new();
    for i in 0..4 {
        let (objs, ok) = service(&mut rng, i);
        docs.extend(objs);
        services.push((format!("svc-{i}"), ok));
    }
    let mut served_hosts = BTreeSet::new();
    for i in 0..5 {
        let (doc, host) = kingress(&mut rng, i, &services);
        docs.push(doc);
        served_hosts.extend(host);
    }
    for i in 0..5 {
        let (doc, host) = virtual_service(&mut rng, i, &services);
        docs.push(doc);
        served_hosts.extend(host);
    }
    let mut gateway_api_hosts = BTreeSet::new();
    for i in 0..4 {
        let (doc, host) = http_route(&mut rng, i, &services);
        docs.push(doc);
        gateway_api_hosts.extend(host);
    }
    Case {
        docs,
        served_hosts,
        gateway_api_hosts,
    }
}

/// The domains of every virtual host in a snapshot's RouteConfigurations.
fn domains(snap: &knative_pilot::xds::Snapshot) -> BTreeSet<String> {
    snap.of_type(ROUTE)
        .into_iter()
        .flatten()
        .flat_map(|(_, r)| {
            let v = any_to_json(&r.body.type_url, &r.body.value).expect("json");
            v["virtual_hosts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|vh| vh["domains"].as_array().cloned().unwrap_or_default())
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn envoy_accepts_what_is_rendered_from_valid_and_hostile_objects() {
    let cases: u64 = std::env::var("ENVOY_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let first: u64 = std::env::var("ENVOY_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut failures = Vec::new();
    let mut hostile_objects = 0;
    for seed in first..first + cases {
        let c = case(seed);
        let text = c
            .docs
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("\n---\n");
        let loaded = knative_pilot::source::files::parse_text(Path::new("case.yaml"), &text);
        let (inputs, _) = Inputs::from_sourced(loaded.objects);
        for layout in [RouteLayout::Istio, RouteLayout::Scoped] {
            let opts = Options {
                route_layout: layout,
                ..Options::default()
            };
            for gw in translate::gateways(&inputs, &opts) {
                let id = gw.id();
                let rendered = pipeline::render_gateway(&inputs, &opts, &id).expect("render");
                if layout == RouteLayout::Istio {
                    hostile_objects += rendered.errors.len();
                }
                let bootstrap = common::static_bootstrap::static_bootstrap(&rendered.snapshot);
                if let Err(out) = common::envoy_validate(&bootstrap) {
                    let tail: String = out.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                    failures.push(format!(
                        "seed {seed}, {layout:?}, gateway {id}: Envoy rejects the config:\n{tail}\nobjects:\n{text}"
                    ));
                }
                let want = match id.as_str() {
                    "knative-serving/knative-ingress-gateway" => Some(&c.served_hosts),
                    "default/gw" => Some(&c.gateway_api_hosts),
                    _ => None,
                };
                if let Some(want) = want {
                    let have = domains(&rendered.snapshot);
                    let missing: Vec<&String> =
                        want.iter().filter(|h| !have.contains(*h)).collect();
                    if !missing.is_empty() {
                        failures.push(format!(
                            "seed {seed}, {layout:?}: valid hosts not served: {missing:?}\nerrors:\n{}\nobjects:\n{text}",
                            rendered.errors.iter().map(|e| format!("  {e}\n")).collect::<String>()
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The generator does produce hostile objects (the property is not vacuous).
    assert!(hostile_objects > 0, "no case held a hostile object");
}
