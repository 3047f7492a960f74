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

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

mod compare;
mod normalize;
mod read;
mod scan;

pub use compare::{compare, report, unified, Difference, FieldChange};
#[cfg(test)]
use normalize::canonical_duration;
pub use normalize::{list_kinds, normalize, Normalizer};
pub use read::{read_json, read_path, read_snapshot, Side};

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

/// A normalised configuration: one JSON tree per (kind, name), each kept as its text.
pub type Resources = BTreeMap<(Kind, String), Canon>;

/// One normalised resource as its canonical compact JSON (object keys sorted by the
/// normalisation), so a large configuration costs its text rather than a tree per value;
/// equal text is an equal tree. [`Canon::value`] parses it back (for the resources that differ).
/// Shared: sides read through one [`Pool`] hold one text for every resource equal on both, so
/// an equal resource costs one side's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canon(std::sync::Arc<str>);

/// The texts of the sides of one diff, as they are read (at once, on their own threads): the
/// first side to reach a resource leaves its text here, and the other side's equal text is
/// replaced by it ([`Normalizer::sharing`]). Hashed with foldhash (a lookup per resource of
/// each side, on short names; nothing adversarial).
#[derive(Debug, Default)]
pub struct Pool(dashmap::DashMap<(Kind, String), Canon, foldhash::fast::RandomState>);

impl Pool {
    /// `v`, or the held text of the same resource when that is equal to it (then `v`'s own
    /// copy is freed). The first text of a resource is held.
    pub fn share(&self, key: &(Kind, String), v: Canon) -> Canon {
        match self.0.entry(key.clone()) {
            dashmap::mapref::entry::Entry::Occupied(held) if *held.get() == v => held.get().clone(),
            dashmap::mapref::entry::Entry::Occupied(_) => v,
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                slot.insert(v.clone());
                v
            }
        }
    }
}

impl Canon {
    pub fn new(v: &Value) -> Canon {
        Canon(v.to_string().into())
    }

    pub fn value(&self) -> Value {
        // It is the text of a `Value`: it parses.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Canon {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

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
        Err(json_err) => crate::source::files::parse_yaml(text)
            .map_err(|yaml_err| format!("neither JSON ({json_err}) nor YAML ({yaml_err})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

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
