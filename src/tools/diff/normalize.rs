//! Config dumps into one canonical JSON tree per resource (see the module docs of
//! [`super`] for the normalisations and why), item by item ([`Normalizer`]), so a dump can be
//! read as a stream (`read.rs`) or from a whole tree ([`normalize`]) with the same result.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{Kind, Normalized, Options};

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
/// into resources (through a [`Normalizer`], as the streaming reader does).
pub fn normalize(dump: &Value, opts: &Options) -> Result<Normalized, String> {
    if let Some(items) = dump.as_array() {
        return normalize(&list_as_dump(items)?, opts);
    }
    let configs = dump
        .get("configs")
        .and_then(Value::as_array)
        .ok_or(NOT_A_DUMP)?;
    let mut n = Normalizer::new(opts);
    for section in configs {
        let ty = section.get("@type").and_then(Value::as_str).unwrap_or("");
        n.begin_section(ty);
        for (key, v) in section.as_object().into_iter().flatten() {
            if let Value::Array(items) = v {
                for item in items {
                    n.item(key, item.clone());
                }
            }
        }
        n.end_section(section.as_object().map_or(0, Map::len));
    }
    Ok(n.finish())
}

pub(super) const NOT_A_DUMP: &str =
    "not a config dump: no `configs` list (expected Envoy admin /config_dump JSON)";

/// What a section's list holds, by the section's type and the list's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListOf {
    Listeners,
    Clusters,
    /// Route configurations: each is split into itself and its virtual hosts.
    Routes,
    Endpoints,
    Secrets,
    /// Static clusters left out: their names are not EDS assignments to compare.
    StaticClusterNames,
    /// Not compared (bookkeeping, or static resources without `keep_static`).
    Nothing,
}

/// Builds a normalised configuration one item at a time, so a dump can be read as a stream:
/// sections in order, each section's list items (in any order: a resource's precedence is its
/// section, then its list: static, active, warming; the later one wins among equals), and a
/// route configuration's virtual hosts one by one.
pub struct Normalizer<'o> {
    opts: &'o Options,
    /// The texts of both sides, when they are read through one pool: a resource whose text
    /// equals the other side's shares it.
    pool: Option<&'o super::Pool>,
    resources: BTreeMap<(Kind, String), ((usize, u8), super::Canon)>,
    notes: Vec<String>,
    eds_names: Option<BTreeSet<String>>,
    /// The current section: its index, short type, whether it listed a cluster, and the static
    /// cluster names to take out of the EDS names when it ends.
    section: usize,
    short: String,
    has_clusters: bool,
    static_names: Vec<String>,
}

impl<'o> Normalizer<'o> {
    pub fn new(opts: &'o Options) -> Normalizer<'o> {
        Normalizer::sharing(opts, None)
    }

    /// A normaliser whose resources equal to the other side's share its text through the
    /// `pool` (the same result as [`Normalizer::new`], in the memory of one side for the
    /// resources both sides hold).
    pub fn sharing(opts: &'o Options, pool: Option<&'o super::Pool>) -> Normalizer<'o> {
        Normalizer {
            opts,
            pool,
            resources: BTreeMap::new(),
            notes: Vec::new(),
            eds_names: None,
            section: 0,
            short: String::new(),
            has_clusters: false,
            static_names: Vec::new(),
        }
    }

    /// Starts a section of this `@type` (`""` when it has none).
    pub fn begin_section(&mut self, ty: &str) {
        self.section += 1;
        self.short = ty.rsplit('.').next().unwrap_or(ty).to_string();
        self.has_clusters = false;
        self.static_names.clear();
    }

    /// What the list `key` of the current section holds, and its precedence in the section.
    pub(super) fn list(&self, key: &str) -> (ListOf, u8) {
        let keep = self.opts.keep_static;
        let static_or = |l: ListOf| if keep { l } else { ListOf::Nothing };
        match (self.short.as_str(), key) {
            ("ListenersConfigDump", "static_listeners") => (static_or(ListOf::Listeners), 0),
            ("ListenersConfigDump", "dynamic_listeners") => (ListOf::Listeners, 1),
            ("ClustersConfigDump", "static_clusters") if keep => (ListOf::Clusters, 0),
            ("ClustersConfigDump", "static_clusters") => (ListOf::StaticClusterNames, 0),
            ("ClustersConfigDump", "dynamic_active_clusters") => (ListOf::Clusters, 1),
            ("ClustersConfigDump", "dynamic_warming_clusters") => (ListOf::Clusters, 2),
            ("RoutesConfigDump", "static_route_configs") => (static_or(ListOf::Routes), 0),
            ("RoutesConfigDump", "dynamic_route_configs") => (ListOf::Routes, 1),
            ("EndpointsConfigDump", "static_endpoint_configs") => (static_or(ListOf::Endpoints), 0),
            ("EndpointsConfigDump", "dynamic_endpoint_configs") => (ListOf::Endpoints, 1),
            ("SecretsConfigDump", "static_secrets") => (static_or(ListOf::Secrets), 0),
            ("SecretsConfigDump", "dynamic_active_secrets") => (ListOf::Secrets, 1),
            ("SecretsConfigDump", "dynamic_warming_secrets") => (ListOf::Secrets, 2),
            _ => (ListOf::Nothing, 0),
        }
    }

