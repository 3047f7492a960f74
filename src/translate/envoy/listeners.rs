//! Listeners: one per (bind address, container port); a plain-HTTP filter chain and one TLS
//! chain per HTTPS server (selected by SNI).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    transport_socket::ConfigType as TransportConfigType,
    HttpProtocolOptions as CoreHttpProtocolOptions, TrafficDirection, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter::ConfigType as FilterConfigType,
    listener_filter::ConfigType as ListenerFilterConfigType, Filter, FilterChain, FilterChainMatch,
    Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::http::on_demand::v3::{OnDemand, OnDemandCds};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
        UpgradeConfig,
    },
    http_filter::ConfigType as HttpFilterConfigType,
    scoped_routes::{
        scope_key_builder::{
            fragment_builder::{
                header_value_extractor::ExtractType, HeaderValueExtractor, Type as FragmentType,
            },
            FragmentBuilder,
        },
        ConfigSpecifier, ScopeKeyBuilder,
    },
    HttpConnectionManager, HttpFilter, Rds, ScopedRds, ScopedRoutes,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
};
use envoy_types::pb::google::protobuf::BoolValue;

use super::super::gateway::{ListenerGroups, ServerCtx};
use super::{ads, any, secs, socket_address, HCM};

fn route_specifier(route_name: &str, scoped: bool) -> RouteSpecifier {
    if !scoped {
        return RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.to_string(),
        });
    }
    // The key: the `:authority` host without its port.
    RouteSpecifier::ScopedRoutes(ScopedRoutes {
        name: route_name.to_string(),
        scope_key_builder: Some(ScopeKeyBuilder {
            fragments: vec![FragmentBuilder {
                r#type: Some(FragmentType::HeaderValueExtractor(HeaderValueExtractor {
                    name: ":authority".to_string(),
                    element_separator: ":".to_string(),
                    extract_type: Some(ExtractType::Index(0)),
                })),
            }],
        }),
        rds_config_source: Some(ads()),
        config_specifier: Some(ConfigSpecifier::ScopedRds(ScopedRds {
            scoped_rds_config_source: Some(ads()),
            ..Default::default()
        })),
    })
}

/// The HTTP filters: the router, after Envoy's on-demand filter when `on_demand` (it fetches
/// the route configuration of a scope that has none yet, and the cluster a route picked, by
/// on-demand CDS over ADS, before the router looks the cluster up).
fn http_filters(on_demand: bool) -> Vec<HttpFilter> {
    let router = HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(HttpFilterConfigType::TypedConfig(any(&Router::default()))),
        ..Default::default()
    };
    if !on_demand {
        return vec![router];
    }
    let filter = OnDemand {
        odcds: Some(OnDemandCds {
            source: Some(ads()),
            ..Default::default()
        }),
    };
    vec![
        HttpFilter {
            name: ON_DEMAND.to_string(),
            config_type: Some(HttpFilterConfigType::TypedConfig(any(&filter))),
            ..Default::default()
        },
        router,
    ]
}

/// The name of Envoy's on-demand filter.
pub const ON_DEMAND: &str = "envoy.filters.http.on_demand";

