//! Pure translation: objects in, Envoy resources out. No I/O, no clocks.
//!
//! For one proxy (identified by its pod labels) translation runs in stages, each a module:
//!
//! 1. `gateway`: the Gateways that select the proxy, their servers and container ports (through
//!    the Services that select the gateway pods), TLS Secrets resolved, listeners and secrets;
//! 2. per object, on its own (`fragment`): `virtual_service`, `kingress` (ours, see
//!    [`ownership`]) and `route` (with neither) reduce to the intermediate model in [`ir`], with
//!    the clusters they need from `backend`; then [`check`]: a value Envoy would reject leaves
//!    the object out (so one object never makes Envoy reject a resource it shares);
//! 3. `claims`: which objects are translated at all (route precedence), and who keeps a host
//!    two objects claim (duplicate hosts);
//! 4. `assemble`: the winning virtual hosts and served clusters to resources, in both route
//!    layouts, through the pure proto builders of [`envoy`].
//!
//! Objects that cannot be translated are reported as [`InputError`]s (with an
//! [`ErrorCode`](crate::model::diag::ErrorCode), see [`error`]) and left out; everything else
//! still translates.
//!
//! [`translate`] does it all at once (render, goldens, the reference); [`incremental::Engine`]
//! runs the same stages per change, keeping each stage's result, byte-identical to
//! [`translate`].

use std::collections::BTreeMap;

use crate::model::diag::InputError;
use crate::state::Inputs;
use crate::xds::resource::Snapshot;

pub(crate) mod assemble;
pub(crate) mod backend;
pub mod check;
pub(crate) mod claims;
pub mod config_istio;
pub mod envoy;
pub mod error;
pub(crate) mod fragment;
pub(crate) mod gateway;
pub(crate) mod gateway_api;
pub mod incremental;
pub mod ir;
pub(crate) mod kingress;
pub mod ownership;
pub(crate) mod route;
pub(crate) mod virtual_service;

pub use gateway::{container_port, gateway_labels, gateways, pod_labels, GatewayInfo};
pub use gateway_api::gateways_labels as gateway_api_labels;

/// Translation settings (the CLI flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// KIngresses with this class annotation are ours to translate.
    pub ingress_class: String,
    /// `ns/name` of the gateway that serves ExternalIP rules; `None`: the one config-istio
    /// names, else `knative-serving/knative-ingress-gateway` (see [`Options::external_gateway`]).
    pub external_gateway: Option<String>,
    /// `ns/name` of the gateway that serves ClusterLocal rules; `None`: the one of the two
    /// well-known names that exists (see [`Options::local_gateway`]).
    pub local_gateway: Option<String>,
    /// Address listeners bind to (istio: `0.0.0.0`, or the Gateway server's `bind`).
    pub bind_address: String,
    pub cluster_domain: String,
    /// How plain-HTTP route configurations are laid out (`--route-layout`).
    pub route_layout: RouteLayout,
    /// Gateway API: the GatewayClass `spec.controllerName` we serve (`--gateway-controller`).
    pub gateway_controller: String,
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
    /// The scoped layout learnt on demand (issue 15): every HTTP connection manager runs
    /// Envoy's `envoy.filters.http.on_demand` filter before the router, with on-demand CDS over
    /// ADS, and every scope is `on_demand` (its RouteConfiguration is fetched by the first
    /// request of its host). A wildcard CDS subscription gets only the clusters no route
    /// fetches ([`wildcard_clusters`]: the blackhole); the service clusters are fetched by name
    /// when a request first needs one. Needs Delta ADS (on-demand CDS does). A proxy the
    /// scoped layout keeps on the Istio layout (several plain-HTTP route configurations) gets
    /// its routes eagerly and its clusters still on demand.
    OnDemand,
}

impl RouteLayout {
    /// Whether plain-HTTP route configurations are laid out as scopes when the proxy allows it.
    pub fn scoped(self) -> bool {
        matches!(self, RouteLayout::Scoped | RouteLayout::OnDemand)
    }
}

/// What a wildcard CDS subscription stands for in a snapshot (`Snapshot::wildcard_clusters`):
/// in the on-demand layout the clusters no request fetches by name (the blackhole); `None`
/// (every cluster) in the eager layouts. One rule for the full translation and the engine.
pub fn wildcard_clusters(on_demand: bool) -> Option<std::sync::Arc<[String]>> {
    on_demand.then(|| std::sync::Arc::from(vec![envoy::BLACKHOLE.to_string()]))
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingress_class: crate::model::kingress::DEFAULT_CLASS.to_string(),
            external_gateway: None,
            local_gateway: None,
            bind_address: "0.0.0.0".to_string(),
            cluster_domain: "cluster.local".to_string(),
            route_layout: RouteLayout::Istio,
            gateway_controller: crate::model::gateway_api::DEFAULT_CONTROLLER.to_string(),
        }
    }
}

/// net-istio's public Gateway.
pub const KNATIVE_INGRESS_GATEWAY: &str = "knative-serving/knative-ingress-gateway";
/// net-istio's cluster-local Gateway today (port 8081 on the ingress gateway pods).
pub const KNATIVE_LOCAL_GATEWAY: &str = "knative-serving/knative-local-gateway";
/// net-istio's cluster-local Gateway before 0.20 (its own gateway pods), and our default when
/// the inputs have no Gateway objects.
pub const CLUSTER_LOCAL_GATEWAY: &str = "knative-serving/cluster-local-gateway";

