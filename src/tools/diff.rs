//! `knative-pilot diff`: semantic comparison of two xDS configurations.
//!
//! Inputs are Envoy admin `/config_dump` JSON (or YAML) documents: what a gateway holds
//! (`curl localhost:15000/config_dump?include_eds`, `istioctl proxy-config all -o json|yaml`),
//! istiod's `/debug/config_dump?proxyID=`, our `/debug/config_dump` or `render` output; or a
//! bare list of resources as `istioctl proxy-config listener|route|cluster -o json` prints it.
//!
//! Both sides are first [normalised](normalize) into one JSON tree per resource, keyed by
//! (kind, name): listener, route configuration (without its virtual hosts), virtual host
//! (`<route config>/<vhost name>`), cluster, endpoints (ClusterLoadAssignment) and secret (name
//! only). Then [`compare`] reports resources only in A, only in B, and changed ones with the
//! field path and both values. The normalisations, chosen so that a real Envoy's dump compares
//! equal to what was sent:
//!
//! - **Bookkeeping is dropped**: `version_info`, `last_updated`, nonces, the listener/cluster/
//!   secret warming vs active state (the warming version, the newest one sent, wins), the top
//!   `@type` of each resource (implied by its kind), the `BootstrapConfigDump` and empty
//!   `ScopedRoutesConfigDump` sections.
//! - **Static resources** (bootstrap: e.g. the `xds-grpc` cluster, admin-side listeners) are
//!   left out unless `keep_static`.
//! - **Secrets** compare by name only; their contents are never read or printed. Any
//!   `private_key` elsewhere is replaced by `[redacted]`.
//! - **Endpoints** as Envoy reports them (`include_eds` dumps the host set, not what was sent):
//!   only assignments of EDS clusters count (other clusters carry their endpoints in the
//!   cluster's own `load_assignment`); defaults Envoy fills in are removed (`health_status`
//!   HEALTHY/UNKNOWN, endpoint `load_balancing_weight` 1, empty `health_check_config` and
//!   `locality`, `policy.overprovisioning_factor` 140); the locality-level
//!   `load_balancing_weight` is dropped (it only acts with locality-weighted load balancing,
//!   which gateway clusters do not use, and Envoy reports it as 0 otherwise).
//! - **Orderings that do not change behaviour are sorted**: virtual host `domains`,
//!   `filter_chains` (Envoy picks a chain by its match, not its position), filter chain
//!   `server_names`/`application_protocols`, `weighted_clusters.clusters`, localities and
//!   `lb_endpoints`, `upgrade_configs`. Route order inside a virtual host is behaviour and is
//!   compared as it is.
//! - **Durations** are compared by value (`0.100s` = `0.1s`).
//!
//! Ignore patterns ([`Pattern`]) remove more fields before comparing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// Kinds of resources compared, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Listener,
    RouteConfig,
    VirtualHost,
    Cluster,
    Endpoints,
    Secret,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::RouteConfig => "route_config",
            Kind::VirtualHost => "virtual_host",
            Kind::Cluster => "cluster",
            Kind::Endpoints => "endpoints",
            Kind::Secret => "secret",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Listener,
            Kind::RouteConfig,
            Kind::VirtualHost,
            Kind::Cluster,
            Kind::Endpoints,
            Kind::Secret,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::parse(s).ok_or_else(|| {
            format!(
                "unknown kind {s:?} (listener, route_config, virtual_host, cluster, endpoints, \
                 secret)"
            )
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalised configuration: one JSON tree per (kind, name).
pub type Resources = BTreeMap<(Kind, String), Value>;

/// A field pattern to ignore: `[KIND:]field.field...`, matched against the end of a field's
/// path of names (array positions are skipped); `*` matches any one name. Examples:
/// `stat_prefix`, `metadata.filter_metadata.istio`, `cluster:circuit_breakers`,
/// `listener:*.stat_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    kind: Option<Kind>,
    segments: Vec<String>,
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        let (kind, rest) = match s.split_once(':') {
            Some((k, rest)) => (
                Some(Kind::parse(k).ok_or_else(|| {
                    format!(
                        "ignore pattern {s:?}: unknown kind {k:?} (listener, route_config, \
                         virtual_host, cluster, endpoints, secret)"
                    )
                })?),
                rest,
            ),
            None => (None, s),
        };
        let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("ignore pattern {s:?}: empty field name"));
        }
        Ok(Pattern { kind, segments })
    }
}

