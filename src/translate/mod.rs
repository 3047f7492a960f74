//! Pure translation: objects in, Envoy resources out. No I/O, no clocks.
//!
//! For one proxy (identified by its pod labels) we pick the Gateways that select it, map their
//! server ports to container ports through the Services that select the gateway pods, reduce
//! VirtualServices, KIngresses (our class) and Routes (with neither) to the intermediate model in
//! [`ir`], then build Envoy protos in [`envoy`]. Objects that cannot be translated are reported as
//! [`InputError`]s and left out; everything else still translates.
//!
//! [`translate`] does it all at once (render, goldens, the reference); [`incremental::Engine`]
//! reuses the same per-object code (`translate_one`, `context`) to keep a proxy's resources
//! up to date change by change, byte-identical to [`translate`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::istio::{GatewaySpec, Server, ServerPort, VirtualServiceSpec};
use crate::model::kingress::{self, IngressSpec, IntOrString};
use crate::model::{knative, Kind, Object, ObjectKey};
use crate::source::InputError;
use crate::state::Inputs;

pub mod envoy;
pub mod incremental;
pub mod ir;

use ir::*;

/// Translation settings (the CLI flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// KIngresses with this class annotation are ours to translate.
    pub ingress_class: String,
    /// `ns/name` of the gateway that serves ExternalIP rules.
    pub external_gateway: String,
    /// `ns/name` of the gateway that serves ClusterLocal rules.
    pub local_gateway: String,
    /// Address listeners bind to (istio: `0.0.0.0`, or the Gateway server's `bind`).
    pub bind_address: String,
    pub cluster_domain: String,
    /// How plain-HTTP route configurations are laid out (`--route-layout`).
    pub route_layout: RouteLayout,
}

/// How virtual hosts of plain-HTTP listeners are laid out in RDS resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteLayout {
    /// As istiod: one RouteConfiguration per port (`http.80`) holding every virtual host.
    #[default]
    Istio,
    /// Scoped RDS: the HCM selects a scope by the `:authority` host (port stripped); each host has
    /// one ScopedRouteConfiguration and one RouteConfiguration holding only its virtual host
    /// (both named `http.<port>/<host>`), so a change to one host resends only those. HTTPS
    /// listeners stay on plain RDS. Wildcard hosts cannot be scope keys and are not served.
    /// Envoy's scoped RDS subscription is a wildcard (every scoped listener of an Envoy sees
    /// every scope, and a scope key holds only the host), so only a proxy with a single
    /// plain-HTTP route configuration is scoped; one with several (e.g. both gateways on one
    /// Envoy, on two ports) keeps the Istio layout, which keeps their hosts apart.
    Scoped,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingress_class: kingress::DEFAULT_CLASS.to_string(),
            external_gateway: "knative-serving/knative-ingress-gateway".to_string(),
            local_gateway: "knative-serving/cluster-local-gateway".to_string(),
            bind_address: "0.0.0.0".to_string(),
            cluster_domain: "cluster.local".to_string(),
            route_layout: RouteLayout::Istio,
        }
    }
}

/// Everything one proxy gets, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    pub listeners: Vec<envoy_types::pb::envoy::config::listener::v3::Listener>,
    pub routes: Vec<envoy_types::pb::envoy::config::route::v3::RouteConfiguration>,
    /// Scopes (scoped route layout only).
    pub scoped_routes: Vec<envoy_types::pb::envoy::config::route::v3::ScopedRouteConfiguration>,
    pub clusters: Vec<envoy_types::pb::envoy::config::cluster::v3::Cluster>,
    pub endpoints: Vec<envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment>,
    pub secrets: Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>,
}

/// The result of translating for one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    pub config: ProxyConfig,
    /// Gateways (`ns/name`) that apply to this proxy.
    pub gateways: Vec<String>,
    pub errors: Vec<InputError>,
}

/// The request header operations of an Istio `headers` block (none when absent).
fn request_headers(headers: Option<&crate::model::istio::Headers>) -> HeaderOps {
    headers
        .and_then(|h| h.request.as_ref())
        .map(|r| HeaderOps {
            set: r.set.clone(),
            add: r.add.clone(),
            remove: r.remove.clone(),
        })
        .unwrap_or_default()
}

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

/// A KIngress's class: its `networking.knative.dev/ingress.class` annotation, else the
/// `ingress-class` (or legacy `ingress.class`) of `knative-serving/config-network`.
pub fn kingress_class(inputs: &Inputs, meta: &ObjectMeta) -> Option<String> {
    if let Some(c) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(kingress::CLASS_ANNOTATION))
    {
        return Some(c.clone());
    }
    let data = inputs
        .config_map("knative-serving", "config-network")
        .and_then(|cm| cm.data.as_ref())?;
    data.get("ingress-class")
        .or_else(|| data.get("ingress.class"))
        .cloned()
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
        for (id, selector) in [
            (&opts.external_gateway, "ingressgateway"),
            (&opts.local_gateway, "cluster-local-gateway"),
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
        "external" => opts.external_gateway.as_str(),
        "local" => opts.local_gateway.as_str(),
        other => other,
    };
    gateways(inputs, opts)
        .into_iter()
        .find(|g| g.id() == id)
        .map(|g| g.spec.selector)
}

