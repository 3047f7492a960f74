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

use super::claims::Name;
use super::error::TranslateError;
use super::{envoy, ownership, Options, RouteLayout};

/// A Gateway as used in translation (from an object or one of the two defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayInfo {
    pub namespace: String,
    pub name: String,
    pub spec: GatewaySpec,
    /// What errors about its servers are filed against when not this Istio Gateway (a Gateway
    /// API Gateway's listener, see `gateway_api`).
    pub owner: Option<ObjectKey>,
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
                owner: None,
            }),
            _ => None,
        })
        .collect();
    if out.is_empty() {
        let local = opts.local_gateway(inputs);
        for (id, selector) in [
            (&opts.external_gateway(inputs), "ingressgateway"),
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
                owner: None,
            });
        }
    }
    out.extend(super::gateway_api::gateway_infos(inputs, opts));
    out
}

/// Labels that a gateway's own pods carry, for rendering one gateway: its selector.
pub fn gateway_labels(
    inputs: &Inputs,
    opts: &Options,
    gateway: &str,
) -> Option<BTreeMap<String, String>> {
    let id = match gateway {
        "external" => opts.external_gateway(inputs),
        "local" => opts.local_gateway(inputs),
        other => other.to_string(),
    };
    // `gateway.networking.k8s.io/NS/NAME` names a Gateway API Gateway; a plain NS/NAME both
    // kinds have is the Istio Gateway (listed first).
    if let Some(id) = id.strip_prefix(super::gateway_api::PREFIX) {
        return super::gateway_api::gateway_labels(inputs, opts, id);
    }
    gateways(inputs, opts)
        .into_iter()
        .find(|g| g.id() == id)
        .map(|g| g.spec.selector)
}

/// The labels a pod of `gateway` would carry, for rendering it (`render`, `validate`): the
/// Gateway's selector plus the selectors of the Services that select such pods (a Service whose
/// selector holds the whole Gateway selector is in front of those pods, so a real pod carries its
/// labels too), in Service order; a label two Services set differently keeps the first value.
/// So port translation uses the Services a real gateway pod is behind (net-istio's
/// `istio-ingressgateway` selects `app` and `istio`), not only those selecting by the Gateway's
/// labels alone.
pub fn pod_labels(
    inputs: &Inputs,
    opts: &Options,
    gateway: &str,
) -> Option<BTreeMap<String, String>> {
    let mut labels = gateway_labels(inputs, opts, gateway)?;
    let selector = labels.clone();
    for (_, e) in inputs.of_kind(Kind::Service) {
        let Object::Service(svc) = &e.object else {
            continue;
        };
        let svc_selector: BTreeMap<String, String> = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        if selector.is_empty() || !is_subset(&selector, &svc_selector) {
            continue;
        }
        for (k, v) in svc_selector {
            labels.entry(k).or_insert(v);
        }
    }
    Some(labels)
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
    /// Shared by every slot of its route configuration.
    pub route_name: Name,
    /// HTTPS servers: the SDS names of their certificates, once every Secret was found and is
    /// a TLS pair (empty: the server gets no filter chain, and the reason is in the errors).
    pub sds: Vec<String>,
    /// The object errors about this server are filed against: its Gateway, or the KIngress a
    /// server made for a `spec.tls` entry belongs to.
    pub owner: ObjectKey,
}

/// The SNI names an HTTPS server's filter chain matches: its hosts without a namespace part,
/// in lower case, `*` left out (an empty list matches every name).
pub(crate) fn sni_names(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = server
        .hosts
        .iter()
        .map(|h| {
            h.split_once('/')
                .map(|(_, h)| h)
                .unwrap_or(h)
                .to_ascii_lowercase()
        })
        .filter(|h| h != "*")
        .collect();
    names.sort();
    names.dedup();
    names
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
    /// Clusters (and the scopes' RouteConfigurations) on demand (`RouteLayout::OnDemand`).
    pub on_demand: bool,
    pub errors: Vec<InputError>,
    /// The gateways serving ExternalIP and ClusterLocal rules (read once: config-istio).
    pub external: String,
    pub local: String,
}

