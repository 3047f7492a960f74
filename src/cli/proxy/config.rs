//! `proxy-config`: what one Envoy was sent, from the server's `/debug/config_dump?proxyID=`
//! (Envoy admin ConfigDump JSON, `xds::dump`), as `istioctl proxy-config` tables. Pure: JSON
//! in, resources and tables out. Secrets arrive with their key material already redacted by
//! the dump; the secret table reads only the (public) certificates.

use serde_json::Value;

use super::table::Table;

/// What `proxy-config` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Cluster,
    Listener,
    Route,
    Endpoint,
    Secret,
}

/// The ConfigDump section and the field of each entry holding the resource.
fn section(kind: Kind) -> (&'static str, &'static str, &'static [&'static str]) {
    match kind {
        Kind::Cluster => (
            "ClustersConfigDump",
            "dynamic_active_clusters",
            &["cluster"],
        ),
        Kind::Listener => (
            "ListenersConfigDump",
            "dynamic_listeners",
            &["active_state", "listener"],
        ),
        Kind::Route => (
            "RoutesConfigDump",
            "dynamic_route_configs",
            &["route_config"],
        ),
        Kind::Endpoint => (
            "EndpointsConfigDump",
            "dynamic_endpoint_configs",
            &["endpoint_config"],
        ),
        Kind::Secret => ("SecretsConfigDump", "dynamic_active_secrets", &["secret"]),
    }
}

fn section_resources(dump: &Value, kind: Kind) -> Vec<Value> {
    let (ty, list, path) = section(kind);
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(ty)))
        .flat_map(|c| c[list].as_array().cloned().unwrap_or_default())
        .filter_map(|entry| {
            let r = path.iter().fold(&entry, |v, p| &v[*p]);
            (!r.is_null()).then(|| r.clone())
        })
        .collect()
}

/// The resources of one kind in a ConfigDump (Cluster, Listener, RouteConfiguration,
/// ClusterLoadAssignment or Secret objects, each with its `@type`), in the dump's order
/// (sorted by name). Endpoints include the load assignments clusters carry inline
/// (`STRICT_DNS` clusters of ExternalName Services), as Envoy's own dump lists them.
pub fn resources(dump: &Value, kind: Kind) -> Vec<Value> {
    let mut out = section_resources(dump, kind);
    if kind == Kind::Endpoint {
        for c in section_resources(dump, Kind::Cluster) {
            let la = &c["load_assignment"];
            if la.is_object() {
                let mut la = la.clone();
                if let Some(o) = la.as_object_mut() {
                    o.insert(
                        "@type".into(),
                        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
                    );
                    o.entry("cluster_name").or_insert(c["name"].clone());
                }
                out.push(la);
            }
        }
        out.sort_by(|a, b| s(&a["cluster_name"]).cmp(s(&b["cluster_name"])));
    }
    out
}

/// The table of `resources(dump, kind)`.
pub fn table(kind: Kind, resources: &[Value]) -> Table {
    match kind {
        Kind::Cluster => clusters(resources),
        Kind::Listener => listeners(resources),
        Kind::Route => routes(resources),
        Kind::Endpoint => endpoints(resources),
        Kind::Secret => secrets(resources),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn or_dash(v: &str) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        v.to_string()
    }
}

/// `outbound|80|subset|svc.ns.svc.cluster.local` as istioctl splits it: (fqdn, port, subset,
/// direction); other names (`BlackHoleCluster`) are their own FQDN.
fn cluster_name_parts(name: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = name.split('|').collect();
    match parts.as_slice() {
        [dir @ ("outbound" | "inbound"), port, subset, fqdn] => (
            fqdn.to_string(),
            or_dash(port),
            or_dash(subset),
            dir.to_string(),
        ),
        _ => (name.to_string(), "-".into(), "-".into(), "-".into()),
    }
}

fn clusters(resources: &[Value]) -> Table {
    let mut t = Table::new(&["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"]);
    for c in resources {
        let (fqdn, port, subset, dir) = cluster_name_parts(s(&c["name"]));
        let ty = match (c["type"].as_str(), c["cluster_type"]["name"].as_str()) {
            (Some(t), _) => t.to_string(),
            (None, Some(custom)) => custom.to_string(),
            // proto3 JSON leaves the default out.
            (None, None) => "STATIC".to_string(),
        };
        t.push(vec![fqdn, port, subset, dir, ty]);
    }
    t
}

