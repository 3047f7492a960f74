//! Gateway API status, pure: what the status of our GatewayClasses, Gateways and HTTPRoutes
//! should be (the writer is `gateway_api_write.rs`). Only objects of our controller
//! (`--gateway-controller`) get any: GatewayClasses with our `controllerName`, Gateways of such
//! a class, and, on an HTTPRoute, the `status.parents` entries for parentRefs naming one of
//! those Gateways (entries of other controllers are kept as they are).
//!
//! - GatewayClass: `Accepted` True.
//! - Gateway: `Accepted` (True while some listener is valid; reason `ListenersNotValid` when
//!   some are not), `Programmed` True only once every connected Envoy of the Gateway (pods
//!   labelled `gateway.networking.k8s.io/gateway-name: <name>`, on every replica) has ACKed the
//!   hub generation that first carried the Gateway's current spec (no Envoy connected: False,
//!   `Pending`, saying so); `addresses` from the Services in the Gateway's namespace selecting
//!   those pods (load balancer ingress IPs and hostnames, else the cluster IP); per listener
//!   `supportedKinds`, `attachedRoutes` and `Accepted` / `ResolvedRefs` / `Programmed`.
//! - HTTPRoute: one `parents` entry per parentRef naming a Gateway of ours, `Accepted` (the
//!   attachment rule's reason, [`attach::parent_outcomes`], or `UnsupportedValue` when
//!   translation left the route out) and `ResolvedRefs` (the backendRef rule's first reason,
//!   [`attach::unresolved_backends`]).
//!
//! Every condition carries the object's `observedGeneration`, and keeps its
//! `lastTransitionTime` while its status stays the same, so an unchanged situation computes
//! the current status again and no write is made ([`needs_write`]).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::GatewayProgress;
use crate::model::gateway_api::{self as api, GATEWAY_NAME_LABEL, GROUP};
use crate::model::{HttpRoute, Kind, Object, ObjectKey};
use crate::state::Inputs;
use crate::translate::gateway_api::attach::{self, ParentReason};
use crate::translate::gateway_api::{granted, is_http_route_kind, listener_problem};
use crate::translate::Options;

/// The key a Gateway's progress has in a replica's [`super::ProgressMap`] (KIngresses are
/// `ns/name`, so the two never meet).
pub fn progress_key(gw: &ObjectKey) -> String {
    format!("{GROUP}/Gateway/{}/{}", gw.namespace, gw.name)
}

/// What the writer knows about one Gateway of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFacts {
    /// Its Envoys' progress with the generation that first carried its spec, all replicas'.
    pub progress: GatewayProgress,
    /// Other replicas that keep it from being Programmed (not reachable, not there yet).
    pub replicas_waiting: Vec<String>,
}

/// One condition with `observedGeneration`; `lastTransitionTime` kept from `previous` while
/// the status is the same (KIngress's rule, [`super::condition`]).
fn cond(
    previous: &[Value],
    now: &str,
    generation: Option<i64>,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    let mut c = super::condition(previous, now, kind, status, Some(reason), Some(message));
    if let Some(g) = generation {
        c["observedGeneration"] = g.into();
    }
    c
}

