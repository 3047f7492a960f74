//! One HTTPRoute on its own: its rules as routes (in the spec's match precedence), placed on
//! every listener of ours its parentRefs attach it to, once per hostname the route and the
//! listener have in common.
//!
//! A backendRef that cannot be used (no such Service or port, another kind, another namespace
//! without a ReferenceGrant) keeps its share of the traffic as 500s, as the spec requires: its
//! weighted destination names a cluster that never exists and the route answers 500 for a
//! missing cluster; a rule whose every backend is unusable (or that has none) answers 500.
//! Everything else we cannot serve (a filter type, a bad timeout) leaves the HTTPRoute out with
//! an error naming it.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::model::gateway_api::{self as api, HttpRouteRule};
use crate::model::kingress::IntOrString;
use crate::model::{HttpRoute, Kind, ObjectKey};
use crate::state::Inputs;

use super::super::backend::Backends;
use super::super::error::TranslateError;
use super::super::fragment::{ObjectCx, Placement};
use super::super::ir::{
    Action, HeaderMatchIr, HeaderOps, PathMatch, Retry, RouteIr, StringMatchIr, WeightedDestination,
};
use super::super::Options;
use super::{granted, is_gateway_ref, listener_of};

/// The spec's precedence of one match (smallest first): Exact path, then the longest prefix,
/// then a method match, then the most header matches, then the most query matches; ties keep
/// rule and match order.
type Rank = (u8, Reverse<usize>, u8, Reverse<usize>, Reverse<usize>);

/// The placements of one HTTPRoute on a proxy's servers.
pub(crate) fn placements(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    route: &HttpRoute,
) -> Result<Vec<Placement>, TranslateError> {
    let mut attached = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for p in &route.spec.parent_refs {
        if !is_gateway_ref(p) {
            continue;
        }
        let ns = p
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| key.namespace.clone());
        for s in cx.servers.iter().filter(|s| {
            s.owner.kind == Kind::K8sGateway && s.owner.namespace == ns && s.owner.name == p.name
        }) {
            let Some(l) = listener_of(cx.inputs, cx.opts, &s.owner, &s.server.port.name) else {
                continue;
            };
            if p.section_name.as_deref().is_some_and(|n| n != l.name)
                || p.port.is_some_and(|port| port != l.port)
            {
                continue;
            }
            if !allowed(l, &ns, &key.namespace) {
                refused.push(format!(
                    "listener {:?} of Gateway {ns}/{} does not allow routes from namespace {}",
                    l.name, p.name, key.namespace
                ));
                continue;
            }
            let hosts = hostnames(l.hostname.as_deref(), &route.spec.hostnames);
            if hosts.is_empty() {
                refused.push(format!(
                    "no hostname matches listener {:?} of Gateway {ns}/{} ({})",
                    l.name,
                    p.name,
                    l.hostname.as_deref().unwrap_or("*")
                ));
                continue;
            }
            attached.push((s, hosts));
        }
    }
    if attached.is_empty() {
        if refused.is_empty() {
            return Ok(Vec::new());
        }
        return Err(TranslateError::GatewayApi(format!(
            "not attached: {}",
            refused.join("; ")
        )));
    }
    let routes = std::sync::Arc::new(routes(cx, b, key, &route.spec.rules)?);
    let mut out = Vec::new();
    for (s, hosts) in attached {
        for host in hosts {
            out.push(Placement {
                route_name: s.route_name.clone(),
                host,
                port: s.server.port.number,
                routes: routes.clone(),
                require_tls: false,
            });
        }
    }
    Ok(out)
}

/// Does a listener's `allowedRoutes.namespaces` let a route of `route_ns` attach to it (the
/// Gateway in `gw_ns`)? A `Selector` is matched only on `kubernetes.io/metadata.name` (the
/// label every Namespace carries with its name): Namespace objects are not read.
fn allowed(l: &api::Listener, gw_ns: &str, route_ns: &str) -> bool {
    let ns = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => ns.and_then(|n| n.selector.as_ref()).is_some_and(|sel| {
            sel.match_expressions.is_empty()
                && !sel.match_labels.is_empty()
                && sel
                    .match_labels
                    .iter()
                    .all(|(k, v)| k == "kubernetes.io/metadata.name" && v == route_ns)
        }),
        _ => gw_ns == route_ns,
    }
}