/// A filter chain's match, as istioctl words it (`ALL` when it has none).
fn chain_match(m: &Value) -> String {
    let mut parts = Vec::new();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| s(x).to_string())
            .collect()
    };
    let sni = names(&m["server_names"]);
    if !sni.is_empty() {
        parts.push(format!("SNI: {}", sni.join(",")));
    }
    if let Some(tp) = m["transport_protocol"].as_str() {
        parts.push(format!("Trans: {tp}"));
    }
    let alpn = names(&m["application_protocols"]);
    if !alpn.is_empty() {
        parts.push(format!("App: {}", alpn.join(",")));
    }
    if let Some(p) = m["destination_port"].as_u64() {
        parts.push(format!("Port: {p}"));
    }
    if parts.is_empty() {
        "ALL".to_string()
    } else {
        parts.join("; ")
    }
}

/// Where a filter chain sends traffic: its HCM's routes or its TCP proxy's cluster.
fn chain_destination(chain: &Value) -> String {
    let mut out = Vec::new();
    for f in chain["filters"].as_array().into_iter().flatten() {
        let cfg = &f["typed_config"];
        if let Some(rds) = cfg["rds"]["route_config_name"].as_str() {
            out.push(format!("Route: {rds}"));
        } else if let Some(scoped) = cfg["scoped_routes"]["name"].as_str() {
            out.push(format!("Scoped Routes: {scoped}"));
        } else if cfg["route_config"].is_object() {
            out.push(format!("Inline Route: {}", s(&cfg["route_config"]["name"])));
        } else if let Some(c) = cfg["cluster"].as_str() {
            out.push(format!("Cluster: {c}"));
        } else {
            out.push(s(&f["name"]).to_string());
        }
    }
    or_dash(&out.join(", "))
}

