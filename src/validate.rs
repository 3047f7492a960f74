//! `knative-pilot validate`: find the mistakes in a set of objects before the gateways do, like
//! `istioctl analyze`.
//!
//! [`validate`] takes [`Inputs`] (from any source) and the source's load errors, and returns
//! [`Finding`]s sorted by object, each with a severity, a code, the object (kind ns/name) and
//! where it came from (file and document), the problem, and a one-line fix. It reuses what the
//! translator already detects (it is run for every gateway) and adds analyzers for what the
//! translator accepts silently:
//!
//! | code | severity | source |
//! |---|---|---|
//! | `parse` | error | a file or document that does not load |
//! | `duplicate-host` | error | translator: a host claimed by two objects on one route config |
//! | `split-percent` | error | translator: splits of a path not summing to 100 |
//! | `missing-service` / `missing-port` | error | translator: backend Service or port not found |
//! | `tls-secret-missing` / `tls-secret-invalid` | error | translator: TLS Secret not found or not a tls.crt/tls.key pair |
//! | `unknown-gateway` | error | analyzer: VirtualService `spec.gateways` naming no Gateway |
//! | `no-local-gateway` | error | analyzer: a KIngress of ours with ClusterLocal rules while the local gateway (`--local-gateway`, or the well-known name found) does not exist: its cluster-local hosts are served nowhere |
//! | `envoy-rejects` | error | translator (`translate::check`): a value Envoy would reject (header names and values, RE2 regexes and their program size, hosts, rewrites, durations, weights): the object is left out, so Envoy never rejects the route configuration it shares with every other host |
//! | `no-ready-endpoints` | warning | analyzer: a Service traffic is routed to has no ready endpoint (503s) |
//! | `foreign-class` | warning | analyzer: a KIngress of another class that nothing translates |
//! | `invalid` | error | any other object the translator leaves out |

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::diag::{ErrorCode, InputError, Origin};
use crate::model::{Kind, Object, ObjectKey};
use crate::state::Inputs;
use crate::translate::{self, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for Finding {
    /// `error[code] Kind ns/name (file document N): message` and `    fix: ...` on the next line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}] ", self.severity.as_str(), self.code)?;
        match (&self.object, &self.origin) {
            (Some(o), Some(src)) => write!(f, "{o} ({src}): ")?,
            (Some(o), None) => write!(f, "{o}: ")?,
            (None, Some(src)) => write!(f, "{src}: ")?,
            (None, None) => {}
        }
        write!(f, "{}\n    fix: {}", self.message, self.fix)
    }
}

/// The finding code and fix of a translator or loader error, by its code.
fn classify(e: &InputError) -> (&'static str, String) {
    let fix = match e.code {
        ErrorCode::Parse => {
            "fix the document as the message says (YAML syntax at the position given, \
             apiVersion and kind), or move the file out of the directory"
        }
        ErrorCode::DuplicateHost => {
            "serve each host from one object: remove it from one of them or delete the duplicate"
        }
        ErrorCode::SplitPercent => "make the split percents of that path add up to 100",
        ErrorCode::TlsSecretMissing => {
            "create that kubernetes.io/tls Secret, or correct the secret / credential name"
        }
        ErrorCode::TlsSecretInvalid => "put both tls.crt and tls.key (PEM) in the Secret's data",
        ErrorCode::MissingService => {
            "create the Service, or correct the service name and namespace"
        }
        ErrorCode::MissingPort => {
            "use a port the Service has (number or name), or add the port to the Service"
        }
        ErrorCode::EnvoyRejects => {
            "correct the value the message quotes (Envoy would reject the route configuration \
             it shares with every other host); until then the object is left out"
        }
        ErrorCode::Invalid => "correct the object as the message says; until then it is left out",
        ErrorCode::RejectedByEnvoy => {
            "correct the object as Envoy's message says; it is tried again when it changes"
        }
    };
    (e.code.as_str(), fix.to_string())
}

