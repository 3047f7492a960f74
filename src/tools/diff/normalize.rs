//! Config dumps into one canonical JSON tree per resource (see the module docs of
//! [`super`] for the normalisations and why).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{Kind, Normalized, Options};

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Which kind a bare resource (in a list) is: by its `@type`, else by its fields.
fn bare_kind(v: &Value) -> Option<Kind> {
    let ty = v.get("@type").and_then(Value::as_str).unwrap_or("");
    let short = ty.rsplit('.').next().unwrap_or("");
    let has = |k: &str| v.get(k).is_some();
    match short {
        "Listener" => Some(Kind::Listener),
        "RouteConfiguration" => Some(Kind::RouteConfig),
        "Cluster" => Some(Kind::Cluster),
        "ClusterLoadAssignment" => Some(Kind::Endpoints),
        "Secret" => Some(Kind::Secret),
        _ if has("filter_chains") || has("listener_filters") => Some(Kind::Listener),
        _ if has("virtual_hosts") => Some(Kind::RouteConfig),
        _ if has("cluster_name") => Some(Kind::Endpoints),
        _ if has("connect_timeout")
            || has("eds_cluster_config")
            || has("lb_policy")
            || has("load_assignment") =>
        {
            Some(Kind::Cluster)
        }
        _ if has("tls_certificate") || has("validation_context") => Some(Kind::Secret),
        _ => None,
    }
}

/// A bare list of resources (`istioctl proxy-config cluster -o json`) as a ConfigDump.
fn list_as_dump(items: &[Value]) -> Result<Value, String> {
    let (mut l, mut r, mut c, mut e, mut s) = (vec![], vec![], vec![], vec![], vec![]);
    for (i, item) in items.iter().enumerate() {
        let name = item.get("name").cloned().unwrap_or(Value::Null);
        match bare_kind(item) {
            Some(Kind::Listener) => {
                l.push(serde_json::json!({"name": name, "active_state": {"listener": item}}))
            }
            Some(Kind::RouteConfig) => r.push(serde_json::json!({"route_config": item})),
            Some(Kind::Cluster) => c.push(serde_json::json!({"cluster": item})),
            Some(Kind::Endpoints) => e.push(serde_json::json!({"endpoint_config": item})),
            Some(Kind::Secret) => s.push(serde_json::json!({"name": name, "secret": item})),
            _ => {
                return Err(format!(
                    "item {i} of the list is not a listener, route configuration, cluster, \
                     load assignment or secret"
                ))
            }
        }
    }
    let p = "type.googleapis.com/envoy.admin.v3.";
    Ok(serde_json::json!({"configs": [
        {"@type": format!("{p}ClustersConfigDump"), "dynamic_active_clusters": c},
        {"@type": format!("{p}EndpointsConfigDump"), "dynamic_endpoint_configs": e},
        {"@type": format!("{p}ListenersConfigDump"), "dynamic_listeners": l},
        {"@type": format!("{p}RoutesConfigDump"), "dynamic_route_configs": r},
        {"@type": format!("{p}SecretsConfigDump"), "dynamic_active_secrets": s},
    ]}))
}

/// The kinds a bare list holds (None for a full config dump): to compare only those.
pub fn list_kinds(dump: &Value) -> Option<BTreeSet<Kind>> {
    let items = dump.as_array()?;
    let mut kinds: BTreeSet<Kind> = items.iter().filter_map(bare_kind).collect();
    if kinds.contains(&Kind::RouteConfig) {
        kinds.insert(Kind::VirtualHost);
    }
    Some(kinds)
}