fn split_ns_name(id: &str, default_ns: &str) -> (String, String) {
    match id.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (default_ns.to_string(), id.to_string()),
    }
}

fn is_subset(sub: &BTreeMap<String, String>, sup: &BTreeMap<String, String>) -> bool {
    sub.iter().all(|(k, v)| sup.get(k) == Some(v))
}

/// The container port a gateway server port maps to, through the Services that select the
/// gateway pods (Service selector a subset of the pod labels); 80 -> 8080 and 443 -> 8443 when no
/// Service says.
pub fn container_port(inputs: &Inputs, labels: &BTreeMap<String, String>, port: u32) -> u32 {
    for (_, e) in inputs.of_kind(Kind::Service) {
        let Object::Service(svc) = &e.object else {
            continue;
        };
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

/// Translates everything that applies to a proxy with these labels.
pub fn translate(
    inputs: &Inputs,
    opts: &Options,
    labels: &BTreeMap<String, String>,
) -> Translation {
    let mut t = Translator::new(inputs, opts);
    let gateways = t.setup_servers(labels);
    t.translate_virtual_services();
    t.translate_kingresses();
    t.translate_routes();
    let config = envoy::build(&mut t);
    let mut errors = t.errors;
    errors.sort();
    errors.dedup();
    Translation {
        config,
        gateways,
        errors,
    }
}

/// What a proxy's gateways give every object: the servers, the listeners and secrets built from
/// them, and the route configurations those listeners use. Depends on Gateways, gateway
/// Services, Secrets and KIngress TLS entries only.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    pub servers: Vec<ServerCtx>,
    pub gateways: Vec<String>,
    pub listeners: Vec<envoy_types::pb::envoy::config::listener::v3::Listener>,
    pub secrets: Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>,
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
    let mut t = Translator::new(inputs, opts);
    let gateways = t.setup_servers(labels);
    let (listeners, route_ports) = envoy::build_listeners(&mut t);
    Context {
        servers: t.servers.clone(),
        gateways,
        listeners,
        secrets: envoy::secrets(&t),
        route_ports,
        scoped_route: t.scoped_route.clone(),
        errors: std::mem::take(&mut t.errors),
    }
}

/// Where an EDS cluster's endpoints come from: Service `ns/name`, port name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterSource {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
}

/// One object translated on its own: its virtual hosts merged per (route configuration, host),
/// the clusters it references, the Services it read, or the error that left it out.
#[derive(Debug, Clone)]
pub(crate) struct Fragment {
    pub vhosts: BTreeMap<(String, String), std::sync::Arc<VirtualHostIr>>,
    pub clusters: Vec<(ClusterIr, ClusterSource)>,
    pub services: BTreeSet<(String, String)>,
    pub error: Option<InputError>,
    /// Full translation order: VirtualServices, KIngresses, Routes, each oldest first.
    pub order: (u8, String, ObjectKey),
    /// Duplicate-host precedence (smallest wins): timestamped before not, oldest, then key.
    pub precedence: (bool, String, ObjectKey),
}

/// Ready addresses of Service `ns/name`'s port named `port_name`, as an EDS cluster holds them.
pub(crate) fn ready_endpoints_of(
    inputs: &Inputs,
    opts: &Options,
    src: &ClusterSource,
) -> Vec<(String, u32)> {
    let t = Translator::new(inputs, opts);
    t.ready_endpoints_named(&src.namespace, &src.service, &src.port_name)
}

/// Whether a KIngress or a VirtualService labelled for this Route describes its traffic (then
/// the Route itself is not translated). Scans VirtualServices: see the engine for an indexed form.
pub(crate) fn kingress_class_matches(inputs: &Inputs, opts: &Options, meta: &ObjectMeta) -> bool {
    Translator::new(inputs, opts)
        .kingress_class(meta)
        .as_deref()
        == Some(opts.ingress_class.as_str())
}

/// Translates one VirtualService, KIngress (any class: the caller checks) or Route (the caller
/// checks it has no KIngress or VirtualService) on its own, against a proxy's servers.
pub(crate) fn translate_one(
    inputs: &Inputs,
    opts: &Options,
    servers: &[ServerCtx],
    key: &ObjectKey,
) -> Option<Fragment> {
    let entry = inputs.get(key.kind, &key.namespace, &key.name)?;
    let mut t = Translator::new(inputs, opts);
    t.servers = servers.to_vec();
    t.defer = true;
    let meta = entry.object.metadata().clone();
    let rank = match &entry.object {
        Object::VirtualService(vs) => {
            t.translate_object(key, &meta, |t| t.virtual_service(key, &vs.spec));
            0
        }
        Object::KIngress(ing) => {
            t.knative_spec(key, &meta, &ing.spec, false);
            1
        }
        Object::Route(route) => {
            let ropts = knative::RouteOptions {
                domain: t.default_domain(),
                cluster_domain: opts.cluster_domain.clone(),
                ..Default::default()
            };
            match knative::ingress_from_route(route, &ropts) {
                Ok(spec) => t.knative_spec(key, &meta, &spec, true),
                Err(msg) => t.error(key, msg),
            }
            2
        }
        _ => return None,
    };
    let age = creation(&meta);
    let mut vhosts: BTreeMap<(String, String), VirtualHostIr> = BTreeMap::new();
    for p in std::mem::take(&mut t.deferred) {
        match vhosts.entry((p.route_name.clone(), p.host.clone())) {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let vh = o.get_mut();
                vh.routes.extend(p.routes);
                vh.require_tls |= p.require_tls;
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(VirtualHostIr {
                    host: p.host,
                    port: p.port,
                    routes: p.routes,
                    require_tls: p.require_tls,
                });
            }
        }
    }
    let error = t.errors.pop();
    let clusters = t
        .clusters
        .into_values()
        .map(|c| {
            let src = t.cluster_src.remove(&c.name).unwrap_or(ClusterSource {
                namespace: String::new(),
                service: String::new(),
                port_name: String::new(),
            });
            (c, src)
        })
        .collect();
    Some(Fragment {
        vhosts: vhosts
            .into_iter()
            .map(|(k, v)| (k, std::sync::Arc::new(v)))
            .collect(),
        clusters,
        services: t.reads,
        error,
        order: (rank, age.clone(), key.clone()),
        precedence: (age.is_empty(), age, key.clone()),
    })
}