fn conditions_of(v: Option<&Value>) -> Vec<Value> {
    v.and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Does the current status differ from the desired one in a field we own (every top-level
/// field of `desired`)? Fields others own are not compared (nor written).
pub fn needs_write(current: Option<&Value>, desired: &Value) -> bool {
    let Some(d) = desired.as_object() else {
        return false;
    };
    d.iter()
        .any(|(k, v)| current.and_then(|c| c.get(k)) != Some(v))
}

/// The status of a GatewayClass of ours.
pub fn gateway_class_status(current: Option<&Value>, generation: Option<i64>, now: &str) -> Value {
    let previous = conditions_of(current);
    json!({"conditions": [cond(&previous, now, generation, "Accepted", true, "Accepted",
        "handled by knative-pilot")]})
}

/// The `(Accepted, ResolvedRefs)` of one listener: (ok, reason, message) each.
type ListenerConds = ((bool, &'static str, String), (bool, &'static str, String));

/// Why a listener is not served, as the spec's listener conditions. The message is the one
/// translation files against the Gateway (`listener_problem`); the reason is picked from the
/// listener's fields.
fn listener_conditions(inputs: &Inputs, gw: &ObjectKey, l: &api::Listener) -> ListenerConds {
    let ok = |reason: &'static str| (true, reason, String::new());
    let mut accepted = ok("Accepted");
    let mut resolved = ok("ResolvedRefs");
    let mut problem = listener_problem(inputs, gw, l);
    if problem.is_none() && l.protocol == "HTTPS" {
        // Served (SDS waits for the Secret), but the spec wants a missing Secret reported.
        problem = l
            .tls
            .iter()
            .flat_map(|t| &t.certificate_refs)
            .find_map(|c| {
                let ns = c
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&gw.namespace);
                inputs.get(Kind::Secret, ns, &c.name).is_none().then(|| {
                    format!(
                        "listener {:?}: certificateRef Secret {ns}/{} not found",
                        l.name, c.name
                    )
                })
            });
    }
    let Some(why) = problem else {
        return (accepted, resolved);
    };
    let kinds_ok = l
        .allowed_routes
        .as_ref()
        .is_none_or(|a| a.kinds.is_empty() || a.kinds.iter().any(is_http_route_kind));
    let tls = l.tls.as_ref();
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") {
        accepted = (false, "UnsupportedProtocol", why);
    } else if !kinds_ok {
        resolved = (false, "InvalidRouteKinds", why);
    } else if tls
        .and_then(|t| t.mode.as_deref())
        .is_some_and(|m| m != "Terminate")
    {
        accepted = (false, "UnsupportedValue", why);
    } else if tls.is_some_and(|t| {
        t.certificate_refs.iter().any(|c| {
            let ns = c
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(&gw.namespace);
            !granted(inputs, "Gateway", &gw.namespace, "Secret", ns, &c.name)
        })
    }) {
        resolved = (false, "RefNotPermitted", why);
    } else {
        resolved = (false, "InvalidCertificateRef", why);
    }
    (accepted, resolved)
}

