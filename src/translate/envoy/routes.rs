//! Routes, virtual hosts and route configurations, in both route layouts.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption, Metadata,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier as QueryMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::{retry_host_predicate::ConfigType as PredicateConfigType, RetryHostPredicate},
    route::Action as RouteActionKind,
    route_action::{
        ClusterNotFoundResponseCode, ClusterSpecifier, HostRewriteSpecifier, MaxStreamDuration,
    },
    route_match::PathSpecifier,
    scoped_route_configuration::{key::fragment::Type as KeyFragmentType, key::Fragment, Key},
    virtual_host::TlsRequirementType,
    weighted_cluster::ClusterWeight,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, ScopedRouteConfiguration, VirtualHost,
    WeightedCluster,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::{
    value::Kind as ValueKind, BoolValue, Struct, UInt32Value, Value,
};
use prost::Message;

use super::super::ir::*;
use super::{any, duration, secs};

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

fn regex_rewrite(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern.to_string(),
            ..Default::default()
        }),
        substitution: substitution.to_string(),
    }
}

fn route(r: &RouteIr) -> Route {
    let path = match &r.path {
        PathMatch::Prefix(p) => PathSpecifier::Prefix(p.clone()),
        PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
        PathMatch::Regex(p) => PathSpecifier::SafeRegex(RegexMatcher {
            regex: p.clone(),
            ..Default::default()
        }),
        PathMatch::SegmentPrefix(p) => PathSpecifier::PathSeparatedPrefix(p.clone()),
    };
    let query_parameters = r
        .query
        .iter()
        .map(|q| QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(QueryMatchSpecifier::StringMatch(
                string_matcher(&q.matcher),
            )),
        })
        .collect();
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
            path_rewrite,
            missing_cluster_500,
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
                prefix_rewrite: match path_rewrite {
                    Some(PathRewrite::Prefix(p)) => p.clone(),
                    _ => String::new(),
                },
                regex_rewrite: match path_rewrite {
                    Some(PathRewrite::Regex {
                        pattern,
                        substitution,
                    }) => Some(regex_rewrite(pattern, substitution)),
                    Some(PathRewrite::Full(p)) => Some(regex_rewrite("/.*", p)),
                    _ => None,
                },
                cluster_not_found_response_code: if *missing_cluster_500 {
                    ClusterNotFoundResponseCode::InternalServerError as i32
                } else {
                    ClusterNotFoundResponseCode::ServiceUnavailable as i32
                },
                ..Default::default()
            })
        }
        Action::Direct { status } => RouteActionKind::DirectResponse(DirectResponseAction {
            status: *status,
            ..Default::default()
        }),
        Action::Redirect {
            scheme,
            host,
            path,
            port,
            code,
        } => RouteActionKind::Redirect(RedirectAction {
            host_redirect: host.clone().unwrap_or_default(),
            port_redirect: port.unwrap_or(0),
            scheme_rewrite_specifier: scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: path.as_ref().map(|p| match p {
                PathRewrite::Full(p) => PathRewriteSpecifier::PathRedirect(p.clone()),
                PathRewrite::Prefix(p) => PathRewriteSpecifier::PrefixRewrite(p.clone()),
                PathRewrite::Regex {
                    pattern,
                    substitution,
                } => PathRewriteSpecifier::RegexRewrite(regex_rewrite(pattern, substitution)),
            }),
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
            query_parameters,
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
        routes: vh.routes.iter().map(route).collect(),
        ..virtual_host_shell(vh)
    }
}