/// The hostnames a route serves on a listener: the intersection of the route's with the
/// listener's (a wildcard on either side yields the more specific name), or the listener's when
/// the route names none.
pub(crate) fn hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let listener = listener.filter(|h| !h.is_empty());
    if route.is_empty() {
        return vec![listener.unwrap_or("*").to_string()];
    }
    let mut out = BTreeSet::new();
    for r in route {
        if let Some(h) = intersect(listener, r) {
            out.insert(h);
        }
    }
    out.into_iter().collect()
}

fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let Some(l) = listener else {
        return Some(route.to_string());
    };
    if l.eq_ignore_ascii_case(route) {
        return Some(route.to_string());
    }
    let suffix_of = |wild: &str, name: &str| {
        wild.strip_prefix('*').is_some_and(|suffix| {
            name.len() > suffix.len()
                && name
                    .to_ascii_lowercase()
                    .ends_with(&suffix.to_ascii_lowercase())
        })
    };
    if suffix_of(l, route) {
        Some(route.to_string())
    } else if suffix_of(route, l) {
        Some(l.to_string())
    } else {
        None
    }
}

/// Every rule's matches as routes, sorted by the spec's precedence.
fn routes(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    rules: &[HttpRouteRule],
) -> Result<Vec<RouteIr>, TranslateError> {
    let config_path = format!(
        "/apis/gateway.networking.k8s.io/v1/namespaces/{}/httproute/{}",
        key.namespace, key.name
    );
    let mut ranked: Vec<(Rank, usize, usize, RouteIr)> = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let at = |why: String| TranslateError::GatewayApi(format!("rule {ri}: {why}"));
        let (action, headers_ops) = action(cx, b, key, rule).map_err(at)?;
        let name = rule
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}.{}.{ri}", key.namespace, key.name));
        let default_match = [api::HttpRouteMatch::default()];
        let matches = if rule.matches.is_empty() {
            &default_match[..]
        } else {
            &rule.matches[..]
        };
        for (mi, m) in matches.iter().enumerate() {
            let (path, rank) = path_match(m).map_err(at)?;
            let mut headers = value_matches(&m.headers, true).map_err(at)?;
            let header_count = headers.len();
            if let Some(method) = &m.method {
                headers.push(HeaderMatchIr {
                    name: ":method".to_string(),
                    matcher: StringMatchIr::Exact(method.clone()),
                });
            }
            let query = value_matches(&m.query_params, false).map_err(at)?;
            let mut action = action.clone();
            if let Action::Route { prefix_rewrite, .. } = &mut action {
                if prefix_rewrite.is_some()
                    && !matches!(path, PathMatch::SegmentPrefix(_) | PathMatch::Prefix(_))
                {
                    return Err(at(
                        "URLRewrite ReplacePrefixMatch needs a PathPrefix match".to_string()
                    ));
                }
            }
            let rank: Rank = (
                rank.0,
                Reverse(rank.1),
                u8::from(m.method.is_none()),
                Reverse(header_count),
                Reverse(query.len()),
            );
            ranked.push((
                rank,
                ri,
                mi,
                RouteIr {
                    name: Some(name.clone()),
                    path,
                    headers,
                    query,
                    action,
                    headers_ops: headers_ops.clone(),
                    metadata: Some(("istio".to_string(), config_path.clone())),
                },
            ));
        }
    }
    ranked.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    Ok(ranked.into_iter().map(|(_, _, _, r)| r).collect())
}

