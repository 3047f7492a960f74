//! A rendered snapshot as a static Envoy bootstrap, for `envoy --mode validate`.

use knative_pilot::xds::dump::any_to_json;
use knative_pilot::xds::{Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};
use serde_json::{json, Value};
use std::collections::HashMap;

fn strip_type(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.shift_remove("@type");
    }
    v
}

/// `validate_clusters: true` makes Envoy check that every cluster a route names exists; a
/// Gateway API backendRef that cannot be used names a cluster that never exists on purpose (its
/// share answers 500: `cluster_not_found_response_code`), so such route configurations are not
/// checked for it.
fn validate_clusters(rc: &Value) -> bool {
    !rc.to_string().contains("\"invalid-backend|")
}

fn resources(snap: &Snapshot, t: &str) -> Vec<Value> {
    snap.of_type(t)
        .into_iter()
        .flatten()
        .map(|(_, r)| any_to_json(&r.body.type_url, &r.body.value).expect("json"))
        .collect()
}

/// Resources by their `field` (a name), for lookups in O(1) at 10,000 services.
fn by_name(v: Vec<Value>, field: &str) -> HashMap<String, Value> {
    v.into_iter()
        .map(|r| (r[field].as_str().unwrap_or("").to_string(), r))
        .collect()
}

/// A bootstrap that holds the snapshot statically (RDS inlined, EDS as static endpoints, SDS as
/// static secrets; scoped RDS as an inline list of scopes with inline RouteConfigurations), for
/// `envoy --mode validate` (and the static mode of `benches/envoy.rs`).
pub fn static_bootstrap(snap: &Snapshot) -> String {
    let routes = by_name(resources(snap, ROUTE), "name");
    let cla = by_name(resources(snap, ENDPOINT), "cluster_name");
    let mut listeners = resources(snap, LISTENER);
    for l in &mut listeners {
        for chain in l["filter_chains"].as_array_mut().into_iter().flatten() {
            for f in chain["filters"].as_array_mut().into_iter().flatten() {
                let hcm = &mut f["typed_config"];
                if let Some(name) = hcm["rds"]["route_config_name"].as_str().map(str::to_string) {
                    let rc = routes.get(name.as_str()).unwrap_or_else(|| {
                        panic!("listener uses route config {name} that is not served")
                    });
                    let mut rc = strip_type(rc);
                    rc["validate_clusters"] = json!(validate_clusters(&rc));
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
                            let rc = routes.get(rc_name).unwrap_or_else(|| {
                                panic!("scope uses route config {rc_name} that is not served")
                            });
                            let mut rc = strip_type(rc);
                            rc["validate_clusters"] = json!(validate_clusters(&rc));
                            let mut s = strip_type(s);
                            s.as_object_mut()
                                .unwrap()
                                .shift_remove("route_configuration_name");
                            s["route_configuration"] = rc;
                            s
                        })
                        .collect();
                    if scopes.is_empty() {
                        // No host: an inline list needs one scope; an empty route table serves
                        // what an empty scoped RDS would (nothing).
                        let m = hcm.as_object_mut().unwrap();
                        m.shift_remove("scoped_routes");
                        m.insert("route_config".into(), json!({"name": name}));
                        continue;
                    }
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
                .get(name.as_str())
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