/// A virtual host without its routes.
fn virtual_host_shell(vh: &VirtualHostIr) -> VirtualHost {
    VirtualHost {
        name: vhost_name(vh),
        domains: vec![vh.host.to_string()],
        require_tls: if vh.require_tls {
            TlsRequirementType::All as i32
        } else {
            TlsRequirementType::None as i32
        },
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// Virtual hosts encoded apart from the route configuration that is to hold them, so that it
/// is allocated at its exact size and written once (a large one grown by doubling was copied
/// and kept up to twice its size), and so that pieces of them can be encoded on several cores.
/// A route list is encoded once for the run of virtual hosts sharing it (a KIngress rule's
/// hosts share one list and sort next to each other: `svc.ns`, `svc.ns.svc`, ...); its bytes
/// are held once, and what is written never depends on which lists were shared.
#[derive(Default)]
pub(crate) struct EncodedHosts {
    /// Each host's shell (its encoding without routes) and each distinct route list.
    bytes: Vec<u8>,
    hosts: Vec<EncodedHost>,
}

/// Where one virtual host's parts are in [`EncodedHosts::bytes`].
struct EncodedHost {
    shell: std::ops::Range<usize>,
    /// The length of the shell's `name` (1) and `domains` (2): prost writes fields in
    /// declaration order, so the routes (3) go right after them.
    head: usize,
    routes: std::ops::Range<usize>,
}

/// How many route lists [`EncodedHosts::encode`] looks back for one to share.
const RECENT_ROUTE_LISTS: usize = 8;

impl EncodedHosts {
    /// Encodes `vhosts`, in that order. (A list is recognised by its address, safe here: every
    /// virtual host, and so its list, is borrowed for longer than the call.)
    pub(crate) fn encode<'v>(vhosts: impl IntoIterator<Item = &'v VirtualHostIr>) -> Self {
        let mut out = EncodedHosts::default();
        let mut recent: std::collections::VecDeque<(*const Vec<RouteIr>, std::ops::Range<usize>)> =
            std::collections::VecDeque::with_capacity(RECENT_ROUTE_LISTS);
        for vh in vhosts {
            let shell = virtual_host_shell(vh);
            let head = prost::encoding::string::encoded_len(1, &shell.name)
                + prost::encoding::string::encoded_len_repeated(2, &shell.domains);
            let start = out.bytes.len();
            shell.encode_raw(&mut out.bytes);
            let shell = start..out.bytes.len();
            let key = std::sync::Arc::as_ptr(&vh.routes);
            let routes = match recent.iter().find(|(k, _)| *k == key) {
                Some((_, r)) => r.clone(),
                None => {
                    let start = out.bytes.len();
                    for r in vh.routes.iter() {
                        prost::encoding::message::encode(3, &route(r), &mut out.bytes);
                    }
                    if recent.len() == RECENT_ROUTE_LISTS {
                        recent.pop_front();
                    }
                    recent.push_back((key, start..out.bytes.len()));
                    start..out.bytes.len()
                }
            };
            out.hosts.push(EncodedHost {
                shell,
                head,
                routes,
            });
        }
        out
    }

    /// How many virtual hosts it holds.
    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The length of all of them as `virtual_hosts` fields of a RouteConfiguration.
    pub(crate) fn fields_len(&self) -> usize {
        (0..self.len()).map(|i| self.field_len(i)).sum()
    }

    /// The length of virtual host `i` as a `virtual_hosts` field (2) of a RouteConfiguration.
    pub(crate) fn field_len(&self, i: usize) -> usize {
        let h = &self.hosts[i];
        field_len(h.shell.len() + h.routes.len())
    }

    /// Appends virtual host `i` to `out` as a `virtual_hosts` field: its tag, its length, then
    /// the bytes of [`virtual_host`]`(vh)`, byte-identical. Returns where the virtual host's own
    /// bytes are in `out`.
    pub(crate) fn append_field(&self, i: usize, out: &mut Vec<u8>) -> std::ops::Range<usize> {
        let h = &self.hosts[i];
        let shell = &self.bytes[h.shell.clone()];
        put_field_head(out, shell.len() + h.routes.len());
        let start = out.len();
        out.extend_from_slice(&shell[..h.head]);
        out.extend_from_slice(&self.bytes[h.routes.clone()]);
        out.extend_from_slice(&shell[h.head..]);
        start..out.len()
    }
}

/// The length of an encoded virtual host of `len` bytes as a `virtual_hosts` field (2).
pub(crate) fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// The head of a `virtual_hosts` field (2) of `len` bytes: its tag and its length.
fn put_field_head(out: &mut Vec<u8>, len: usize) {
    out.push(0x12); // field 2 (virtual_hosts), length-delimited
    prost::encoding::encode_varint(len as u64, out);
}

/// Appends an encoded virtual host to `out` as a `virtual_hosts` field (2). Returns where its
/// bytes are in `out`.
pub(crate) fn append_vhost_field(out: &mut Vec<u8>, vh: &[u8]) -> std::ops::Range<usize> {
    put_field_head(out, vh.len());
    let start = out.len();
    out.extend_from_slice(vh);
    start..out.len()
}

/// A route configuration around its virtual hosts: `write` appends their fields (`fields` bytes
/// in all) right after the name, which prost writes first (and `virtual_hosts` second). The
/// buffer is allocated once, at its exact size.
pub(crate) fn write_route_config(
    name: &str,
    port: u32,
    fields: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let (shell, head) = route_config_shell(name, port);
    let mut out = Vec::with_capacity(shell.len() + fields);
    out.extend_from_slice(&shell[..head]);
    write(&mut out);
    out.extend_from_slice(&shell[head..]);
    debug_assert_eq!(
        out.len(),
        shell.len() + fields,
        "route configuration {name}"
    );
    out
}

/// An Istio-layout route configuration: every virtual host of its port (a blackhole one when it
/// has none).
pub(crate) fn route_configuration(
    name: &str,
    port: u32,
    vhosts: &[&VirtualHostIr],
) -> RouteConfiguration {
    let mut virtual_hosts: Vec<VirtualHost> = vhosts.iter().map(|vh| virtual_host(vh)).collect();
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

/// The scope of `host` on scoped route configuration `route`: key = the host. An `on_demand`
/// scope's RouteConfiguration is fetched by the first request of the scope (Envoy's on-demand
/// filter), not when the scope arrives.
pub(crate) fn scope(route: &str, host: &str, on_demand: bool) -> ScopedRouteConfiguration {
    let name = scoped_name(route, host);
    ScopedRouteConfiguration {
        on_demand,
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

/// The name of a virtual host (`<host>:<port>`), the order of virtual hosts in a route
/// configuration.
pub(crate) fn vhost_name(vh: &VirtualHostIr) -> String {
    format!("{}:{}", vh.host, vh.port)
}

/// The encoding of `route_config(name, port, vhosts)` from already encoded virtual hosts (in
/// name order): byte-identical to encoding the message, without building or re-measuring the
/// virtual hosts. prost writes fields in declaration order, and `name` (1) and
/// `virtual_hosts` (2) come first, so the virtual hosts go right after the name. The result is
/// allocated at its exact size (it is most of a gateway's config: growing it by doubling kept
/// up to twice its size).
pub(crate) fn route_config_bytes<'a>(
    name: &str,
    port: u32,
    encoded_vhosts: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
) -> Vec<u8> {
    if encoded_vhosts.len() == 0 {
        return route_configuration(name, port, &[]).encode_to_vec();
    }
    let fields = encoded_vhosts.clone().map(|vh| field_len(vh.len())).sum();
    write_route_config(name, port, fields, |out| {
        for vh in encoded_vhosts {
            append_vhost_field(out, vh);
        }
    })
}

/// `route_configuration(name, port, ..)` encoded without virtual hosts, and where they go in
/// it (right after field 1, the name, which prost writes first and leaves out when empty).
fn route_config_shell(name: &str, port: u32) -> (Vec<u8>, usize) {
    let empty = RouteConfiguration {
        virtual_hosts: Vec::new(),
        ..route_configuration(name, port, &[])
    };
    let head = prost::encoding::string::encoded_len(1, &empty.name);
    (empty.encode_to_vec(), head)
}

/// The clusters a virtual host's routes send traffic to (with repeats).
pub(crate) fn vhost_clusters(vh: &VirtualHostIr) -> impl Iterator<Item = &str> {
    vh.routes.iter().flat_map(|r| {
        let destinations: &[_] = match &r.action {
            Action::Route { destinations, .. } => destinations,
            Action::Redirect { .. } | Action::Direct { .. } => &[],
        };
        destinations.iter().map(|d| d.cluster.as_str())
    })
}