/// The [`Context`] of a proxy with these labels.
pub(crate) fn context(
    inputs: &Inputs,
    opts: &Options,
    labels: &BTreeMap<String, String>,
) -> Context {
    let (servers, gateways) = servers(inputs, opts, labels);
    let mut errors: Vec<InputError> = super::config_istio::error(inputs).into_iter().collect();
    errors.extend(super::gateway_api::listener_errors(inputs, opts, labels));
    // A server Envoy would reject a listener for is left out (every listener of a proxy is in
    // one LDS response: one bad server would stop them all from updating).
    let mut servers: Vec<ServerCtx> = servers
        .into_iter()
        .filter(|s| match listener_address(s) {
            Ok(()) => true,
            Err(e) => {
                errors.push(e.against(inputs, &s.owner));
                false
            }
        })
        .collect();
    let mut pairs: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for s in servers.iter_mut().filter(|s| s.https) {
        match tls_secrets(inputs, s, &mut pairs) {
            Ok(sds) => s.sds = sds,
            Err(e) => errors.push(e.against(inputs, &s.owner)),
        }
    }
    distinct_sni(&mut servers, |e, owner| {
        errors.push(e.against(inputs, owner))
    });
    let groups = listener_groups(&servers);
    let scoped_route = scoped_route(opts, &groups);
    let on_demand = opts.route_layout == RouteLayout::OnDemand;
    let (listeners, route_ports) = envoy::listeners(&groups, scoped_route.as_deref(), on_demand);
    Context {
        gateways,
        listeners,
        secrets: envoy::secrets(&pairs),
        route_ports,
        scoped_route,
        on_demand,
        errors,
        servers,
        external: opts.external_gateway(inputs),
        local: opts.local_gateway(inputs),
    }
}

/// The address Envoy binds for a server: an IP address and a port it accepts.
fn listener_address(s: &ServerCtx) -> Result<(), TranslateError> {
    let what = |why: String| {
        TranslateError::EnvoyRejects(format!(
            "server {:?} (port {}): {why}",
            s.server.port.name, s.server.port.number
        ))
    };
    if s.container_port == 0 || s.container_port > 65535 {
        return Err(what(format!(
            "listener port {} is not a TCP port (1-65535)",
            s.container_port
        )));
    }
    if s.bind.parse::<std::net::IpAddr>().is_err() {
        return Err(what(format!(
            "bind address {:?} is not an IP address",
            s.bind
        )));
    }
    Ok(())
}

/// Envoy rejects a listener whose TLS filter chains match the same or overlapping SNI names,
/// or a name with a wildcard anywhere but a leading `*.`. On each listener, HTTPS servers keep
/// their names in order (a Gateway's own servers first, then KIngress TLS entries oldest
/// first); a server with a bad name, or a name an earlier server holds, gets no filter chain
/// and an error naming the other server's owner.
fn distinct_sni(servers: &mut [ServerCtx], mut report: impl FnMut(TranslateError, &ObjectKey)) {
    // (bind, port) -> SNI name ("" = every name) -> owner of the server holding it.
    let mut held: BTreeMap<(String, u32), BTreeMap<String, ObjectKey>> = BTreeMap::new();
    for s in servers.iter_mut().filter(|s| s.https && !s.sds.is_empty()) {
        let names = sni_names(&s.server);
        let at = |why: String| {
            TranslateError::EnvoyRejects(format!(
                "HTTPS server {:?} (port {}): {why}",
                s.server.port.name, s.server.port.number
            ))
        };
        if let Some(bad) = names.iter().find(|n| {
            let rest = n.strip_prefix("*.").unwrap_or(n);
            rest.is_empty() || rest.contains('*')
        }) {
            report(
                at(format!(
                    "host {bad:?} has a wildcard Envoy does not support in SNI names (only a \
                     leading \"*.\")"
                )),
                &s.owner,
            );
            s.sds.clear();
            continue;
        }
        let listener = held.entry((s.bind.clone(), s.container_port)).or_default();
        let keys: Vec<String> = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        if let Some((host, other)) = keys
            .iter()
            .find_map(|k| listener.get(k).map(|o| (k.clone(), o.clone())))
        {
            let host = if host.is_empty() {
                "*".to_string()
            } else {
                host
            };
            report(
                at(format!(
                    "TLS host {host} on port {} is already served by {other}; left out here",
                    s.container_port
                )),
                &s.owner,
            );
            s.sds.clear();
            continue;
        }
        for k in keys {
            listener.insert(k, s.owner.clone());
        }
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
    let http_routes: std::collections::BTreeSet<&Name> = groups
        .values()
        .filter_map(|ss| ss.iter().find(|s| !s.https).map(|s| &s.route_name))
        .collect();
    match (opts.route_layout, http_routes.len()) {
        (layout, 1) if layout.scoped() => http_routes.first().map(|s| s.to_string()),
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
    let owners = add_kingress_tls_servers(inputs, opts, &mut all_gateways);
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
                    s.port.number,
                    s.port.name,
                    super::gateway_api::route_gateway_name(&g.name, &s.port.name, g.owner.as_ref()),
                    g.namespace
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
                route_name: route_name.into(),
                sds: Vec::new(),
                owner: owners
                    .get(&(g.id(), s.port.name.clone()))
                    .or(g.owner.as_ref())
                    .cloned()
                    .unwrap_or_else(|| ObjectKey {
                        kind: Kind::Gateway,
                        namespace: g.namespace.clone(),
                        name: g.name.clone(),
                    }),
            });
        }
    }
    (out, selected.iter().map(|g| g.id()).collect())
}

