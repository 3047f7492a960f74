//! The gateway stage: what a proxy's Gateways give every object. It picks the Gateways that
//! select the proxy (plus one HTTPS server per `spec.tls` entry of our KIngresses, as net-istio
//! adds them), maps their server ports to container ports through the gateway Services, resolves
//! the TLS Secrets of HTTPS servers (so the proto builders never look anything up), and builds
//! the listeners and secrets. Depends on Gateways, gateway Services, Secrets, config-network and
//! KIngress TLS entries only: the incremental engine rebuilds it when one of those changes.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

use crate::model::diag::InputError;
use crate::model::istio::{GatewaySpec, Server, ServerPort, ServerTls};
use crate::model::{Kind, Object, ObjectKey};
use crate::state::Inputs;

use super::error::TranslateError;
use super::{envoy, ownership, Options, RouteLayout};

/// A Gateway as used in translation (from an object or one of the two defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayInfo {
    pub namespace: String,
    pub name: String,
    pub spec: GatewaySpec,
}

impl GatewayInfo {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The Gateways of the inputs, or the two defaults when there are none.
pub fn gateways(inputs: &Inputs, opts: &Options) -> Vec<GatewayInfo> {
    let mut out: Vec<GatewayInfo> = inputs
        .of_kind(Kind::Gateway)
        .filter_map(|(k, e)| match &e.object {
            Object::Gateway(g) => Some(GatewayInfo {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                spec: g.spec.clone(),
            }),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        let local = opts.local_gateway(inputs);
        for (id, selector) in [
            (&opts.external_gateway, "ingressgateway"),
            (&local, "cluster-local-gateway"),
        ] {
            let (ns, name) = split_ns_name(id, "knative-serving");
            out.push(GatewayInfo {
                namespace: ns,
                name,
                spec: GatewaySpec {
                    selector: BTreeMap::from([("istio".to_string(), selector.to_string())]),
                    servers: vec![Server {
                        port: ServerPort {
                            number: 80,
                            name: "http".to_string(),
                            protocol: "HTTP".to_string(),
                            target_port: None,
                        },
                        bind: None,
                        hosts: vec!["*".to_string()],
                        tls: None,
                        name: None,
                    }],
                },
            });
        }
    }
    out
}

/// Labels that a gateway's own pods carry, for rendering one gateway: its selector.
pub fn gateway_labels(
    inputs: &Inputs,
    opts: &Options,
    gateway: &str,
) -> Option<BTreeMap<String, String>> {
    let id = match gateway {
        "external" => opts.external_gateway.clone(),
        "local" => opts.local_gateway(inputs),
        other => other.to_string(),
    };
    gateways(inputs, opts)
        .into_iter()
        .find(|g| g.id() == id)
        .map(|g| g.spec.selector)
}

pub(crate) fn split_ns_name(id: &str, default_ns: &str) -> (String, String) {
    match id.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (default_ns.to_string(), id.to_string()),
    }
}

pub(crate) fn is_subset(sub: &BTreeMap<String, String>, sup: &BTreeMap<String, String>) -> bool {
    sub.iter().all(|(k, v)| sup.get(k) == Some(v))
}

/// The label with which a gateway Service is left out of Gateway port translation, as istiod
/// does (net-istio puts it on `istio-system/knative-local-gateway`, 80 -> 8081, so that the
/// external Gateway's port 80 still maps through `istio-ingressgateway` to 8080 while the local
/// Gateway's port 8081 is used as is).
pub const DISABLE_PORT_TRANSLATION_LABEL: &str =
    "experimental.istio.io/disable-gateway-port-translation";

/// The container port a gateway server port maps to, through the Services that select the
/// gateway pods (Service selector a subset of the pod labels, Services labelled
/// [`DISABLE_PORT_TRANSLATION_LABEL`] `"true"` left out); 80 -> 8080 and 443 -> 8443 when no
/// Service says.
pub fn container_port(inputs: &Inputs, labels: &BTreeMap<String, String>, port: u32) -> u32 {
    for (_, e) in inputs.of_kind(Kind::Service) {
        let Object::Service(svc) = &e.object else {
            continue;
        };
        let untranslated = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(DISABLE_PORT_TRANSLATION_LABEL))
            .is_some_and(|v| v == "true");
        if untranslated {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let selector: BTreeMap<String, String> = spec.selector.clone().unwrap_or_default();
        if selector.is_empty() || !is_subset(&selector, labels) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            if p.port == port as i32 {
                if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) =
                    p.target_port
                {
                    if t > 0 {
                        return t as u32;
                    }
                }
            }
        }
    }
    match port {
        80 => 8080,
        443 => 8443,
        p => p,
    }
}

