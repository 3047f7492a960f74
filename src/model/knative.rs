//! `serving.knative.dev/v1` Route and Revision (the parts we read), and the KIngress spec that
//! Knative's route controller builds from a Route (knative/serving
//! `pkg/reconciler/route/resources/ingress.go`, `domains/domains.go`, `traffic/traffic.go`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::kingress::{
    HeaderMatch, HttpIngressPath, HttpIngressRuleValue, IngressBackendSplit, IngressRule,
    IngressSpec, IntOrString,
};

/// apiVersion of Route and Revision.
pub const SERVING_API_VERSION: &str = "serving.knative.dev/v1";
/// The visibility label on a Route (or its placeholder Service).
pub const VISIBILITY_LABEL: &str = "networking.knative.dev/visibility";
/// The legacy spelling of [`VISIBILITY_LABEL`], still honoured here.
pub const LEGACY_VISIBILITY_LABEL: &str = "serving.knative.dev/visibility";
/// The value of the visibility label that makes a route cluster-local.
pub const VISIBILITY_CLUSTER_LOCAL: &str = "cluster-local";
/// Route annotations that choose the KIngress `httpOption` (first present wins, as Knative's
/// `kmap.KeyPriority`).
pub const HTTP_OPTION_ANNOTATIONS: [&str; 2] = [
    "networking.knative.dev/httpOption",
    "networking.knative.dev/http-protocol",
];
/// KIngress visibilities.
pub const VISIBILITY_EXTERNAL_IP: &str = "ExternalIP";
pub const VISIBILITY_CLUSTER_LOCAL_INGRESS: &str = "ClusterLocal";
/// Headers Knative's route controller sets on each split / path.
pub const REVISION_HEADER: &str = "Knative-Serving-Revision";
pub const NAMESPACE_HEADER: &str = "Knative-Serving-Namespace";
pub const TAG_HEADER: &str = "Knative-Serving-Tag";
pub const DEFAULT_ROUTE_HEADER: &str = "Knative-Serving-Default-Route";
/// The revision Service port for HTTP/1 and for h2c (`networking.ServicePort`).
pub const REVISION_HTTP_PORT: i64 = 80;
pub const REVISION_H2C_PORT: i64 = 81;

/// A Knative condition (`knative.dev/pkg/apis.Condition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

// ---------------------------------------------------------------------------------------------
// Route

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RouteSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RouteStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `TrafficTarget`, used in both spec and status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `duckv1.Addressable`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Addressable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Route {
    /// `status.conditions[type=Ready].status == "True"`.
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| condition_true(&s.conditions, "Ready"))
    }

    /// Whether the route is labelled cluster-local (current or legacy label).
    pub fn is_labelled_cluster_local(&self) -> bool {
        self.metadata.labels.as_ref().is_some_and(|l| {
            [VISIBILITY_LABEL, LEGACY_VISIBILITY_LABEL]
                .iter()
                .any(|k| l.get(*k).map(String::as_str) == Some(VISIBILITY_CLUSTER_LOCAL))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Revision

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RevisionSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RevisionStatus>,
}

/// The part of a Revision's spec (a PodSpec plus Knative fields) we look at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<RevisionContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<RevisionContainerPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
}

impl Revision {
    /// `status.conditions[type=Ready].status == "True"`.
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| condition_true(&s.conditions, "Ready"))
    }

    /// Knative's `Revision.GetProtocol() == h2c`: the serving container (the only one, or the
    /// first with ports) names its first port `h2c`.
    pub fn is_h2c(&self) -> bool {
        let containers = &self.spec.containers;
        let container = if containers.len() == 1 {
            containers.first()
        } else {
            containers.iter().find(|c| !c.ports.is_empty())
        };
        container
            .and_then(|c| c.ports.first())
            .and_then(|p| p.name.as_deref())
            == Some("h2c")
    }

    /// The revision's Kubernetes Service port the KIngress targets (80, or 81 for h2c).
    pub fn service_port(&self) -> i64 {
        if self.is_h2c() {
            REVISION_H2C_PORT
        } else {
            REVISION_HTTP_PORT
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Route -> KIngress spec

/// The Knative configuration `ingress_from_route` needs (config-domain, config-network,
/// config-features).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOptions {
    /// config-domain's domain for external hosts (`{{.Name}}.{{.Namespace}}.{{.Domain}}`), used
    /// when the route status carries no URL.
    pub domain: String,
    /// The cluster domain of cluster-local hosts.
    pub cluster_domain: String,
    /// config-features `tag-header-based-routing: enabled`.
    pub tag_header_routing: bool,
    /// config-network `http-protocol` (`enabled` | `redirected` | `disabled`); a route annotation
    /// (`networking.knative.dev/httpOption` or `.../http-protocol`) overrides it.
    pub http_protocol: String,
    /// Revisions whose protocol is h2c (see [`Revision::is_h2c`]): their splits use port 81.
    pub h2c_revisions: BTreeSet<String>,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            domain: "example.com".to_string(),
            cluster_domain: "cluster.local".to_string(),
            tag_header_routing: false,
            http_protocol: "enabled".to_string(),
            h2c_revisions: BTreeSet::new(),
        }
    }
}