fn listeners(resources: &[Value]) -> Table {
    let mut t = Table::new(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"]);
    for l in resources {
        let sock = &l["address"]["socket_address"];
        let addr = or_dash(s(&sock["address"]));
        let port = sock["port_value"]
            .as_u64()
            .map_or("-".to_string(), |p| p.to_string());
        let chains = l["filter_chains"].as_array().cloned().unwrap_or_default();
        let default = Some(&l["default_filter_chain"]).filter(|d| d.is_object());
        if chains.is_empty() && default.is_none() {
            t.push(vec![addr.clone(), port.clone(), "-".into(), "-".into()]);
        }
        for c in &chains {
            t.push(vec![
                addr.clone(),
                port.clone(),
                chain_match(&c["filter_chain_match"]),
                chain_destination(c),
            ]);
        }
        if let Some(d) = default {
            t.push(vec![addr, port, "DEFAULT".into(), chain_destination(d)]);
        }
    }
    t
}

/// A route's match: `/p*` for a prefix, the path itself, `regex: ...`, plus its header
/// matches by name.
fn route_match(m: &Value) -> String {
    let mut out = if let Some(p) = m["prefix"].as_str() {
        format!("{p}*")
    } else if let Some(p) = m["path"].as_str() {
        p.to_string()
    } else if let Some(p) = m["path_separated_prefix"].as_str() {
        format!("{p}/*")
    } else if let Some(r) = m["safe_regex"]["regex"].as_str() {
        format!("regex: {r}")
    } else {
        "/*".to_string()
    };
    let headers: Vec<&str> = m["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| s(&h["name"]))
        .collect();
    if !headers.is_empty() {
        out.push_str(&format!(" (headers: {})", headers.join(",")));
    }
    out
}

/// The object a route came from, from the `config` path the translator stores in the route's
/// metadata (`/apis/GROUP/VERSION/namespaces/NS/RESOURCE/NAME`): `Kind ns/name`.
fn route_origin(route: &Value) -> String {
    let meta = &route["metadata"]["filter_metadata"];
    let path = ["knative-pilot", "istio"]
        .iter()
        .find_map(|k| meta[*k]["config"].as_str())
        .unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [.., "namespaces", ns, resource, name] => {
            let kind = match *resource {
                "ingresses" => "Ingress",
                "routes" => "Route",
                "virtual-service" | "virtualservices" => "VirtualService",
                other => other,
            };
            format!("{kind} {ns}/{name}")
        }
        _ => "-".to_string(),
    }
}

/// Up to two domains, then how many more.
fn domains(vh: &Value) -> String {
    let all: Vec<&str> = vh["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    match all.len() {
        0 => "-".to_string(),
        1 | 2 => all.join(", "),
        n => format!("{}, {} + {} more", all[0], all[1], n - 2),
    }
}

fn routes(resources: &[Value]) -> Table {
    let mut t = Table::new(&["NAME", "VHOST NAME", "DOMAINS", "MATCH", "FROM"]);
    for rc in resources {
        let name = s(&rc["name"]).to_string();
        for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
            let vname = s(&vh["name"]).to_string();
            let doms = domains(vh);
            let routes = vh["routes"].as_array().cloned().unwrap_or_default();
            if routes.is_empty() {
                t.push(vec![
                    name.clone(),
                    vname.clone(),
                    doms.clone(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for r in &routes {
                t.push(vec![
                    name.clone(),
                    vname.clone(),
                    doms.clone(),
                    route_match(&r["match"]),
                    route_origin(r),
                ]);
            }
        }
    }
    t
}

/// Rows (endpoint, status) of a ClusterLoadAssignment. `UNKNOWN` (no health checking, what
/// the server sends for ready endpoints) is shown as `HEALTHY`: Envoy routes to it.
fn assignment_rows(cla: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for locality in cla["endpoints"].as_array().into_iter().flatten() {
        for lb in locality["lb_endpoints"].as_array().into_iter().flatten() {
            let sock = &lb["endpoint"]["address"]["socket_address"];
            let port = sock["port_value"].as_u64().unwrap_or(0);
            let status = match lb["health_status"].as_str() {
                None | Some("UNKNOWN") | Some("HEALTHY") => "HEALTHY",
                Some(other) => other,
            };
            out.push((
                format!("{}:{port}", s(&sock["address"])),
                status.to_string(),
            ));
        }
    }
    out
}

fn endpoints(resources: &[Value]) -> Table {
    let mut t = Table::new(&["ENDPOINT", "STATUS", "CLUSTER"]);
    for cla in resources {
        let cluster = s(&cla["cluster_name"]).to_string();
        for (ep, status) in assignment_rows(cla) {
            t.push(vec![ep, status, cluster.clone()]);
        }
    }
    t
}

/// The PEM text of a DataSource holding certificates (inline bytes or string; a file name is
/// not read).
fn pem_of(source: &Value) -> Option<Vec<u8>> {
    use base64::Engine;
    if let Some(b) = source["inline_bytes"].as_str() {
        return base64::engine::general_purpose::STANDARD.decode(b).ok();
    }
    source["inline_string"]
        .as_str()
        .map(|t| t.as_bytes().to_vec())
}

/// (valid now, serial, not after, not before) of the first certificate in PEM text.
fn cert_facts(pem: &[u8]) -> Option<(bool, String, String, String)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let v = cert.validity();
    let time = |t: x509_parser::time::ASN1Time| {
        k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
            .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    Some((
        v.is_valid(),
        format!("{:x}", cert.tbs_certificate.serial),
        time(v.not_after),
        time(v.not_before),
    ))
}

fn secrets(resources: &[Value]) -> Table {
    let mut t = Table::new(&[
        "RESOURCE NAME",
        "TYPE",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ]);
    for sec in resources {
        let name = s(&sec["name"]).to_string();
        let (ty, source) = if sec["tls_certificate"].is_object() {
            ("Cert Chain", &sec["tls_certificate"]["certificate_chain"])
        } else if sec["validation_context"].is_object() {
            ("CA", &sec["validation_context"]["trusted_ca"])
        } else {
            ("-", &Value::Null)
        };
        let facts = pem_of(source).as_deref().and_then(cert_facts);
        let row = match facts {
            Some((valid, serial, after, before)) => {
                vec![name, ty.into(), valid.to_string(), serial, after, before]
            }
            None => vec![
                name,
                ty.into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        };
        t.push(row);
    }
    t
}

#[cfg(test)]
mod tests;