/// A match's path and its (kind, length) rank: Exact 0, PathPrefix 1, RegularExpression 2.
fn path_match(m: &api::HttpRouteMatch) -> Result<(PathMatch, (u8, usize)), String> {
    let Some(p) = &m.path else {
        return Ok((PathMatch::Prefix("/".to_string()), (1, 1)));
    };
    let value = p.value.clone().unwrap_or_else(|| "/".to_string());
    match p.type_.as_deref().unwrap_or("PathPrefix") {
        "PathPrefix" => {
            if !value.starts_with('/') {
                return Err(format!("path {value:?} does not start with '/'"));
            }
            let trimmed = value.trim_end_matches('/');
            let path = if trimmed.is_empty() {
                PathMatch::Prefix("/".to_string())
            } else {
                PathMatch::SegmentPrefix(trimmed.to_string())
            };
            // Ranked by the prefix as matched (a trailing '/' does not count).
            Ok((path, (1, trimmed.len().max(1))))
        }
        "Exact" => {
            if !value.starts_with('/') {
                return Err(format!("path {value:?} does not start with '/'"));
            }
            let len = value.len();
            Ok((PathMatch::Exact(value), (0, len)))
        }
        "RegularExpression" => Ok((PathMatch::Regex(value), (2, 0))),
        other => Err(format!("path match type {other:?} is not supported")),
    }
}

/// Header (names compared without case) or query parameter matches; for a name given twice the
/// first wins, as the spec says.
fn value_matches(ms: &[api::ValueMatch], header: bool) -> Result<Vec<HeaderMatchIr>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in ms {
        let name = if header {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        let matcher = match m.type_.as_deref().unwrap_or("Exact") {
            "Exact" => StringMatchIr::Exact(m.value.clone()),
            "RegularExpression" => StringMatchIr::Regex(m.value.clone()),
            other => {
                return Err(format!(
                    "match type {other:?} for {:?} is not supported",
                    m.name
                ))
            }
        };
        out.push(HeaderMatchIr { name, matcher });
    }
    Ok(out)
}

/// What a rule does (redirect, or its backends) and its request header changes.
fn action(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    rule: &HttpRouteRule,
) -> Result<(Action, HeaderOps), String> {
    let mut ops = HeaderOps::default();
    let mut redirect = None;
    let mut host_rewrite = None;
    let mut prefix_rewrite = None;
    for f in &rule.filters {
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                ops = ops.merged(&header_ops(f.request_header_modifier.as_ref()));
            }
            "RequestRedirect" => {
                let r = f.request_redirect.clone().unwrap_or_default();
                if r.port.is_some() {
                    return Err("RequestRedirect port is not supported".to_string());
                }
                let path = match &r.path {
                    None => None,
                    Some(p) if p.type_ == "ReplaceFullPath" => p.replace_full_path.clone(),
                    Some(p) => {
                        return Err(format!(
                            "RequestRedirect path type {:?} is not supported",
                            p.type_
                        ))
                    }
                };
                let code = r.status_code.unwrap_or(301);
                if ![301, 302, 303, 307, 308].contains(&code) {
                    return Err(format!(
                        "RequestRedirect statusCode {code} is not a redirect"
                    ));
                }
                redirect = Some(Action::Redirect {
                    scheme: r.scheme.clone(),
                    host: r.hostname.clone(),
                    path,
                    code: Some(code),
                });
            }
            "URLRewrite" => {
                let r = f.url_rewrite.clone().unwrap_or_default();
                host_rewrite = r.hostname.clone();
                match &r.path {
                    None => {}
                    Some(p) if p.type_ == "ReplacePrefixMatch" => {
                        prefix_rewrite = Some(p.replace_prefix_match.clone().unwrap_or_default())
                    }
                    Some(p) => {
                        return Err(format!(
                            "URLRewrite path type {:?} is not supported",
                            p.type_
                        ))
                    }
                }
            }
            other => return Err(format!("filter type {other:?} is not supported")),
        }
    }
    if let Some(r) = redirect {
        return Ok((r, ops));
    }
    let timeout = match rule.timeouts.as_ref().and_then(|t| t.request.as_deref()) {
        None => None,
        Some(t) => {
            let d = crate::model::duration::parse_go(t)
                .map_err(|_| format!("timeouts.request {t:?} is not a duration"))?;
            (!d.is_zero()).then_some(d)
        }
    };
    let mut destinations = Vec::new();
    let mut valid = 0;
    for r in &rule.backend_refs {
        let weight = r.weight.unwrap_or(1);
        if weight == 0 {
            continue;
        }
        let mut headers = HeaderOps::default();
        for f in &r.filters {
            match f.type_.as_str() {
                "RequestHeaderModifier" => {
                    headers = headers.merged(&header_ops(f.request_header_modifier.as_ref()))
                }
                other => {
                    return Err(format!(
                        "backendRef {:?}: filter type {other:?} is not supported",
                        r.name
                    ))
                }
            }
        }
        let cluster = match backend(cx.inputs, b, key, r) {
            Ok(c) => {
                valid += 1;
                c
            }
            Err(_) => {
                let ns = r.namespace.as_deref().unwrap_or(&key.namespace);
                format!("invalid-backend|{ns}/{}", r.name)
            }
        };
        destinations.push(WeightedDestination {
            cluster,
            weight,
            headers,
        });
    }
    if valid == 0 {
        return Ok((Action::Direct { status: 500 }, ops));
    }
    if destinations.len() == 1 {
        ops = ops.merged(&destinations[0].headers);
        destinations[0].headers = HeaderOps::default();
    }
    let missing_cluster_500 = valid < destinations.len();
    Ok((
        Action::Route {
            destinations,
            timeout,
            retry: Retry::IstioDefault,
            host_rewrite,
            prefix_rewrite,
            missing_cluster_500,
        },
        ops,
    ))
}