/// Knative's `ingress.ExpandedHosts`: each host, plus its short forms with `.<cluster_domain>`
/// and `.svc.<cluster_domain>` trimmed, dropping forms whose last label is all digits or longer
/// than 63 characters. Sorted, deduplicated.
pub fn expanded_hosts<'a>(
    hosts: impl IntoIterator<Item = &'a str>,
    cluster_domain: &str,
) -> Vec<String> {
    let suffixes = [
        String::new(),
        format!(".{cluster_domain}"),
        format!(".svc.{cluster_domain}"),
    ];
    let mut out = BTreeSet::new();
    for h in hosts {
        for suffix in &suffixes {
            let trimmed = if suffix.is_empty() {
                Some(h)
            } else {
                h.strip_suffix(suffix.as_str())
            };
            if let Some(t) = trimmed {
                if is_valid_top_level_domain(t) {
                    out.insert(t.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

fn is_valid_top_level_domain(domain: &str) -> bool {
    let tld = domain.rsplit('.').next().unwrap_or(domain);
    tld.len() <= 63 && tld.bytes().any(|c| c == b'-' || c > b'9')
}

/// The host part of a URL such as `http://my-service.default.example.com` (no scheme, port,
/// path). `None` when there is no host.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    (!host.is_empty()).then_some(host)
}

/// One revision target of a traffic group (Knative's `RevisionTarget` after `consolidate`).
struct Target {
    revision: String,
    percent: i64,
}

/// Knative's `consolidate`: merge targets of the same revision (summing percents), keep first
/// appearance order; a lone target gets 100%.
fn consolidate(targets: Vec<Target>) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::with_capacity(targets.len());
    for t in targets {
        match out.iter_mut().find(|o| o.revision == t.revision) {
            Some(o) => o.percent += t.percent,
            None => out.push(t),
        }
    }
    if let [only] = out.as_mut_slice() {
        only.percent = 100;
    }
    out
}

/// Knative's `makeBaseIngressPath`: one split per target with traffic.
fn base_path(ns: &str, targets: &[Target], opts: &RouteOptions) -> HttpIngressPath {
    let splits = targets
        .iter()
        .filter(|t| t.percent != 0)
        .map(|t| IngressBackendSplit {
            service_namespace: ns.to_string(),
            service_name: t.revision.clone(),
            service_port: IntOrString::Int(if opts.h2c_revisions.contains(&t.revision) {
                REVISION_H2C_PORT
            } else {
                REVISION_HTTP_PORT
            }),
            percent: t.percent,
            append_headers: Some(BTreeMap::from([
                (REVISION_HEADER.to_string(), t.revision.clone()),
                (NAMESPACE_HEADER.to_string(), ns.to_string()),
            ])),
        })
        .collect();
    HttpIngressPath {
        splits,
        ..Default::default()
    }
}

/// Why a Route's KIngress cannot be derived (the text is the message users read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("incorrect http-protocol annotation: {0}")]
    HttpOption(String),
    #[error("route has no metadata.name")]
    NoName,
    #[error("route {0} has no metadata.namespace")]
    NoNamespace(String),
    #[error("route {0} has no status")]
    NoStatus(String),
    #[error("route {0} has no status.traffic")]
    NoTraffic(String),
    #[error("route {id}: status.traffic[{index}] has no revisionName")]
    NoRevisionName { id: String, index: usize },
    #[error("route {id}: status.traffic[{index}] has percent {percent}, outside 0..100")]
    PercentOutOfRange {
        id: String,
        index: usize,
        percent: i64,
    },
    #[error("route {id}: status.traffic percents sum to {total}, not 100")]
    PercentSum { id: String, total: i64 },
}

impl RouteError {
    pub fn code(&self) -> super::diag::ErrorCode {
        match self {
            RouteError::PercentSum { .. } => super::diag::ErrorCode::SplitPercent,
            _ => super::diag::ErrorCode::Invalid,
        }
    }
}

fn http_option(route: &Route, opts: &RouteOptions) -> Result<Option<String>, RouteError> {
    let annotated = route.metadata.annotations.as_ref().and_then(|a| {
        HTTP_OPTION_ANNOTATIONS
            .iter()
            .find_map(|k| a.get(*k))
            .filter(|v| !v.is_empty())
    });
    if let Some(v) = annotated {
        return match v.to_ascii_lowercase().as_str() {
            "enabled" => Ok(Some("Enabled".to_string())),
            "redirected" => Ok(Some("Redirected".to_string())),
            other => Err(RouteError::HttpOption(other.to_string())),
        };
    }
    Ok(match opts.http_protocol.to_ascii_lowercase().as_str() {
        "enabled" => Some("Enabled".to_string()),
        "redirected" => Some("Redirected".to_string()),
        _ => None,
    })
}

/// The KIngress spec Knative's route controller builds for `route` (knative/serving
/// `makeIngressSpec`), from `status.traffic` and `status.url`:
///
/// * traffic groups: the default group (every status target, merged per revision) and one group
///   per tag, visited in sorted name order (default first);
/// * per group a `ClusterLocal` rule (hosts `<h>.<ns>`, `<h>.<ns>.svc`,
///   `<h>.<ns>.svc.<cluster_domain>`, `<h>` = route name or `<tag>-<name>`), then, unless the
///   group is cluster-local, an `ExternalIP` rule with the external host (the status URL host of
///   the route / the tag's status URL, else `<h>.<ns>.<domain>`);
/// * a group is cluster-local when the route carries the cluster-local visibility label, or its
///   status URL is under `svc.<cluster_domain>` (Knative's placeholder-Service visibility shows up
///   that way);
/// * 0% targets get no split; a group with a single revision gets 100%;
/// * with `tag_header_routing`, Knative's extra paths and headers.
///
/// TLS is left empty (certificates are not modelled); `httpOption` follows config-network and the
/// route's annotations.
pub fn ingress_from_route(route: &Route, opts: &RouteOptions) -> Result<IngressSpec, RouteError> {
    let name = route
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(RouteError::NoName)?;
    let ns = route
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| RouteError::NoNamespace(name.to_string()))?;
    let id = format!("{ns}/{name}");
    let status = route
        .status
        .as_ref()
        .ok_or_else(|| RouteError::NoStatus(id.clone()))?;
    if status.traffic.is_empty() {
        return Err(RouteError::NoTraffic(id));
    }

    let local_suffix = format!(".svc.{}", opts.cluster_domain);
    let is_local_host = |h: &str| h.ends_with(&local_suffix);

    // Group the status targets: everything into the default group "", tagged ones also into
    // their tag's group. BTreeMap iteration == Knative's sort.Strings(names).
    let mut groups: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    let mut tag_hosts: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut total: i64 = 0;
    groups.insert(String::new(), Vec::new());
    for (i, tt) in status.traffic.iter().enumerate() {
        let revision = tt
            .revision_name
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| RouteError::NoRevisionName {
                id: id.clone(),
                index: i,
            })?;
        let percent = tt.percent.unwrap_or(0);
        if !(0..=100).contains(&percent) {
            return Err(RouteError::PercentOutOfRange {
                id,
                index: i,
                percent,
            });
        }
        total += percent;
        let target = || Target {
            revision: revision.to_string(),
            percent,
        };
        if let Some(tag) = tt.tag.as_deref().filter(|t| !t.is_empty()) {
            groups.entry(tag.to_string()).or_default().push(target());
            let host = tag_hosts.entry(tag.to_string()).or_default();
            if host.is_none() {
                *host = tt.url.as_deref().and_then(url_host).map(str::to_string);
            }
        }
        groups.entry(String::new()).or_default().push(target());
    }
    if total != 100 {
        return Err(RouteError::PercentSum { id, total });
    }
    let groups: BTreeMap<String, Vec<Target>> = groups
        .into_iter()
        .map(|(k, v)| (k, consolidate(v)))
        .collect();

    let route_url_host = status.url.as_deref().and_then(url_host);
    let route_local =
        route.is_labelled_cluster_local() || route_url_host.is_some_and(is_local_host);

    let tags: Vec<&str> = groups
        .keys()
        .filter(|k| !k.is_empty())
        .map(String::as_str)
        .collect();

    let mut rules = Vec::new();
    for (group, targets) in &groups {
        let (hostname, status_host) = if group.is_empty() {
            (name.to_string(), route_url_host.map(str::to_string))
        } else {
            (
                format!("{group}-{name}"),
                tag_hosts.get(group).cloned().flatten(),
            )
        };
        let local = route_local || status_host.as_deref().is_some_and(is_local_host);

        let local_primary = format!("{hostname}.{ns}.svc.{}", opts.cluster_domain);
        let mut domain_rules = vec![(
            VISIBILITY_CLUSTER_LOCAL_INGRESS,
            expanded_hosts([local_primary.as_str()], &opts.cluster_domain),
        )];
        if !local {
            let external = status_host
                .filter(|h| !is_local_host(h))
                .unwrap_or_else(|| format!("{hostname}.{ns}.{}", opts.domain));
            domain_rules.push((VISIBILITY_EXTERNAL_IP, vec![external]));
        }

        for (visibility, hosts) in domain_rules {
            let mut paths = vec![base_path(ns, targets, opts)];
            if opts.tag_header_routing {
                let mut first_headers = BTreeMap::new();
                if group.is_empty() {
                    first_headers.insert(DEFAULT_ROUTE_HEADER.to_string(), "true".to_string());
                } else {
                    first_headers.insert(TAG_HEADER.to_string(), group.clone());
                }
                paths[0].append_headers = Some(first_headers);
                if group.is_empty() {
                    let mut tag_paths = Vec::with_capacity(tags.len() + 1);
                    for tag in &tags {
                        let tag_targets = groups.get(*tag).map(Vec::as_slice).unwrap_or(&[]);
                        let mut p = base_path(ns, tag_targets, opts);
                        p.headers = Some(BTreeMap::from([(
                            TAG_HEADER.to_string(),
                            HeaderMatch {
                                exact: tag.to_string(),
                            },
                        )]));
                        tag_paths.push(p);
                    }
                    tag_paths.append(&mut paths);
                    paths = tag_paths;
                }
            }
            rules.push(IngressRule {
                hosts,
                visibility: Some(visibility.to_string()),
                http: Some(HttpIngressRuleValue { paths }),
            });
        }
    }

    Ok(IngressSpec {
        tls: Vec::new(),
        rules,
        http_option: http_option(route, opts)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::khash::{go_json, k_network_hash};

    fn target(rev: &str, percent: i64, tag: Option<&str>, url: Option<&str>) -> TrafficTarget {
        TrafficTarget {
            tag: tag.map(str::to_string),
            revision_name: Some(rev.to_string()),
            configuration_name: Some("my-service".to_string()),
            latest_revision: Some(tag.is_none()),
            percent: Some(percent),
            url: url.map(str::to_string),
        }
    }

    fn route(name: &str, url: Option<&str>, traffic: Vec<TrafficTarget>) -> Route {
        Route {
            api_version: Some(SERVING_API_VERSION.to_string()),
            kind: Some("Route".to_string()),
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                ..Default::default()
            },
            spec: RouteSpec::default(),
            status: Some(RouteStatus {
                url: url.map(str::to_string),
                traffic,
                ..Default::default()
            }),
        }
    }

    fn split(rev: &str, percent: i64) -> IngressBackendSplit {
        IngressBackendSplit {
            service_namespace: "default".into(),
            service_name: rev.into(),
            service_port: IntOrString::Int(80),
            percent,
            append_headers: Some(BTreeMap::from([
                (NAMESPACE_HEADER.to_string(), "default".to_string()),
                (REVISION_HEADER.to_string(), rev.to_string()),
            ])),
        }
    }

    fn rule(hosts: &[&str], visibility: &str, splits: Vec<IngressBackendSplit>) -> IngressRule {
        IngressRule {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            visibility: Some(visibility.to_string()),
            http: Some(HttpIngressRuleValue {
                paths: vec![HttpIngressPath {
                    splits,
                    ..Default::default()
                }],
            }),
        }
    }

    const LOCAL_HOSTS: [&str; 3] = [
        "my-service.default",
        "my-service.default.svc",
        "my-service.default.svc.cluster.local",
    ];

    #[test]
    fn seed_service() {
        let r = route(
            "my-service",
            Some("http://my-service.default.example.com"),
            vec![target("my-service-00001-nex", 100, None, None)],
        );
        let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
        assert_eq!(
            spec,
            IngressSpec {
                tls: vec![],
                rules: vec![
                    rule(
                        &LOCAL_HOSTS,
                        "ClusterLocal",
                        vec![split("my-service-00001-nex", 100)]
                    ),
                    rule(
                        &["my-service.default.example.com"],
                        "ExternalIP",
                        vec![split("my-service-00001-nex", 100)]
                    ),
                ],
                http_option: Some("Enabled".into()),
            }
        );
        // Without status.url the domain template gives the same host.
        let mut r2 = r.clone();
        if let Some(s) = r2.status.as_mut() {
            s.url = None;
        }
        assert_eq!(
            ingress_from_route(&r2, &RouteOptions::default()).expect("spec"),
            spec
        );
        // A custom domain.
        let opts = RouteOptions {
            domain: "kn.test".into(),
            ..Default::default()
        };
        let spec3 = ingress_from_route(&r2, &opts).expect("spec");
        assert_eq!(spec3.rules[1].hosts, vec!["my-service.default.kn.test"]);
    }

    #[test]
    fn cluster_local_route() {
        let mut r = route(
            "internal-my-service",
            Some("http://internal-my-service.default.svc.cluster.local"),
            vec![target("my-service-00001-nex", 100, None, None)],
        );
        r.metadata.labels = Some(BTreeMap::from([(
            VISIBILITY_LABEL.to_string(),
            VISIBILITY_CLUSTER_LOCAL.to_string(),
        )]));
        let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
        assert_eq!(
            spec.rules,
            vec![rule(
                &[
                    "internal-my-service.default",
                    "internal-my-service.default.svc",
                    "internal-my-service.default.svc.cluster.local"
                ],
                "ClusterLocal",
                vec![split("my-service-00001-nex", 100)]
            )]
        );
        // Legacy label, no status.url.
        r.metadata.labels = Some(BTreeMap::from([(
            LEGACY_VISIBILITY_LABEL.to_string(),
            VISIBILITY_CLUSTER_LOCAL.to_string(),
        )]));
        if let Some(s) = r.status.as_mut() {
            s.url = None;
        }
        assert_eq!(
            ingress_from_route(&r, &RouteOptions::default())
                .expect("spec")
                .rules
                .len(),
            1
        );
        // No label, but the status URL is cluster-local (config-domain svc.cluster.local).
        r.metadata.labels = None;
        if let Some(s) = r.status.as_mut() {
            s.url = Some("http://internal-my-service.default.svc.cluster.local".into());
        }
        assert_eq!(
            ingress_from_route(&r, &RouteOptions::default())
                .expect("spec")
                .rules
                .len(),
            1
        );
    }

    fn canary_route() -> Route {
        route(
            "my-service",
            Some("http://my-service.default.example.com"),
            vec![
                target("my-service-00002-abc", 90, None, None),
                target(
                    "my-service-00001-nex",
                    10,
                    Some("canary"),
                    Some("http://canary-my-service.default.example.com"),
                ),
            ],
        )
    }

    #[test]
    fn split_with_tag() {
        let spec = ingress_from_route(&canary_route(), &RouteOptions::default()).expect("spec");
        let main = vec![
            split("my-service-00002-abc", 90),
            split("my-service-00001-nex", 10),
        ];
        assert_eq!(
            spec.rules,
            vec![
                rule(&LOCAL_HOSTS, "ClusterLocal", main.clone()),
                rule(&["my-service.default.example.com"], "ExternalIP", main),
                rule(
                    &[
                        "canary-my-service.default",
                        "canary-my-service.default.svc",
                        "canary-my-service.default.svc.cluster.local"
                    ],
                    "ClusterLocal",
                    vec![split("my-service-00001-nex", 100)]
                ),
                rule(
                    &["canary-my-service.default.example.com"],
                    "ExternalIP",
                    vec![split("my-service-00001-nex", 100)]
                ),
            ]
        );
        // The tag's host comes from its status URL when present.
        let mut r = canary_route();
        if let Some(s) = r.status.as_mut() {
            s.traffic[1].url = Some("https://canary-my-service.default.other.org".into());
        }
        let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
        assert_eq!(
            spec.rules[3].hosts,
            vec!["canary-my-service.default.other.org"]
        );
        // A tag whose URL is cluster-local (placeholder Service labelled) gets only a local rule.
        if let Some(s) = r.status.as_mut() {
            s.traffic[1].url = Some("http://canary-my-service.default.svc.cluster.local".into());
        }
        let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
        assert_eq!(spec.rules.len(), 3);
        assert_eq!(
            spec.rules[2].visibility.as_deref(),
            Some(VISIBILITY_CLUSTER_LOCAL_INGRESS)
        );
    }

    #[test]
    fn zero_percent_dropped_but_tag_gets_all() {
        let r = route(
            "my-service",
            None,
            vec![
                target("my-service-00002-abc", 100, None, None),
                target("my-service-00001-nex", 0, Some("old"), None),
            ],
        );
        let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
        assert_eq!(spec.rules.len(), 4);
        for r in &spec.rules[..2] {
            let splits = &r.http.as_ref().expect("http").paths[0].splits;
            assert_eq!(splits, &vec![split("my-service-00002-abc", 100)]);
        }
        // Knative's consolidate gives a lone tag target 100%.
        assert_eq!(
            spec.rules[3].hosts,
            vec!["old-my-service.default.example.com"]
        );
        let splits = &spec.rules[3].http.as_ref().expect("http").paths[0].splits;
        assert_eq!(splits, &vec![split("my-service-00001-nex", 100)]);
    }

    #[test]
    fn same_revision_twice_is_merged() {
        let r = route(
            "my-service",
            None,
            vec![
                target("a", 30, None, None),
                target("b", 50, None, None),
                target("a", 20, None, None),
            ],
        );
        let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
        let splits = &spec.rules[0].http.as_ref().expect("http").paths[0].splits;
        assert_eq!(splits, &vec![split("a", 50), split("b", 50)]);
    }

    #[test]
    fn tag_header_routing() {
        let opts = RouteOptions {
            tag_header_routing: true,
            ..Default::default()
        };
        let spec = ingress_from_route(&canary_route(), &opts).expect("spec");
        assert_eq!(spec.rules.len(), 4);
        for rule in &spec.rules[..2] {
            let paths = &rule.http.as_ref().expect("http").paths;
            assert_eq!(paths.len(), 2);
            assert_eq!(
                paths[0].headers,
                Some(BTreeMap::from([(
                    TAG_HEADER.to_string(),
                    HeaderMatch {
                        exact: "canary".into()
                    }
                )]))
            );
            assert_eq!(paths[0].splits, vec![split("my-service-00001-nex", 100)]);
            assert_eq!(paths[0].append_headers, None);
            assert_eq!(paths[1].headers, None);
            assert_eq!(
                paths[1].append_headers,
                Some(BTreeMap::from([(
                    DEFAULT_ROUTE_HEADER.to_string(),
                    "true".to_string()
                )]))
            );
            assert_eq!(paths[1].splits.len(), 2);
        }
        for rule in &spec.rules[2..] {
            let paths = &rule.http.as_ref().expect("http").paths;
            assert_eq!(paths.len(), 1);
            assert_eq!(
                paths[0].append_headers,
                Some(BTreeMap::from([(
                    TAG_HEADER.to_string(),
                    "canary".to_string()
                )]))
            );
        }
    }

    #[test]
    fn http_option_and_h2c() {
        let mut r = canary_route();
        r.metadata.annotations = Some(BTreeMap::from([(
            "networking.knative.dev/http-protocol".to_string(),
            "Redirected".to_string(),
        )]));
        let opts = RouteOptions {
            h2c_revisions: BTreeSet::from(["my-service-00001-nex".to_string()]),
            ..Default::default()
        };
        let spec = ingress_from_route(&r, &opts).expect("spec");
        assert_eq!(spec.http_option.as_deref(), Some("Redirected"));
        let splits = &spec.rules[0].http.as_ref().expect("http").paths[0].splits;
        assert_eq!(splits[0].service_port, IntOrString::Int(80));
        assert_eq!(splits[1].service_port, IntOrString::Int(81));

        r.metadata.annotations = Some(BTreeMap::from([(
            "networking.knative.dev/http-protocol".to_string(),
            "bogus".to_string(),
        )]));
        assert!(ingress_from_route(&r, &opts).is_err());

        r.metadata.annotations = None;
        let opts = RouteOptions {
            http_protocol: "disabled".into(),
            ..Default::default()
        };
        assert_eq!(
            ingress_from_route(&r, &opts).expect("spec").http_option,
            None
        );
    }

    #[test]
    fn errors() {
        let opts = RouteOptions::default();
        let mut r = canary_route();
        r.status = None;
        assert!(ingress_from_route(&r, &opts)
            .expect_err("no status")
            .to_string()
            .contains("no status"));
        let r = route("my-service", None, vec![]);
        assert!(ingress_from_route(&r, &opts)
            .expect_err("no traffic")
            .to_string()
            .contains("status.traffic"));
        let r = route(
            "my-service",
            None,
            vec![target("a", 50, None, None), target("b", 40, None, None)],
        );
        assert!(ingress_from_route(&r, &opts)
            .expect_err("sum")
            .to_string()
            .contains("sum to 90"));
        let mut r = canary_route();
        if let Some(s) = r.status.as_mut() {
            s.traffic[0].revision_name = None;
        }
        assert!(ingress_from_route(&r, &opts)
            .expect_err("no revision")
            .to_string()
            .contains("revisionName"));
    }

    #[test]
    fn hosts_expansion_and_urls() {
        assert_eq!(
            expanded_hosts(["a.b.svc.cluster.local"], "cluster.local"),
            vec!["a.b", "a.b.svc", "a.b.svc.cluster.local"]
        );
        // An all-digit namespace cannot be a short name.
        assert_eq!(
            expanded_hosts(["a.123.svc.cluster.local"], "cluster.local"),
            vec!["a.123.svc", "a.123.svc.cluster.local"]
        );
        assert_eq!(url_host("http://a.b.example.com"), Some("a.b.example.com"));
        assert_eq!(
            url_host("https://a.example.com:8443/x?y"),
            Some("a.example.com")
        );
        assert_eq!(url_host("http://"), None);
    }

    #[test]
    fn deserializes_route_and_revision() {
        let r: Route = serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Route",
            "metadata": {"name": "my-service", "namespace": "default", "generation": 1},
            "spec": {"traffic": [{"configurationName": "my-service", "latestRevision": true, "percent": 100}]},
            "status": {
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True"}],
                "url": "http://my-service.default.example.com",
                "address": {"url": "http://my-service.default.svc.cluster.local"},
                "traffic": [{"revisionName": "my-service-00001-nex", "latestRevision": true, "percent": 100}]
            }
        }))
        .expect("route");
        assert!(r.is_ready());
        let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
        assert_eq!(spec.rules.len(), 2);
        // The hash is computable and stable over a JSON round trip of the spec.
        let back: IngressSpec =
            serde_json::from_str(&serde_json::to_string(&spec).expect("ser")).expect("de");
        assert_eq!(
            k_network_hash("default", "my-service", &back),
            k_network_hash("default", "my-service", &spec)
        );
        assert!(go_json(&spec).starts_with(r#"{"rules":[{"hosts":["my-service.default","#));

        let rev: Revision = serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {"name": "my-service-00001-nex", "namespace": "default"},
            "spec": {"containerConcurrency": 0, "timeoutSeconds": 300,
                     "containers": [{"image": "x", "ports": [{"name": "h2c", "containerPort": 8080}]}]},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        }))
        .expect("revision");
        assert!(!rev.is_ready());
        assert!(rev.is_h2c());
        assert_eq!(rev.service_port(), 81);
    }

    /// The first hash vector is hand-made (its local and external rules differ); rebuilding it
    /// from typed values checks the hash through a non-serde path.
    #[test]
    fn hello_vector_hash() {
        let spec = IngressSpec {
            tls: vec![],
            rules: vec![
                IngressRule {
                    hosts: vec![
                        "hello.default".into(),
                        "hello.default.svc".into(),
                        "hello.default.svc.cluster.local".into(),
                    ],
                    ..rule(&[], "ClusterLocal", vec![split("hello-00001", 100)])
                },
                rule(
                    &["hello.default.example.com"],
                    "ExternalIP",
                    vec![split("hello-00001", 90), split("hello-00002", 10)],
                ),
            ],
            http_option: Some("Enabled".into()),
        };
        assert_eq!(
            k_network_hash("default", "hello", &spec),
            "3cb4174844bdee0fddadbbd81f00ab6228917930c77f36d77c5e2c3531d40f1f"
        );
    }
}
