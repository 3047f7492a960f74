//! Backends: the clusters an object's destinations need (one per Service port, named as istiod
//! names them) and their endpoints (ready addresses from EndpointSlices, else Endpoints).

use std::collections::BTreeSet;

use crate::model::core::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::kingress::IntOrString;
use crate::state::Inputs;

use super::error::TranslateError;
use super::ir::{cluster_name, ClusterIr, ClusterKind, Upstream};
use super::Options;

/// (namespace, name) of a Service.
pub(crate) type SvcKey = (String, String);

/// A cluster an object needs and where its endpoints come from, shared by the fragments of
/// every proxy and the engines' cluster indexes (one copy however many hold it; an engine
/// whose endpoints change copies its own, [`Arc::make_mut`]).
pub(crate) type SharedCluster = std::sync::Arc<(ClusterIr, ClusterSource)>;

/// Where an EDS cluster's endpoints come from: Service `ns/name`, port name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterSource {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
}

/// The clusters one object needs, created on first use, and every Service it looked up (found
/// or not: a Service appearing later must re-translate the object). An object needs a few:
/// vectors, searched in place.
pub(crate) struct Backends<'a> {
    inputs: &'a Inputs,
    opts: &'a Options,
    clusters: Vec<(ClusterIr, ClusterSource)>,
    reads: Vec<SvcKey>,
}

fn is_h2c_port(p: &ServicePort) -> bool {
    let name = p.name.as_deref().unwrap_or("");
    name == "http2"
        || name == "h2c"
        || name.starts_with("http2-")
        || name.starts_with("grpc")
        || p.app_protocol.as_deref() == Some("kubernetes.io/h2c")
}

/// A Knative revision Service: port `http` 80 -> 8012 (its shape is fixed by Knative; the
/// Service object is optional in manifest inputs).
fn revision_service() -> Service {
    Service {
        metadata: ObjectMeta::default(),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

impl<'a> Backends<'a> {
    pub fn new(inputs: &'a Inputs, opts: &'a Options) -> Backends<'a> {
        Backends {
            inputs,
            opts,
            clusters: Vec::new(),
            reads: Vec::new(),
        }
    }

    /// The clusters created, by name, and the Services read, sorted and without repeats.
    pub fn into_parts(self) -> (Vec<SharedCluster>, Vec<SvcKey>) {
        let (mut clusters, mut reads) = (self.clusters, self.reads);
        clusters.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        reads.sort();
        reads.dedup();
        (
            clusters.into_iter().map(SharedCluster::new).collect(),
            reads,
        )
    }

    /// The cluster for a Service port, created on first use. `port` selects the Service port by
    /// number or name (`None`: the Service's only port).
    pub fn cluster_for(
        &mut self,
        ns: &str,
        name: &str,
        port: Option<&IntOrString>,
        knative_revision_fallback: bool,
    ) -> Result<String, TranslateError> {
        if !self.reads.iter().any(|(n, m)| n == ns && m == name) {
            self.reads.push((ns.to_string(), name.to_string()));
        }
        let missing = || TranslateError::ServiceNotFound {
            ns: ns.to_string(),
            name: name.to_string(),
        };
        let fallback: Service;
        let svc: &Service = match self.inputs.service(ns, name) {
            Some(s) => s,
            None if knative_revision_fallback => {
                fallback = revision_service();
                &fallback
            }
            None => return Err(missing()),
        };
        let no_spec = ServiceSpec::default();
        let spec = svc.spec.as_ref().unwrap_or(&no_spec);
        let sp = service_port(ns, name, spec, port)?;
        if sp.port <= 0 || sp.port > 65535 {
            return Err(TranslateError::BadServicePort {
                ns: ns.to_string(),
                name: name.to_string(),
                port: sp.port,
            });
        }
        let fqdn = format!("{name}.{ns}.svc.{}", self.opts.cluster_domain);
        let cname = cluster_name(sp.port as u32, &fqdn);
        if self.clusters.iter().any(|(c, _)| c.name == cname) {
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
                return Err(TranslateError::NoExternalName {
                    ns: ns.to_string(),
                    name: name.to_string(),
                });
            }
            ClusterKind::Dns {
                host,
                port: sp.port as u32,
            }
        } else {
            ClusterKind::Eds {
                endpoints: ready_endpoints(self.inputs, ns, name, sp.name.as_deref().unwrap_or("")),
            }
        };
        let src = ClusterSource {
            namespace: ns.to_string(),
            service: name.to_string(),
            port_name: sp.name.clone().unwrap_or_default(),
        };
        let ir = ClusterIr {
            name: cname.clone(),
            upstream,
            kind,
        };
        self.clusters.push((ir, src));
        Ok(cname)
    }
}

/// The Service port `port` selects (by number or name; `None`: the Service's only port). An
/// ExternalName Service without ports takes any port number.
fn service_port(
    ns: &str,
    name: &str,
    spec: &ServiceSpec,
    port: Option<&IntOrString>,
) -> Result<ServicePort, TranslateError> {
    let ports = spec.ports.as_deref().unwrap_or_default();
    Ok(match port {
        None if ports.len() == 1 => ports[0].clone(),
        None => {
            return Err(TranslateError::AmbiguousPort {
                ns: ns.to_string(),
                name: name.to_string(),
                count: ports.len(),
            })
        }
        Some(IntOrString::Int(n)) => match ports.iter().find(|p| i64::from(p.port) == *n) {
            Some(p) => p.clone(),
            None if spec.type_.as_deref() == Some("ExternalName") && ports.is_empty() => {
                ServicePort {
                    port: i32::try_from(*n).map_err(|_| TranslateError::BadPortNumber(*n))?,
                    ..Default::default()
                }
            }
            None => {
                return Err(TranslateError::NoPortNumber {
                    ns: ns.to_string(),
                    name: name.to_string(),
                    port: *n,
                })
            }
        },
        Some(IntOrString::String(s)) => match ports.iter().find(|p| p.name.as_deref() == Some(s)) {
            Some(p) => p.clone(),
            None => {
                return Err(TranslateError::NoPortNamed {
                    ns: ns.to_string(),
                    name: name.to_string(),
                    port: s.clone(),
                })
            }
        },
    })
}

/// Ready addresses of Service `ns/name`'s port named `want`, from its EndpointSlices, or its
/// Endpoints when it has no slices. Sorted and deduplicated: what an EDS cluster holds.
pub(crate) fn ready_endpoints(
    inputs: &Inputs,
    ns: &str,
    name: &str,
    want: &str,
) -> Vec<(String, u32)> {
    let mut out = BTreeSet::new();
    let slices = inputs.endpoint_slices(ns, name);
    if !slices.is_empty() {
        for slice in slices {
            let ports = slice.ports.iter().flatten();
            let Some(port) = endpoint_port(ports.map(|p| (p.name.as_deref(), p.port)), want) else {
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
    } else if let Some(eps) = inputs.endpoints(ns, name) {
        for subset in eps.subsets.iter().flatten() {
            let ports = subset.ports.iter().flatten();
            let Some(port) = endpoint_port(ports.map(|p| (p.name.as_deref(), Some(p.port))), want)
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

/// The ready endpoints of a cluster's source.
pub(crate) fn ready_endpoints_of(inputs: &Inputs, src: &ClusterSource) -> Vec<(String, u32)> {
    ready_endpoints(inputs, &src.namespace, &src.service, &src.port_name)
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