/// Every problem in `inputs` (plus the source's `load_errors`), sorted, errors first per object.
pub fn validate(inputs: &Inputs, load_errors: &[InputError], opts: &Options) -> Vec<Finding> {
    let mut out: BTreeSet<Finding> = BTreeSet::new();
    out.extend(load_errors.iter().map(|e| {
        let (code, fix) = classify(e);
        Finding {
            severity: Severity::Error,
            code,
            object: e.object.clone(),
            origin: e.origin.clone(),
            message: e.message.clone(),
            fix,
        }
    }));
    let gateways = translate::gateways(inputs, opts);
    let empty_services = translator_errors(inputs, opts, &gateways, &mut out);
    no_ready_endpoints(inputs, empty_services, &mut out);
    unknown_gateways(inputs, &gateways, &mut out);
    missing_local_gateway(inputs, opts, &gateways, &mut out);
    foreign_classes(inputs, opts, &mut out);
    unusable_backend_refs(inputs, opts, &mut out);
    foreign_parents(inputs, opts, &mut out);
    refused_parents(inputs, opts, &mut out);
    let mut v: Vec<Finding> = out.into_iter().collect();
    v.sort_by(|a, b| {
        (&a.object, &a.origin, a.severity, a.code, &a.message)
            .cmp(&(&b.object, &b.origin, b.severity, b.code, &b.message))
    });
    v
}

fn origin_of(inputs: &Inputs, k: &ObjectKey) -> Option<Origin> {
    inputs
        .get(k.kind, &k.namespace, &k.name)
        .and_then(|e| e.origin.clone())
}

/// What the translator detects, for every gateway (classified by code; a TLS error of a server
/// made for a KIngress names the KIngress). Returns the Services traffic is routed to that have
/// no ready endpoint.
fn translator_errors(
    inputs: &Inputs,
    opts: &Options,
    gateways: &[translate::GatewayInfo],
    out: &mut BTreeSet<Finding>,
) -> BTreeSet<(String, String)> {
    let mut empty_services: BTreeSet<(String, String)> = BTreeSet::new();
    let mut label_sets: BTreeSet<BTreeMap<String, String>> = BTreeSet::new();
    for g in gateways {
        if let Some(labels) = translate::pod_labels(inputs, opts, &g.id()) {
            label_sets.insert(labels);
        }
    }
    for labels in &label_sets {
        let t = translate::translate(inputs, opts, labels);
        for e in &t.errors {
            let (code, fix) = classify(e);
            let owners = if matches!(
                e.code,
                ErrorCode::TlsSecretMissing | ErrorCode::TlsSecretInvalid
            ) {
                kingresses_with_secret(inputs, e)
            } else {
                Vec::new()
            };
            if owners.is_empty() {
                out.insert(Finding {
                    severity: Severity::Error,
                    code,
                    object: e.object.clone(),
                    origin: e.origin.clone(),
                    message: e.message.clone(),
                    fix: fix.clone(),
                });
            }
            // A KIngress's TLS is served through a gateway server made for it: name the KIngress.
            for owner in owners {
                let via = e.object.as_ref().map(|g| format!(" (served through {g})"));
                out.insert(Finding {
                    severity: Severity::Error,
                    code,
                    origin: origin_of(inputs, &owner),
                    object: Some(owner),
                    message: format!("{}{}", e.message, via.unwrap_or_default()),
                    fix: fix.clone(),
                });
            }
        }
        for cla in &t.config.endpoints {
            let ready = cla.endpoints.iter().any(|l| !l.lb_endpoints.is_empty());
            if !ready {
                if let Some(svc) = service_of_cluster(&cla.cluster_name, &opts.cluster_domain) {
                    empty_services.insert(svc);
                }
            }
        }
    }
    empty_services
}

/// Services traffic is routed to with no ready endpoint (requests get 503).
fn no_ready_endpoints(
    inputs: &Inputs,
    empty_services: BTreeSet<(String, String)>,
    out: &mut BTreeSet<Finding>,
) {
    for (ns, name) in empty_services {
        let key = ObjectKey {
            kind: Kind::Service,
            namespace: ns.clone(),
            name: name.clone(),
        };
        out.insert(Finding {
            severity: Severity::Warning,
            code: "no-ready-endpoints",
            origin: origin_of(inputs, &key),
            object: Some(key),
            message: format!(
                "traffic is routed to Service {ns}/{name}, which has no ready endpoint: requests \
                 get 503"
            ),
            fix: format!(
                "make the pods behind {ns}/{name} Ready (see its Endpoints/EndpointSlices), or \
                 route the traffic elsewhere"
            ),
        });
    }
}

