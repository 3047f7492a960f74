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
use crate::model::{HttpRoute, Kind, ObjectKey};

use super::super::backend::Backends;
use super::super::error::TranslateError;
use super::super::fragment::{ObjectCx, Placement};
use super::super::ir::{
    Action, HeaderMatchIr, HeaderOps, PathMatch, Retry, RouteIr, StringMatchIr, WeightedDestination,
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
    let routes = routes(cx, b, key, &route.spec.rules)?;
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
