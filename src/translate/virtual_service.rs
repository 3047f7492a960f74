//! VirtualServices: Istio's own routing objects, translated as istiod translates them for a
//! router. A VirtualService applies to the servers of the Gateways it names (`spec.gateways`,
//! not `mesh`) whose hosts admit its hosts; each `http` route becomes routes under every such
//! host, dropping routes whose `:authority` match can never match that host (net-istio lists
//! every host in one VirtualService and separates gateways by `match.gateways` + authority).

use std::sync::Arc;

use crate::model::duration::parse_go as parse_duration;
use crate::model::istio::VirtualServiceSpec;
use crate::model::kingress::IntOrString;
use crate::model::ObjectKey;

use super::backend::Backends;
use super::error::TranslateError;
use super::fragment::{ObjectCx, Placement};
use super::gateway::{host_matches, ServerCtx};
use super::ir::*;

/// The request header operations of an Istio `headers` block (none when absent).
fn request_headers(headers: Option<&crate::model::istio::Headers>) -> HeaderOps {
    headers
        .and_then(|h| h.request.as_ref())
        .map(|r| HeaderOps {
            set: r.set.clone().into(),
            add: r.add.clone().into(),
            remove: r.remove.clone(),
        })
        .unwrap_or_default()
}

/// Does a gateway server host (`ns/host`, `*/host`, `./host`, `host`) admit a VirtualService host
/// from namespace `vs_ns`?
fn server_host_admits(server_host: &str, gateway_ns: &str, vs_ns: &str, vs_host: &str) -> bool {
    let (ns, host) = match server_host.split_once('/') {
        Some((ns, h)) => (ns, h),
        None => ("*", server_host),
    };
    let ns_ok = ns == "*" || (ns == "." && vs_ns == gateway_ns) || ns == vs_ns;
    ns_ok && host_matches(host, vs_host)
}

/// The Service a destination host names: `name`, `name.ns`, `name.ns.svc`, or the FQDN.
fn service_of_host(host: &str, default_ns: &str, cluster_domain: &str) -> (String, String) {
    let full_suffix = format!(".svc.{cluster_domain}");
    let h = host
        .strip_suffix(&full_suffix)
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    match h.split_once('.') {
        Some((name, ns)) if !ns.contains('.') => (ns.to_string(), name.to_string()),
        Some(_) => (String::new(), host.to_string()),
        None => (default_ns.to_string(), h.to_string()),
    }
}

/// Where a VirtualService's routes go: per server of the Gateways it names, the hosts that server
/// admits, each with the routes whose `:authority` match can match it.
pub(super) fn placements(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    spec: &VirtualServiceSpec,
) -> Result<Vec<Placement>, TranslateError> {
    let ns = key.namespace.clone();
    let gw_ids: Vec<String> = spec
        .gateways
        .iter()
        .filter(|g| g.as_str() != "mesh")
        .map(|g| {
            if g.contains('/') {
                g.clone()
            } else {
                format!("{ns}/{g}")
            }
        })
        .collect();
    let servers: Vec<ServerCtx> = cx
        .servers
        .iter()
        .filter(|s| gw_ids.contains(&s.gateway))
        .cloned()
        .collect();
    let mut placements: Vec<Placement> = Vec::new();
    let config_path: Arc<str> = format!(
        "/apis/networking.istio.io/v1/namespaces/{ns}/virtual-service/{}",
        key.name
    )
    .into();
    for server in &servers {
        let hosts: Vec<String> = spec
            .hosts
            .iter()
            .filter(|h| {
                server
                    .server
                    .hosts
                    .iter()
                    .any(|sh| server_host_admits(sh, &server.gateway_ns, &ns, h))
            })
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if hosts.is_empty() {
            continue;
        }
        let mut routes = Vec::new();
        for http in &spec.http {
            routes.extend(http_route(cx, b, &ns, http, &server.gateway, &config_path)?);
        }
        if routes.is_empty() {
            continue;
        }
        let require_tls =
            !server.https && server.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for host in hosts {
            // Routes whose `:authority` match can never match this host are dead here
            // (net-istio puts one VirtualService's per-gateway routes under every host).
            let routes: Vec<RouteIr> = routes
                .iter()
                .filter(|r| authority_admits(r, &host))
                .cloned()
                .collect();
            if routes.is_empty() {
                continue;
            }
            if let Some(existing) = placements
                .iter_mut()
                .find(|p| p.route_name == server.route_name && p.host == host)
            {
                Arc::make_mut(&mut existing.routes).extend(routes);
                existing.require_tls |= require_tls;
                continue;
            }
            placements.push(Placement {
                route_name: server.route_name.clone(),
                host,
                port: server.server.port.number,
                routes: Arc::new(routes),
                require_tls,
            });
        }
    }
    Ok(placements)
}

