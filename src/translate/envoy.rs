//! The intermediate model to Envoy protos, named and shaped as istiod does for a router.
//!
//! Determinism: prost encodes `map` fields (Struct, Metadata) from a HashMap, so every map we
//! emit has at most one entry; everything else is sorted before it is built.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
    CircuitBreakers, Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddressKind, config_source::ConfigSourceSpecifier, data_source::Specifier,
    header_value_option::HeaderAppendAction, socket_address::PortSpecifier,
    transport_socket::ConfigType as TransportConfigType, Address, AggregatedConfigSource,
    ApiVersion, ConfigSource, DataSource, HeaderValue, HeaderValueOption, Http2ProtocolOptions,
    HttpProtocolOptions as CoreHttpProtocolOptions, Metadata, SocketAddress, TrafficDirection,
    TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter::ConfigType as FilterConfigType,
    listener_filter::ConfigType as ListenerFilterConfigType, Filter, FilterChain, FilterChainMatch,
    Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::{retry_host_predicate::ConfigType as PredicateConfigType, RetryHostPredicate},
    route::Action as RouteActionKind,
    route_action::{ClusterSpecifier, HostRewriteSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
    scoped_route_configuration::{key::fragment::Type as KeyFragmentType, key::Fragment, Key},
    virtual_host::TlsRequirementType,
    weighted_cluster::ClusterWeight,
    HeaderMatcher, RedirectAction, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
    ScopedRouteConfiguration, VirtualHost, WeightedCluster,
};
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
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret::Type as SecretType, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::{
    value::Kind as ValueKind, Any, BoolValue, Duration, Struct, UInt32Value, Value,
};
use prost::Message;

use super::ir::*;
use super::{Options, ProxyConfig, RouteLayout, ServerCtx, Translator};

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
fn config_metadata(key: &str, value: &str) -> Metadata {
    let mut inner = Struct::default();
    inner.fields.insert(
        "config".to_string(),
        Value {
            kind: Some(ValueKind::StringValue(value.to_string())),
        },
    );
    let mut m = Metadata::default();
    m.filter_metadata.insert(key.to_string(), inner);
    m
}

fn header_options(ops: &HeaderOps) -> Vec<HeaderValueOption> {
    let mut out = Vec::new();
    for (k, v) in &ops.set {
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        });
    }
    for (k, v) in &ops.add {
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
            ..Default::default()
        });
    }
    out.sort_by(|a, b| {
        let ka = a.header.as_ref().map(|h| h.key.to_ascii_lowercase());
        let kb = b.header.as_ref().map(|h| h.key.to_ascii_lowercase());
        ka.cmp(&kb)
    });
    out
}