impl Pattern {
    fn matches(&self, kind: Kind, path: &[&str]) -> bool {
        if self.kind.is_some_and(|k| k != kind) || path.len() < self.segments.len() {
            return false;
        }
        let tail = &path[path.len() - self.segments.len()..];
        self.segments
            .iter()
            .zip(tail)
            .all(|(p, n)| p == "*" || p == n)
    }
}

/// Resources to leave out: `[KIND:]NAME`, where `*` in NAME matches any run of characters
/// (e.g. `cluster:outbound|*||*.kube-system.svc.cluster.local`, `PassthroughCluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    kind: Option<Kind>,
    name: String,
}

impl std::str::FromStr for Skip {
    type Err = String;
    fn from_str(s: &str) -> Result<Skip, String> {
        // Resource names contain ':' (virtual hosts): only a known kind before the first ':'
        // is a kind.
        match s.split_once(':') {
            Some((k, rest)) if Kind::parse(k).is_some() => Ok(Skip {
                kind: Kind::parse(k),
                name: rest.to_string(),
            }),
            _ if s.is_empty() => Err("empty skip pattern".to_string()),
            _ => Ok(Skip {
                kind: None,
                name: s.to_string(),
            }),
        }
    }
}

impl Skip {
    fn matches(&self, kind: Kind, name: &str) -> bool {
        self.kind.is_none_or(|k| k == kind) && glob(&self.name, name)
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Normalisation options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keep static (bootstrap) resources.
    pub keep_static: bool,
    /// Fields to remove before comparing.
    pub ignore: Vec<Pattern>,
    /// Resources to leave out.
    pub skip: Vec<Skip>,
}

/// A normalised dump and what was set aside while normalising.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    pub resources: Resources,
    /// Things skipped that a reader may want to know about (e.g. a listener Envoy rejected).
    pub notes: Vec<String>,
}