pub(crate) struct Translator<'a> {
    pub inputs: &'a Inputs,
    pub opts: &'a Options,
    pub errors: Vec<InputError>,
    pub servers: Vec<ServerCtx>,
    /// route config name -> host -> virtual host.
    pub vhosts: BTreeMap<String, BTreeMap<String, VirtualHostIr>>,
    pub clusters: BTreeMap<String, ClusterIr>,
    /// Names of clusters in the order they were created (for rolling back an invalid object).
    created: Vec<String>,
    /// SDS name -> (certificate chain, private key).
    pub secrets: BTreeMap<String, (Vec<u8>, Vec<u8>)>,
    /// (route config, host) -> the object that claimed it, with its age.
    owners: BTreeMap<(String, String), (String, ObjectKey)>,
    /// Translating one object alone: placements are collected in `deferred`, not placed.
    defer: bool,
    deferred: Vec<Placement>,
    /// Services (ns, name) looked up for clusters, found or not.
    reads: BTreeSet<(String, String)>,
    /// Cluster name -> where its endpoints come from.
    cluster_src: BTreeMap<String, ClusterSource>,
    /// The route configuration laid out as scopes (scoped layout, see `envoy::build_listeners`).
    pub scoped_route: Option<String>,
}

/// A virtual host's worth of routes produced by one object, before it is placed.
struct Placement {
    route_name: String,
    host: String,
    port: u32,
    routes: Vec<RouteIr>,
    require_tls: bool,
}

fn creation(meta: &ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| format!("{:?}", t.0))
        .unwrap_or_default()
}

fn parse_duration(s: &str) -> Option<Duration> {
    // Go/Istio durations as written in VirtualServices: "900s", "1.5s", "100ms", "1m", "1h".
    let s = s.trim();
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    if v.is_nan() || v < 0.0 || !v.is_finite() {
        return None;
    }
    Some(Duration::from_secs_f64(v * unit))
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

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return host.ends_with(suffix)
            || host.strip_prefix('*').is_some_and(|h| h.ends_with(suffix));
    }
    false
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

fn is_h2c_port(p: &k8s_openapi::api::core::v1::ServicePort) -> bool {
    let name = p.name.as_deref().unwrap_or("");
    name == "http2"
        || name == "h2c"
        || name.starts_with("http2-")
        || name.starts_with("grpc")
        || p.app_protocol.as_deref() == Some("kubernetes.io/h2c")
}

