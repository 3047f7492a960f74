//! KIngresses (of our class, see [`super::ownership`]) and the Routes without one: Knative's
//! semantics, as net-istio's VirtualServices would give them. Every path becomes a route and a
//! probe copy (matching `K-Network-Hash: override`, setting the hash); rules go to the external
//! or the cluster-local gateway by visibility; hosts with `spec.tls` also go on the HTTPS server
//! made for them; `httpOption: Redirected` makes the plain-HTTP virtual host require TLS.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::model::kingress::{HttpIngressPath, IngressSpec};
use crate::model::ObjectKey;
use crate::state::Inputs;

use super::backend::Backends;
use super::error::TranslateError;
use super::fragment::{ObjectCx, Placement};
use super::gateway::host_matches;
use super::ir::*;

/// The default domain from `knative-serving/config-domain`, else `example.com`.
pub(crate) fn default_domain(inputs: &Inputs) -> String {
    let Some(data) = inputs
        .config_map("knative-serving", "config-domain")
        .and_then(|cm| cm.data.as_ref())
    else {
        return "example.com".to_string();
    };
    data.iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .find(|(_, v)| v.trim().is_empty())
        .or_else(|| data.iter().find(|(k, _)| !k.starts_with('_')))
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| "example.com".to_string())
}

/// A KIngress spec translated without a proxy: per rule its gateway (by visibility), its hosts
/// and its routes (each path's route after its probe copy), which hosts have `spec.tls`, and
/// whether plain HTTP redirects. Every proxy places the same rules ([`place`]), so an engine per
/// proxy shares one of these per object (`fragment::Shared`).
#[derive(Debug)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    tls_hosts: BTreeSet<String>,
    redirected: bool,
}

#[derive(Debug)]
struct Rule {
    local: bool,
    hosts: Vec<String>,
    /// Shared by the rules with the same paths (a Route's cluster-local and external rules).
    routes: Arc<Vec<RouteIr>>,
}

/// A KIngress spec's rules and routes (`from_route`: the spec Knative would build for a Route,
/// whose revision Services may be absent from the inputs). Every path is checked and its
/// clusters read, whatever proxy serves the rule: the object's errors do not depend on the
/// proxy.
pub(super) fn rules(
    b: &mut Backends<'_>,
    key: &ObjectKey,
    spec: &IngressSpec,
    from_route: bool,
) -> Result<Rules, TranslateError> {
    let defaulted = spec.defaulted_cow();
    // Computed at the first rule with a path (only probe routes carry it).
    let mut hash: Option<String> = None;
    let config_path: Arc<str> = if from_route {
        format!(
            "/apis/serving.knative.dev/v1/namespaces/{}/routes/{}",
            key.namespace, key.name
        )
    } else {
        format!(
            "/apis/networking.internal.knative.dev/v1alpha1/namespaces/{}/ingresses/{}",
            key.namespace, key.name
        )
    }
    .into();
    let mut rules: Vec<Rule> = Vec::with_capacity(defaulted.rules.len());
    for (ri, rule) in defaulted.rules.iter().enumerate() {
        let local = rule.visibility.as_deref() == Some("ClusterLocal");
        let http = rule
            .http
            .as_ref()
            .ok_or(TranslateError::NoHttp { rule: ri })?;
        // An earlier rule with the same paths has the same routes (and passed their checks).
        let same = defaulted.rules[..ri]
            .iter()
            .zip(&rules)
            .find(|(earlier, _)| earlier.http.as_ref() == Some(http))
            .map(|(_, r)| r.routes.clone());
        let routes = match same {
            Some(routes) => routes,
            None => {
                let mut routes = Vec::with_capacity(http.paths.len());
                for (pi, path) in http.paths.iter().enumerate() {
                    routes.push(path_route(
                        b,
                        key,
                        (ri, pi),
                        path,
                        from_route,
                        &config_path,
                    )?);
                }
                let mut all: Vec<RouteIr> = Vec::with_capacity(2 * routes.len());
                if !routes.is_empty() {
                    let hash = hash.get_or_insert_with(|| {
                        crate::khash::k_network_hash(&key.namespace, &key.name, spec)
                    });
                    all.extend(routes.iter().map(|r| probe_of(r, hash)));
                }
                all.extend(routes);
                Arc::new(all)
            }
        };
        rules.push(Rule {
            local,
            hosts: rule.hosts.clone(),
            routes,
        });
    }
    Ok(Rules {
        rules,
        tls_hosts: defaulted
            .tls
            .iter()
            .flat_map(|t| t.hosts.iter().cloned())
            .collect(),
        redirected: defaulted.http_option.as_deref() == Some("Redirected"),
    })
}