/// Normalises an Envoy admin ConfigDump (`{"configs": [...]}`), or a bare list of resources,
/// into resources.
pub fn normalize(dump: &Value, opts: &Options) -> Result<Normalized, String> {
    if let Some(items) = dump.as_array() {
        return normalize(&list_as_dump(items)?, opts);
    }
    let configs = dump
        .get("configs")
        .and_then(Value::as_array)
        .ok_or("not a config dump: no `configs` list (expected Envoy admin /config_dump JSON)")?;
    let mut out = Normalized::default();
    let mut raw: Raw = Vec::new();
    let mut eds_names: Option<BTreeSet<String>> = None;
    for section in configs {
        let ty = section.get("@type").and_then(Value::as_str).unwrap_or("");
        let short = ty.rsplit('.').next().unwrap_or(ty);
        match short {
            "ListenersConfigDump" => listeners(section, opts, &mut raw, &mut out.notes),
            "ClustersConfigDump" if dump_has_clusters(section) => clusters(
                section,
                opts,
                &mut raw,
                eds_names.get_or_insert_with(BTreeSet::new),
            ),
            "RoutesConfigDump" => routes(section, opts, &mut raw),
            "EndpointsConfigDump" => endpoints(section, opts, &mut raw),
            "SecretsConfigDump" => secrets(section, opts, &mut raw),
            "BootstrapConfigDump" => {}
            "ScopedRoutesConfigDump" if section.as_object().is_some_and(|m| m.len() <= 1) => {}
            other => out
                .notes
                .push(format!("config dump section {other:?} is not compared")),
        }
    }
    for (kind, name, v) in raw {
        if opts.skip.iter().any(|s| s.matches(kind, &name)) {
            continue;
        }
        if kind == Kind::Endpoints {
            if let Some(eds) = &eds_names {
                if !eds.contains(&name) {
                    continue;
                }
            }
        }
        let v = canonical(kind, v, opts);
        out.resources.insert((kind, name), v);
    }
    Ok(out)
}

/// Resources as read from the sections, before skipping and canonicalising.
type Raw = Vec<(Kind, String, Value)>;

/// Listeners: the warming version, else the active one; rejected and draining ones noted.
fn listeners(section: &Value, opts: &Options, raw: &mut Raw, notes: &mut Vec<String>) {
    if opts.keep_static {
        for l in arr(section, "static_listeners") {
            push(raw, Kind::Listener, l.get("listener"));
        }
    }
    for l in arr(section, "dynamic_listeners") {
        let name = l.get("name").and_then(Value::as_str).unwrap_or("?");
        let state = ["warming_state", "active_state"]
            .iter()
            .find_map(|s| l.get(*s).and_then(|st| st.get("listener")));
        match state {
            Some(listener) => push(raw, Kind::Listener, Some(listener)),
            None => {
                if let Some(err) = l.get("error_state") {
                    notes.push(format!(
                        "listener {name}: rejected by Envoy and never active ({})",
                        err.get("details").unwrap_or(&Value::Null)
                    ));
                } else if l.get("draining_state").is_some() {
                    notes.push(format!("listener {name}: draining (left out)"));
                }
            }
        }
    }
}

/// Clusters (active, then warming: the warming version replaces the active one); notes the
/// EDS service names in `eds_names` (the load assignments that count).
fn clusters(section: &Value, opts: &Options, raw: &mut Raw, eds_names: &mut BTreeSet<String>) {
    let mut clusters: Vec<&Value> = Vec::new();
    if opts.keep_static {
        clusters.extend(arr(section, "static_clusters").iter());
    }
    clusters.extend(arr(section, "dynamic_active_clusters").iter());
    clusters.extend(arr(section, "dynamic_warming_clusters").iter());
    for c in clusters {
        let Some(cluster) = c.get("cluster") else {
            continue;
        };
        if cluster.get("type").and_then(Value::as_str) == Some("EDS") {
            let svc = cluster
                .pointer("/eds_cluster_config/service_name")
                .and_then(Value::as_str)
                .or_else(|| cluster.get("name").and_then(Value::as_str));
            if let Some(svc) = svc {
                eds_names.insert(svc.to_string());
            }
        }
        push(raw, Kind::Cluster, Some(cluster));
    }
    // Static clusters' endpoints are bootstrap too.
    if !opts.keep_static {
        for c in arr(section, "static_clusters") {
            if let Some(n) = c.pointer("/cluster/name").and_then(Value::as_str) {
                eds_names.remove(n);
            }
        }
    }
}