/// VirtualServices naming a Gateway that does not exist.
fn unknown_gateways(
    inputs: &Inputs,
    gateways: &[translate::GatewayInfo],
    out: &mut BTreeSet<Finding>,
) {
    let known: BTreeSet<String> = gateways.iter().map(|g| g.id()).collect();
    for (key, e) in inputs.of_kind(Kind::VirtualService) {
        let Object::VirtualService(vs) = &e.object else {
            continue;
        };
        for g in &vs.spec.gateways {
            if g == "mesh" {
                continue;
            }
            let id = if g.contains('/') {
                g.clone()
            } else {
                format!("{}/{g}", key.namespace)
            };
            if !known.contains(&id) {
                let list: Vec<&str> = known.iter().map(String::as_str).collect();
                out.insert(Finding {
                    severity: Severity::Error,
                    code: "unknown-gateway",
                    object: Some(key.clone()),
                    origin: e.origin.clone(),
                    message: format!(
                        "spec.gateways names Gateway {id}, which does not exist (known: {})",
                        list.join(", ")
                    ),
                    fix: format!("create Gateway {id}, or name one of the known gateways"),
                });
            }
        }
    }
}

/// KIngresses of ours with ClusterLocal rules when the local gateway does not exist (e.g.
/// `--local-gateway` naming net-istio's old `cluster-local-gateway` in a cluster that has only
/// `knative-local-gateway`).
fn missing_local_gateway(
    inputs: &Inputs,
    opts: &Options,
    gateways: &[translate::GatewayInfo],
    out: &mut BTreeSet<Finding>,
) {
    let local = opts.local_gateway(inputs);
    if gateways.iter().any(|g| g.id() == local) {
        return;
    }
    let known: Vec<String> = gateways.iter().map(|g| g.id()).collect();
    for (key, e) in inputs.of_kind(Kind::KIngress) {
        let Object::KIngress(ing) = &e.object else {
            continue;
        };
        if !translate::ownership::is_ours(inputs, &ing.metadata, &opts.ingress_class) {
            continue;
        }
        let local_rules = ing
            .spec
            .rules
            .iter()
            .filter(|r| r.visibility.as_deref() == Some("ClusterLocal"))
            .count();
        if local_rules == 0 {
            continue;
        }
        out.insert(Finding {
            severity: Severity::Error,
            code: "no-local-gateway",
            object: Some(key.clone()),
            origin: e.origin.clone(),
            message: format!(
                "{local_rules} ClusterLocal rule(s), but the local gateway {local} does not exist \
                 (known: {}): their hosts are served by no gateway",
                known.join(", ")
            ),
            fix: format!(
                "create Gateway {local}, or pass --local-gateway naming one of the known gateways"
            ),
        });
    }
}

/// HTTPRoutes none of whose parentRefs names a Gateway of ours (of a GatewayClass with our
/// controllerName): not served by us, which translation does not report (another controller's).
fn foreign_parents(inputs: &Inputs, opts: &Options, out: &mut BTreeSet<Finding>) {
    for (key, e) in inputs.of_kind(Kind::HttpRoute) {
        let Object::HttpRoute(route) = &e.object else {
            continue;
        };
        if translate::gateway_api::names_our_gateway(inputs, opts, &key.namespace, &route.spec) {
            continue;
        }
        out.insert(Finding {
            severity: Severity::Warning,
            code: "foreign-parent",
            object: Some(key.clone()),
            origin: e.origin.clone(),
            message: format!(
                "no parentRef names a Gateway of a GatewayClass with controllerName {:?}: not \
                 served by this controller",
                opts.gateway_controller
            ),
            fix: "name one of our Gateways in parentRefs, or ignore this if another controller \
                  serves it"
                .to_string(),
        });
    }
}

/// parentRefs of an HTTPRoute that one of our Gateways refuses while another takes the route
/// (translation reports a route only when every Gateway refuses it): the attachment rule's
/// reason, as the status writer reports it.
fn refused_parents(inputs: &Inputs, opts: &Options, out: &mut BTreeSet<Finding>) {
    use translate::gateway_api::attach::{parent_outcomes, ParentReason};
    for (key, e) in inputs.of_kind(Kind::HttpRoute) {
        let Object::HttpRoute(route) = &e.object else {
            continue;
        };
        let outcomes = parent_outcomes(inputs, opts, key, &route.spec);
        if !outcomes.iter().any(|o| o.reason == ParentReason::Accepted) {
            continue;
        }
        for o in outcomes
            .iter()
            .filter(|o| o.reason != ParentReason::Accepted)
        {
            out.insert(Finding {
                severity: Severity::Warning,
                code: "parent-refused",
                object: Some(key.clone()),
                origin: e.origin.clone(),
                message: format!(
                    "parentRef {} ({}): {}",
                    o.index,
                    o.reason.as_str(),
                    o.message
                ),
                fix: "fix the parentRef's sectionName/port, the route's hostnames, or the \
                      listener's allowedRoutes"
                    .to_string(),
            });
        }
    }
}