impl<'a> Translator<'a> {
    fn new(inputs: &'a Inputs, opts: &'a Options) -> Translator<'a> {
        Translator {
            inputs,
            opts,
            errors: Vec::new(),
            servers: Vec::new(),
            vhosts: BTreeMap::new(),
            clusters: BTreeMap::new(),
            created: Vec::new(),
            secrets: BTreeMap::new(),
            owners: BTreeMap::new(),
            defer: false,
            deferred: Vec::new(),
            reads: BTreeSet::new(),
            cluster_src: BTreeMap::new(),
            scoped_route: None,
        }
    }

    /// Picks the Gateways that select a proxy with these labels and records their HTTP(S)
    /// servers; returns the Gateway ids.
    fn setup_servers(&mut self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let inputs = self.inputs;
        let opts = self.opts;
        let mut all_gateways = gateways(inputs, opts);
        self.add_kingress_tls_servers(&mut all_gateways);
        let selected: Vec<GatewayInfo> = all_gateways
            .into_iter()
            .filter(|g| is_subset(&g.spec.selector, labels))
            .collect();
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
                self.servers.push(ServerCtx {
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
                });
            }
        }
        selected.iter().map(|g| g.id()).collect()
    }

    /// Objects of one kind, oldest first (creationTimestamp, then namespace/name), so that
    /// duplicate hosts resolve to the oldest object.
    fn oldest_first<T: Clone>(
        &self,
        kind: Kind,
        pick: impl Fn(&Object) -> Option<&T>,
    ) -> Vec<(ObjectKey, T)> {
        let mut out: Vec<(String, ObjectKey, T)> = self
            .inputs
            .of_kind(kind)
            .filter_map(|(k, e)| {
                pick(&e.object).map(|t| (creation(e.object.metadata()), k.clone(), t.clone()))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out.into_iter().map(|(_, k, t)| (k, t)).collect()
    }

    /// Translates one object: places its virtual hosts, or, when it is invalid, reports it and
    /// forgets the clusters it created (by the creation log, not by copying the cluster map).
    fn translate_object(
        &mut self,
        key: &ObjectKey,
        meta: &ObjectMeta,
        f: impl FnOnce(&mut Self) -> Result<Vec<Placement>, String>,
    ) {
        let mark = self.created.len();
        match f(self) {
            Ok(placements) if self.defer => self.deferred.extend(placements),
            Ok(placements) => self.place(key, meta, placements),
            Err(msg) => {
                for name in self.created.drain(mark..) {
                    self.clusters.remove(&name);
                    self.cluster_src.remove(&name);
                }
                self.error(key, msg);
            }
        }
    }

    fn error(&mut self, key: &ObjectKey, message: impl Into<String>) {
        let origin = self
            .inputs
            .get(key.kind, &key.namespace, &key.name)
            .and_then(|e| e.origin.clone());
        self.errors.push(InputError {
            object: Some(key.clone()),
            origin,
            message: message.into(),
        });
    }

    /// The cluster for a Service port, created on first use. `port` selects the Service port by
    /// number or name (`None`: the Service's only port). Errors are messages for the caller's object.
    fn cluster_for(
        &mut self,
        ns: &str,
        name: &str,
        port: Option<&IntOrString>,
        knative_revision_fallback: bool,
    ) -> Result<String, String> {
        self.reads.insert((ns.to_string(), name.to_string()));
        let svc: Option<Service> = self.inputs.service(ns, name).cloned();
        let svc = match svc {
            Some(s) => s,
            None if knative_revision_fallback => {
                // A Knative revision Service: port `http` 80 -> 8012 (its shape is fixed by
                // Knative; the Service object is optional in manifest inputs).
                Service {
                    metadata: ObjectMeta::default(),
                    spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                        ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                            name: Some("http".to_string()),
                            port: 80,
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    status: None,
                }
            }
            None => return Err(format!("backend Service {ns}/{name} not found")),
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let ports = spec.ports.clone().unwrap_or_default();
        let sp = match port {
            None if ports.len() == 1 => ports[0].clone(),
            None => {
                return Err(format!(
                    "backend Service {ns}/{name} has {} ports; name one",
                    ports.len()
                ))
            }
            Some(IntOrString::Int(n)) => match ports.iter().find(|p| i64::from(p.port) == *n) {
                Some(p) => p.clone(),
                None if spec.type_.as_deref() == Some("ExternalName") && ports.is_empty() => {
                    k8s_openapi::api::core::v1::ServicePort {
                        port: i32::try_from(*n).map_err(|_| format!("bad port {n}"))?,
                        ..Default::default()
                    }
                }
                None => return Err(format!("backend Service {ns}/{name} has no port {n}")),
            },
            Some(IntOrString::String(s)) => {
                match ports.iter().find(|p| p.name.as_deref() == Some(s)) {
                    Some(p) => p.clone(),
                    None => {
                        return Err(format!(
                            "backend Service {ns}/{name} has no port named {s:?}"
                        ))
                    }
                }
            }
        };
        if sp.port <= 0 || sp.port > 65535 {
            return Err(format!(
                "backend Service {ns}/{name} has bad port {}",
                sp.port
            ));
        }
        let fqdn = format!("{name}.{ns}.svc.{}", self.opts.cluster_domain);
        let cname = cluster_name(sp.port as u32, &fqdn);
        if self.clusters.contains_key(&cname) {
            return Ok(cname);
        }
        let upstream = if is_h2c_port(&sp) {
            Upstream::H2c
        } else {
            Upstream::Http1
        };
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let host = spec.external_name.clone().unwrap_or_default();
            if host.is_empty() {
                return Err(format!(
                    "ExternalName Service {ns}/{name} has no externalName"
                ));
            }
            ClusterKind::Dns {
                host,
                port: sp.port as u32,
            }
        } else {
            ClusterKind::Eds {
                endpoints: self.ready_endpoints(ns, name, &sp),
            }
        };
        self.created.push(cname.clone());
        self.cluster_src.insert(
            cname.clone(),
            ClusterSource {
                namespace: ns.to_string(),
                service: name.to_string(),
                port_name: sp.name.clone().unwrap_or_default(),
            },
        );
        self.clusters.insert(
            cname.clone(),
            ClusterIr {
                name: cname.clone(),
                upstream,
                kind,
            },
        );
        Ok(cname)
    }

    /// Ready addresses of a Service port, from its EndpointSlices, or its Endpoints when it has
    /// no slices. Sorted and deduplicated.
    fn ready_endpoints(
        &self,
        ns: &str,
        name: &str,
        sp: &k8s_openapi::api::core::v1::ServicePort,
    ) -> Vec<(String, u32)> {
        self.ready_endpoints_named(ns, name, sp.name.as_deref().unwrap_or(""))
    }

    fn ready_endpoints_named(&self, ns: &str, name: &str, want: &str) -> Vec<(String, u32)> {
        let mut out = BTreeSet::new();
        let slices = self.inputs.endpoint_slices(ns, name);
        if !slices.is_empty() {
            for slice in slices {
                let ports = slice.ports.iter().flatten();
                let Some(port) = endpoint_port(ports.map(|p| (p.name.as_deref(), p.port)), want)
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for a in &ep.addresses {
                        out.insert((a.clone(), port));
                    }
                }
            }
        } else if let Some(eps) = self.inputs.endpoints(ns, name) {
            for subset in eps.subsets.iter().flatten() {
                let ports = subset.ports.iter().flatten();
                let Some(port) =
                    endpoint_port(ports.map(|p| (p.name.as_deref(), Some(p.port))), want)
                else {
                    continue;
                };
                for a in subset.addresses.iter().flatten() {
                    out.insert((a.ip.clone(), port));
                }
            }
        }
        out.into_iter().collect()
    }

    /// Places an object's virtual hosts, resolving duplicate hosts: the oldest object (then the
    /// lowest kind/ns/name) keeps the host; the other is reported.
    fn place(&mut self, key: &ObjectKey, meta: &ObjectMeta, placements: Vec<Placement>) {
        let age = creation(meta);
        for p in placements {
            let slot = (p.route_name.clone(), p.host.clone());
            if let Some((owner_age, owner)) = self.owners.get(&slot).cloned() {
                if &owner == key {
                    // Same object, same host again: append (e.g. several rules for one host).
                    if let Some(vh) = self
                        .vhosts
                        .get_mut(&p.route_name)
                        .and_then(|m| m.get_mut(&p.host))
                    {
                        vh.routes.extend(p.routes);
                        vh.require_tls |= p.require_tls;
                    }
                    continue;
                }
                let new_wins = (age.is_empty(), age.as_str(), key)
                    < (owner_age.is_empty(), owner_age.as_str(), &owner);
                if new_wins {
                    self.error(
                        &owner,
                        format!(
                            "host {} is also claimed by older {key}; left out here",
                            p.host
                        ),
                    );
                } else {
                    self.error(
                        key,
                        format!(
                            "host {} is already claimed by {owner}; left out here",
                            p.host
                        ),
                    );
                    continue;
                }
            }
            self.owners.insert(slot, (age.clone(), key.clone()));
            self.vhosts.entry(p.route_name.clone()).or_default().insert(
                p.host.clone(),
                VirtualHostIr {
                    host: p.host,
                    port: p.port,
                    routes: p.routes,
                    require_tls: p.require_tls,
                },
            );
        }
    }

    // ----- VirtualService -----

    fn translate_virtual_services(&mut self) {
        let vss = self.oldest_first(Kind::VirtualService, |o| match o {
            Object::VirtualService(v) => Some(&**v),
            _ => None,
        });
        for (key, vs) in vss {
            self.translate_object(&key, &vs.metadata, |t| t.virtual_service(&key, &vs.spec));
        }
    }

    fn virtual_service(
        &mut self,
        key: &ObjectKey,
        spec: &VirtualServiceSpec,
    ) -> Result<Vec<Placement>, String> {
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
        let servers: Vec<ServerCtx> = self
            .servers
            .iter()
            .filter(|s| gw_ids.contains(&s.gateway))
            .cloned()
            .collect();
        let mut placements: Vec<Placement> = Vec::new();
        let config_path = format!(
            "/apis/networking.istio.io/v1/namespaces/{ns}/virtual-service/{}",
            key.name
        );
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
                routes.extend(self.vs_http_route(&ns, http, &server.gateway, &config_path)?);
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
                    existing.routes.extend(routes.clone());
                    existing.require_tls |= require_tls;
                    continue;
                }
                placements.push(Placement {
                    route_name: server.route_name.clone(),
                    host,
                    port: server.server.port.number,
                    routes: routes.clone(),
                    require_tls,
                });
            }
        }
        Ok(placements)
    }

    fn vs_http_route(
        &mut self,
        ns: &str,
        http: &crate::model::istio::HttpRoute,
        gateway: &str,
        config_path: &str,
    ) -> Result<Vec<RouteIr>, String> {
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
            Some(t) => Some(parse_duration(t).ok_or_else(|| format!("bad timeout {t:?}"))?),
            None => None,
        };
        let retry = match &http.retries {
            None => Retry::IstioDefault,
            Some(r) if r.attempts <= 0 => Retry::None,
            Some(r) => Retry::Custom {
                attempts: r.attempts as u32,
                per_try_timeout: match &r.per_try_timeout {
                    Some(t) => {
                        Some(parse_duration(t).ok_or_else(|| format!("bad perTryTimeout {t:?}"))?)
                    }
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
                path: redirect.uri.clone(),
                code: redirect.redirect_code,
            }
        } else {
            if http.route.is_empty() {
                return Err("http route has neither route nor redirect".to_string());
            }
            let mut destinations = Vec::new();
            let single = http.route.len() == 1;
            for d in &http.route {
                let (sns, sname) =
                    service_of_host(&d.destination.host, ns, &self.opts.cluster_domain);
                if sns.is_empty() {
                    return Err(format!(
                        "destination host {} is not a Service of this cluster",
                        d.destination.host
                    ));
                }
                let port = d
                    .destination
                    .port
                    .as_ref()
                    .map(|p| IntOrString::Int(i64::from(p.number)));
                let cluster = self.cluster_for(&sns, &sname, port.as_ref(), false)?;
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
                return Err("every destination has weight 0".to_string());
            }
            if destinations.len() == 1 {
                // One destination: istiod applies its header operations at route level.
                let d = &mut destinations[0];
                headers_ops = headers_ops.merged(&d.headers);
                d.headers = HeaderOps::default();
            }
            Action::Route {
                destinations,
                timeout,
                retry,
                host_rewrite: http.rewrite.as_ref().and_then(|r| r.authority.clone()),
                prefix_rewrite: http.rewrite.as_ref().and_then(|r| r.uri.clone()),
            }
        };
        let base = RouteIr {
            name: http.name.clone(),
            path: PathMatch::Prefix("/".to_string()),
            headers: Vec::new(),
            action,
            headers_ops,
            metadata: Some(("istio".to_string(), config_path.to_string())),
        };
        if matches.is_empty() {
            return Ok(vec![base]);
        }
        let mut out = Vec::new();
        for m in matches {
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
                    matcher: string_match(a).ok_or_else(|| "empty authority match".to_string())?,
                });
            }
            for (name, sm) in &m.headers {
                headers.push(HeaderMatchIr {
                    name: name.to_ascii_lowercase(),
                    matcher: string_match(sm)
                        .ok_or_else(|| format!("empty match for header {name}"))?,
                });
            }
            headers.sort_by(|a, b| a.name.cmp(&b.name));
            r.headers = headers;
            if let (Some(rn), Some(mn)) = (&http.name, &m.name) {
                r.name = Some(format!("{rn}.{mn}"));
            }
            out.push(r);
        }
        Ok(out)
    }

    // ----- KIngress and Route -----

    fn kingress_class(&self, meta: &ObjectMeta) -> Option<String> {
        kingress_class(self.inputs, meta)
    }

    /// The default domain from `knative-serving/config-domain`, else `example.com`.
    fn default_domain(&self) -> String {
        let Some(data) = self
            .inputs
            .config_map("knative-serving", "config-domain")
            .and_then(|cm| cm.data.as_ref())
        else {
            return "example.com".to_string();
        };
        data.iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .find(|(_, v)| v.trim().is_empty())
            .or_else(|| data.iter().find(|(k, _)| !k.starts_with('_')))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| "example.com".to_string())
    }

    fn translate_kingresses(&mut self) {
        let ings = self.oldest_first(Kind::KIngress, |o| match o {
            Object::KIngress(i) => Some(&**i),
            _ => None,
        });
        for (key, ing) in ings {
            if self.kingress_class(&ing.metadata).as_deref()
                != Some(self.opts.ingress_class.as_str())
            {
                continue;
            }
            self.knative_spec(&key, &ing.metadata, &ing.spec, false);
        }
    }

    fn translate_routes(&mut self) {
        let routes = self.oldest_first(Kind::Route, |o| match o {
            Object::Route(r) => Some(&**r),
            _ => None,
        });
        let ropts = knative::RouteOptions {
            domain: self.default_domain(),
            cluster_domain: self.opts.cluster_domain.clone(),
            ..Default::default()
        };
        for (key, route) in routes {
            if self.route_has_ingress(&key) {
                continue;
            }
            match knative::ingress_from_route(&route, &ropts) {
                Ok(spec) => self.knative_spec(&key, &route.metadata, &spec, true),
                Err(msg) => self.error(&key, msg),
            }
        }
    }

    /// A KIngress or a VirtualService already describes this Route's traffic.
    fn route_has_ingress(&self, key: &ObjectKey) -> bool {
        if self
            .inputs
            .get(Kind::KIngress, &key.namespace, &key.name)
            .is_some()
        {
            return true;
        }
        self.inputs.of_kind(Kind::VirtualService).any(|(vk, e)| {
            let labels = e.object.metadata().labels.clone().unwrap_or_default();
            let by_route = labels.get("serving.knative.dev/route") == Some(&key.name)
                && labels
                    .get("serving.knative.dev/routeNamespace")
                    .is_none_or(|ns| ns == &key.namespace);
            let by_ingress = vk.namespace == key.namespace
                && labels.get("networking.internal.knative.dev/ingress") == Some(&key.name);
            by_route || by_ingress
        })
    }

    fn gateway_server(&self, gateway: &str, https: bool) -> Vec<ServerCtx> {
        self.servers
            .iter()
            .filter(|s| s.gateway == gateway && s.https == https)
            .cloned()
            .collect()
    }

    /// KIngress semantics (also used for Routes, through the KIngress Knative would build).
    fn knative_spec(
        &mut self,
        key: &ObjectKey,
        meta: &ObjectMeta,
        spec: &IngressSpec,
        from_route: bool,
    ) {
        self.translate_object(key, meta, |t| t.knative_placements(key, spec, from_route));
    }

    fn knative_placements(
        &mut self,
        key: &ObjectKey,
        spec: &IngressSpec,
        from_route: bool,
    ) -> Result<Vec<Placement>, String> {
        let defaulted = spec.defaulted();
        let hash = crate::khash::k_network_hash(&key.namespace, &key.name, spec);
        let redirected = defaulted.http_option.as_deref() == Some("Redirected");
        let config_path = if from_route {
            format!(
                "/apis/serving.knative.dev/v1/namespaces/{}/routes/{}",
                key.namespace, key.name
            )
        } else {
            format!(
                "/apis/networking.internal.knative.dev/v1alpha1/namespaces/{}/ingresses/{}",
                key.namespace, key.name
            )
        };
        let mut placements = Vec::new();
        for (ri, rule) in defaulted.rules.iter().enumerate() {
            let local = rule.visibility.as_deref() == Some("ClusterLocal");
            let gateway = if local {
                &self.opts.local_gateway
            } else {
                &self.opts.external_gateway
            }
            .clone();
            let http = rule
                .http
                .as_ref()
                .ok_or_else(|| format!("rule {ri} has no http block"))?;
            let mut routes = Vec::new();
            let mut probe_routes = Vec::new();
            for (pi, path) in http.paths.iter().enumerate() {
                let total: i64 = path.splits.iter().map(|s| s.percent).sum();
                if path.splits.is_empty() {
                    return Err(format!("rule {ri} path {pi} has no splits"));
                }
                if total != 100 {
                    return Err(format!(
                        "rule {ri} path {pi}: split percents sum to {total}, not 100"
                    ));
                }
                let mut destinations = Vec::new();
                for s in &path.splits {
                    if s.percent < 0 || s.percent > 100 {
                        return Err(format!("rule {ri} path {pi}: bad percent {}", s.percent));
                    }
                    let sns = if s.service_namespace.is_empty() {
                        key.namespace.clone()
                    } else {
                        s.service_namespace.clone()
                    };
                    let cluster =
                        self.cluster_for(&sns, &s.service_name, Some(&s.service_port), from_route)?;
                    if s.percent == 0 {
                        continue;
                    }
                    destinations.push(WeightedDestination {
                        cluster,
                        weight: s.percent as u32,
                        headers: HeaderOps {
                            set: s.append_headers.clone().unwrap_or_default(),
                            ..Default::default()
                        },
                    });
                }
                let mut headers_ops = HeaderOps {
                    set: path.append_headers.clone().unwrap_or_default(),
                    ..Default::default()
                };
                if destinations.len() == 1 {
                    headers_ops = headers_ops.merged(&destinations[0].headers);
                    destinations[0].headers = HeaderOps::default();
                }
                let mut header_matches: Vec<HeaderMatchIr> = path
                    .headers
                    .iter()
                    .flatten()
                    .map(|(n, m)| HeaderMatchIr {
                        name: n.to_ascii_lowercase(),
                        matcher: StringMatchIr::Exact(m.exact.clone()),
                    })
                    .collect();
                header_matches.sort_by(|a, b| a.name.cmp(&b.name));
                let route = RouteIr {
                    name: None,
                    path: PathMatch::Prefix(
                        path.path
                            .clone()
                            .filter(|p| !p.is_empty())
                            .unwrap_or_else(|| "/".to_string()),
                    ),
                    headers: header_matches,
                    action: Action::Route {
                        destinations,
                        timeout: None,
                        retry: Retry::None,
                        host_rewrite: path.rewrite_host.clone().filter(|h| !h.is_empty()),
                        prefix_rewrite: None,
                    },
                    headers_ops,
                    metadata: Some(("knative-pilot".to_string(), config_path.clone())),
                };
                // The probe copy: matches `K-Network-Hash: override` and sets the hash.
                let mut probe = route.clone();
                probe.headers.retain(|h| h.name != "k-network-hash");
                probe.headers.push(HeaderMatchIr {
                    name: "k-network-hash".to_string(),
                    matcher: StringMatchIr::Exact("override".to_string()),
                });
                probe.headers.sort_by(|a, b| a.name.cmp(&b.name));
                probe
                    .headers_ops
                    .set
                    .insert("K-Network-Hash".to_string(), hash.clone());
                probe_routes.push(probe);
                routes.push(route);
            }
            probe_routes.extend(routes);
            let routes = probe_routes;
            // Plain HTTP servers of the target gateway.
            let http_servers = self.gateway_server(&gateway, false);
            let tls_hosts: BTreeSet<String> = defaulted
                .tls
                .iter()
                .flat_map(|t| t.hosts.iter().cloned())
                .collect();
            for server in &http_servers {
                for host in &rule.hosts {
                    placements.push(Placement {
                        route_name: server.route_name.clone(),
                        host: host.to_ascii_lowercase(),
                        port: server.server.port.number,
                        routes: routes.clone(),
                        require_tls: redirected && !local,
                    });
                }
            }
            if !local {
                for server in self.gateway_server(&gateway, true) {
                    for host in rule.hosts.iter().filter(|h| tls_hosts.contains(*h)) {
                        if !server.server.hosts.iter().any(|sh| host_matches(sh, host)) {
                            continue;
                        }
                        placements.push(Placement {
                            route_name: server.route_name.clone(),
                            host: host.to_ascii_lowercase(),
                            port: server.server.port.number,
                            routes: routes.clone(),
                            require_tls: false,
                        });
                    }
                }
            }
        }
        Ok(placements)
    }

    /// KIngress `spec.tls` entries of our class become HTTPS servers (port 443) on the external
    /// gateway, one per entry, as net-istio adds servers to its Gateway.
    fn add_kingress_tls_servers(&mut self, gateways: &mut [GatewayInfo]) {
        let ext = self.opts.external_gateway.clone();
        let Some(gw) = gateways.iter_mut().find(|g| g.id() == ext) else {
            return;
        };
        let mut servers = Vec::new();
        for (key, e) in self.inputs.of_kind(Kind::KIngress) {
            let Object::KIngress(ing) = &e.object else {
                continue;
            };
            if self.kingress_class(&ing.metadata).as_deref()
                != Some(self.opts.ingress_class.as_str())
            {
                continue;
            }
            for (i, tls) in ing.spec.tls.iter().enumerate() {
                let sns = if tls.secret_namespace.is_empty() {
                    key.namespace.clone()
                } else {
                    tls.secret_namespace.clone()
                };
                servers.push((
                    key.clone(),
                    Server {
                        port: ServerPort {
                            number: 443,
                            name: format!("{}-{}-{i}", key.namespace, key.name),
                            protocol: "HTTPS".to_string(),
                            target_port: None,
                        },
                        bind: None,
                        hosts: tls.hosts.clone(),
                        tls: Some(crate::model::istio::ServerTls {
                            https_redirect: false,
                            mode: Some("SIMPLE".to_string()),
                            credential_name: Some(format!("{sns}/{}", tls.secret_name)),
                        }),
                        name: None,
                    },
                ));
            }
        }
        for (_, s) in servers {
            gw.spec.servers.push(s);
        }
    }

    /// Looks up a TLS secret for a credential name (`name` in the gateway namespace, or
    /// `ns/name`), registering it for SDS. Returns the SDS resource name, always
    /// `kubernetes://ns/name` with the namespace it was read from: the xDS layer sends a secret
    /// only to callers of that namespace (istiod resolves a bare `kubernetes://name` in the
    /// proxy's namespace at push time; we resolve it here, so the name must say where).
    pub(crate) fn tls_secret(
        &mut self,
        gateway_ns: &str,
        credential: &str,
    ) -> Result<String, String> {
        let (ns, name) = split_ns_name(credential, gateway_ns);
        let sds = format!("kubernetes://{ns}/{name}");
        if self.secrets.contains_key(&sds) {
            return Ok(sds);
        }
        let secret = match self.inputs.get(Kind::Secret, &ns, &name).map(|e| &e.object) {
            Some(Object::Secret(s)) => s.clone(),
            _ => return Err(format!("TLS Secret {ns}/{name} not found")),
        };
        let data = secret.data.clone().unwrap_or_default();
        let crt = data.get("tls.crt").map(|b| b.0.clone()).unwrap_or_default();
        let key = data.get("tls.key").map(|b| b.0.clone()).unwrap_or_default();
        if crt.is_empty() || key.is_empty() {
            return Err(format!(
                "Secret {ns}/{name} is not a TLS pair (needs tls.crt and tls.key)"
            ));
        }
        self.secrets.insert(sds.clone(), (crt, key));
        Ok(sds)
    }

    pub(crate) fn secret_error(&mut self, gateway: &str, message: String) {
        let (ns, name) = split_ns_name(gateway, "default");
        let key = ObjectKey {
            kind: Kind::Gateway,
            namespace: ns,
            name,
        };
        // Synthesized servers belong to a KIngress; name the gateway either way.
        self.error(&key, message);
    }
}

