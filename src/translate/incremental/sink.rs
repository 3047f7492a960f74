//! The engine's [`Sink`]: assembled resources into persistent maps.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use crate::parallel::{self, Cores};
use crate::xds::resource::{resource, resource_from_bytes, Resource};
use crate::xds::resource::{ResourceMap, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

use super::super::assemble::Sink;
use super::super::claims::Name;
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

/// Served clusters from which their resources are encoded on the free cores.
const PARALLEL_CLUSTERS: usize = 4 * PIECE;

/// Changed virtual hosts of one route configuration from which they are encoded on the free
/// cores.
const PARALLEL_HOSTS: usize = 4 * PIECE;

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
        _vhosts: Option<&BTreeMap<Name, Arc<VirtualHostIr>>>,
    ) {
        let old = self.res.get(ROUTE).and_then(|m| m.get(name)).cloned();
        let old: &[u8] = old.as_ref().map_or(&[], |r| &r.body.value);
        let Some(entries) = self.encoded.get_mut(name).filter(|m| !m.is_empty()) else {
            let bytes = envoy::route_config_bytes(name, port, std::iter::empty());
            self.put(ROUTE, name, resource_from_bytes(name, ROUTE, bytes));
            return;
        };
        // The changed virtual hosts encoded first (a first translation's, in pieces on the
        // free cores), so the route configuration is allocated at its exact size and written
        // once.
        let pending: Vec<&VirtualHostIr> = entries
            .values()
            .filter_map(|e| match e {
                VhostBytes::Pending(vh) => Some(&**vh),
                VhostBytes::Served(_) => None,
            })
            .collect();
        let pieces = if pending.len() >= PARALLEL_HOSTS && self.cores.total() >= 2 {
            parallel::pieces(self.cores, &pending, PIECE, |part| {
                envoy::EncodedHosts::encode(part.iter().copied())
            })
        } else {
            vec![envoy::EncodedHosts::encode(pending)]
        };
        let fields = entries
            .values()
            .filter_map(|e| match e {
                VhostBytes::Served(r) => Some(envoy::field_len(r.len())),
                VhostBytes::Pending(_) => None,
            })
            .chain(pieces.iter().map(|p| p.fields_len()))
            .sum();
        let out = envoy::write_route_config(name, port, fields, |out| {
            let mut pieces = pieces.into_iter();
            // The piece being written and its next virtual host; a piece is dropped as soon
            // as it is written.
            let mut current: Option<(envoy::EncodedHosts, usize)> = None;
            for entry in entries.values_mut() {
                let range = match entry {
                    VhostBytes::Served(r) => envoy::append_vhost_field(out, &old[r.clone()]),
                    // One encoded virtual host per pending one, in order (were one missing,
                    // the route configuration's length check would fail in tests).
                    VhostBytes::Pending(_) => loop {
                        match &mut current {
                            Some((p, i)) if *i < p.len() => {
                                *i += 1;
                                break p.append_field(*i - 1, out);
                            }
                            _ => match pieces.next() {
                                Some(p) => current = Some((p, 0)),
                                None => break out.len()..out.len(),
                            },
                        }
                    },
                };
                *entry = VhostBytes::Served(range);
            }
        });
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