/// KIngress `spec.tls` entries of our class become HTTPS servers (port 443) on the external
/// gateway, one per entry, as net-istio adds servers to its Gateway; oldest KIngress first (a
/// TLS host two of them name is served by the older, see [`distinct_sni`]). Returns the
/// KIngress of each server made, by (gateway, server port name).
fn add_kingress_tls_servers(
    inputs: &Inputs,
    opts: &Options,
    gateways: &mut [GatewayInfo],
) -> BTreeMap<(String, String), ObjectKey> {
    let mut owners = BTreeMap::new();
    let external = opts.external_gateway(inputs);
    let Some(gw) = gateways.iter_mut().find(|g| g.id() == external) else {
        return owners;
    };
    let mut ours: Vec<_> = inputs
        .of_kind(Kind::KIngress)
        .filter_map(|(key, e)| match &e.object {
            Object::KIngress(ing)
                if !ing.spec.tls.is_empty()
                    && ownership::is_ours(inputs, &ing.metadata, &opts.ingress_class) =>
            {
                Some((super::claims::precedence(key, &ing.metadata), key, ing))
            }
            _ => None,
        })
        .collect();
    ours.sort_by(|a, b| a.0.cmp(&b.0));
    let gw_id = gw.id();
    for (_, key, ing) in ours {
        for (i, tls) in ing.spec.tls.iter().enumerate() {
            owners.insert(
                (gw_id.clone(), format!("{}-{}-{i}", key.namespace, key.name)),
                key.clone(),
            );
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
                    credential_names: Vec::new(),
                }),
                name: None,
            });
        }
    }
    owners
}

/// Looks up the TLS Secrets of an HTTPS server's credential names (`credential_name`, then
/// `credential_names`), each `name` in the gateway namespace or `ns/name`, registering each pair
/// in `pairs` under its SDS name; returns the SDS names, always `kubernetes://ns/name` with the
/// namespace it was read from: the xDS layer sends a secret only to callers of that namespace
/// (istiod resolves a bare `kubernetes://name` in the proxy's namespace at push time; we
/// resolve it here, so the name must say where). One bad Secret fails the server.
fn tls_secrets(
    inputs: &Inputs,
    s: &ServerCtx,
    pairs: &mut BTreeMap<String, (Vec<u8>, Vec<u8>)>,
) -> Result<Vec<String>, TranslateError> {
    let tls = s.server.tls.as_ref();
    let names = tls.into_iter().flat_map(|t| {
        let first = t.credential_name.iter();
        first.chain(t.credential_names.iter()).cloned()
    });
    let mut out: Vec<String> = Vec::new();
    for credential in names {
        let sds = tls_secret(inputs, s, &credential, pairs)?;
        if !out.contains(&sds) {
            out.push(sds);
        }
    }
    if out.is_empty() {
        return Err(TranslateError::NoCredential(s.server.port.name.clone()));
    }
    Ok(out)
}

/// One credential of [`tls_secrets`].
fn tls_secret(
    inputs: &Inputs,
    s: &ServerCtx,
    credential: &str,
    pairs: &mut BTreeMap<String, (Vec<u8>, Vec<u8>)>,
) -> Result<String, TranslateError> {
    let (ns, name) = split_ns_name(credential, &s.gateway_ns);
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
    if let Err(reason) = super::check::tls_pair(&crt, &key) {
        return Err(TranslateError::BadTlsPair { ns, name, reason });
    }
    pairs.insert(sds.clone(), (crt, key));
    Ok(sds)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pod_label_tests {
    use crate::state::Inputs;
    use crate::translate::{pod_labels, translate, Options};

    #[test]
    fn render_maps_ports_through_the_services_a_real_gateway_pod_is_behind() {
        // net-istio's shape: the Service selects `app` and `istio`, the Gateway only `istio`.
        let yaml = r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: knative-ingress-gateway, namespace: knative-serving}
spec:
  selector: {istio: ingressgateway}
  servers: [{hosts: ["*"], port: {name: http, number: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {app: istio-ingressgateway, istio: ingressgateway}
  ports: [{name: http2, port: 80, targetPort: 9080}]
"#;
        let loaded = crate::source::files::parse_text(std::path::Path::new("g.yaml"), yaml);
        let inputs = Inputs::from_sourced(loaded.objects).0;
        let opts = Options::default();
        let labels = pod_labels(&inputs, &opts, "knative-serving/knative-ingress-gateway").unwrap();
        assert_eq!(
            labels.get("app").map(String::as_str),
            Some("istio-ingressgateway")
        );
        let t = translate(&inputs, &opts, &labels);
        let names: Vec<&str> = t.config.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["0.0.0.0_9080"]);
    }
}