/// The port of an Endpoints subset or EndpointSlice that serves the Service port named `want`:
/// the port of that name, else the only port; `None` when there is none or it is out of range.
fn endpoint_port<'a>(
    ports: impl Iterator<Item = (Option<&'a str>, Option<i32>)>,
    want: &str,
) -> Option<u32> {
    let ports: Vec<(Option<&str>, Option<i32>)> = ports.collect();
    let chosen = ports
        .iter()
        .find(|(name, _)| name.unwrap_or("") == want)
        .or(if ports.len() == 1 {
            ports.first()
        } else {
            None
        })?;
    chosen.1.filter(|p| *p > 0 && *p <= 65535).map(|p| p as u32)
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
    fn a_service_without_ready_endpoints_gets_an_empty_assignment() {
        let yaml = r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [hello.default.example.com]
    http:
      paths:
      - splits: [{serviceNamespace: default, serviceName: hello-00001, servicePort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: hello-00001, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8012}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: hello-00001, namespace: default}
subsets:
- notReadyAddresses: [{ip: 10.0.0.9}]
  ports: [{name: http, port: 8012}]
"#;
        let loaded = crate::source::files::parse_text(std::path::Path::new("t.yaml"), yaml);
        let (inputs, _) = Inputs::from_sourced(loaded.objects);
        let labels = BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]);
        let t = translate(&inputs, &Options::default(), &labels);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        let cla: Vec<_> = t
            .config
            .endpoints
            .iter()
            .map(|c| (c.cluster_name.as_str(), c.endpoints.len()))
            .collect();
        assert_eq!(
            cla,
            vec![("outbound|80||hello-00001.default.svc.cluster.local", 0)]
        );
    }

    #[test]
    fn durations_and_hosts() {
        assert_eq!(parse_duration("900s"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("x"), None);
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