/// One gateway server as it applies to this proxy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerCtx {
    pub gateway: String,
    pub gateway_ns: String,
    pub gateway_name: String,
    pub server: Server,
    pub container_port: u32,
    pub bind: String,
    pub https: bool,
    pub route_name: String,
    /// HTTPS servers: the SDS name of their certificate, once its Secret was found and is a TLS
    /// pair (`None`: the server gets no filter chain, and the reason is in the errors).
    pub sds: Option<String>,
}

fn server_is_http(s: &Server) -> bool {
    matches!(
        s.port.protocol.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "GRPC"
    )
}

fn server_is_https(s: &Server) -> bool {
    s.port.protocol.eq_ignore_ascii_case("HTTPS")
        && s.tls.as_ref().is_some_and(|t| {
            !t.mode
                .as_deref()
                .unwrap_or("SIMPLE")
                .eq_ignore_ascii_case("PASSTHROUGH")
        })
}

/// Does a gateway server host pattern (`*`, `*.example.com`, `a.example.com`) match `host`?
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return host.ends_with(suffix)
            || host.strip_prefix('*').is_some_and(|h| h.ends_with(suffix));
    }
    false
}

/// What a proxy's gateways give every object: the servers, the listeners and secrets built from
/// them, and the route configurations those listeners use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    pub servers: Vec<ServerCtx>,
    pub gateways: Vec<String>,
    pub listeners: Vec<Listener>,
    pub secrets: Vec<Secret>,
    /// Served route configuration name -> gateway port.
    pub route_ports: BTreeMap<String, u32>,
    /// The route configuration laid out as scopes (scoped layout only).
    pub scoped_route: Option<String>,
    pub errors: Vec<InputError>,
}

/// The [`Context`] of a proxy with these labels.
pub(crate) fn context(
    inputs: &Inputs,
    opts: &Options,
    labels: &BTreeMap<String, String>,
) -> Context {
    let (mut servers, gateways) = servers(inputs, opts, labels);
    let mut errors = Vec::new();
    let mut pairs: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for s in servers.iter_mut().filter(|s| s.https) {
        match tls_secret(inputs, s, &mut pairs) {
            Ok(sds) => s.sds = Some(sds),
            Err(e) => {
                // Synthesized servers belong to a KIngress; name the gateway either way.
                let (ns, name) = split_ns_name(&s.gateway, "default");
                let key = ObjectKey {
                    kind: Kind::Gateway,
                    namespace: ns,
                    name,
                };
                errors.push(e.against(inputs, &key));
            }
        }
    }
    let groups = listener_groups(&servers);
    let scoped_route = scoped_route(opts, &groups);
    let (listeners, route_ports) = envoy::listeners(&groups, scoped_route.as_deref());
    Context {
        gateways,
        listeners,
        secrets: envoy::secrets(&pairs),
        route_ports,
        scoped_route,
        errors,
        servers,
    }
}

/// The servers of a proxy, one listener per (bind address, container port).
pub(crate) type ListenerGroups<'a> = BTreeMap<(String, u32), Vec<&'a ServerCtx>>;

fn listener_groups(servers: &[ServerCtx]) -> ListenerGroups<'_> {
    let mut by_listener: ListenerGroups<'_> = BTreeMap::new();
    for s in servers {
        by_listener
            .entry((s.bind.clone(), s.container_port))
            .or_default()
            .push(s);
    }
    by_listener
}

/// In the scoped layout, the route configuration to lay out as scopes: the proxy's plain-HTTP
/// route configuration when it has exactly one (see [`RouteLayout::Scoped`]). The plain-HTTP
/// chain of a listener uses its first HTTP server's route configuration.
fn scoped_route(opts: &Options, groups: &ListenerGroups<'_>) -> Option<String> {
    let http_routes: std::collections::BTreeSet<&String> = groups
        .values()
        .filter_map(|ss| ss.iter().find(|s| !s.https).map(|s| &s.route_name))
        .collect();
    match (opts.route_layout, http_routes.len()) {
        (RouteLayout::Scoped, 1) => http_routes.first().map(|s| s.to_string()),
        _ => None,
    }
}