    /// One item of the current section's list `key`.
    pub fn item(&mut self, key: &str, item: Value) {
        let (of, rank) = self.list(key);
        match of {
            ListOf::Listeners if rank == 0 => {
                if let Some(l) = take(item, "listener") {
                    self.put(Kind::Listener, rank, l);
                }
            }
            ListOf::Listeners => self.dynamic_listener(item),
            ListOf::Clusters => {
                self.has_clusters = true;
                if let Some(c) = take(item, "cluster") {
                    self.cluster(rank, c);
                }
            }
            ListOf::StaticClusterNames => {
                self.has_clusters = true;
                if let Some(n) = item.pointer("/cluster/name").and_then(Value::as_str) {
                    self.static_names.push(n.to_string());
                }
            }
            ListOf::Routes => {
                if let Some(mut rc) = take(item, "route_config") {
                    let vhosts = match rc.as_object_mut().and_then(|m| m.remove("virtual_hosts")) {
                        Some(Value::Array(v)) => v,
                        _ => Vec::new(),
                    };
                    let name = rc
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    for vh in vhosts {
                        self.virtual_host(rank, &name, vh);
                    }
                    self.route_config(rank, rc);
                }
            }
            ListOf::Endpoints => {
                if let Some(cla) = take(item, "endpoint_config") {
                    let name = cla
                        .get("cluster_name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let name = name.to_string();
                    self.insert(Kind::Endpoints, name, rank, cla);
                }
            }
            ListOf::Secrets => {
                // By name only: the contents are never looked at.
                let name = item
                    .get("name")
                    .or_else(|| item.pointer("/secret/name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let v = serde_json::json!({ "name": name });
                self.insert(Kind::Secret, name, rank, v);
            }
            ListOf::Nothing => {}
        }
    }

    /// One virtual host of route configuration `route` (read from list `key`), for a reader
    /// that splits route configurations itself.
    pub(super) fn virtual_host(&mut self, rank: u8, route: &str, vh: Value) {
        let vname = vh.get("name").and_then(Value::as_str).unwrap_or("");
        let name = format!("{route}/{vname}");
        self.insert(Kind::VirtualHost, name, rank, vh);
    }

    /// A route configuration without its virtual hosts.
    pub(super) fn route_config(&mut self, rank: u8, rc: Value) {
        self.put(Kind::RouteConfig, rank, rc);
    }

    /// Ends the current section, which had `keys` keys (its `@type` included).
    pub fn end_section(&mut self, keys: usize) {
        match self.short.as_str() {
            "ClustersConfigDump" if self.has_clusters => {
                let eds = self.eds_names.get_or_insert_with(BTreeSet::new);
                // Static clusters' endpoints are bootstrap too.
                for n in self.static_names.drain(..) {
                    eds.remove(&n);
                }
            }
            "ListenersConfigDump"
            | "RoutesConfigDump"
            | "EndpointsConfigDump"
            | "SecretsConfigDump"
            | "BootstrapConfigDump" => {}
            "ScopedRoutesConfigDump" if keys <= 1 => {}
            other => self
                .notes
                .push(format!("config dump section {other:?} is not compared")),
        }
    }

    /// The normalised resources: load assignments count only for EDS clusters.
    pub fn finish(self) -> Normalized {
        let eds = self.eds_names;
        let resources = self
            .resources
            .into_iter()
            .filter(|((kind, name), _)| {
                *kind != Kind::Endpoints || eds.as_ref().is_none_or(|e| e.contains(name))
            })
            .map(|(k, (_, v))| (k, v))
            .collect();
        Normalized {
            resources,
            notes: self.notes,
        }
    }

    /// Listeners: the warming version, else the active one; rejected and draining ones noted.
    fn dynamic_listener(&mut self, l: Value) {
        let name = l.get("name").and_then(Value::as_str).unwrap_or("?");
        let state = ["warming_state", "active_state"]
            .iter()
            .find_map(|s| l.get(*s).and_then(|st| st.get("listener")));
        match state {
            Some(listener) => {
                let listener = listener.clone();
                self.put(Kind::Listener, 1, listener);
            }
            None => {
                if let Some(err) = l.get("error_state") {
                    self.notes.push(format!(
                        "listener {name}: rejected by Envoy and never active ({})",
                        err.get("details").unwrap_or(&Value::Null)
                    ));
                } else if l.get("draining_state").is_some() {
                    self.notes
                        .push(format!("listener {name}: draining (left out)"));
                }
            }
        }
    }

    /// A cluster; notes its EDS service name (the load assignments that count).
    fn cluster(&mut self, rank: u8, cluster: Value) {
        if cluster.get("type").and_then(Value::as_str) == Some("EDS") {
            let svc = cluster
                .pointer("/eds_cluster_config/service_name")
                .and_then(Value::as_str)
                .or_else(|| cluster.get("name").and_then(Value::as_str));
            if let Some(svc) = svc {
                self.eds_names
                    .get_or_insert_with(BTreeSet::new)
                    .insert(svc.to_string());
            }
        }
        self.put(Kind::Cluster, rank, cluster);
    }

    /// A resource named by its `name` field.
    fn put(&mut self, kind: Kind, rank: u8, v: Value) {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.insert(kind, name, rank, v);
    }

    /// Skipped, or canonicalised and kept unless one of higher precedence is kept already.
    fn insert(&mut self, kind: Kind, name: String, rank: u8, v: Value) {
        if self.opts.skip.iter().any(|s| s.matches(kind, &name)) {
            return;
        }
        let at = (self.section, rank);
        if let Some((held, _)) = self.resources.get(&(kind, name.clone())) {
            if *held > at {
                return;
            }
        }
        let key = (kind, name);
        let mut v = canonical(kind, v, self.opts);
        if let Some(pool) = self.pool {
            v = pool.share(&key, v);
        }
        self.resources.insert(key, (at, v));
    }
}

/// `item[key]`, taken out of the item.
fn take(item: Value, key: &str) -> Option<Value> {
    match item {
        Value::Object(mut m) => m.remove(key),
        _ => None,
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

/// The resource's canonical compact text: what [`canon`] writes.
fn canonical(kind: Kind, mut v: Value, opts: &Options) -> super::Canon {
    if let Some(m) = v.as_object_mut() {
        m.remove("@type");
    }
    if kind == Kind::Endpoints {
        envoy_endpoint_defaults(&mut v);
    }
    let mut out = Vec::new();
    canon(kind, &v, &mut Vec::new(), opts, &mut out);
    // Only JSON text (valid UTF-8) was written.
    let text =
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into());
    super::Canon(text.into())
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

/// Writes `v` as compact JSON into `out`, recursively: ignored fields dropped, private keys
/// redacted, durations normalised, object keys and behaviour-neutral lists sorted (a list by
/// its items' canonical text). Written straight from the tree, which is not changed: no key or
/// path segment is copied and no sorted tree is built.
fn canon<'v>(kind: Kind, v: &'v Value, path: &mut Vec<&'v str>, opts: &Options, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&'v String, &'v Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            let mut first = true;
            for (k, child) in entries {
                path.push(k);
                let ignored = opts.ignore.iter().any(|p| p.matches(kind, path));
                if !ignored {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    leaf(out, k.as_str());
                    out.push(b':');
                    let sorted = UNORDERED.contains(&k.as_str())
                        || (k == "endpoints" && kind == Kind::Endpoints && path.len() == 1)
                        || (k == "clusters"
                            && path.len() >= 2
                            && path[path.len() - 2] == "weighted_clusters");
                    match child {
                        _ if k == "private_key" => {
                            out.extend_from_slice(br#"{"inline_string":"[redacted]"}"#)
                        }
                        Value::String(s) if !CONTENT_KEYS.contains(&k.as_str()) => {
                            match canonical_duration(s) {
                                Some(d) => leaf(out, d.as_str()),
                                None => leaf(out, s.as_str()),
                            }
                        }
                        Value::Array(items) if sorted => {
                            let mut texts: Vec<Vec<u8>> = items
                                .iter()
                                .map(|item| {
                                    let mut t = Vec::new();
                                    canon(kind, item, path, opts, &mut t);
                                    t
                                })
                                .collect();
                            texts.sort_unstable();
                            out.push(b'[');
                            for (i, t) in texts.iter().enumerate() {
                                if i > 0 {
                                    out.push(b',');
                                }
                                out.extend_from_slice(t);
                            }
                            out.push(b']');
                        }
                        _ => canon(kind, child, path, opts, out),
                    }
                }
                path.pop();
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canon(kind, item, path, opts, out);
            }
            out.push(b']');
        }
        other => leaf(out, other),
    }
}

/// A JSON leaf (a key, a string, a number...) written as serde_json writes it.
fn leaf(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) {
    // Writing into a `Vec` cannot fail, nor can serializing a string or a `Value`.
    let _ = serde_json::to_writer(out, v);
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