/// Parses a config dump given as JSON or YAML text.
pub fn parse_dump(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_yaml::from_str::<Value>(text)
            .map_err(|yaml_err| format!("neither JSON ({json_err}) nor YAML ({yaml_err})")),
    }
}

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
    let mut raw: Vec<(Kind, String, Value)> = Vec::new();
    let mut eds_names: Option<BTreeSet<String>> = None;
    for section in configs {
        let ty = section.get("@type").and_then(Value::as_str).unwrap_or("");
        let short = ty.rsplit('.').next().unwrap_or(ty);
        match short {
            "ListenersConfigDump" => {
                if opts.keep_static {
                    for l in arr(section, "static_listeners") {
                        push(&mut raw, Kind::Listener, l.get("listener"));
                    }
                }
                for l in arr(section, "dynamic_listeners") {
                    let name = l.get("name").and_then(Value::as_str).unwrap_or("?");
                    let state = ["warming_state", "active_state"]
                        .iter()
                        .find_map(|s| l.get(*s).and_then(|st| st.get("listener")));
                    match state {
                        Some(listener) => push(&mut raw, Kind::Listener, Some(listener)),
                        None => {
                            if let Some(err) = l.get("error_state") {
                                out.notes.push(format!(
                                    "listener {name}: rejected by Envoy and never active ({})",
                                    err.get("details").unwrap_or(&Value::Null)
                                ));
                            } else if l.get("draining_state").is_some() {
                                out.notes
                                    .push(format!("listener {name}: draining (left out)"));
                            }
                        }
                    }
                }
            }
            "ClustersConfigDump" if dump_has_clusters(section) => {
                let names = eds_names.get_or_insert_with(BTreeSet::new);
                let mut clusters: Vec<&Value> = Vec::new();
                if opts.keep_static {
                    clusters.extend(arr(section, "static_clusters").iter());
                }
                // Active first, warming after: the warming version replaces the active one.
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
                            names.insert(svc.to_string());
                        }
                    }
                    push(&mut raw, Kind::Cluster, Some(cluster));
                }
                // Static clusters' endpoints are bootstrap too.
                if !opts.keep_static {
                    for c in arr(section, "static_clusters") {
                        if let Some(n) = c.pointer("/cluster/name").and_then(Value::as_str) {
                            names.remove(n);
                        }
                    }
                }
            }
            "RoutesConfigDump" => {
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
            "EndpointsConfigDump" => {
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
            "SecretsConfigDump" => {
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
                    // Names only: the contents are never looked at.
                    raw.push((
                        Kind::Secret,
                        name.to_string(),
                        serde_json::json!({"name": name}),
                    ));
                }
            }
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

fn push(raw: &mut Vec<(Kind, String, Value)>, kind: Kind, v: Option<&Value>) {
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
fn canonical_duration(s: &str) -> Option<String> {
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

/// One field that differs inside a resource. `a`/`b` are None where the field is absent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub path: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

/// How one resource differs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Difference {
    pub kind: Kind,
    pub name: String,
    /// "only_in_a", "only_in_b" or "changed".
    pub change: &'static str,
    pub fields: Vec<FieldChange>,
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Compares two normalised configurations, resource by resource (sorted by kind, name).
pub fn compare(a: &Resources, b: &Resources) -> Vec<Difference> {
    let keys: BTreeSet<&(Kind, String)> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (kind, name) = (key.0, key.1.clone());
        match (a.get(key), b.get(key)) {
            (Some(_), None) => out.push(Difference {
                kind,
                name,
                change: "only_in_a",
                fields: vec![],
            }),
            (None, Some(_)) => out.push(Difference {
                kind,
                name,
                change: "only_in_b",
                fields: vec![],
            }),
            (Some(va), Some(vb)) if va != vb => {
                let mut fields = Vec::new();
                diff_value("", va, vb, &mut fields);
                out.push(Difference {
                    kind,
                    name,
                    change: "changed",
                    fields,
                });
            }
            _ => {}
        }
    }
    out
}

fn diff_value(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (ma.get(k), mb.get(k)) {
                    (Some(x), Some(y)) => diff_value(&p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        a: x.cloned(),
                        b: y.cloned(),
                    }),
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) => {
            if xa.len() == xb.len() {
                for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                    diff_value(&format!("{path}[{i}]"), x, y, out);
                }
                return;
            }
            // Align by content so one inserted route does not show as every later one changed.
            let sa: Vec<String> = xa.iter().map(|v| v.to_string()).collect();
            let sb: Vec<String> = xb.iter().map(|v| v.to_string()).collect();
            let only_a = |out: &mut Vec<FieldChange>, from: usize, to: usize| {
                for (i, v) in xa.iter().enumerate().take(to).skip(from) {
                    out.push(FieldChange {
                        path: format!("{path}[{i}]"),
                        a: Some(v.clone()),
                        b: None,
                    });
                }
            };
            let only_b = |out: &mut Vec<FieldChange>, from: usize, to: usize| {
                for (j, v) in xb.iter().enumerate().take(to).skip(from) {
                    out.push(FieldChange {
                        path: format!("{path}[+{j}]"),
                        a: None,
                        b: Some(v.clone()),
                    });
                }
            };
            for op in similar::capture_diff_slices(similar::Algorithm::Myers, &sa, &sb) {
                match op {
                    similar::DiffOp::Equal { .. } => {}
                    similar::DiffOp::Delete {
                        old_index, old_len, ..
                    } => only_a(out, old_index, old_index + old_len),
                    similar::DiffOp::Insert {
                        new_index, new_len, ..
                    } => only_b(out, new_index, new_index + new_len),
                    similar::DiffOp::Replace {
                        old_index,
                        old_len,
                        new_index,
                        new_len,
                    } => {
                        let common = old_len.min(new_len);
                        for d in 0..common {
                            diff_value(
                                &format!("{path}[{}]", old_index + d),
                                &xa[old_index + d],
                                &xb[new_index + d],
                                out,
                            );
                        }
                        only_a(out, old_index + common, old_index + old_len);
                        only_b(out, new_index + common, new_index + new_len);
                    }
                }
            }
        }
        _ => {
            if a != b {
                out.push(FieldChange {
                    path: path.to_string(),
                    a: Some(a.clone()),
                    b: Some(b.clone()),
                });
            }
        }
    }
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 160 {
                let cut: String = s.chars().take(157).collect();
                format!("{cut}...")
            } else {
                s
            }
        }
    }
}