/// Route configurations, each split into itself (without virtual hosts) and its virtual hosts.
fn routes(section: &Value, opts: &Options, raw: &mut Raw) {
    let mut routes: Vec<&Value> = Vec::new();
    if opts.keep_static {
        routes.extend(arr(section, "static_route_configs").iter());
    }
    routes.extend(arr(section, "dynamic_route_configs").iter());
    for r in routes {
        let Some(rc) = r.get("route_config") else {
            continue;
        };
        let name = rc.get("name").and_then(Value::as_str).unwrap_or("");
        for vh in arr(rc, "virtual_hosts") {
            let vname = vh.get("name").and_then(Value::as_str).unwrap_or("");
            raw.push((Kind::VirtualHost, format!("{name}/{vname}"), vh.clone()));
        }
        let mut rc = rc.clone();
        if let Some(m) = rc.as_object_mut() {
            m.remove("virtual_hosts");
        }
        raw.push((Kind::RouteConfig, name.to_string(), rc));
    }
}

/// Cluster load assignments.
fn endpoints(section: &Value, opts: &Options, raw: &mut Raw) {
    let mut eps: Vec<&Value> = Vec::new();
    if opts.keep_static {
        eps.extend(arr(section, "static_endpoint_configs").iter());
    }
    eps.extend(arr(section, "dynamic_endpoint_configs").iter());
    for e in eps {
        if let Some(cla) = e.get("endpoint_config") {
            let name = cla.get("cluster_name").and_then(Value::as_str);
            raw.push((Kind::Endpoints, name.unwrap_or("").to_string(), cla.clone()));
        }
    }
}

/// Secrets, by name only: the contents are never looked at.
fn secrets(section: &Value, opts: &Options, raw: &mut Raw) {
    let mut secrets: Vec<&Value> = Vec::new();
    if opts.keep_static {
        secrets.extend(arr(section, "static_secrets").iter());
    }
    secrets.extend(arr(section, "dynamic_active_secrets").iter());
    secrets.extend(arr(section, "dynamic_warming_secrets").iter());
    for s in secrets {
        let name = s
            .get("name")
            .or_else(|| s.pointer("/secret/name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        raw.push((
            Kind::Secret,
            name.to_string(),
            serde_json::json!({"name": name}),
        ));
    }
}

/// Whether a ClustersConfigDump section lists any cluster (a bare list of load assignments has an
/// empty one, which must not make every assignment look like a non-EDS cluster's).
fn dump_has_clusters(section: &Value) -> bool {
    [
        "static_clusters",
        "dynamic_active_clusters",
        "dynamic_warming_clusters",
    ]
    .iter()
    .any(|k| !arr(section, k).is_empty())
}

fn push(raw: &mut Raw, kind: Kind, v: Option<&Value>) {
    if let Some(v) = v {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        raw.push((kind, name.to_string(), v.clone()));
    }
}

/// Keys whose string values are content (never reformatted as durations).
const CONTENT_KEYS: &[&str] = &[
    "value",
    "exact",
    "prefix",
    "suffix",
    "contains",
    "regex",
    "inline_string",
    "key",
    "name",
    "path",
    "host_rewrite_literal",
];

/// Lists whose order does not change behaviour, sorted before comparing.
const UNORDERED: &[&str] = &[
    "domains",
    "filter_chains",
    "server_names",
    "application_protocols",
    "upgrade_configs",
    "lb_endpoints",
];

fn canonical(kind: Kind, mut v: Value, opts: &Options) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("@type");
    }
    if kind == Kind::Endpoints {
        envoy_endpoint_defaults(&mut v);
    }
    let mut path = Vec::new();
    canon(kind, &mut v, &mut path, opts);
    v
}