/// The routes of one `http` entry on `gateway` (none when its matches all name other gateways):
/// one per match, sharing the action.
fn http_route(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    ns: &str,
    http: &crate::model::istio::HttpRoute,
    gateway: &str,
    config_path: &Arc<str>,
) -> Result<Vec<RouteIr>, TranslateError> {
    let applies = |gws: &Vec<String>| {
        gws.is_empty()
            || gws.iter().any(|g| {
                if g.contains('/') {
                    g == gateway
                } else {
                    format!("{ns}/{g}") == gateway
                }
            })
    };
    let matches: Vec<&crate::model::istio::HttpMatchRequest> = if http.matches.is_empty() {
        Vec::new()
    } else {
        let m: Vec<_> = http
            .matches
            .iter()
            .filter(|m| applies(&m.gateways))
            .collect();
        if m.is_empty() {
            return Ok(Vec::new());
        }
        m
    };
    // The action, shared by all matches.
    let route_headers = request_headers(http.headers.as_ref());
    let timeout = match &http.timeout {
        Some(t) => Some(parse_duration(t).map_err(|_| TranslateError::BadTimeout(t.clone()))?),
        None => None,
    };
    let retry = match &http.retries {
        None => Retry::IstioDefault,
        Some(r) if r.attempts <= 0 => Retry::None,
        Some(r) => Retry::Custom {
            attempts: r.attempts as u32,
            per_try_timeout: match &r.per_try_timeout {
                Some(t) => Some(
                    parse_duration(t).map_err(|_| TranslateError::BadPerTryTimeout(t.clone()))?,
                ),
                None => None,
            },
            retry_on: r.retry_on.clone(),
        },
    };
    let mut headers_ops = route_headers;
    let action = if let Some(redirect) = &http.redirect {
        Action::Redirect {
            scheme: redirect.scheme.clone(),
            host: redirect.authority.clone(),
            path: redirect.uri.clone().map(PathRewrite::Full),
            port: None,
            code: redirect.redirect_code,
        }
    } else {
        if http.route.is_empty() {
            return Err(TranslateError::NoRouteNorRedirect);
        }
        let mut destinations = destinations(cx, b, ns, http)?;
        if destinations.len() == 1 {
            // One destination: istiod applies its header operations at route level.
            let d = &mut destinations[0];
            headers_ops = headers_ops.merged(&d.headers);
            d.headers = HeaderOps::default();
        }
        Action::Route {
            destinations: destinations.into(),
            timeout,
            retry,
            host_rewrite: http.rewrite.as_ref().and_then(|r| r.authority.clone()),
            path_rewrite: http
                .rewrite
                .as_ref()
                .and_then(|r| r.uri.clone())
                .map(PathRewrite::Prefix),
            missing_cluster_500: false,
        }
    };
    let base = RouteIr {
        name: http.name.clone(),
        path: PathMatch::Prefix("/".to_string()),
        headers: Vec::new(),
        query: Vec::new(),
        action,
        headers_ops,
        metadata: Some(("istio", config_path.clone())),
    };
    if matches.is_empty() {
        return Ok(vec![base]);
    }
    matches
        .into_iter()
        .map(|m| matched(&base, m, http))
        .collect()
}