/// The cluster of a usable backendRef: a Service (core group) with a port, in the route's
/// namespace or one whose ReferenceGrant allows it. `Err`: why not (its share answers 500).
fn backend(
    inputs: &Inputs,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    r: &api::HttpBackendRef,
) -> Result<String, String> {
    if !r.group.as_deref().unwrap_or("").is_empty()
        || r.kind.as_deref().unwrap_or("Service") != "Service"
    {
        return Err(format!(
            "kind {:?} of group {:?} is not a Service",
            r.kind.as_deref().unwrap_or("Service"),
            r.group.as_deref().unwrap_or("")
        ));
    }
    let ns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| key.namespace.clone());
    if !granted(inputs, "HTTPRoute", &key.namespace, "Service", &ns, &r.name) {
        return Err(format!(
            "Service {ns}/{} is in another namespace and no ReferenceGrant there allows it",
            r.name
        ));
    }
    let port = IntOrString::Int(i64::from(
        r.port.ok_or("no port (a Service backendRef needs one)")?,
    ));
    b.cluster_for(&ns, &r.name, Some(&port), false)
        .map_err(|e| e.to_string())
}

/// The backendRefs of an HTTPRoute that cannot be used, and why: each keeps its share of the
/// traffic as 500s (`validate` reports them; translation serves the rest).
pub(crate) fn unusable_backends(
    inputs: &Inputs,
    opts: &Options,
    key: &ObjectKey,
    route: &HttpRoute,
) -> Vec<String> {
    let mut b = Backends::new(inputs, opts);
    let mut out = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        for r in rule.backend_refs.iter().filter(|r| r.weight != Some(0)) {
            if let Err(why) = backend(inputs, &mut b, key, r) {
                out.push(format!("rule {ri} backendRef {:?}: {why}", r.name));
            }
        }
    }
    out
}

fn header_ops(f: Option<&api::HeaderFilter>) -> HeaderOps {
    let Some(f) = f else {
        return HeaderOps::default();
    };
    HeaderOps {
        set: f
            .set
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        add: f
            .add
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        remove: {
            let mut r: Vec<String> = f.remove.clone();
            r.sort();
            r.dedup();
            r
        },
    }
}

#[cfg(test)]
mod tests {
    use super::hostnames;

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        let v = |s: &[&str]| s.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        assert_eq!(hostnames(None, &[]), v(&["*"]));
        assert_eq!(hostnames(Some("*.example.com"), &[]), v(&["*.example.com"]));
        assert_eq!(
            hostnames(
                Some("*.example.com"),
                &v(&[
                    "a.example.com",
                    "example.com",
                    "b.other.org",
                    "x.y.example.com"
                ])
            ),
            v(&["a.example.com", "x.y.example.com"])
        );
        assert_eq!(
            hostnames(
                Some("very.specific.com"),
                &v(&["*.specific.com", "*.other.com"])
            ),
            v(&["very.specific.com"])
        );
        assert_eq!(
            hostnames(Some("*.example.com"), &v(&["*.foo.example.com"])),
            v(&["*.foo.example.com"])
        );
        assert!(hostnames(Some("a.example.com"), &v(&["b.example.com"])).is_empty());
    }
}
