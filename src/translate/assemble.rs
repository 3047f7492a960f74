//! Assembly: the IR of a proxy (its gateway [`Context`], the winning virtual hosts per route
//! configuration, the served clusters) to its resources, in both route layouts. One walk for
//! the full translation (which collects protos into a [`ProxyConfig`]) and the incremental
//! engine (which keeps encoded resources in persistent maps and calls the same per-resource
//! steps for what a change touched): the two differ only in their [`Sink`].
//!
//! The rules: every listener and secret of the context; per served route configuration, in the
//! Istio layout one RouteConfiguration with all its virtual hosts, in the scoped layout one
//! scope and one RouteConfiguration per scopable (exact) host; the blackhole cluster; and the
//! clusters that a winning virtual host on a served route configuration references (a cluster
//! made for an object that was left out, or for another gateway's hosts, is not sent), each
//! with its load assignment when it is an EDS cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

use crate::xds::resource::{resource, resource_from_bytes, Resource, Snapshot};
use crate::xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

use super::claims::Name;
use super::envoy;
use super::gateway::Context;
use super::ir::{ClusterIr, VirtualHostIr};
use super::ProxyConfig;

/// Winning virtual hosts: route configuration -> host -> virtual host.
pub(crate) type VirtualHosts = BTreeMap<Name, BTreeMap<Name, Arc<VirtualHostIr>>>;

/// Where assembled resources go.
pub(crate) trait Sink {
    fn listener(&mut self, l: &Listener);
    fn secret(&mut self, s: &Secret);
    /// Istio layout: route configuration `name` (gateway port `port`) with these virtual hosts.
    fn route_configuration(
        &mut self,
        name: &str,
        port: u32,
        vhosts: Option<&BTreeMap<Name, Arc<VirtualHostIr>>>,
    );
    /// Scoped layout: the scope of `vh.host` on route configuration `route` (fetched on demand
    /// when `on_demand`), and its RouteConfiguration.
    fn scoped_host(&mut self, route: &str, vh: &VirtualHostIr, on_demand: bool);
    /// A Cluster resource that is not from the IR (the blackhole).
    fn static_cluster(&mut self, c: &Cluster);
    /// A served cluster: its Cluster and, for EDS, its load assignment.
    fn cluster(&mut self, c: &ClusterIr);
    /// Every served cluster, in name order: [`Sink::cluster`] of each (a sink may encode
    /// them on several cores, keeping the order).
    fn clusters<'a>(&mut self, clusters: impl IntoIterator<Item = &'a ClusterIr>) {
        for c in clusters {
            self.cluster(c);
        }
    }
}

/// Every resource of a proxy into `sink`; `clusters` are the served ones (see
/// [`served_clusters`]), in name order.
pub(crate) fn assemble<'a>(
    ctx: &Context,
    vhosts: &VirtualHosts,
    clusters: impl IntoIterator<Item = &'a ClusterIr>,
    sink: &mut impl Sink,
) {
    for l in &ctx.listeners {
        sink.listener(l);
    }
    for s in &ctx.secrets {
        sink.secret(s);
    }
    for (route, port) in &ctx.route_ports {
        if !is_scoped(ctx, route) {
            sink.route_configuration(route, *port, vhosts.get(route.as_str()));
            continue;
        }
        for (host, vh) in vhosts.get(route.as_str()).into_iter().flatten() {
            if envoy::scopable(host) {
                sink.scoped_host(route, vh, ctx.on_demand);
            }
        }
    }
    sink.static_cluster(&envoy::blackhole());
    sink.clusters(clusters);
}

/// Whether `route` is laid out as scopes.
pub(crate) fn is_scoped(ctx: &Context, route: &str) -> bool {
    ctx.scoped_route.as_deref() == Some(route)
}

/// The names of the clusters winning virtual hosts on served route configurations reference
/// (the incremental engine keeps the same set as reference counts).
pub(crate) fn served_clusters<'a>(ctx: &Context, vhosts: &'a VirtualHosts) -> BTreeSet<&'a str> {
    let mut used = BTreeSet::new();
    for name in ctx.route_ports.keys() {
        for vh in vhosts
            .get(name.as_str())
            .into_iter()
            .flat_map(|m| m.values())
        {
            used.extend(envoy::vhost_clusters(vh));
        }
    }
    used
}

/// Collects protos, for the full translation.
#[derive(Default)]
pub(crate) struct ProtoSink {
    config: ProxyConfig,
}

impl ProtoSink {
    /// The collected resources, each list sorted by name (endpoints in cluster order).
    pub fn finish(mut self, on_demand: bool) -> ProxyConfig {
        let c = &mut self.config;
        c.on_demand = on_demand;
        c.listeners.sort_by(|a, b| a.name.cmp(&b.name));
        c.routes.sort_by(|a, b| a.name.cmp(&b.name));
        c.scoped_routes.sort_by(|a, b| a.name.cmp(&b.name));
        c.clusters.sort_by(|a, b| a.name.cmp(&b.name));
        self.config
    }
}

