//! The engine's [`Sink`]: assembled resources into persistent maps.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::xds::resource::{resource, resource_from_bytes};
use crate::xds::resource::{ResourceMap, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

use super::super::assemble::Sink;
use super::super::envoy;
use super::super::ir::{ClusterIr, VirtualHostIr};

/// Puts assembled resources into the engine's persistent maps; Istio-layout route
/// configurations are spliced from the cached encoded virtual hosts.
pub(super) struct MapSink<'a> {
    pub res: &'a mut BTreeMap<&'static str, ResourceMap>,
    pub encoded: &'a BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl MapSink<'_> {
    fn put(&mut self, t: &'static str, name: &str, r: Arc<crate::xds::resource::Resource>) {
        self.res.entry(t).or_default().insert(name.to_string(), r);
    }

    fn remove(&mut self, t: &'static str, name: &str) {
        self.res.entry(t).or_default().remove(name);
    }

    pub fn remove_scoped_host(&mut self, route: &str, host: &str) {
        let name = envoy::scoped_name(route, host);
        self.remove(ROUTE, &name);
        self.remove(SCOPED_ROUTE, &name);
    }

    /// An EDS cluster's load assignment alone (its endpoints changed).
    pub fn assignment(&mut self, c: &ClusterIr) {
        match envoy::assignment(c) {
            Some(cla) => self.put(ENDPOINT, &c.name, resource(&c.name, &cla)),
            None => self.remove(ENDPOINT, &c.name),
        }
    }

    pub fn remove_cluster(&mut self, name: &str) {
        self.remove(CLUSTER, name);
        self.remove(ENDPOINT, name);
    }
}

impl Sink for MapSink<'_> {
    fn listener(&mut self, l: &envoy_types::pb::envoy::config::listener::v3::Listener) {
        self.put(LISTENER, &l.name, resource(&l.name, l));
    }
    fn secret(
        &mut self,
        s: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret,
    ) {
        self.put(SECRET, &s.name, resource(&s.name, s));
    }
    fn route_configuration(
        &mut self,
        name: &str,
        port: u32,
        _vhosts: Option<&BTreeMap<String, Arc<VirtualHostIr>>>,
    ) {
        let vhs: Vec<&[u8]> = self
            .encoded
            .get(name)
            .into_iter()
            .flat_map(|m| m.values())
            .map(Vec::as_slice)
            .collect();
        let bytes = envoy::route_config_bytes(name, port, vhs.into_iter());
        self.put(ROUTE, name, resource_from_bytes(name, ROUTE, bytes));
    }
    fn scoped_host(&mut self, route: &str, vh: &VirtualHostIr) {
        let name = envoy::scoped_name(route, &vh.host);
        let rc = envoy::scoped_route_configuration(route, vh);
        self.put(ROUTE, &name, resource(&name, &rc));
        self.put(
            SCOPED_ROUTE,
            &name,
            resource(&name, &envoy::scope(route, &vh.host)),
        );
    }
    fn static_cluster(&mut self, c: &envoy_types::pb::envoy::config::cluster::v3::Cluster) {
        self.put(CLUSTER, &c.name, resource(&c.name, c));
    }
    fn cluster(&mut self, c: &ClusterIr) {
        self.put(
            CLUSTER,
            &c.name,
            resource(&c.name, &envoy::cluster_resource(c)),
        );
        self.assignment(c);
    }
}
