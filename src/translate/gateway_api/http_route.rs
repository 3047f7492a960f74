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
use std::sync::Arc;

use crate::model::gateway_api::{self as api, HttpRouteRule};
use crate::model::{HttpRoute, Kind, ObjectKey};

use super::super::backend::Backends;
use super::super::error::TranslateError;
use super::super::fragment::{ObjectCx, Placement};
use super::super::ir::{
    Action, HeaderMatchIr, HeaderOps, PathMatch, PathRewrite, Retry, RouteIr, StringMatchIr,
    VirtualHostIr, WeightedDestination,
};
use super::attach::{self, backend};

/// The spec's precedence of one match (smallest first): Exact path, then the longest prefix,
/// then a method match, then the most header matches, then the most query matches; ties keep
/// rule and match order.
type Rank = (u8, Reverse<usize>, u8, Reverse<usize>, Reverse<usize>);

/// How the error of an HTTPRoute no listener of this proxy's Gateways takes starts (the status
/// writer tells it from the errors of routes that were attached but could not be translated).
pub(crate) const NOT_ATTACHED: &str = "not attached: ";

/// The placements of one HTTPRoute on a proxy's servers: where [`attach::parent_outcomes`]
/// attaches it, among the listeners this proxy serves. Refused by every Gateway of ours this
/// proxy serves that its parentRefs name: an error naming why.
pub(crate) fn placements(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    route: &HttpRoute,
) -> Result<Vec<Placement>, TranslateError> {
    let mut attached = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for o in attach::parent_outcomes(cx.inputs, cx.opts, key, &route.spec) {
        let mut servers = cx
            .servers
            .iter()
            .filter(|s| s.owner.kind == Kind::K8sGateway && s.owner == o.gateway)
            .peekable();
        if servers.peek().is_none() {
            continue;
        }
        if o.reason != attach::ParentReason::Accepted {
            refused.push(o.message);
            continue;
        }
        for s in servers {
            if let Some(a) = o
                .listeners
                .iter()
                .find(|a| a.listener == s.server.port.name)
            {
                attached.push((s, a.hosts.clone()));
            }
        }
    }
    if attached.is_empty() {
        if refused.is_empty() {
            return Ok(Vec::new());
        }
        return Err(TranslateError::GatewayApi(format!(
            "{NOT_ATTACHED}{}",
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

/// Every rule's matches as routes, sorted by the spec's precedence.
fn routes(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    rules: &[HttpRouteRule],
) -> Result<Vec<RouteIr>, TranslateError> {
    let config_path: Arc<str> = format!(
        "/apis/gateway.networking.k8s.io/v1/namespaces/{}/httproute/{}",
        key.namespace, key.name
    )
    .into();
    let mut ranked: Vec<(Rank, usize, usize, RouteIr)> = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let at = |why: String| TranslateError::GatewayApi(format!("rule {ri}: {why}"));
        let (action, headers_ops, replace_prefix) = action(cx, b, key, rule).map_err(at)?;
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
            let path = path_match(m).map_err(at)?;
            let mut headers = value_matches(&m.headers, true).map_err(at)?;
            if let Some(method) = &m.method {
                headers.push(HeaderMatchIr {
                    name: ":method".to_string(),
                    matcher: StringMatchIr::Exact(method.clone()),
                });
            }
            let query = value_matches(&m.query_params, false).map_err(at)?;
            let mut action = action.clone();
            if let Some(to) = &replace_prefix {
                let rw = prefix_rewrite(&path, to).map_err(at)?;
                match &mut action {
                    Action::Route { path_rewrite, .. } => *path_rewrite = rw,
                    Action::Redirect { path, .. } => *path = rw,
                    Action::Direct { .. } => {}
                }
            }
            let route = RouteIr {
                name: Some(name.clone()),
                path,
                headers,
                query,
                action,
                headers_ops: headers_ops.clone(),
                metadata: Some(("istio", config_path.clone())),
            };
            ranked.push((rank(&route), ri, mi, route));
        }
    }
    ranked.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    Ok(ranked.into_iter().map(|(_, _, _, r)| r).collect())
}

/// The spec's precedence of one translated match (see [`Rank`]): Exact before PathPrefix
/// (the longer first; a prefix counts without its trailing '/', `/` as 1) before
/// RegularExpression, then a method match (`:method`, the one pseudo-header a rule matches),
/// then the number of header matches, then the number of query matches.
fn rank(r: &RouteIr) -> Rank {
    let (kind, len) = match &r.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::SegmentPrefix(p) | PathMatch::Prefix(p) => (1, p.len().max(1)),
        PathMatch::Regex(_) => (2, 0),
    };
    let method = r.headers.iter().any(|h| h.name == ":method");
    (
        kind,
        Reverse(len),
        u8::from(!method),
        Reverse(r.headers.len() - usize::from(method)),
        Reverse(r.query.len()),
    )
}

/// The virtual host `host` of several HTTPRoutes (their virtual hosts given in the spec's
/// precedence between routes: the more specific hostname, then the oldest, then by
/// namespace/name; [`super::super::claims::resolve`] orders them), as the spec merges them:
/// every route in the precedence of [`rank`], ties to the earlier route, then to rule and
/// match order (each route's own list is already in that order, and the sort is stable).
pub(crate) fn merge_across_routes(host: &Arc<str>, vhosts: &[&VirtualHostIr]) -> VirtualHostIr {
    let mut routes: Vec<RouteIr> = Vec::new();
    for vh in vhosts {
        routes.extend(vh.routes.iter().cloned());
    }
    routes.sort_by_cached_key(rank);
    VirtualHostIr {
        // The slot's own copy of the host.
        host: host.clone(),
        port: vhosts.first().map_or(0, |v| v.port),
        routes: Arc::new(routes),
        require_tls: vhosts.iter().any(|v| v.require_tls),
    }
}

/// A match's path.
fn path_match(m: &api::HttpRouteMatch) -> Result<PathMatch, String> {
    let Some(p) = &m.path else {
        return Ok(PathMatch::Prefix("/".to_string()));
    };
    let value = p.value.clone().unwrap_or_else(|| "/".to_string());
    match p.type_.as_deref().unwrap_or("PathPrefix") {
        "PathPrefix" => {
            if !value.starts_with('/') {
                return Err(format!("path {value:?} does not start with '/'"));
            }
            let trimmed = value.trim_end_matches('/');
            Ok(if trimmed.is_empty() {
                PathMatch::Prefix("/".to_string())
            } else {
                PathMatch::SegmentPrefix(trimmed.to_string())
            })
        }
        "Exact" => {
            if !value.starts_with('/') {
                return Err(format!("path {value:?} does not start with '/'"));
            }
            Ok(PathMatch::Exact(value))
        }
        "RegularExpression" => Ok(PathMatch::Regex(value)),
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

/// A filter's `path` modifier: the whole path, or what replaces the matched prefix (made per
/// match by [`prefix_rewrite`]).
enum PathModifier {
    Full(String),
    Prefix(String),
}

fn path_modifier(filter: &str, p: &api::PathModifier) -> Result<PathModifier, String> {
    match p.type_.as_str() {
        "ReplaceFullPath" => match p.replace_full_path.clone() {
            Some(path) if path.starts_with('/') => Ok(PathModifier::Full(path)),
            path => Err(format!(
                "{filter} ReplaceFullPath {:?} does not start with '/'",
                path.unwrap_or_default()
            )),
        },
        "ReplacePrefixMatch" => Ok(PathModifier::Prefix(
            p.replace_prefix_match.clone().unwrap_or_default(),
        )),
        other => Err(format!("{filter} path type {other:?} is not supported")),
    }
}

/// What a rule does (redirect, or its backends), its request header changes, and its
/// `ReplacePrefixMatch` (of the redirect, else of the URLRewrite; applied per match by
/// [`prefix_rewrite`]).
fn action(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    rule: &HttpRouteRule,
) -> Result<(Action, HeaderOps, Option<String>), String> {
    let mut ops = HeaderOps::default();
    let mut redirect = None;
    let mut host_rewrite = None;
    let mut path_rewrite = None;
    let mut replace_prefix = None;
    for f in &rule.filters {
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                ops = ops.merged(&header_ops(f.request_header_modifier.as_ref()));
            }
            "RequestRedirect" => {
                let r = f.request_redirect.clone().unwrap_or_default();
                let (path, prefix) = match &r.path {
                    None => (None, None),
                    Some(p) => match path_modifier("RequestRedirect", p)? {
                        PathModifier::Full(p) => (Some(PathRewrite::Full(p)), None),
                        PathModifier::Prefix(p) => (None, Some(p)),
                    },
                };
                let code = r.status_code.unwrap_or(301);
                if ![301, 302, 303, 307, 308].contains(&code) {
                    return Err(format!(
                        "RequestRedirect statusCode {code} is not a redirect"
                    ));
                }
                // The scheme's own port is left out of the Location, as the spec says.
                let default_port = if r.scheme.as_deref() == Some("https") {
                    443
                } else {
                    80
                };
                let action = Action::Redirect {
                    scheme: r.scheme.clone(),
                    host: r.hostname.clone(),
                    path,
                    port: r.port.filter(|p| *p != default_port),
                    code: Some(code),
                };
                redirect = Some((action, prefix));
            }
            "URLRewrite" => {
                let r = f.url_rewrite.clone().unwrap_or_default();
                host_rewrite = r.hostname.clone();
                if let Some(p) = &r.path {
                    match path_modifier("URLRewrite", p)? {
                        PathModifier::Full(p) => path_rewrite = Some(PathRewrite::Full(p)),
                        PathModifier::Prefix(p) => replace_prefix = Some(p),
                    }
                }
            }
            other => return Err(format!("filter type {other:?} is not supported")),
        }
    }
    if let Some((r, prefix)) = redirect {
        return Ok((r, ops, prefix));
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
        return Ok((Action::Direct { status: 500 }, ops, None));
    }
    if destinations.len() == 1 {
        ops = ops.merged(&destinations[0].headers);
        destinations[0].headers = HeaderOps::default();
    }
    let missing_cluster_500 = valid < destinations.len();
    Ok((
        Action::Route {
            destinations: destinations.into(),
            timeout,
            retry: Retry::IstioDefault,
            host_rewrite,
            path_rewrite,
            missing_cluster_500,
        },
        ops,
        replace_prefix,
    ))
}

/// `ReplacePrefixMatch` `to` (URLRewrite or RequestRedirect) under a match on `path`, as the spec's
/// HTTPPathModifier says: the matched prefix (whole segments) is replaced, and a `/` at the end
/// of `to` never doubles the separator (prefix `/foo`: `/` gives `/foo/bar` -> `/bar` and
/// `/foo` -> `/`; `/xyz` and `/xyz/` give `/foo/bar` -> `/xyz/bar`). Envoy's `prefix_rewrite`
/// alone would give `//bar`, so removing the prefix is a `regex_rewrite` as istiod writes it
/// (`^<prefix>(/?)(.*)` -> `/\2`). Under the prefix `/`, `to` goes before the whole path
/// (`/v2`: `/foo` -> `/v2/foo`, `/` -> `/v2/`); `/` there changes nothing.
fn prefix_rewrite(path: &PathMatch, to: &str) -> Result<Option<PathRewrite>, String> {
    let to = to.trim_end_matches('/');
    match path {
        PathMatch::SegmentPrefix(prefix) if to.is_empty() => Ok(Some(PathRewrite::Regex {
            pattern: format!("^{}(/?)(.*)", regex_syntax::escape(prefix)),
            substitution: r"/\2".to_string(),
        })),
        PathMatch::SegmentPrefix(_) => Ok(Some(PathRewrite::Prefix(to.to_string()))),
        PathMatch::Prefix(p) if p == "/" => {
            Ok((!to.is_empty()).then(|| PathRewrite::Prefix(format!("{to}/"))))
        }
        _ => Err("ReplacePrefixMatch needs a PathPrefix match".to_string()),
    }
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
mod tests;
