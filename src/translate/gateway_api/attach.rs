//! The two rules about an HTTPRoute that translation, `validate` and the status writer share:
//! which listeners of our Gateways its parentRefs attach it to ([`parent_outcomes`], with the
//! spec's reason for each parentRef, and [`attached_routes`] per listener), and whether its
//! backendRefs resolve ([`backend`], [`unresolved_backends`], with the spec's `ResolvedRefs`
//! reasons). Pure: `Inputs` in, outcomes out.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::gateway_api::{self as api, HttpRouteSpec};
use crate::model::kingress::IntOrString;
use crate::model::{HttpRoute, Kind, Object, ObjectKey};
use crate::state::Inputs;

use super::super::backend::Backends;
use super::super::Options;
use super::{granted, is_gateway_ref, our_gateways};

/// The label every Namespace carries with its own name (set by the API server).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The `Accepted` reason of one parentRef (Gateway API `RouteConditionReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParentReason {
    Accepted,
    /// No listener it names lets routes of this namespace or kind attach.
    NotAllowedByListeners,
    /// The listeners allow it but none shares a hostname with it.
    NoMatchingListenerHostname,
    /// Its sectionName or port names no listener of the Gateway.
    NoMatchingParent,
}

impl ParentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ParentReason::Accepted => "Accepted",
            ParentReason::NotAllowedByListeners => "NotAllowedByListeners",
            ParentReason::NoMatchingListenerHostname => "NoMatchingListenerHostname",
            ParentReason::NoMatchingParent => "NoMatchingParent",
        }
    }
}

/// One listener a parentRef attached the route to, with the hostnames it serves there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub listener: String,
    pub hosts: Vec<String>,
}

/// What one parentRef naming a Gateway of ours comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentOutcome {
    /// Its index in `spec.parentRefs`.
    pub index: usize,
    /// The Gateway (`Kind::K8sGateway`).
    pub gateway: ObjectKey,
    /// Empty unless `reason` is `Accepted`.
    pub listeners: Vec<Attached>,
    pub reason: ParentReason,
    pub message: String,
}

/// Per parentRef of the route (`key`) that names a Gateway of ours (others are another
/// controller's business and get no outcome), where it attaches and why not.
pub fn parent_outcomes(
    inputs: &Inputs,
    opts: &Options,
    key: &ObjectKey,
    route: &HttpRouteSpec,
) -> Vec<ParentOutcome> {
    let mut out = Vec::new();
    for (index, p) in route.parent_refs.iter().enumerate() {
        if !is_gateway_ref(p) {
            continue;
        }
        let ns = p
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| key.namespace.clone());
        let Some((gw, spec)) =
            our_gateways(inputs, opts).find(|(k, _)| k.namespace == ns && k.name == p.name)
        else {
            continue;
        };
        out.push(one_parent(inputs, index, p, gw, spec, key, route));
    }
    out
}

fn one_parent(
    inputs: &Inputs,
    index: usize,
    p: &api::ParentRef,
    gw: &ObjectKey,
    spec: &api::GatewaySpec,
    key: &ObjectKey,
    route: &HttpRouteSpec,
) -> ParentOutcome {
    let outcome = |reason, message: String, listeners| ParentOutcome {
        index,
        gateway: gw.clone(),
        listeners,
        reason,
        message,
    };
    let named: Vec<&api::Listener> = spec
        .listeners
        .iter()
        .filter(|l| {
            p.section_name.as_deref().is_none_or(|n| n == l.name)
                && p.port.is_none_or(|port| port == l.port)
        })
        .collect();
    if named.is_empty() {
        let what = match (&p.section_name, p.port) {
            (Some(s), Some(port)) => format!("named {s:?} on port {port}"),
            (Some(s), None) => format!("named {s:?}"),
            (None, Some(port)) => format!("on port {port}"),
            (None, None) => "at all".to_string(),
        };
        return outcome(
            ParentReason::NoMatchingParent,
            format!(
                "Gateway {}/{} has no listener {what}",
                gw.namespace, gw.name
            ),
            Vec::new(),
        );
    }
    let mut attached = Vec::new();
    let mut refused = Vec::new();
    let mut hostname_only = false;
    for l in named {
        if let Err(why) = allowed(inputs, l, &gw.namespace, &key.namespace) {
            refused.push(format!(
                "listener {:?} of Gateway {}/{} {why}",
                l.name, gw.namespace, gw.name
            ));
            continue;
        }
        let hosts = hostnames(l.hostname.as_deref(), &route.hostnames);
        if hosts.is_empty() {
            hostname_only = true;
            refused.push(format!(
                "no hostname matches listener {:?} of Gateway {}/{} ({})",
                l.name,
                gw.namespace,
                gw.name,
                l.hostname.as_deref().unwrap_or("*")
            ));
            continue;
        }
        attached.push(Attached {
            listener: l.name.clone(),
            hosts,
        });
    }
    if !attached.is_empty() {
        let names: Vec<String> = attached
            .iter()
            .map(|a| format!("{:?}", a.listener))
            .collect();
        return outcome(
            ParentReason::Accepted,
            format!("attached to listener {}", names.join(", ")),
            attached,
        );
    }
    let reason = if hostname_only {
        ParentReason::NoMatchingListenerHostname
    } else {
        ParentReason::NotAllowedByListeners
    };
    outcome(reason, refused.join("; "), Vec::new())
}

