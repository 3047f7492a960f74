//! Claims: which object's routes are served where two objects describe the same traffic. One
//! implementation for the full translation and the incremental engine (which only indexes the
//! candidates):
//!
//! - **Route precedence** ([`route_is_shadowed`]): a Route, its KIngress and its VirtualServices
//!   describe the same traffic; VirtualServices are always translated, a KIngress when it is
//!   ours, and a Route only when neither a KIngress of its name nor a VirtualService labelled for
//!   it (or for its KIngress) exists.
//! - **Duplicate hosts** ([`resolve`]): when two objects claim the same host on the same route
//!   configuration, the oldest object (creationTimestamp, objects without one last, then
//!   kind/ns/name) keeps it and the other is reported and left out for that host. Claims are
//!   replayed in the full translation's order (VirtualServices, KIngresses, Routes, each oldest
//!   first), so the messages are the same however the claimants arrived.
//! - **HTTPRoutes merge** (the Gateway API's rule, conformance `MatchingAcrossRoutes`): the
//!   HTTPRoutes claiming one host share it, their rules in one virtual host ordered by the
//!   spec's precedence across routes ([`http_route::merge_across_routes`]), with the rules of
//!   the HTTPRoutes of the wildcard hosts covering it ([`covering_hosts`]); together they are
//!   one claimant, as old as the oldest of them, against other kinds.

use std::cmp::Reverse;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::diag::InputError;
use crate::model::{Kind, ObjectKey};
use crate::state::Inputs;

use super::error::TranslateError;
use super::fragment::Fragment;
use super::gateway_api::http_route;
use super::ir::VirtualHostIr;

/// A route configuration's name or a host, shared by every index that holds it: a slot's
/// route and host are each one allocation however many maps key on them.
pub(crate) type Name = Arc<str>;
/// (route configuration name, host).
pub(crate) type Slot = (Name, Name);
/// Full translation order: kind rank (VirtualService 0, KIngress 1, Route 2), creation, key.
/// The creation time and the key are shared with the object's [`Precedence`] (one copy per
/// object however many slots it claims: each slot's claimants hold its `Order`).
pub(crate) type Order = (u8, Arc<str>, Arc<ObjectKey>);
/// Duplicate-host precedence (smallest wins): timestamped before not, oldest, then key.
pub(crate) type Precedence = (bool, Arc<str>, Arc<ObjectKey>);

fn creation(meta: &ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| format!("{:?}", t.0))
        .unwrap_or_default()
}

pub(crate) fn precedence(key: &ObjectKey, meta: &ObjectMeta) -> Precedence {
    order_and_precedence(key, meta).1
}

/// An object's translation [`Order`] and duplicate-host [`Precedence`], sharing its creation
/// time and key.
pub(crate) fn order_and_precedence(key: &ObjectKey, meta: &ObjectMeta) -> (Order, Precedence) {
    let rank = match key.kind {
        Kind::VirtualService => 0,
        Kind::KIngress => 1,
        _ => 2,
    };
    let age: Arc<str> = creation(meta).into();
    let key = Arc::new(key.clone());
    ((rank, age.clone(), key.clone()), (age.is_empty(), age, key))
}

/// The outcome of the claims on one slot.
pub(crate) struct Claim {
    /// The virtual host served there: the winner's (several HTTPRoutes' merged).
    pub vhost: Option<Arc<VirtualHostIr>>,
    /// The objects whose routes it holds.
    pub owners: Vec<ObjectKey>,
    pub errors: Vec<InputError>,
}

