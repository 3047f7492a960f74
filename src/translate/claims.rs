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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::diag::InputError;
use crate::model::{Kind, ObjectKey};
use crate::state::Inputs;

use super::error::TranslateError;
use super::fragment::Fragment;

/// (route configuration name, host).
pub(crate) type Slot = (String, String);
/// Full translation order: kind rank (VirtualService 0, KIngress 1, Route 2), creation, key.
pub(crate) type Order = (u8, String, ObjectKey);
/// Duplicate-host precedence (smallest wins): timestamped before not, oldest, then key.
pub(crate) type Precedence = (bool, String, ObjectKey);

fn creation(meta: &ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| format!("{:?}", t.0))
        .unwrap_or_default()
}

pub(crate) fn order(key: &ObjectKey, meta: &ObjectMeta) -> Order {
    let rank = match key.kind {
        Kind::VirtualService => 0,
        Kind::KIngress => 1,
        _ => 2,
    };
    (rank, creation(meta), key.clone())
}

pub(crate) fn precedence(key: &ObjectKey, meta: &ObjectMeta) -> Precedence {
    let age = creation(meta);
    (age.is_empty(), age, key.clone())
}

/// The outcome of the claims on one slot.
pub(crate) struct Claim<'a> {
    pub winner: Option<&'a Fragment>,
    pub errors: Vec<InputError>,
}

/// Decides who keeps `host` among the fragments claiming its slot, given in [`Order`]: the
/// first claimant holds it until one with a smaller [`Precedence`] comes; every loser is
/// reported, as the full translation reports it when it meets the claims in that order.
pub(crate) fn resolve<'a>(
    inputs: &Inputs,
    host: &str,
    claimants: impl IntoIterator<Item = &'a Fragment>,
) -> Claim<'a> {
    let mut winner: Option<&Fragment> = None;
    let mut errors = Vec::new();
    for f in claimants {
        let Some(o) = winner else {
            winner = Some(f);
            continue;
        };
        let host = host.to_string();
        if f.precedence < o.precedence {
            let e = TranslateError::ClaimedByOlder {
                host,
                by: f.key().clone(),
            };
            errors.push(e.against(inputs, o.key()));
            winner = Some(f);
        } else {
            let e = TranslateError::AlreadyClaimed {
                host,
                by: o.key().clone(),
            };
            errors.push(e.against(inputs, f.key()));
        }
    }
    Claim { winner, errors }
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