/// The addresses of a Gateway: of the Services in its namespace whose selector picks its pods
/// (`gateway.networking.k8s.io/gateway-name: <name>`), in name order, the load balancer's
/// ingress IPs and hostnames, else the cluster IP.
pub fn gateway_addresses(inputs: &Inputs, gw: &ObjectKey) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for (k, e) in inputs.of_kind(Kind::Service) {
        let Object::Service(svc) = &e.object else {
            continue;
        };
        let spec = svc.spec.as_ref();
        let selects = spec
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(GATEWAY_NAME_LABEL))
            == Some(&gw.name);
        if k.namespace != gw.namespace || !selects {
            continue;
        }
        let mut these: Vec<Value> = Vec::new();
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for i in ingress.into_iter().flatten() {
            if let Some(ip) = i.ip.as_deref().filter(|v| !v.is_empty()) {
                these.push(json!({"type": "IPAddress", "value": ip}));
            } else if let Some(h) = i.hostname.as_deref().filter(|v| !v.is_empty()) {
                these.push(json!({"type": "Hostname", "value": h}));
            }
        }
        if these.is_empty() {
            if let Some(ip) = spec
                .and_then(|s| s.cluster_ip.as_deref())
                .filter(|ip| !ip.is_empty() && *ip != "None")
            {
                these.push(json!({"type": "IPAddress", "value": ip}));
            }
        }
        for a in these {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Whether the Gateway's Envoys have it: (programmed, reason, message).
fn programmed(gw: &ObjectKey, facts: &GatewayFacts) -> (bool, &'static str, String) {
    let p = &facts.progress;
    let mut waiting = Vec::new();
    if p.connected == 0 {
        waiting.push(format!(
            "no Envoy of Gateway {}/{} is connected (pods labelled {GATEWAY_NAME_LABEL}: {})",
            gw.namespace, gw.name, gw.name
        ));
    } else if p.acked < p.connected {
        waiting.push(format!(
            "{} of {} Envoys of Gateway {}/{} have ACKed the config carrying it",
            p.acked, p.connected, gw.namespace, gw.name
        ));
    }
    waiting.extend(facts.replicas_waiting.iter().cloned());
    if waiting.is_empty() {
        (
            true,
            "Programmed",
            "every connected Envoy has ACKed the config carrying this spec".to_string(),
        )
    } else {
        (false, "Pending", waiting.join("; "))
    }
}

/// The status a Gateway of ours should have. `attached`: [`attach::attached_routes`].
#[allow(clippy::too_many_arguments)]
pub fn gateway_status(
    inputs: &Inputs,
    key: &ObjectKey,
    spec: &api::GatewaySpec,
    generation: Option<i64>,
    current: Option<&Value>,
    facts: &GatewayFacts,
    attached: &BTreeMap<(ObjectKey, String), u32>,
    now: &str,
) -> Value {
    let (prog, prog_reason, prog_msg) = programmed(key, facts);
    let current_listeners: Vec<Value> = current
        .and_then(|c| c.get("listeners"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut listeners = Vec::new();
    let mut valid = 0;
    for l in &spec.listeners {
        let previous = conditions_of(
            current_listeners
                .iter()
                .find(|c| c["name"] == l.name.as_str()),
        );
        let c = |kind: &str, ok: bool, reason: &str, msg: &str| {
            cond(&previous, now, generation, kind, ok, reason, msg)
        };
        let (acc, res) = listener_conditions(inputs, key, l);
        let served = acc.0 && res.0;
        valid += usize::from(served);
        let kinds =
            if matches!(l.protocol.as_str(), "HTTP" | "HTTPS") && res.1 != "InvalidRouteKinds" {
                json!([{"group": GROUP, "kind": "HTTPRoute"}])
            } else {
                json!([])
            };
        let programmed = if served {
            c("Programmed", prog, prog_reason, &prog_msg)
        } else {
            c("Programmed", false, "Invalid", "the listener is not served")
        };
        listeners.push(json!({
            "name": l.name,
            "supportedKinds": kinds,
            "attachedRoutes": attached.get(&(key.clone(), l.name.clone())).copied().unwrap_or(0),
            "conditions": [
                c("Accepted", acc.0, acc.1, &acc.2),
                c("ResolvedRefs", res.0, res.1, &res.2),
                programmed,
            ],
        }));
    }
    let previous = conditions_of(current);
    let c = |kind: &str, ok: bool, reason: &str, msg: &str| {
        cond(&previous, now, generation, kind, ok, reason, msg)
    };
    let accepted = if valid == spec.listeners.len() && valid > 0 {
        c("Accepted", true, "Accepted", "")
    } else if valid > 0 {
        c(
            "Accepted",
            true,
            "ListenersNotValid",
            "some listeners are not served",
        )
    } else {
        c(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener can be served",
        )
    };
    let programmed = if valid > 0 {
        c("Programmed", prog, prog_reason, &prog_msg)
    } else {
        c("Programmed", false, "Invalid", "no listener can be served")
    };
    json!({
        "addresses": gateway_addresses(inputs, key),
        "conditions": [accepted, programmed],
        "listeners": listeners,
    })
}

/// The `status.parents` an HTTPRoute should have: the entries of other controllers as they
/// are, then ours, one per parentRef naming a Gateway of ours, in parentRef order. `None`
/// when it has none of ours and had none (nothing to write). `route_error`: why translation
/// left it out, if it did for a reason other than attachment.
pub fn http_route_status(
    inputs: &Inputs,
    opts: &Options,
    key: &ObjectKey,
    route: &HttpRoute,
    route_error: Option<&str>,
    current: Option<&Value>,
    now: &str,
) -> Option<Value> {
    let ours = |p: &Value| p["controllerName"] == opts.gateway_controller.as_str();
    let existing: Vec<Value> = current
        .and_then(|c| c.get("parents"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let outcomes = attach::parent_outcomes(inputs, opts, key, &route.spec);
    if outcomes.is_empty() && !existing.iter().any(ours) {
        return None;
    }
    let generation = route.metadata.generation;
    let unresolved = attach::unresolved_backends(inputs, opts, key, route);
    let (res_ok, res_reason, res_msg) = match unresolved.first() {
        None => (true, "ResolvedRefs", String::new()),
        Some(u) => {
            let all: Vec<String> = unresolved.iter().map(|u| u.to_string()).collect();
            (false, u.reason.as_str(), all.join("; "))
        }
    };
    let mut parents: Vec<Value> = existing.iter().filter(|p| !ours(p)).cloned().collect();
    for o in outcomes {
        let parent_ref = route
            .spec
            .parent_refs
            .get(o.index)
            .and_then(|p| serde_json::to_value(p).ok())
            .unwrap_or_default();
        let previous = conditions_of(
            existing
                .iter()
                .find(|p| ours(p) && p["parentRef"] == parent_ref),
        );
        let c = |kind: &str, ok: bool, reason: &str, msg: &str| {
            cond(&previous, now, generation, kind, ok, reason, msg)
        };
        let accepted = match (o.reason, route_error) {
            (ParentReason::Accepted, Some(e)) => c("Accepted", false, "UnsupportedValue", e),
            (r, _) => c(
                "Accepted",
                r == ParentReason::Accepted,
                r.as_str(),
                &o.message,
            ),
        };
        parents.push(json!({
            "parentRef": parent_ref,
            "controllerName": opts.gateway_controller,
            "conditions": [accepted, c("ResolvedRefs", res_ok, res_reason, &res_msg)],
        }));
    }
    Some(json!({ "parents": parents }))
}

#[cfg(test)]
mod tests;