fn hcm(
    stat_prefix: &str,
    route_name: &str,
    scoped: bool,
    on_demand: bool,
) -> HttpConnectionManager {
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(route_specifier(route_name, scoped)),
        http_filters: http_filters(on_demand),
        server_name: "istio-envoy".to_string(),
        stream_idle_timeout: Some(secs(0)),
        common_http_protocol_options: Some(CoreHttpProtocolOptions {
            idle_timeout: Some(secs(3600)),
            ..Default::default()
        }),
        use_remote_address: Some(BoolValue { value: true }),
        forward_client_cert_details: ForwardClientCertDetails::SanitizeSet as i32,
        normalize_path: Some(BoolValue { value: true }),
        path_with_escaped_slashes_action: PathWithEscapedSlashesAction::KeepUnchanged as i32,
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The listeners of a proxy's servers, grouped per (bind address, container port), and the
/// route configurations they use (name -> gateway port). `scoped_route` is the route
/// configuration laid out as scopes, if any; `on_demand`: every connection manager fetches
/// clusters (and scopes' route configurations) on demand.
pub(crate) fn listeners(
    groups: &ListenerGroups<'_>,
    scoped_route: Option<&str>,
    on_demand: bool,
) -> (Vec<Listener>, BTreeMap<String, u32>) {
    let mut listeners = Vec::new();
    let mut route_names: BTreeMap<String, u32> = BTreeMap::new();
    for ((bind, port), servers) in groups {
        let (l, used) = listener(bind, *port, servers, scoped_route, on_demand);
        listeners.extend(l);
        for (name, gw_port) in used {
            route_names.entry(name).or_insert(gw_port);
        }
    }
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    (listeners, route_names)
}

/// The listener for one (bind, port), and the route configurations its chains use.
fn listener(
    bind: &str,
    port: u32,
    servers: &[&ServerCtx],
    scoped_route: Option<&str>,
    on_demand: bool,
) -> (Option<Listener>, Vec<(String, u32)>) {
    let mut used = Vec::new();
    let name = format!("{bind}_{port}");
    let stat_prefix = format!("outbound_{name}");
    let mut chains = Vec::new();
    let mut has_tls = false;
    // Plain HTTP: one chain, one route config per port (the first server's port number).
    if let Some(http) = servers.iter().find(|s| !s.https) {
        used.push((http.route_name.to_string(), http.server.port.number));
        chains.push(FilterChain {
            filters: vec![Filter {
                name: HCM.to_string(),
                config_type: Some(FilterConfigType::TypedConfig(any(&hcm(
                    &stat_prefix,
                    &http.route_name,
                    scoped_route == Some(&*http.route_name),
                    on_demand,
                )))),
            }],
            ..Default::default()
        });
    }
    // HTTPS: one chain per server, selected by SNI.
    let mut tls_servers: Vec<&ServerCtx> = servers.iter().copied().filter(|s| s.https).collect();
    tls_servers.sort_by(|a, b| a.route_name.cmp(&b.route_name));
    for s in tls_servers {
        // A server whose Secret did not resolve gets no chain (the gateway stage reported it).
        if s.sds.is_empty() {
            continue;
        }
        has_tls = true;
        used.push((s.route_name.to_string(), s.server.port.number));
        chains.push(tls_chain(s, &s.sds, &stat_prefix, on_demand));
    }
    if chains.is_empty() {
        return (None, used);
    }
    let listener_filters = if has_tls {
        vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_string(),
            config_type: Some(ListenerFilterConfigType::TypedConfig(any(
                &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
            ))),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    let l = Listener {
        name,
        address: Some(socket_address(bind, port)),
        filter_chains: chains,
        listener_filters,
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    (Some(l), used)
}

/// The TLS filter chain of an HTTPS server, selected by SNI (its hosts, `*` left out), with
/// each of its certificates (Envoy picks one per handshake by SNI, then key type).
fn tls_chain(s: &ServerCtx, sds: &[String], stat_prefix: &str, on_demand: bool) -> FilterChain {
    let server_names = super::super::gateway::sni_names(&s.server);
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
            tls_certificate_sds_secret_configs: sds
                .iter()
                .map(|name| SdsSecretConfig {
                    name: name.clone(),
                    sds_config: Some(ads()),
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names,
            ..Default::default()
        }),
        filters: vec![Filter {
            name: HCM.to_string(),
            config_type: Some(FilterConfigType::TypedConfig(any(&hcm(
                stat_prefix,
                &s.route_name,
                false,
                on_demand,
            )))),
        }],
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_string(),
            config_type: Some(TransportConfigType::TypedConfig(any(&tls))),
        }),
        ..Default::default()
    }
}