/// Picks the Gateways that select a proxy with these labels and returns their HTTP(S) servers
/// and the Gateway ids.
fn servers(
    inputs: &Inputs,
    opts: &Options,
    labels: &BTreeMap<String, String>,
) -> (Vec<ServerCtx>, Vec<String>) {
    let mut all_gateways = gateways(inputs, opts);
    add_kingress_tls_servers(inputs, opts, &mut all_gateways);
    let selected: Vec<GatewayInfo> = all_gateways
        .into_iter()
        .filter(|g| is_subset(&g.spec.selector, labels))
        .collect();
    let mut out = Vec::new();
    for g in &selected {
        for s in &g.spec.servers {
            if !(server_is_http(s) || server_is_https(s)) {
                continue;
            }
            let https = server_is_https(s);
            let route_name = if https {
                format!(
                    "https.{}.{}.{}.{}",
                    s.port.number, s.port.name, g.name, g.namespace
                )
            } else {
                format!("http.{}", s.port.number)
            };
            out.push(ServerCtx {
                gateway: g.id(),
                gateway_ns: g.namespace.clone(),
                gateway_name: g.name.clone(),
                server: s.clone(),
                container_port: s
                    .port
                    .target_port
                    .unwrap_or_else(|| container_port(inputs, labels, s.port.number)),
                bind: s.bind.clone().unwrap_or_else(|| opts.bind_address.clone()),
                https,
                route_name,
                sds: None,
            });
        }
    }
    (out, selected.iter().map(|g| g.id()).collect())
}

/// KIngress `spec.tls` entries of our class become HTTPS servers (port 443) on the external
/// gateway, one per entry, as net-istio adds servers to its Gateway.
fn add_kingress_tls_servers(inputs: &Inputs, opts: &Options, gateways: &mut [GatewayInfo]) {
    let Some(gw) = gateways
        .iter_mut()
        .find(|g| g.id() == opts.external_gateway)
    else {
        return;
    };
    for (key, e) in inputs.of_kind(Kind::KIngress) {
        let Object::KIngress(ing) = &e.object else {
            continue;
        };
        if !ownership::is_ours(inputs, &ing.metadata, &opts.ingress_class) {
            continue;
        }
        for (i, tls) in ing.spec.tls.iter().enumerate() {
            let sns = if tls.secret_namespace.is_empty() {
                key.namespace.clone()
            } else {
                tls.secret_namespace.clone()
            };
            gw.spec.servers.push(Server {
                port: ServerPort {
                    number: 443,
                    name: format!("{}-{}-{i}", key.namespace, key.name),
                    protocol: "HTTPS".to_string(),
                    target_port: None,
                },
                bind: None,
                hosts: tls.hosts.clone(),
                tls: Some(ServerTls {
                    https_redirect: false,
                    mode: Some("SIMPLE".to_string()),
                    credential_name: Some(format!("{sns}/{}", tls.secret_name)),
                }),
                name: None,
            });
        }
    }
}

/// Looks up the TLS Secret of an HTTPS server's credential name (`name` in the gateway
/// namespace, or `ns/name`), registering its pair in `pairs` under its SDS name; returns the
/// SDS name, always `kubernetes://ns/name` with the namespace it was read from: the xDS layer
/// sends a secret only to callers of that namespace (istiod resolves a bare `kubernetes://name`
/// in the proxy's namespace at push time; we resolve it here, so the name must say where).
fn tls_secret(
    inputs: &Inputs,
    s: &ServerCtx,
    pairs: &mut BTreeMap<String, (Vec<u8>, Vec<u8>)>,
) -> Result<String, TranslateError> {
    let Some(credential) = s
        .server
        .tls
        .as_ref()
        .and_then(|t| t.credential_name.clone())
    else {
        return Err(TranslateError::NoCredential(s.server.port.name.clone()));
    };
    let (ns, name) = split_ns_name(&credential, &s.gateway_ns);
    let sds = format!("kubernetes://{ns}/{name}");
    if pairs.contains_key(&sds) {
        return Ok(sds);
    }
    let secret = match inputs.get(Kind::Secret, &ns, &name).map(|e| &e.object) {
        Some(Object::Secret(s)) => s,
        _ => return Err(TranslateError::SecretNotFound { ns, name }),
    };
    let data = secret.data.clone().unwrap_or_default();
    let crt = data.get("tls.crt").map(|b| b.0.clone()).unwrap_or_default();
    let key = data.get("tls.key").map(|b| b.0.clone()).unwrap_or_default();
    if crt.is_empty() || key.is_empty() {
        return Err(TranslateError::NotTlsPair { ns, name });
    }
    pairs.insert(sds.clone(), (crt, key));
    Ok(sds)
}