/// Does a listener let an HTTPRoute of `route_ns` attach (the Gateway in `gw_ns`)? Its
/// protocol must carry HTTP routes, its `allowedRoutes.kinds` (when given) include HTTPRoute,
/// and its `allowedRoutes.namespaces` allow the namespace: `Same` (default), `All`, or
/// `Selector`, matched against the Namespace's labels (with `kubernetes.io/metadata.name`
/// always there, as the API server sets it, even when the Namespace object was not read).
/// `Err`: why not, worded to follow "listener X of Gateway Y".
fn allowed(inputs: &Inputs, l: &api::Listener, gw_ns: &str, route_ns: &str) -> Result<(), String> {
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") {
        return Err(format!(
            "has protocol {:?}, which does not carry HTTPRoutes",
            l.protocol
        ));
    }
    if let Some(kinds) = l.allowed_routes.as_ref().map(|a| &a.kinds) {
        if !kinds.is_empty() && !kinds.iter().any(super::is_http_route_kind) {
            return Err("does not allow the kind HTTPRoute (allowedRoutes.kinds)".to_string());
        }
    }
    let ns = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    let ok = match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => ns
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|sel| sel.matches(&namespace_labels(inputs, route_ns))),
        _ => gw_ns == route_ns,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("does not allow routes from namespace {route_ns}"))
    }
}

/// The labels of Namespace `name`: its object's, plus `kubernetes.io/metadata.name`.
fn namespace_labels(inputs: &Inputs, name: &str) -> BTreeMap<String, String> {
    // Cluster-scoped objects are keyed in namespace "default" (see `Object::key`).
    let mut labels = match inputs
        .get(Kind::Namespace, "default", name)
        .map(|e| &e.object)
    {
        Some(Object::Namespace(n)) => n.metadata.labels.clone().unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    labels
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

/// Per (Gateway, listener name): how many HTTPRoutes attached to it (`attachedRoutes`).
pub fn attached_routes(inputs: &Inputs, opts: &Options) -> BTreeMap<(ObjectKey, String), u32> {
    let mut out: BTreeMap<(ObjectKey, String), u32> = BTreeMap::new();
    for (key, e) in inputs.of_kind(Kind::HttpRoute) {
        let Object::HttpRoute(route) = &e.object else {
            continue;
        };
        let mut seen = BTreeSet::new();
        for o in parent_outcomes(inputs, opts, key, &route.spec) {
            for a in o.listeners {
                if seen.insert((o.gateway.clone(), a.listener.clone())) {
                    *out.entry((o.gateway.clone(), a.listener)).or_default() += 1;
                }
            }
        }
    }
    out
}

/// The `ResolvedRefs` reason of a backendRef that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefReason {
    /// In another namespace, and no ReferenceGrant there allows it.
    RefNotPermitted,
    /// No such Service, or no such port on it (or none given).
    BackendNotFound,
    /// Not a core Service.
    InvalidKind,
}

impl RefReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefReason::RefNotPermitted => "RefNotPermitted",
            RefReason::BackendNotFound => "BackendNotFound",
            RefReason::InvalidKind => "InvalidKind",
        }
    }
}

/// The cluster of a usable backendRef: a Service (core group) with a port, in the route's
/// namespace or one whose ReferenceGrant allows it. `Err`: why not (its share answers 500).
pub(crate) fn backend(
    inputs: &Inputs,
    b: &mut Backends<'_>,
    key: &ObjectKey,
    r: &api::HttpBackendRef,
) -> Result<String, (RefReason, String)> {
    if !r.group.as_deref().unwrap_or("").is_empty()
        || r.kind.as_deref().unwrap_or("Service") != "Service"
    {
        return Err((
            RefReason::InvalidKind,
            format!(
                "kind {:?} of group {:?} is not a Service",
                r.kind.as_deref().unwrap_or("Service"),
                r.group.as_deref().unwrap_or("")
            ),
        ));
    }
    let ns = r
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| key.namespace.clone());
    if !granted(inputs, "HTTPRoute", &key.namespace, "Service", &ns, &r.name) {
        return Err((
            RefReason::RefNotPermitted,
            format!(
                "Service {ns}/{} is in another namespace and no ReferenceGrant there allows it",
                r.name
            ),
        ));
    }
    let Some(port) = r.port else {
        return Err((
            RefReason::BackendNotFound,
            "no port (a Service backendRef needs one)".to_string(),
        ));
    };
    let port = IntOrString::Int(i64::from(port));
    b.cluster_for(&ns, &r.name, Some(&port), false)
        .map_err(|e| (RefReason::BackendNotFound, e.to_string()))
}

/// A backendRef that cannot be used (its share of the traffic answers 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub rule: usize,
    pub name: String,
    pub reason: RefReason,
    pub message: String,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {} backendRef {:?}: {}",
            self.rule, self.name, self.message
        )
    }
}

/// The backendRefs (of weight other than 0) of an HTTPRoute that cannot be used, in rule
/// order: `validate` reports them, the status writer sets `ResolvedRefs` from them, and
/// translation serves the rest.
pub fn unresolved_backends(
    inputs: &Inputs,
    opts: &Options,
    key: &ObjectKey,
    route: &HttpRoute,
) -> Vec<Unresolved> {
    let mut b = Backends::new(inputs, opts);
    let mut out = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        for r in rule.backend_refs.iter().filter(|r| r.weight != Some(0)) {
            if let Err((reason, message)) = backend(inputs, &mut b, key, r) {
                out.push(Unresolved {
                    rule: ri,
                    name: r.name.clone(),
                    reason,
                    message,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
