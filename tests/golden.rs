//! Golden files: every `testdata/<case>/input/` directory is rendered for every gateway, and the
//! output must match `testdata/<case>/expected/<ns>_<name>.json` byte for byte (and the
//! reported errors `expected/errors.txt`). `UPDATE_GOLDEN=1 cargo test --test golden` rewrites
//! them; review every rewritten file as a user would.
//!
//! Each rendered config is also checked by stock Envoy itself: `envoy --mode validate` on a
//! bootstrap holding the rendered resources statically (RDS inlined, EDS as static endpoints,
//! SDS as static secrets; scoped RDS as an inline list of scopes with inline RouteConfigurations).
//! The test fails when Envoy is missing.
//!
//! Cases named `scoped-*` are rendered in the scoped route layout (`--route-layout scoped`).

mod common;

use std::path::{Path, PathBuf};

use knative_pilot::pipeline;
use knative_pilot::translate::{self, Options, RouteLayout};
use knative_pilot::xds::dump::any_to_json;
use knative_pilot::xds::{Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};
use serde_json::{json, Value};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("testdata")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input").is_dir())
        .collect();
    out.sort();
    out
}

fn update() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

fn strip_type(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.shift_remove("@type");
    }
    v
}

fn resources(snap: &Snapshot, t: &str) -> Vec<Value> {
    snap.of_type(t)
        .into_iter()
        .flatten()
        .map(|(_, r)| any_to_json(&r.body.type_url, &r.body.value).expect("json"))
        .collect()
}

/// A bootstrap that holds the snapshot statically, for `envoy --mode validate`.
fn static_bootstrap(snap: &Snapshot) -> String {
    let routes: Vec<Value> = resources(snap, ROUTE);
    let cla: Vec<Value> = resources(snap, ENDPOINT);
    let mut listeners = resources(snap, LISTENER);
    for l in &mut listeners {
        for chain in l["filter_chains"].as_array_mut().into_iter().flatten() {
            for f in chain["filters"].as_array_mut().into_iter().flatten() {
                let hcm = &mut f["typed_config"];
                if let Some(name) = hcm["rds"]["route_config_name"].as_str().map(str::to_string) {
                    let rc = routes
                        .iter()
                        .find(|r| r["name"] == name.as_str())
                        .unwrap_or_else(|| {
                            panic!("listener uses route config {name} that is not served")
                        });
                    let mut rc = strip_type(rc);
                    rc["validate_clusters"] = json!(true);
                    hcm.as_object_mut().unwrap().shift_remove("rds");
                    hcm["route_config"] = rc;
                }
                if let Some(name) = hcm["scoped_routes"]["name"].as_str().map(str::to_string) {
                    let prefix = format!("{name}/");
                    let scopes: Vec<Value> = resources(snap, SCOPED_ROUTE)
                        .iter()
                        .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
                        .map(|s| {
                            let rc_name = s["route_configuration_name"].as_str().unwrap_or("");
                            let rc =
                                routes
                                    .iter()
                                    .find(|r| r["name"] == rc_name)
                                    .unwrap_or_else(|| {
                                        panic!(
                                            "scope uses route config {rc_name} that is not served"
                                        )
                                    });
                            let mut rc = strip_type(rc);
                            rc["validate_clusters"] = json!(true);
                            let mut s = strip_type(s);
                            s.as_object_mut()
                                .unwrap()
                                .shift_remove("route_configuration_name");
                            s["route_configuration"] = rc;
                            s
                        })
                        .collect();
                    let sr = hcm["scoped_routes"].as_object_mut().unwrap();
                    sr.shift_remove("scoped_rds");
                    sr.insert(
                        "scoped_route_configurations_list".into(),
                        json!({ "scoped_route_configurations": scopes }),
                    );
                }
            }
            if let Some(tls) = chain.get_mut("transport_socket") {
                for sds in tls["typed_config"]["common_tls_context"]
                    ["tls_certificate_sds_secret_configs"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    sds.as_object_mut().unwrap().shift_remove("sds_config");
                }
            }
        }
    }
    let mut clusters = resources(snap, CLUSTER);
    for c in &mut clusters {
        if c["type"] == "EDS" {
            let name = c["name"].as_str().unwrap().to_string();
            let la = cla
                .iter()
                .find(|e| e["cluster_name"] == name.as_str())
                .unwrap_or_else(|| panic!("EDS cluster {name} has no ClusterLoadAssignment"));
            let m = c.as_object_mut().unwrap();
            m.shift_remove("eds_cluster_config");
            m.insert("type".into(), json!("STATIC"));
            m.insert("load_assignment".into(), strip_type(la));
        }
    }
    let strip = |v: Vec<Value>| v.iter().map(strip_type).collect::<Vec<_>>();
    let bootstrap = json!({
        "node": {"id": "router~127.0.0.1~validate.istio-system~istio-system.svc.cluster.local", "cluster": "validate"},
        "static_resources": {
            "listeners": strip(listeners),
            "clusters": strip(clusters),
            "secrets": strip(resources(snap, SECRET)),
        }
    });
    serde_json::to_string_pretty(&bootstrap).unwrap()
}

#[test]
fn golden_cases_render_as_expected_and_envoy_accepts_them() {
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "expected golden cases under testdata/, found {cases:?}"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let opts = Options {
            route_layout: if name.starts_with("scoped-") {
                RouteLayout::Scoped
            } else {
                RouteLayout::Istio
            },
            ..Options::default()
        };
        let (inputs, mut errors) = pipeline::load(&case.join("input"));
        let expected_dir = case.join("expected");
        if update() {
            std::fs::create_dir_all(&expected_dir).unwrap();
        }
        for gw in translate::gateways(&inputs, &opts) {
            let id = gw.id();
            let rendered = pipeline::render_gateway(&inputs, &opts, &id).expect("render");
            errors.extend(rendered.errors.iter().cloned());
            let dump = knative_pilot::xds::dump::config_dump(&rendered.snapshot).expect("dump");
            let text = serde_json::to_string_pretty(&dump).unwrap() + "\n";
            // Deterministic: a second render is byte-identical.
            let again = pipeline::render_gateway(&inputs, &opts, &id).expect("render");
            let text2 = serde_json::to_string_pretty(
                &knative_pilot::xds::dump::config_dump(&again.snapshot).unwrap(),
            )
            .unwrap()
                + "\n";
            assert_eq!(text, text2, "{name}/{id}: rendering is not deterministic");
            let file = expected_dir.join(format!("{}.json", id.replace('/', "_")));
            if update() {
                std::fs::write(&file, &text).unwrap();
            } else {
                match std::fs::read_to_string(&file) {
                    Ok(want) if want == text => {}
                    Ok(_) => failures.push(format!(
                        "{name}: gateway {id} differs from {} (UPDATE_GOLDEN=1 to rewrite after review)",
                        file.display()
                    )),
                    Err(e) => failures.push(format!("{name}: {}: {e}", file.display())),
                }
            }
            if let Err(out) = common::envoy_validate(&static_bootstrap(&rendered.snapshot)) {
                failures.push(format!(
                    "{name}: Envoy rejects gateway {id}'s config:\n{out}"
                ));
            }
        }
        errors.sort();
        errors.dedup();
        let text: String = errors.iter().map(|e| format!("{e}\n")).collect();
        let file = expected_dir.join("errors.txt");
        if update() {
            std::fs::write(&file, &text).unwrap();
        } else {
            let want = std::fs::read_to_string(&file).unwrap_or_default();
            if want != text {
                failures.push(format!(
                    "{name}: errors differ:\n--- want\n{want}--- got\n{text}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