/// Where a KIngress's rules go on one proxy: per rule, the plain-HTTP servers of its gateway,
/// and for external hosts with `spec.tls` the HTTPS servers made for them.
pub(super) fn place(cx: &ObjectCx<'_>, rules: &Rules) -> Vec<Placement> {
    let mut placements = Vec::new();
    for rule in &rules.rules {
        let local = rule.local;
        let gateway = if local { cx.local } else { cx.external };
        // Plain HTTP servers of the target gateway, and for external rules its HTTPS ones.
        let http_servers = cx.gateway_servers(gateway, false);
        let https_servers = match local {
            true => Vec::new(),
            false => cx.gateway_servers(gateway, true),
        };
        for server in &http_servers {
            for host in &rule.hosts {
                placements.push(Placement {
                    route_name: server.route_name.clone(),
                    host: host.to_ascii_lowercase(),
                    port: server.server.port.number,
                    routes: rule.routes.clone(),
                    require_tls: rules.redirected && !local,
                });
            }
        }
        for server in https_servers {
            for host in rule.hosts.iter().filter(|h| rules.tls_hosts.contains(*h)) {
                if !server.server.hosts.iter().any(|sh| host_matches(sh, host)) {
                    continue;
                }
                placements.push(Placement {
                    route_name: server.route_name.clone(),
                    host: host.to_ascii_lowercase(),
                    port: server.server.port.number,
                    routes: rule.routes.clone(),
                    require_tls: false,
                });
            }
        }
    }
    placements
}

/// The route of one KIngress path (rule `ri`, path `pi`): its splits as weighted destinations
/// (0% splits still need their cluster, as Knative keeps them warm), its header matches and
/// header operations.
fn path_route(
    b: &mut Backends<'_>,
    key: &ObjectKey,
    (ri, pi): (usize, usize),
    path: &HttpIngressPath,
    from_route: bool,
    config_path: &Arc<str>,
) -> Result<RouteIr, TranslateError> {
    let total: i64 = path.splits.iter().map(|s| s.percent).sum();
    if path.splits.is_empty() {
        return Err(TranslateError::NoSplits { rule: ri, path: pi });
    }
    if total != 100 {
        return Err(TranslateError::SplitSum {
            rule: ri,
            path: pi,
            total,
        });
    }
    let mut destinations = Vec::new();
    for s in &path.splits {
        if s.percent < 0 || s.percent > 100 {
            return Err(TranslateError::BadPercent {
                rule: ri,
                path: pi,
                percent: s.percent,
            });
        }
        let sns = if s.service_namespace.is_empty() {
            key.namespace.clone()
        } else {
            s.service_namespace.clone()
        };
        let cluster = b.cluster_for(&sns, &s.service_name, Some(&s.service_port), from_route)?;
        if s.percent == 0 {
            continue;
        }
        destinations.push(WeightedDestination {
            cluster,
            weight: s.percent as u32,
            headers: HeaderOps {
                set: s.append_headers.clone().unwrap_or_default().into(),
                ..Default::default()
            },
        });
    }
    let mut headers_ops = HeaderOps {
        set: path.append_headers.clone().unwrap_or_default().into(),
        ..Default::default()
    };
    if destinations.len() == 1 {
        headers_ops = headers_ops.merged(&destinations[0].headers);
        destinations[0].headers = HeaderOps::default();
    }
    let mut header_matches: Vec<HeaderMatchIr> = path
        .headers
        .iter()
        .flatten()
        .map(|(n, m)| HeaderMatchIr {
            name: n.to_ascii_lowercase(),
            matcher: StringMatchIr::Exact(m.exact.clone()),
        })
        .collect();
    header_matches.sort_by(|a, b| a.name.cmp(&b.name));
    let route = RouteIr {
        name: None,
        path: PathMatch::Prefix(
            path.path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".to_string()),
        ),
        headers: header_matches,
        query: Vec::new(),
        action: Action::Route {
            destinations: destinations.into(),
            timeout: None,
            retry: Retry::None,
            host_rewrite: path.rewrite_host.clone().filter(|h| !h.is_empty()),
            path_rewrite: None,
            missing_cluster_500: false,
        },
        headers_ops,
        metadata: Some(("knative-pilot", config_path.clone())),
    };
    Ok(route)
}

/// The probe copy of a route: matches `K-Network-Hash: override` and sets the hash. Its
/// destinations are the route's own (shared, not copied).
fn probe_of(route: &RouteIr, hash: &str) -> RouteIr {
    let mut probe = route.clone();
    probe.headers.retain(|h| h.name != "k-network-hash");
    // Held as long as the route: one more entry, not a doubled list.
    probe.headers.reserve_exact(1);
    probe.headers.push(HeaderMatchIr {
        name: "k-network-hash".to_string(),
        matcher: StringMatchIr::Exact("override".to_string()),
    });
    probe.headers.sort_by(|a, b| a.name.cmp(&b.name));
    probe
        .headers_ops
        .set
        .insert("K-Network-Hash".to_string(), hash.to_string());
    probe
}