/// The weighted destinations of an `http` route's `route` list (weight 0 left out, a single
/// destination gets 100).
fn destinations(
    cx: &ObjectCx<'_>,
    b: &mut Backends<'_>,
    ns: &str,
    http: &crate::model::istio::HttpRoute,
) -> Result<Vec<WeightedDestination>, TranslateError> {
    let mut destinations = Vec::new();
    let single = http.route.len() == 1;
    for d in &http.route {
        let (sns, sname) = service_of_host(&d.destination.host, ns, &cx.opts.cluster_domain);
        if sns.is_empty() {
            return Err(TranslateError::ForeignHost(d.destination.host.clone()));
        }
        let port = d
            .destination
            .port
            .as_ref()
            .map(|p| IntOrString::Int(i64::from(p.number)));
        let cluster = b.cluster_for(&sns, &sname, port.as_ref(), false)?;
        let dh = request_headers(d.headers.as_ref());
        let weight = d.weight.unwrap_or(if single { 100 } else { 0 });
        if weight == 0 && !single {
            continue;
        }
        destinations.push(WeightedDestination {
            cluster,
            weight,
            headers: dh,
        });
    }
    if destinations.is_empty() {
        return Err(TranslateError::AllWeightsZero);
    }
    Ok(destinations)
}

/// The route of one match of an `http` route: the shared action, this match's path and header
/// matchers, and the `<route name>.<match name>` name.
fn matched(
    base: &RouteIr,
    m: &crate::model::istio::HttpMatchRequest,
    http: &crate::model::istio::HttpRoute,
) -> Result<RouteIr, TranslateError> {
    let mut r = base.clone();
    if let Some(uri) = &m.uri {
        r.path = if let Some(p) = &uri.exact {
            PathMatch::Exact(p.clone())
        } else if let Some(p) = &uri.prefix {
            PathMatch::Prefix(p.clone())
        } else if let Some(p) = &uri.regex {
            PathMatch::Regex(p.clone())
        } else {
            PathMatch::Prefix("/".to_string())
        };
    }
    let mut headers = Vec::new();
    if let Some(a) = &m.authority {
        headers.push(HeaderMatchIr {
            name: ":authority".to_string(),
            matcher: string_match(a).ok_or(TranslateError::EmptyAuthorityMatch)?,
        });
    }
    for (name, sm) in &m.headers {
        headers.push(HeaderMatchIr {
            name: name.to_ascii_lowercase(),
            matcher: string_match(sm)
                .ok_or_else(|| TranslateError::EmptyHeaderMatch(name.clone()))?,
        });
    }
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    r.headers = headers;
    if let (Some(rn), Some(mn)) = (&http.name, &m.name) {
        r.name = Some(format!("{rn}.{mn}"));
    }
    Ok(r)
}

/// Can a route's `:authority` matcher match requests for `host` (with or without a port)?
fn authority_admits(r: &RouteIr, host: &str) -> bool {
    if host.contains('*') {
        return true;
    }
    r.headers
        .iter()
        .filter(|h| h.name == ":authority")
        .all(|h| match &h.matcher {
            StringMatchIr::Exact(v) => {
                let v = v.to_ascii_lowercase();
                v == host
                    || v.strip_prefix(host)
                        .is_some_and(|rest| rest.starts_with(':'))
            }
            StringMatchIr::Prefix(p) => {
                let p = p.to_ascii_lowercase();
                host.starts_with(&p)
                    || p.strip_prefix(host)
                        .is_some_and(|rest| rest.starts_with(':'))
            }
            StringMatchIr::Regex(_) => true,
        })
}

fn string_match(m: &crate::model::istio::StringMatch) -> Option<StringMatchIr> {
    if let Some(v) = &m.exact {
        Some(StringMatchIr::Exact(v.clone()))
    } else if let Some(v) = &m.prefix {
        Some(StringMatchIr::Prefix(v.clone()))
    } else {
        m.regex.as_ref().map(|v| StringMatchIr::Regex(v.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(server_host_admits("*", "gw", "default", "a.example.com"));
        assert!(server_host_admits(
            "default/*.example.com",
            "gw",
            "default",
            "a.example.com"
        ));
        assert!(!server_host_admits(
            "other/*",
            "gw",
            "default",
            "a.example.com"
        ));
        assert_eq!(
            service_of_host(
                "my-service-00001-nex.default.svc.cluster.local",
                "x",
                "cluster.local"
            ),
            ("default".to_string(), "my-service-00001-nex".to_string())
        );
        assert_eq!(
            service_of_host("svc", "ns", "cluster.local"),
            ("ns".to_string(), "svc".to_string())
        );
    }
}
