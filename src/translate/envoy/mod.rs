//! The intermediate model to Envoy protos, named and shaped as istiod does for a router. Pure
//! functions of the IR (and of the gateway stage's servers, whose TLS Secrets are already
//! resolved): nothing here sees `Inputs`, looks anything up or reports errors.
//!
//! - [`routes`]: routes, virtual hosts, route configurations (both layouts), and the splicing of
//!   encoded virtual hosts the incremental engine uses;
//! - [`listeners`](mod@listeners): listeners, HTTP connection managers, TLS filter chains;
//! - [`clusters`]: clusters, load assignments, the blackhole cluster, SDS secrets.
//!
//! Determinism: prost encodes `map` fields (Struct, Metadata) from a HashMap, so every map we
//! emit has at most one entry; everything else is sorted before it is built.

use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddressKind, config_source::ConfigSourceSpecifier,
    socket_address::PortSpecifier, Address, AggregatedConfigSource, ApiVersion, ConfigSource,
    SocketAddress,
};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::Message;

pub mod clusters;
pub mod listeners;
pub mod routes;

pub(crate) use clusters::{assignment, blackhole, cluster_resource, secrets};
pub(crate) use listeners::listeners;
pub(crate) use routes::{
    append_vhost_field, field_len, route_config_bytes, route_configuration, scopable, scope,
    scoped_name, scoped_route_configuration, vhost_clusters, vhost_name, write_route_config,
    EncodedHosts,
};

pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const BLACKHOLE: &str = "BlackHoleCluster";

/// Packs a message into `Any`.
pub fn any<M: Message + prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn duration(d: StdDuration) -> Duration {
    Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn secs(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        initial_fetch_timeout: Some(secs(0)),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// `filter_metadata: {<key>: {config: <value>}}` (single-entry maps: deterministic encoding).
fn socket_address(addr: &str, port: u32) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: addr.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}