fn envoy_endpoint_defaults(cla: &mut Value) {
    if let Some(policy) = cla.get_mut("policy").and_then(Value::as_object_mut) {
        if policy
            .get("overprovisioning_factor")
            .and_then(Value::as_u64)
            == Some(140)
        {
            policy.remove("overprovisioning_factor");
        }
        if policy.is_empty() {
            cla.as_object_mut().map(|m| m.remove("policy"));
        }
    }
    let Some(localities) = cla.get_mut("endpoints").and_then(Value::as_array_mut) else {
        return;
    };
    for loc in localities.iter_mut() {
        let Some(lm) = loc.as_object_mut() else {
            continue;
        };
        lm.remove("load_balancing_weight");
        if lm.get("locality").is_some_and(is_empty_obj) {
            lm.remove("locality");
        }
        if let Some(lbs) = lm.get_mut("lb_endpoints").and_then(Value::as_array_mut) {
            for lb in lbs.iter_mut() {
                let Some(m) = lb.as_object_mut() else {
                    continue;
                };
                if matches!(
                    m.get("health_status").and_then(Value::as_str),
                    Some("HEALTHY" | "UNKNOWN")
                ) {
                    m.remove("health_status");
                }
                if m.get("load_balancing_weight").and_then(Value::as_u64) == Some(1) {
                    m.remove("load_balancing_weight");
                }
                if let Some(ep) = m.get_mut("endpoint").and_then(Value::as_object_mut) {
                    if ep.get("health_check_config").is_some_and(is_empty_obj) {
                        ep.remove("health_check_config");
                    }
                }
            }
        }
    }
}

fn is_empty_obj(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

/// Recursively: drop ignored fields, redact private keys, normalise durations, sort object
/// keys and behaviour-neutral lists.
fn canon(kind: Kind, v: &mut Value, path: &mut Vec<String>, opts: &Options) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let mut sorted = Map::new();
            let mut entries: Vec<(String, Value)> = Vec::new();
            for k in keys {
                if let Some(mut child) = m.remove(&k) {
                    path.push(k.clone());
                    let names: Vec<&str> = path.iter().map(String::as_str).collect();
                    let ignored = opts.ignore.iter().any(|p| p.matches(kind, &names));
                    if !ignored {
                        if k == "private_key" {
                            child = serde_json::json!({"inline_string": "[redacted]"});
                        } else {
                            canon(kind, &mut child, path, opts);
                            if let Value::String(s) = &mut child {
                                if !CONTENT_KEYS.contains(&k.as_str()) {
                                    if let Some(d) = canonical_duration(s) {
                                        *s = d;
                                    }
                                }
                            }
                            if UNORDERED.contains(&k.as_str())
                                || (k == "endpoints" && kind == Kind::Endpoints && path.len() == 1)
                                || (k == "clusters"
                                    && path.len() >= 2
                                    && path[path.len() - 2] == "weighted_clusters")
                            {
                                sort_array(&mut child);
                            }
                        }
                        entries.push((k, child));
                    }
                    path.pop();
                }
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            sorted.extend(entries);
            *m = sorted;
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                canon(kind, item, path, opts);
            }
        }
        _ => {}
    }
}

fn sort_array(v: &mut Value) {
    if let Some(items) = v.as_array_mut() {
        items.sort_by_cached_key(|i| serde_json::to_string(i).unwrap_or_default());
    }
}

/// `1.500s` -> `1.5s`, `2.000s` -> `2s`; None when `s` is not a proto3 JSON duration.
pub(super) fn canonical_duration(s: &str) -> Option<String> {
    let num = s.strip_suffix('s')?;
    let digits = num.strip_prefix('-').unwrap_or(num);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    let sign = if num.starts_with('-') { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}s")
    } else {
        format!("{sign}{int}.{frac}s")
    })
}