/// The wildcard hosts whose HTTPRoutes' rules also apply to `host` on the same route
/// configuration (a request for `example.com` is matched by the rules of the HTTPRoutes for
/// `*.com` and `*` too, conformance `MatchingAcrossRoutes`; Envoy would otherwise only look at
/// the most specific virtual host): the more specific first.
pub(crate) fn covering_hosts(host: &str) -> Vec<String> {
    if host == "*" {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut rest = host.strip_prefix("*.").unwrap_or(host);
    while let Some((_, suffix)) = rest.split_once('.') {
        out.push(format!("*.{suffix}"));
        rest = suffix;
    }
    out.push("*".to_string());
    out
}

/// Whether wildcard host `wild` is one of [`covering_hosts`]`(host)`.
pub(crate) fn covers(wild: &str, host: &str) -> bool {
    match wild.strip_prefix('*') {
        Some("") => host != "*",
        Some(suffix) => suffix.starts_with('.') && host != wild && host.ends_with(suffix),
        None => false,
    }
}

/// The Gateway API's precedence between HTTPRoutes by the hostname they match with (smallest
/// first): the most characters in a matching non-wildcard hostname, then in the hostname.
fn host_specificity(host: &str) -> (Reverse<usize>, Reverse<usize>) {
    let exact = if host.contains('*') { 0 } else { host.len() };
    (Reverse(exact), Reverse(host.len()))
}

/// Decides what serves `slot` among the fragments claiming it, given in [`Order`]: the first
/// claimant holds it until one with a smaller [`Precedence`] comes; every loser is reported,
/// as the full translation reports it when it meets the claims in that order. The HTTPRoutes
/// among them are one claimant (at the first one's place, with the oldest one's precedence
/// and key) whose virtual host merges all of theirs and those of the HTTPRoutes claiming a
/// covering wildcard host (`covering`: (host, fragment), see [`covering_hosts`]).
pub(crate) fn resolve<'a>(
    inputs: &Inputs,
    slot: &Slot,
    claimants: impl IntoIterator<Item = &'a Fragment>,
    covering: impl IntoIterator<Item = (&'a str, &'a Fragment)>,
) -> Claim {
    let claimants: Vec<&Fragment> = claimants.into_iter().collect();
    let mut routes: Vec<&Fragment> = claimants
        .iter()
        .copied()
        .filter(|f| f.key().kind == Kind::HttpRoute)
        .collect();
    routes.sort_by(|a, b| a.precedence.cmp(&b.precedence));
    let mut winner: Option<&[&Fragment]> = None;
    let mut errors = Vec::new();
    let mut routes_seen = false;
    for f in &claimants {
        let candidate: &[&Fragment] = if f.key().kind == Kind::HttpRoute {
            if routes_seen {
                continue;
            }
            routes_seen = true;
            &routes
        } else {
            std::slice::from_ref(f)
        };
        let Some(held) = winner else {
            winner = Some(candidate);
            continue;
        };
        let host = slot.1.to_string();
        if candidate[0].precedence < held[0].precedence {
            for o in held {
                let e = TranslateError::ClaimedByOlder {
                    host: host.clone(),
                    by: candidate[0].key().clone(),
                };
                errors.push(e.against(inputs, o.key()));
            }
            winner = Some(candidate);
        } else {
            for l in candidate {
                let e = TranslateError::AlreadyClaimed {
                    host: host.clone(),
                    by: held[0].key().clone(),
                };
                errors.push(e.against(inputs, l.key()));
            }
        }
    }
    let winner = winner.unwrap_or_default();
    let is_routes = winner
        .first()
        .is_some_and(|f| f.key().kind == Kind::HttpRoute);
    let mut group: Vec<(&str, &Fragment)> = winner.iter().map(|f| (&*slot.1, *f)).collect();
    if is_routes {
        for (host, f) in covering {
            if f.key().kind == Kind::HttpRoute {
                group.push((host, f));
            }
        }
    }
    let vhost = match &group[..] {
        [] => None,
        [(_, one)] => one.vhosts.get(slot).cloned(),
        _ => {
            group.sort_by(|a, b| {
                (host_specificity(a.0), &a.1.precedence)
                    .cmp(&(host_specificity(b.0), &b.1.precedence))
            });
            let vhs: Vec<&VirtualHostIr> = group
                .iter()
                .filter_map(|(h, f)| f.vhosts.get(&(slot.0.clone(), Name::from(*h))))
                .map(|v| &**v)
                .collect();
            Some(Arc::new(http_route::merge_across_routes(&slot.1, &vhs)))
        }
    };
    Claim {
        vhost,
        owners: group.iter().map(|(_, f)| f.key().clone()).collect(),
        errors,
    }
}

/// The labels that tie a VirtualService to a Route: `serving.knative.dev/route` (with an
/// optional `serving.knative.dev/routeNamespace`) and `networking.internal.knative.dev/ingress`
/// (a KIngress of the Route's name in the VirtualService's namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RouteLabels {
    pub route: Option<(String, Option<String>)>,
    pub ingress: Option<String>,
}

impl RouteLabels {
    pub fn of(meta: &ObjectMeta) -> RouteLabels {
        let Some(labels) = meta.labels.as_ref() else {
            return RouteLabels::default();
        };
        RouteLabels {
            route: labels.get("serving.knative.dev/route").map(|r| {
                (
                    r.clone(),
                    labels.get("serving.knative.dev/routeNamespace").cloned(),
                )
            }),
            ingress: labels
                .get("networking.internal.knative.dev/ingress")
                .cloned(),
        }
    }

    /// Does a VirtualService in namespace `vs_ns` with these labels describe `route`'s traffic?
    pub fn describe(&self, vs_ns: &str, route: &ObjectKey) -> bool {
        let by_route = self.route.as_ref().is_some_and(|(name, ns)| {
            name == &route.name && ns.as_ref().is_none_or(|ns| ns == &route.namespace)
        });
        let by_ingress = vs_ns == route.namespace && self.ingress.as_ref() == Some(&route.name);
        by_route || by_ingress
    }
}

/// A Route is shadowed (not translated itself) when a KIngress of its name exists, or one of
/// the VirtualServices (namespace, labels) describes it.
pub(crate) fn route_is_shadowed<'a>(
    kingress_exists: bool,
    mut virtual_services: impl Iterator<Item = (&'a str, RouteLabels)>,
    route: &ObjectKey,
) -> bool {
    kingress_exists || virtual_services.any(|(ns, labels)| labels.describe(ns, route))
}

#[cfg(test)]
mod tests {
    use super::{covering_hosts, covers};

    #[test]
    fn wildcard_hosts_cover_the_hosts_under_them() {
        assert_eq!(
            covering_hosts("a.example.com"),
            ["*.example.com", "*.com", "*"]
        );
        assert_eq!(covering_hosts("*.example.com"), ["*.com", "*"]);
        assert_eq!(covering_hosts("localhost"), ["*"]);
        assert!(covering_hosts("*").is_empty());
        for host in ["a.example.com", "*.example.com", "example.com", "*", "x"] {
            for wild in [
                "*",
                "*.com",
                "*.example.com",
                "*.a.example.com",
                "*.other.org",
            ] {
                assert_eq!(
                    covers(wild, host),
                    covering_hosts(host).iter().any(|h| h == wild),
                    "{wild} over {host}"
                );
            }
        }
    }
}