/// The plain report: one line per resource (`-` only in A, `+` only in B, `~` changed), the
/// changed fields under it, and a summary line.
pub fn report(diffs: &[Difference], label_a: &str, label_b: &str, compared: usize) -> String {
    let mut s = String::new();
    if diffs.is_empty() {
        s.push_str(&format!(
            "equal: {compared} resources compared ({label_a} vs {label_b})\n"
        ));
        return s;
    }
    s.push_str(&format!("--- a: {label_a}\n+++ b: {label_b}\n"));
    let (mut only_a, mut only_b, mut changed) = (0, 0, 0);
    for d in diffs {
        match d.change {
            "only_in_a" => {
                only_a += 1;
                s.push_str(&format!("- {} {} (only in a)\n", d.kind, d.name));
            }
            "only_in_b" => {
                only_b += 1;
                s.push_str(&format!("+ {} {} (only in b)\n", d.kind, d.name));
            }
            _ => {
                changed += 1;
                s.push_str(&format!("~ {} {}\n", d.kind, d.name));
                for f in &d.fields {
                    s.push_str(&format!(
                        "    {}: {} -> {}\n",
                        f.path,
                        short(&f.a),
                        short(&f.b)
                    ));
                }
            }
        }
    }
    s.push_str(&format!(
        "{} resource(s) differ: {only_a} only in a, {only_b} only in b, {changed} changed ({compared} compared)\n",
        diffs.len()
    ));
    s
}