fn string_matcher(m: &StringMatchIr) -> StringMatcher {
    let pattern = match m {
        StringMatchIr::Exact(v) => MatchPattern::Exact(v.clone()),
        StringMatchIr::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StringMatchIr::Regex(v) => MatchPattern::SafeRegex(RegexMatcher {
            regex: v.clone(),
            ..Default::default()
        }),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn retry_policy(retry: &Retry) -> Option<RetryPolicy> {
    let (attempts, per_try, retry_on) = match retry {
        Retry::None => return None,
        Retry::IstioDefault => (
            2,
            None,
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .to_string(),
        ),
        Retry::Custom {
            attempts,
            per_try_timeout,
            retry_on,
        } => (
            *attempts,
            *per_try_timeout,
            retry_on.clone().unwrap_or_else(|| {
                "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                    .to_string()
            }),
        ),
    };
    // Numeric entries of retryOn are status codes.
    let mut on = Vec::new();
    let mut codes = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => on.push(part.to_string()),
        }
    }
    if codes.is_empty() && on.iter().any(|p| p == "retriable-status-codes") {
        codes.push(503);
    }
    Some(RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(UInt32Value { value: attempts }),
        per_try_timeout: per_try.map(duration),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(PredicateConfigType::TypedConfig(any(
                &PreviousHostsPredicate {},
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: codes,
        ..Default::default()
    })
}

fn route(r: &RouteIr) -> Route {
    let path = match &r.path {
        PathMatch::Prefix(p) => PathSpecifier::Prefix(p.clone()),
        PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
        PathMatch::Regex(p) => PathSpecifier::SafeRegex(RegexMatcher {
            regex: p.clone(),
            ..Default::default()
        }),
    };
    let headers = r
        .headers
        .iter()
        .map(|h| HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
                &h.matcher,
            ))),
            ..Default::default()
        })
        .collect();
    let action = match &r.action {
        Action::Route {
            destinations,
            timeout,
            retry,
            host_rewrite,
            prefix_rewrite,
        } => {
            let cluster_specifier = if destinations.len() == 1 {
                ClusterSpecifier::Cluster(destinations[0].cluster.clone())
            } else {
                ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: destinations
                        .iter()
                        .map(|d| ClusterWeight {
                            name: d.cluster.clone(),
                            weight: Some(UInt32Value { value: d.weight }),
                            request_headers_to_add: header_options(&d.headers),
                            request_headers_to_remove: d.headers.remove.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
            };
            let t = timeout.map(duration).unwrap_or_else(|| secs(0));
            RouteActionKind::Route(RouteAction {
                cluster_specifier: Some(cluster_specifier),
                timeout: Some(t),
                max_stream_duration: Some(MaxStreamDuration {
                    max_stream_duration: timeout.map(duration).or(Some(secs(0))),
                    grpc_timeout_header_max: Some(t),
                    ..Default::default()
                }),
                retry_policy: retry_policy(retry),
                host_rewrite_specifier: host_rewrite
                    .clone()
                    .map(HostRewriteSpecifier::HostRewriteLiteral),
                prefix_rewrite: prefix_rewrite.clone().unwrap_or_default(),
                ..Default::default()
            })
        }
        Action::Redirect {
            scheme,
            host,
            path,
            code,
        } => RouteActionKind::Redirect(RedirectAction {
            host_redirect: host.clone().unwrap_or_default(),
            scheme_rewrite_specifier: scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: path.clone().map(PathRewriteSpecifier::PathRedirect),
            response_code: match code {
                Some(302) => RedirectResponseCode::Found as i32,
                Some(303) => RedirectResponseCode::SeeOther as i32,
                Some(307) => RedirectResponseCode::TemporaryRedirect as i32,
                Some(308) => RedirectResponseCode::PermanentRedirect as i32,
                _ => RedirectResponseCode::MovedPermanently as i32,
            },
            ..Default::default()
        }),
    };
    Route {
        name: r.name.clone().unwrap_or_default(),
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            headers,
            ..Default::default()
        }),
        metadata: r.metadata.as_ref().map(|(k, v)| config_metadata(k, v)),
        request_headers_to_add: header_options(&r.headers_ops),
        request_headers_to_remove: r.headers_ops.remove.clone(),
        action: Some(action),
        ..Default::default()
    }
}

pub(crate) fn virtual_host(vh: &VirtualHostIr) -> VirtualHost {
    VirtualHost {
        name: format!("{}:{}", vh.host, vh.port),
        domains: vec![vh.host.clone()],
        routes: vh.routes.iter().map(route).collect(),
        require_tls: if vh.require_tls {
            TlsRequirementType::All as i32
        } else {
            TlsRequirementType::None as i32
        },
        include_request_attempt_count: true,
        ..Default::default()
    }
}

fn route_configuration(
    name: &str,
    port: u32,
    vhosts: Option<&BTreeMap<String, VirtualHostIr>>,
) -> RouteConfiguration {
    let mut virtual_hosts: Vec<VirtualHost> = vhosts
        .map(|m| m.values().map(virtual_host).collect())
        .unwrap_or_default();
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    if virtual_hosts.is_empty() {
        virtual_hosts.push(VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".to_string()],
            ..Default::default()
        });
    }
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// In the scoped layout, the route configuration to lay out as scopes: the proxy's plain-HTTP
/// route configuration when it has exactly one (see [`RouteLayout::Scoped`]).
fn scoped_route(
    opts: &Options,
    http_routes: &std::collections::BTreeSet<String>,
) -> Option<String> {
    match (opts.route_layout, http_routes.len()) {
        (RouteLayout::Scoped, 1) => http_routes.first().cloned(),
        _ => None,
    }
}

/// The name of the scope of `host` on scoped route configuration `route`, and of the
/// RouteConfiguration that scope uses: `http.80/<host>`.
pub(crate) fn scoped_name(route: &str, host: &str) -> String {
    format!("{route}/{host}")
}

/// Whether a host can be a scope key: an exact host (the key is compared as a string).
pub(crate) fn scopable(host: &str) -> bool {
    !host.contains('*')
}