impl Options {
    /// The gateway (`ns/name`) that serves ExternalIP rules: `--external-gateway` when given,
    /// else the default external gateway of net-istio's config-istio ([`config_istio`]), else
    /// `knative-serving/knative-ingress-gateway`.
    pub fn external_gateway(&self, inputs: &Inputs) -> String {
        if let Some(g) = &self.external_gateway {
            return g.clone();
        }
        config_istio::gateways(inputs)
            .ok()
            .and_then(|g| g.external)
            .unwrap_or_else(|| KNATIVE_INGRESS_GATEWAY.to_string())
    }

    /// The gateway (`ns/name`) that serves ClusterLocal rules: `--local-gateway` when given,
    /// else the default local gateway of config-istio, else
    /// `knative-serving/knative-local-gateway` when that Gateway exists (net-istio since
    /// 0.20), else `knative-serving/cluster-local-gateway`.
    pub fn local_gateway(&self, inputs: &Inputs) -> String {
        if let Some(g) = &self.local_gateway {
            return g.clone();
        }
        if let Some(g) = config_istio::gateways(inputs).ok().and_then(|g| g.local) {
            return g;
        }
        let (ns, name) = gateway::split_ns_name(KNATIVE_LOCAL_GATEWAY, "knative-serving");
        if inputs
            .get(crate::model::Kind::Gateway, &ns, &name)
            .is_some()
        {
            KNATIVE_LOCAL_GATEWAY.to_string()
        } else {
            CLUSTER_LOCAL_GATEWAY.to_string()
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
    /// Clusters on demand ([`RouteLayout::OnDemand`]).
    pub on_demand: bool,
}

/// The result of translating for one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    pub config: ProxyConfig,
    /// Gateways (`ns/name`) that apply to this proxy.
    pub gateways: Vec<String>,
    pub errors: Vec<InputError>,
}

/// Translates everything that applies to a proxy with these labels.
pub fn translate(
    inputs: &Inputs,
    opts: &Options,
    labels: &BTreeMap<String, String>,
) -> Translation {
    let mut sink = assemble::ProtoSink::default();
    let (gateways, errors) = translate_into(inputs, opts, labels, &mut sink);
    Translation {
        config: sink.finish(opts.route_layout == RouteLayout::OnDemand),
        gateways,
        errors,
    }
}

/// What [`translate_encoded`] produced.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The same resources as [`translate`]'s, encoded (byte-identical).
    pub snapshot: Snapshot,
    /// Gateways (`ns/name`) that apply to this proxy.
    pub gateways: Vec<String>,
    /// Whether any route configuration routes a host (else every request gets 404).
    pub routable: bool,
    pub errors: Vec<InputError>,
}

/// [`translate`] straight into an encoded snapshot of `generation` (`render`): each resource is
/// encoded as it is assembled, and a route configuration is spliced from its virtual hosts
/// encoded one at a time, so no proto of the whole configuration is built.
pub fn translate_encoded(
    inputs: &Inputs,
    opts: &Options,
    labels: &BTreeMap<String, String>,
    generation: u64,
) -> Encoded {
    let mut sink = assemble::EncodedSink::default();
    let (gateways, errors) = translate_into(inputs, opts, labels, &mut sink);
    let routable = sink.routable;
    Encoded {
        snapshot: sink.finish(generation, opts.route_layout == RouteLayout::OnDemand),
        gateways,
        routable,
        errors,
    }
}

/// The stages of a full translation, into `sink`; the gateways and the errors.
fn translate_into(
    inputs: &Inputs,
    opts: &Options,
    labels: &BTreeMap<String, String>,
    sink: &mut impl assemble::Sink,
) -> (Vec<String>, Vec<InputError>) {
    let ctx = gateway::context(inputs, opts, labels);
    let mut frags: Vec<fragment::Fragment> = fragment::translated_keys(inputs, opts)
        .filter_map(|key| fragment::translate_one(inputs, opts, &ctx, &key))
        .collect();
    frags.sort_by(|a, b| a.order.cmp(&b.order));
    let mut errors = ctx.errors.clone();
    errors.extend(frags.iter().filter_map(|f| f.error.as_deref().cloned()));
    // Claims per slot, in translation order.
    let mut claimants: BTreeMap<&claims::Slot, Vec<&fragment::Fragment>> = BTreeMap::new();
    for f in &frags {
        for slot in f.vhosts.keys() {
            claimants.entry(slot).or_default().push(f);
        }
    }
    let mut vhosts = assemble::VirtualHosts::new();
    for (slot, fs) in &claimants {
        let covering = claims::covering_hosts(&slot.1)
            .into_iter()
            .flat_map(|host| {
                let cover: claims::Slot = (slot.0.clone(), host.into());
                let fs = claimants.get(&cover).cloned().unwrap_or_default();
                fs.into_iter().map(move |f| (f, cover.1.clone()))
            })
            .collect::<Vec<_>>();
        let claim = claims::resolve(
            inputs,
            slot,
            fs.iter().copied(),
            covering.iter().map(|(f, h)| (&**h, *f)),
        );
        errors.extend(claim.errors);
        if let Some(vh) = claim.vhost {
            vhosts
                .entry(slot.0.clone())
                .or_default()
                .insert(slot.1.clone(), vh);
        }
    }
    // A cluster's content depends only on its Service port and endpoints; the first fragment
    // to need it provides it.
    let mut clusters: BTreeMap<&str, &ir::ClusterIr> = BTreeMap::new();
    for f in &frags {
        for (c, _) in f.clusters.iter().map(|c| &**c) {
            clusters.entry(c.name.as_str()).or_insert(c);
        }
    }
    let served = assemble::served_clusters(&ctx, &vhosts);
    assemble::assemble(
        &ctx,
        &vhosts,
        clusters
            .iter()
            .filter(|(name, _)| served.contains(*name))
            .map(|(_, c)| *c),
        sink,
    );
    errors.sort();
    errors.dedup();
    (ctx.gateways, errors)
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
}