impl Sink for ProtoSink {
    fn listener(&mut self, l: &Listener) {
        self.config.listeners.push(l.clone());
    }
    fn secret(&mut self, s: &Secret) {
        self.config.secrets.push(s.clone());
    }
    fn route_configuration(
        &mut self,
        name: &str,
        port: u32,
        vhosts: Option<&BTreeMap<Name, Arc<VirtualHostIr>>>,
    ) {
        let vhs: Vec<&VirtualHostIr> = vhosts
            .into_iter()
            .flat_map(|m| m.values().map(|v| &**v))
            .collect();
        self.config
            .routes
            .push(envoy::route_configuration(name, port, &vhs));
    }
    fn scoped_host(&mut self, route: &str, vh: &VirtualHostIr, on_demand: bool) {
        self.config
            .routes
            .push(envoy::scoped_route_configuration(route, vh));
        self.config
            .scoped_routes
            .push(envoy::scope(route, &vh.host, on_demand));
    }
    fn static_cluster(&mut self, c: &Cluster) {
        self.config.clusters.push(c.clone());
    }
    fn cluster(&mut self, c: &ClusterIr) {
        self.config.clusters.push(envoy::cluster_resource(c));
        self.config.endpoints.extend(envoy::assignment(c));
    }
}

/// Encodes each resource as it is assembled, for a translation that needs only the encoded
/// snapshot (`render`): an Istio-layout route configuration is spliced from its virtual hosts,
/// each encoded alone (as the engine splices its cached ones), so the protos of a whole
/// configuration never exist at once.
#[derive(Default)]
pub(crate) struct EncodedSink {
    resources: Vec<(&'static str, Arc<Resource>)>,
    /// Whether a route configuration has a virtual host other than a `blackhole:<port>` one.
    pub routable: bool,
}

impl EncodedSink {
    pub fn finish(self, generation: u64, on_demand: bool) -> Snapshot {
        Snapshot {
            wildcard_clusters: super::wildcard_clusters(on_demand),
            ..Snapshot::from_resources(generation, self.resources)
        }
    }

    fn put(&mut self, t: &'static str, r: Arc<Resource>) {
        self.resources.push((t, r));
    }

    fn vhost(&mut self, vh: &VirtualHostIr) {
        self.routable |= !envoy::vhost_name(vh).starts_with("blackhole:");
    }
}

impl Sink for EncodedSink {
    fn listener(&mut self, l: &Listener) {
        self.put(LISTENER, resource(&l.name, l));
    }
    fn secret(&mut self, s: &Secret) {
        self.put(SECRET, resource(&s.name, s));
    }
    fn route_configuration(
        &mut self,
        name: &str,
        port: u32,
        vhosts: Option<&BTreeMap<Name, Arc<VirtualHostIr>>>,
    ) {
        // In the order `envoy::route_configuration` sorts its virtual hosts in.
        let mut sorted: Vec<(String, &VirtualHostIr)> = Vec::new();
        for vh in vhosts.into_iter().flat_map(|m| m.values()) {
            self.vhost(vh);
            sorted.push((envoy::vhost_name(vh), vh));
        }
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let bytes = if sorted.is_empty() {
            envoy::route_config_bytes(name, port, std::iter::empty())
        } else {
            let hosts = envoy::EncodedHosts::encode(sorted.iter().map(|(_, vh)| *vh));
            envoy::write_route_config(name, port, hosts.fields_len(), |out| {
                for i in 0..hosts.len() {
                    hosts.append_field(i, out);
                }
            })
        };
        self.put(ROUTE, resource_from_bytes(name, ROUTE, bytes));
    }
    fn scoped_host(&mut self, route: &str, vh: &VirtualHostIr, on_demand: bool) {
        self.vhost(vh);
        let name = envoy::scoped_name(route, &vh.host);
        let rc = envoy::scoped_route_configuration(route, vh);
        self.put(ROUTE, resource(&name, &rc));
        self.put(
            SCOPED_ROUTE,
            resource(&name, &envoy::scope(route, &vh.host, on_demand)),
        );
    }
    fn static_cluster(&mut self, c: &Cluster) {
        self.put(CLUSTER, resource(&c.name, c));
    }
    fn cluster(&mut self, c: &ClusterIr) {
        self.put(CLUSTER, resource(&c.name, &envoy::cluster_resource(c)));
        if let Some(cla) = envoy::assignment(c) {
            self.put(ENDPOINT, resource(&c.name, &cla));
        }
    }
}