/// The RouteConfiguration of one scope: the virtual host alone.
pub(crate) fn scoped_route_configuration(route: &str, vh: &VirtualHostIr) -> RouteConfiguration {
    RouteConfiguration {
        name: scoped_name(route, &vh.host),
        virtual_hosts: vec![virtual_host(vh)],
        validate_clusters: Some(BoolValue { value: false }),
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

/// The scope of `host` on scoped route configuration `route`: key = the host.
pub(crate) fn scope(route: &str, host: &str) -> ScopedRouteConfiguration {
    let name = scoped_name(route, host);
    ScopedRouteConfiguration {
        route_configuration_name: name.clone(),
        name,
        key: Some(Key {
            fragments: vec![Fragment {
                r#type: Some(KeyFragmentType::StringKey(host.to_string())),
            }],
        }),
        ..Default::default()
    }
}

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

fn hcm(stat_prefix: &str, route_name: &str, scoped: bool) -> HttpConnectionManager {
    HttpConnectionManager {
        codec_type: CodecType::Auto as i32,
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(route_specifier(route_name, scoped)),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(HttpFilterConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }],
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

fn socket_address(addr: &str, port: u32) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: addr.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// The listener for one (bind, port), and the route configurations its chains use.
fn listener(
    t: &mut Translator<'_>,
    bind: &str,
    port: u32,
    servers: &[ServerCtx],
) -> (Option<Listener>, Vec<(String, u32)>) {
    let mut used = Vec::new();
    let name = format!("{bind}_{port}");
    let stat_prefix = format!("outbound_{name}");
    let mut chains = Vec::new();
    let mut has_tls = false;
    // Plain HTTP: one chain, one route config per port (the first server's port number).
    if let Some(http) = servers.iter().find(|s| !s.https) {
        used.push((http.route_name.clone(), http.server.port.number));
        chains.push(FilterChain {
            filters: vec![Filter {
                name: HCM.to_string(),
                config_type: Some(FilterConfigType::TypedConfig(any(&hcm(
                    &stat_prefix,
                    &http.route_name,
                    t.scoped_route.as_deref() == Some(http.route_name.as_str()),
                )))),
            }],
            ..Default::default()
        });
    }
    // HTTPS: one chain per server, selected by SNI.
    let mut tls_servers: Vec<&ServerCtx> = servers.iter().filter(|s| s.https).collect();
    tls_servers.sort_by(|a, b| a.route_name.cmp(&b.route_name));
    for s in tls_servers {
        let Some(credential) = s
            .server
            .tls
            .as_ref()
            .and_then(|t| t.credential_name.clone())
        else {
            t.secret_error(
                &s.gateway,
                format!("HTTPS server {} has no credentialName", s.server.port.name),
            );
            continue;
        };
        let sds = match t.tls_secret(&s.gateway_ns, &credential) {
            Ok(n) => n,
            Err(e) => {
                t.secret_error(&s.gateway, e);
                continue;
            }
        };
        has_tls = true;
        used.push((s.route_name.clone(), s.server.port.number));
        let mut server_names: Vec<String> = s
            .server
            .hosts
            .iter()
            .map(|h| {
                h.split_once('/')
                    .map(|(_, h)| h)
                    .unwrap_or(h)
                    .to_ascii_lowercase()
            })
            .filter(|h| h != "*")
            .collect();
        server_names.sort();
        server_names.dedup();
        let tls = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
                tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                    name: sds,
                    sds_config: Some(ads()),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        chains.push(FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                server_names,
                ..Default::default()
            }),
            filters: vec![Filter {
                name: HCM.to_string(),
                config_type: Some(FilterConfigType::TypedConfig(any(&hcm(
                    &stat_prefix,
                    &s.route_name,
                    false,
                )))),
            }],
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".to_string(),
                config_type: Some(TransportConfigType::TypedConfig(any(&tls))),
            }),
            ..Default::default()
        });
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