/// A unified diff of the normalised YAML of each differing resource; ANSI colors when `color`.
pub fn unified(a: &Resources, b: &Resources, diffs: &[Difference], color: bool) -> String {
    let yaml = |v: Option<&Value>| -> String {
        v.map(|v| serde_yaml::to_string(v).unwrap_or_default())
            .unwrap_or_default()
    };
    let mut s = String::new();
    for d in diffs {
        let key = (d.kind, d.name.clone());
        let (ya, yb) = (yaml(a.get(&key)), yaml(b.get(&key)));
        let text = similar::TextDiff::from_lines(&ya, &yb)
            .unified_diff()
            .context_radius(4)
            .header(
                &format!("a/{}/{}", d.kind, d.name),
                &format!("b/{}/{}", d.kind, d.name),
            )
            .to_string();
        for line in text.lines() {
            let code = if !color {
                ""
            } else if line.starts_with("+++") || line.starts_with("---") {
                "\x1b[1m"
            } else if line.starts_with('+') {
                "\x1b[32m"
            } else if line.starts_with('-') {
                "\x1b[31m"
            } else if line.starts_with("@@") {
                "\x1b[36m"
            } else {
                ""
            };
            if code.is_empty() {
                s.push_str(line);
            } else {
                s.push_str(&format!("{code}{line}\x1b[0m"));
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump(configs: Value) -> Value {
        json!({ "configs": configs })
    }

    fn norm(v: &Value) -> Resources {
        normalize(v, &Options::default()).unwrap().resources
    }

    #[test]
    fn bookkeeping_static_and_secret_contents_are_ignored() {
        let a = dump(json!([
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "version_info": "1",
             "static_clusters": [{"cluster": {"name": "xds-grpc", "type": "STATIC"}}],
             "dynamic_active_clusters": [{"version_info": "1", "last_updated": "x",
                "cluster": {"@type": "t", "name": "c", "connect_timeout": "10.000s"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
             "dynamic_active_secrets": [{"name": "s", "secret": {"name": "s",
                "tls_certificate": {"private_key": {"inline_bytes": "c2VjcmV0"}}}}]}
        ]));
        let b = dump(json!([
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "dynamic_active_clusters": [{"version_info": "2",
                "cluster": {"@type": "t", "name": "c", "connect_timeout": "10s"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
             "dynamic_active_secrets": [{"name": "s", "secret": {"name": "s",
                "tls_certificate": {"private_key": {"inline_string": "[redacted]"}}}}]}
        ]));
        let (na, nb) = (norm(&a), norm(&b));
        assert_eq!(compare(&na, &nb), vec![]);
        assert!(!na.contains_key(&(Kind::Cluster, "xds-grpc".into())));
        assert!(!serde_json::to_string(&na.values().collect::<Vec<_>>())
            .unwrap()
            .contains("c2VjcmV0"));
        let kept = normalize(
            &a,
            &Options {
                keep_static: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(kept
            .resources
            .contains_key(&(Kind::Cluster, "xds-grpc".into())));
    }

    fn routes(rs: Value) -> Value {
        dump(
            json!([{"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs": [{"route_config": {"name": "http.80", "virtual_hosts": [
                {"name": "h:80", "domains": ["b", "a"], "routes": rs}]}}]}]),
        )
    }

    #[test]
    fn route_order_is_compared_domain_order_is_not() {
        let r1 = json!({"match": {"prefix": "/a"}, "route": {"cluster": "x"}});
        let r2 = json!({"match": {"prefix": "/"}, "route": {"cluster": "y"}});
        let a = norm(&routes(json!([r1, r2])));
        let mut b_dump = routes(json!([r1, r2]));
        b_dump["configs"][0]["dynamic_route_configs"][0]["route_config"]["virtual_hosts"][0]
            ["domains"] = json!(["a", "b"]);
        assert_eq!(compare(&a, &norm(&b_dump)), vec![]);

        let swapped = norm(&routes(json!([r2, r1])));
        let d = compare(&a, &swapped);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, Kind::VirtualHost);
        assert_eq!(d[0].name, "http.80/h:80");
        assert!(d[0]
            .fields
            .iter()
            .any(|f| f.path == "routes[0].match.prefix"));
    }

    #[test]
    fn an_inserted_route_is_reported_alone_and_ignores_apply() {
        let r =
            |p: &str| json!({"match": {"prefix": p}, "route": {"cluster": "x", "stat_prefix": p}});
        let a = norm(&routes(json!([r("/a"), r("/b")])));
        let b = norm(&routes(json!([r("/a"), r("/new"), r("/b")])));
        let d = compare(&a, &b);
        assert_eq!(d[0].fields.len(), 1, "{:?}", d[0].fields);
        assert_eq!(d[0].fields[0].path, "routes[+1]");
        assert!(d[0].fields[0].a.is_none());

        let changed = norm(&routes(json!([
            {"match": {"prefix": "/a"}, "route": {"cluster": "x", "stat_prefix": "other"}},
            r("/b")
        ])));
        let d = compare(&a, &changed);
        assert_eq!(d[0].fields[0].path, "routes[0].route.stat_prefix");
        assert_eq!(d[0].fields[0].a, Some(json!("/a")));
        assert_eq!(d[0].fields[0].b, Some(json!("other")));
        let opts = Options {
            ignore: vec!["virtual_host:route.stat_prefix".parse().unwrap()],
            ..Default::default()
        };
        let ia = normalize(&routes(json!([r("/a"), r("/b")])), &opts).unwrap();
        let ib = normalize(
            &routes(json!([
                {"match": {"prefix": "/a"}, "route": {"cluster": "x", "stat_prefix": "other"}},
                r("/b")
            ])),
            &opts,
        )
        .unwrap();
        assert_eq!(compare(&ia.resources, &ib.resources), vec![]);
        assert!("nokind:x".parse::<Pattern>().is_err());
    }

    #[test]
    fn envoy_endpoint_defaults_and_non_eds_assignments() {
        let clusters = json!({"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "dynamic_active_clusters": [
                {"cluster": {"name": "e", "type": "EDS", "eds_cluster_config": {"service_name": "e"}}},
                {"cluster": {"name": "BlackHoleCluster", "type": "STATIC"}}]});
        let envoy = dump(
            json!([clusters, {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": [
                {"endpoint_config": {"cluster_name": "BlackHoleCluster", "policy": {"overprovisioning_factor": 140}}},
                {"endpoint_config": {"cluster_name": "e", "policy": {"overprovisioning_factor": 140},
                  "endpoints": [{"locality": {}, "load_balancing_weight": 0, "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "10.0.0.2"}}, "health_check_config": {}},
                     "health_status": "HEALTHY", "load_balancing_weight": 1},
                    {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1"}}, "health_check_config": {}},
                     "health_status": "HEALTHY", "load_balancing_weight": 1}]}]}}]}]),
        );
        let sent = dump(
            json!([clusters, {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": [
                {"endpoint_config": {"cluster_name": "e", "endpoints": [{"load_balancing_weight": 1, "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1"}}}, "load_balancing_weight": 1},
                    {"endpoint": {"address": {"socket_address": {"address": "10.0.0.2"}}}, "load_balancing_weight": 1}]}]}}]}]),
        );
        assert_eq!(compare(&norm(&envoy), &norm(&sent)), vec![]);
    }

    #[test]
    fn a_bare_list_of_resources_compares_with_a_dump() {
        let cluster = json!({"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "c", "type": "EDS", "connect_timeout": "10s"});
        let full = dump(json!([
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "dynamic_active_clusters": [{"cluster": cluster}]}]));
        let mut bare = cluster.clone();
        bare.as_object_mut().unwrap().remove("@type");
        let list = json!([bare]);
        assert_eq!(list_kinds(&list), Some(BTreeSet::from([Kind::Cluster])));
        assert_eq!(compare(&norm(&full), &norm(&list)), vec![]);
        assert!(normalize(&json!([{"foo": 1}]), &Options::default())
            .unwrap_err()
            .contains("item 0"));
    }

    #[test]
    fn skip_patterns() {
        let s: Skip = "cluster:outbound|*||*.kube-system.svc.cluster.local"
            .parse()
            .unwrap();
        assert!(s.matches(
            Kind::Cluster,
            "outbound|53||kube-dns.kube-system.svc.cluster.local"
        ));
        assert!(!s.matches(Kind::Cluster, "outbound|80||a.default.svc.cluster.local"));
        assert!(!s.matches(
            Kind::Endpoints,
            "outbound|53||kube-dns.kube-system.svc.cluster.local"
        ));
        let any: Skip = "http.80/blackhole:80".parse().unwrap();
        assert!(any.matches(Kind::VirtualHost, "http.80/blackhole:80"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXc"));
        assert!(!glob("ab*ba", "aba"));
        let d = dump(
            json!([{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "dynamic_active_clusters": [{"cluster": {"name": "PassthroughCluster"}},
                                        {"cluster": {"name": "keep"}}]}]),
        );
        let opts = Options {
            skip: vec!["PassthroughCluster".parse().unwrap()],
            ..Default::default()
        };
        let n = normalize(&d, &opts).unwrap().resources;
        assert_eq!(n.len(), 1);
        assert!(n.contains_key(&(Kind::Cluster, "keep".into())));
    }

    #[test]
    fn durations() {
        assert_eq!(canonical_duration("0.100s").as_deref(), Some("0.1s"));
        assert_eq!(canonical_duration("3600s").as_deref(), Some("3600s"));
        assert_eq!(canonical_duration("2.000s").as_deref(), Some("2s"));
        assert_eq!(canonical_duration("abc"), None);
        assert_eq!(canonical_duration("s"), None);
    }

    #[test]
    fn not_a_dump_is_an_error() {
        assert!(normalize(&json!({"foo": 1}), &Options::default()).is_err());
        assert!(parse_dump("configs: []\n").is_ok());
        assert!(parse_dump("{").is_err());
    }
}
