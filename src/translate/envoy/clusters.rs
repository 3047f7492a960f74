//! Clusters, their load assignments, the blackhole cluster, and SDS secrets.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
    CircuitBreakers, Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, DataSource, Http2ProtocolOptions,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret::Type as SecretType, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::super::ir::*;
use super::{ads, any, secs, socket_address, BLACKHOLE};

/// The Cluster resource of a cluster.
pub(crate) fn cluster_resource(c: &ClusterIr) -> Cluster {
    let mut cluster = Cluster {
        name: c.name.clone(),
        connect_timeout: Some(secs(10)),
        lb_policy: LbPolicy::LeastRequest as i32,
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: Some(UInt32Value { value: u32::MAX }),
                max_pending_requests: Some(UInt32Value { value: u32::MAX }),
                max_requests: Some(UInt32Value { value: u32::MAX }),
                max_retries: Some(UInt32Value { value: u32::MAX }),
                track_remaining: true,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    match &c.kind {
        ClusterKind::Eds { .. } => {
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            cluster.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: c.name.clone(),
            });
        }
        ClusterKind::Dns { host, port } => {
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
            cluster.dns_lookup_family = DnsLookupFamily::V4Only as i32;
            cluster.load_assignment = Some(load_assignment(&c.name, &[(host.clone(), *port)]));
        }
    }
    if c.upstream == Upstream::H2c {
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        cluster.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            any(&opts),
        );
    }
    cluster
}

fn load_assignment(name: &str, endpoints: &[(String, u32)]) -> ClusterLoadAssignment {
    let lb_endpoints: Vec<LbEndpoint> = endpoints
        .iter()
        .map(|(ip, port)| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(ip, *port)),
                ..Default::default()
            })),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: if lb_endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                load_balancing_weight: Some(UInt32Value {
                    value: lb_endpoints.len() as u32,
                }),
                lb_endpoints,
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

/// The cluster every gateway has.
pub(crate) fn blackhole() -> Cluster {
    Cluster {
        name: BLACKHOLE.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(secs(10)),
        ..Default::default()
    }
}

/// The load assignment of an EDS cluster (`None` for DNS clusters, which carry their own).
pub(crate) fn assignment(c: &ClusterIr) -> Option<ClusterLoadAssignment> {
    match &c.kind {
        ClusterKind::Eds { endpoints } => Some(load_assignment(&c.name, endpoints)),
        ClusterKind::Dns { .. } => None,
    }
}

/// The SDS secrets of the resolved TLS pairs (SDS name -> (certificate chain, private key)).
pub(crate) fn secrets(pairs: &BTreeMap<String, (Vec<u8>, Vec<u8>)>) -> Vec<Secret> {
    pairs
        .iter()
        .map(|(name, (crt, key))| Secret {
            name: name.clone(),
            r#type: Some(SecretType::TlsCertificate(TlsCertificate {
                certificate_chain: Some(DataSource {
                    specifier: Some(Specifier::InlineBytes(crt.clone())),
                    ..Default::default()
                }),
                private_key: Some(DataSource {
                    specifier: Some(Specifier::InlineBytes(key.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
        .collect()
}