fn cluster(c: &ClusterIr) -> Cluster {
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

fn blackhole_cluster() -> Cluster {
    Cluster {
        name: BLACKHOLE.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(secs(10)),
        ..Default::default()
    }
}

/// The listeners of the translator's servers (one per bind and container port), and the route
/// configurations they use (name -> gateway port). Registers the TLS secrets they need.
pub(crate) fn build_listeners(t: &mut Translator<'_>) -> (Vec<Listener>, BTreeMap<String, u32>) {
    let mut by_listener: BTreeMap<(String, u32), Vec<ServerCtx>> = BTreeMap::new();
    for s in &t.servers {
        by_listener
            .entry((s.bind.clone(), s.container_port))
            .or_default()
            .push(s.clone());
    }
    // The plain-HTTP chain of a listener uses its first HTTP server's route configuration.
    let http_routes: std::collections::BTreeSet<String> = by_listener
        .values()
        .filter_map(|ss| ss.iter().find(|s| !s.https).map(|s| s.route_name.clone()))
        .collect();
    t.scoped_route = scoped_route(t.opts, &http_routes);
    let mut listeners = Vec::new();
    let mut route_names: BTreeMap<String, u32> = BTreeMap::new();
    for ((bind, port), servers) in &by_listener {
        let (l, used) = listener(t, bind, *port, servers);
        listeners.extend(l);
        for (name, gw_port) in used {
            route_names.entry(name).or_insert(gw_port);
        }
    }
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    (listeners, route_names)
}

/// The name of a virtual host (`<host>:<port>`), the order of virtual hosts in a route
/// configuration.
pub(crate) fn vhost_name(vh: &VirtualHostIr) -> String {
    format!("{}:{}", vh.host, vh.port)
}

/// The encoding of `route_config(name, port, vhosts)` from already encoded virtual hosts (in
/// name order): byte-identical to encoding the message, without building or re-measuring the
/// virtual hosts. prost writes fields in declaration order, and `name` (1) and
/// `virtual_hosts` (2) come first, so the virtual hosts go right after the name.
pub(crate) fn route_config_bytes<'a>(
    name: &str,
    port: u32,
    encoded_vhosts: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    if encoded_vhosts.len() == 0 {
        return route_configuration(name, port, None).encode_to_vec();
    }
    let empty = RouteConfiguration {
        virtual_hosts: Vec::new(),
        ..route_configuration(name, port, None)
    };
    let shell = empty.encode_to_vec();
    // Field 1 (name): tag, length, bytes; absent when the name is empty.
    let head = if name.is_empty() {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(name.len() as u64) + name.len()
    };
    let mut out = Vec::with_capacity(shell.len() + 64);
    out.extend_from_slice(&shell[..head]);
    for vh in encoded_vhosts {
        out.push(0x12); // field 2, length-delimited
        prost::encoding::encode_varint(vh.len() as u64, &mut out);
        out.extend_from_slice(vh);
    }
    out.extend_from_slice(&shell[head..]);
    out
}

/// The clusters a virtual host's routes send traffic to (with repeats).
pub(crate) fn vhost_clusters(vh: &VirtualHostIr) -> impl Iterator<Item = &str> {
    vh.routes.iter().flat_map(|r| match &r.action {
        Action::Route { destinations, .. } => destinations
            .iter()
            .map(|d| d.cluster.as_str())
            .collect::<Vec<_>>(),
        Action::Redirect { .. } => Vec::new(),
    })
}

/// The Cluster resource of a cluster.
pub(crate) fn cluster_resource(c: &ClusterIr) -> Cluster {
    cluster(c)
}

/// The load assignment of an EDS cluster (`None` for DNS clusters, which carry their own).
pub(crate) fn assignment(c: &ClusterIr) -> Option<ClusterLoadAssignment> {
    match &c.kind {
        ClusterKind::Eds { endpoints } => Some(load_assignment(&c.name, endpoints)),
        ClusterKind::Dns { .. } => None,
    }
}

/// The cluster every gateway has.
pub(crate) fn blackhole() -> Cluster {
    blackhole_cluster()
}

/// The SDS secrets the translator registered.
pub(crate) fn secrets(t: &Translator<'_>) -> Vec<Secret> {
    t.secrets
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

/// Builds the Envoy resources from what the translator gathered.
pub(crate) fn build(t: &mut Translator<'_>) -> ProxyConfig {
    let (listeners, route_names) = build_listeners(t);
    let mut routes: Vec<RouteConfiguration> = Vec::new();
    let mut scoped_routes: Vec<ScopedRouteConfiguration> = Vec::new();
    for (name, port) in &route_names {
        if t.scoped_route.as_deref() != Some(name.as_str()) {
            routes.push(route_configuration(name, *port, t.vhosts.get(name)));
            continue;
        }
        for (host, vh) in t.vhosts.get(name).into_iter().flatten() {
            if scopable(host) {
                routes.push(scoped_route_configuration(name, vh));
                scoped_routes.push(scope(name, host));
            }
        }
    }
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    scoped_routes.sort_by(|a, b| a.name.cmp(&b.name));
    // Only clusters that a served route references (a cluster created for an object that was
    // then left out, or for another gateway's hosts, is not sent).
    let mut used: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for name in route_names.keys() {
        for vh in t.vhosts.get(name).into_iter().flat_map(|m| m.values()) {
            used.extend(vhost_clusters(vh));
        }
    }
    let served: Vec<&ClusterIr> = t
        .clusters
        .values()
        .filter(|c| used.contains(c.name.as_str()))
        .collect();
    let mut clusters: Vec<Cluster> = served.iter().map(|c| cluster(c)).collect();
    clusters.push(blackhole_cluster());
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let endpoints = served.iter().filter_map(|c| assignment(c)).collect();
    let secrets = secrets(t);
    ProxyConfig {
        listeners,
        routes,
        scoped_routes,
        clusters,
        endpoints,
        secrets,
    }
}
