//! The engine's [`Sink`]: assembled resources into persistent maps.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use crate::parallel::{self, Cores};
use crate::xds::resource::{resource, resource_from_bytes, Resource};
use crate::xds::resource::{ResourceMap, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

use super::super::assemble::Sink;
use super::super::envoy;
use super::super::fragment::PIECE;
use super::super::ir::{ClusterIr, VirtualHostIr};

/// Where a winning virtual host's bytes are, for splicing its Istio-layout route configuration.
#[derive(Debug, Clone)]
pub(super) enum VhostBytes {
    /// In the route configuration the engine serves now (`res`), at this range: the virtual
    /// host's bytes are held once, by the resource itself.
    Served(Range<usize>),
    /// Changed since: encoded when the route configuration is next spliced.
    Pending(Arc<VirtualHostIr>),
}

/// Puts assembled resources into the engine's persistent maps; Istio-layout route
/// configurations are spliced from the virtual hosts' bytes in the served one and the changed
/// virtual hosts, each encoded once.
pub(super) struct MapSink<'a> {
    pub res: &'a mut BTreeMap<&'static str, ResourceMap>,
    pub encoded: &'a mut BTreeMap<String, BTreeMap<String, VhostBytes>>,
    /// For a large step (a first translation's clusters): the cores it may share.
    pub cores: &'a Cores,
}

/// Served clusters from which their resources are encoded on the free cores. (A route
/// configuration's virtual hosts are not: encoded in pieces on two cores, then copied into
/// one buffer, the first translation at 100,000 services took ~280 MB more at its peak and no
/// less time; BENCHMARKS.md, "The cluster-local engine takes the idle core".)
const PARALLEL_CLUSTERS: usize = 4 * PIECE;

/// A served cluster's resources: its Cluster and, for EDS, its load assignment.
fn cluster_resources(c: &ClusterIr) -> (Arc<Resource>, Option<Arc<Resource>>) {
    let cluster = resource(&c.name, &envoy::cluster_resource(c));
    let cla = envoy::assignment(c).map(|cla| resource(&c.name, &cla));
    (cluster, cla)
}

impl MapSink<'_> {
    fn put(&mut self, t: &'static str, name: &str, r: Arc<Resource>) {
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

    fn put_cluster(&mut self, c: &ClusterIr, cluster: Arc<Resource>, cla: Option<Arc<Resource>>) {
        self.put(CLUSTER, &c.name, cluster);
        match cla {
            Some(cla) => self.put(ENDPOINT, &c.name, cla),
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
        let old = self.res.get(ROUTE).and_then(|m| m.get(name)).cloned();
        let old: &[u8] = old.as_ref().map_or(&[], |r| &r.body.value);
        let Some(entries) = self.encoded.get_mut(name).filter(|m| !m.is_empty()) else {
            let bytes = envoy::route_config_bytes(name, port, std::iter::empty());
            self.put(ROUTE, name, resource_from_bytes(name, ROUTE, bytes));
            return;
        };
        let (shell, head) = envoy::route_config_shell(name, port);
        // Sized for the served virtual hosts and, for each changed one, twice their mean size
        // (a large buffer grown by doubling, then shrunk, is copied by most allocators; one a
        // little too large is shrunk in place).
        let served = entries
            .values()
            .filter(|e| matches!(e, VhostBytes::Served(_)))
            .count();
        let mean = old.len().checked_div(served).unwrap_or(0);
        let changed = entries.len() - served;
        let mut out = Vec::with_capacity(old.len() + old.len() / 64 + changed * mean * 2 + 4096);
        out.extend_from_slice(&shell[..head]);
        let mut cache = envoy::RouteBytes::default();
        for entry in entries.values_mut() {
            match entry {
                VhostBytes::Served(r) => {
                    let bytes = &old[r.clone()];
                    out.push(0x12); // field 2 (virtual_hosts), length-delimited
                    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
                    let start = out.len();
                    out.extend_from_slice(bytes);
                    *entry = VhostBytes::Served(start..out.len());
                }
                VhostBytes::Pending(vh) => {
                    // Encoded straight into the route configuration.
                    let range = envoy::append_virtual_host_field(vh, &mut cache, &mut out);
                    *entry = VhostBytes::Served(range);
                }
            }
        }
        out.extend_from_slice(&shell[head..]);
        // Give back the rest (of a buffer grown by doubling, or sized on the mean).
        out.shrink_to_fit();
        self.put(ROUTE, name, resource_from_bytes(name, ROUTE, out));
    }
    fn scoped_host(&mut self, route: &str, vh: &VirtualHostIr, on_demand: bool) {
        let name = envoy::scoped_name(route, &vh.host);
        let rc = envoy::scoped_route_configuration(route, vh);
        self.put(ROUTE, &name, resource(&name, &rc));
        self.put(
            SCOPED_ROUTE,
            &name,
            resource(&name, &envoy::scope(route, &vh.host, on_demand)),
        );
    }
    fn static_cluster(&mut self, c: &envoy_types::pb::envoy::config::cluster::v3::Cluster) {
        self.put(CLUSTER, &c.name, resource(&c.name, c));
    }
    fn cluster(&mut self, c: &ClusterIr) {
        let (cluster, cla) = cluster_resources(c);
        self.put_cluster(c, cluster, cla);
    }
    fn clusters<'c>(&mut self, clusters: impl IntoIterator<Item = &'c ClusterIr>) {
        let clusters: Vec<&ClusterIr> = clusters.into_iter().collect();
        if clusters.len() < PARALLEL_CLUSTERS || self.cores.total() < 2 {
            for c in clusters {
                self.cluster(c);
            }
            return;
        }
        // Encoded (and their versions hashed) on the free cores, then put in order.
        let encoded = parallel::pieces(self.cores, &clusters, PIECE, |part| {
            part.iter()
                .map(|c| cluster_resources(c))
                .collect::<Vec<_>>()
        });
        for (c, (cluster, cla)) in clusters.into_iter().zip(encoded.into_iter().flatten()) {
            self.put_cluster(c, cluster, cla);
        }
    }
}