/// HTTPRoute backendRefs that cannot be used: translation keeps their share of the traffic as
/// 500s (as the Gateway API requires) and serves the rest, so it reports nothing.
fn unusable_backend_refs(inputs: &Inputs, opts: &Options, out: &mut BTreeSet<Finding>) {
    for (key, e) in inputs.of_kind(Kind::HttpRoute) {
        let Object::HttpRoute(route) = &e.object else {
            continue;
        };
        for why in translate::gateway_api::attach::unresolved_backends(inputs, opts, key, route) {
            out.insert(Finding {
                severity: Severity::Warning,
                code: "backend-500",
                object: Some(key.clone()),
                origin: e.origin.clone(),
                message: format!("{why}: its share of the traffic answers 500"),
                fix: "point the backendRef at an existing Service port (another namespace needs a \
                      ReferenceGrant there)"
                    .to_string(),
            });
        }
    }
}

/// KIngresses of another class that no VirtualService was generated for.
fn foreign_classes(inputs: &Inputs, opts: &Options, out: &mut BTreeSet<Finding>) {
    for (key, e) in inputs.of_kind(Kind::KIngress) {
        let Object::KIngress(ing) = &e.object else {
            continue;
        };
        let class = translate::ownership::kingress_class(inputs, &ing.metadata);
        if class.as_deref() == Some(opts.ingress_class.as_str()) {
            continue;
        }
        let has_vs = inputs.of_kind(Kind::VirtualService).any(|(vk, v)| {
            vk.namespace == key.namespace
                && v.object
                    .metadata()
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("networking.internal.knative.dev/ingress"))
                    == Some(&key.name)
        });
        if has_vs {
            continue;
        }
        let class = class.unwrap_or_else(|| "(none)".to_string());
        out.insert(Finding {
            severity: Severity::Warning,
            code: "foreign-class",
            object: Some(key.clone()),
            origin: e.origin.clone(),
            message: format!(
                "ingress class is {class}, not {}, and no VirtualService was generated for it: \
                 its hosts are not served",
                opts.ingress_class
            ),
            fix: format!(
                "set annotation networking.knative.dev/ingress.class: {} (or ingress-class in \
                 config-network), or run the controller of class {class}",
                opts.ingress_class
            ),
        });
    }
}

/// KIngresses whose `spec.tls` names the Secret a translator TLS error is about (its subject),
/// when the error is reported against a Gateway.
fn kingresses_with_secret(inputs: &Inputs, e: &InputError) -> Vec<ObjectKey> {
    if e.object.as_ref().map(|k| k.kind) != Some(Kind::Gateway) {
        return Vec::new();
    }
    let Some(secret) = e.subject.as_ref().filter(|s| s.kind == Kind::Secret) else {
        return Vec::new();
    };
    inputs
        .of_kind(Kind::KIngress)
        .filter(|(_, entry)| match &entry.object {
            Object::KIngress(ing) => ing.spec.tls.iter().any(|t| {
                let ns = if t.secret_namespace.is_empty() {
                    ing.metadata.namespace.clone().unwrap_or_default()
                } else {
                    t.secret_namespace.clone()
                };
                ns == secret.namespace && t.secret_name == secret.name
            }),
            _ => false,
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// `outbound|80||name.ns.svc.cluster.local` -> (ns, name).
fn service_of_cluster(cluster: &str, cluster_domain: &str) -> Option<(String, String)> {
    let host = cluster.rsplit("||").next()?;
    let host = host.strip_suffix(&format!(".svc.{cluster_domain}"))?;
    let (name, ns) = host.split_once('.')?;
    Some((ns.to_string(), name.to_string()))
}

/// Counts (errors, warnings).
pub fn counts(findings: &[Finding]) -> (usize, usize) {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    (errors, findings.len() - errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_of_cluster_names() {
        assert_eq!(
            service_of_cluster(
                "outbound|80||hello-00001.default.svc.cluster.local",
                "cluster.local"
            ),
            Some(("default".into(), "hello-00001".into()))
        );
        assert_eq!(
            service_of_cluster("BlackHoleCluster", "cluster.local"),
            None
        );
    }
}
