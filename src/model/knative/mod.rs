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
///
/// One function, longer than a screen, because it follows `makeIngressSpec` step by step (status
/// checks, traffic groups, then the rules of each group), so the two read side by side.
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
mod tests;
