//! The intermediate model every input path is reduced to: per route configuration, virtual hosts
//! holding routes, holding weighted destinations; plus the clusters those destinations need.
//! VirtualServices, KIngresses and Routes all become this, and only this becomes Envoy protos.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(String),
    /// A prefix of whole path segments (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`):
    /// the Gateway API's `PathPrefix`, Envoy's `path_separated_prefix`.
    SegmentPrefix(String),
}

/// How a header matcher compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatchIr {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatchIr {
    pub name: String,
    pub matcher: StringMatchIr,
}

/// Header names to values, in name order, each name once: a map as small as its entries. Most
/// hold one to three headers (Knative's `Knative-Serving-Revision` / `-Namespace`, the probe's
/// `K-Network-Hash`), where a `BTreeMap` allocates a ~540-byte node each (27 MB of the route
/// model at 10,000 services).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(Vec<(String, String)>);

impl HeaderList {
    /// Sets `name` to `value` (replacing its value when it is there).
    pub fn insert(&mut self, name: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => {
                if self.0.capacity() == self.0.len() {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (name, value));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Extend<(String, String)> for HeaderList {
    /// Later entries win, as in a map.
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, entries: I) {
        for (k, v) in entries {
            self.insert(k, v);
        }
    }
}

impl FromIterator<(String, String)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(entries: I) -> Self {
        let mut out = HeaderList::default();
        out.extend(entries);
        out
    }
}

impl From<BTreeMap<String, String>> for HeaderList {
    /// Already in order and unique: taken as it is, at its exact size.
    fn from(map: BTreeMap<String, String>) -> Self {
        let mut v = Vec::with_capacity(map.len());
        v.extend(map);
        HeaderList(v)
    }
}

impl<'a> IntoIterator for &'a HeaderList {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Header changes, applied at route or destination level. `set` overwrites a client-sent value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    pub set: HeaderList,
    pub add: HeaderList,
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// `other` wins on conflicts.
    pub fn merged(&self, other: &HeaderOps) -> HeaderOps {
        let mut out = self.clone();
        out.set
            .extend(other.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.add
            .extend(other.add.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.remove.extend(other.remove.iter().cloned());
        out.remove.sort();
        out.remove.dedup();
        out
    }
}

/// Retry behaviour of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// No retry policy at all (KIngress semantics, and Istio's `attempts: 0`).
    None,
    /// Istio's default policy (a VirtualService route without `retries`).
    IstioDefault,
    Custom {
        attempts: u32,
        per_try_timeout: Option<Duration>,
        retry_on: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedDestination {
    pub cluster: String,
    pub weight: u32,
    pub headers: HeaderOps,
}

/// How a route rewrites the request path before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// The whole path replaced by this (the query kept): a redirect's `path_redirect`, a
    /// route's `regex_rewrite` of `/.*` (as istiod writes a full-path rewrite).
    Full(String),
    /// Envoy `prefix_rewrite`: the matched prefix replaced by this.
    Prefix(String),
    /// Envoy `regex_rewrite`: every match of `pattern` (RE2) in the path replaced by
    /// `substitution` (`\N` names a capture group); the query string is kept.
    Regex {
        pattern: String,
        substitution: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Route {
        /// Shared: a KIngress path's probe copy of a route (`kingress::probe_of`) holds the
        /// same destinations.
        destinations: Arc<[WeightedDestination]>,
        timeout: Option<Duration>,
        retry: Retry,
        host_rewrite: Option<String>,
        path_rewrite: Option<PathRewrite>,
        /// A destination naming a cluster that does not exist answers 500 rather than 503
        /// (the Gateway API's rule for an invalid backendRef's share of the traffic).
        missing_cluster_500: bool,
    },
    /// A fixed response with this status and no body.
    Direct { status: u32 },
    Redirect {
        scheme: Option<String>,
        host: Option<String>,
        path: Option<PathRewrite>,
        /// The port in the Location (`None`: Envoy's default, the request's).
        port: Option<u32>,
        code: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteIr {
    pub name: Option<String>,
    pub path: PathMatch,
    pub headers: Vec<HeaderMatchIr>,
    /// Query parameter matches (all must match).
    pub query: Vec<HeaderMatchIr>,
    pub action: Action,
    pub headers_ops: HeaderOps,
    /// `filter_metadata` key and its `config` value: which object this route came from.
    /// The value is shared by every route of the object (and their probe copies).
    pub metadata: Option<(&'static str, Arc<str>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHostIr {
    /// The same allocation as its slot's host ([`super::claims::Slot`]).
    pub host: std::sync::Arc<str>,
    /// Gateway server port (virtual host names are `<host>:<port>`).
    pub port: u32,
    /// Shared by the hosts of one rule (a KIngress rule's hosts have the same routes): one
    /// copy in memory, encoded once ([`super::envoy::routes::EncodedHosts`]).
    pub routes: Arc<Vec<RouteIr>>,
    pub require_tls: bool,
}

/// Upstream protocol of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Upstream {
    Http1,
    H2c,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterKind {
    /// Endpoints from EDS: the ready addresses of the Service.
    Eds { endpoints: Vec<(String, u32)> },
    /// A DNS name (ExternalName Service).
    Dns { host: String, port: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIr {
    pub name: String,
    pub upstream: Upstream,
    pub kind: ClusterKind,
}

/// `outbound|<port>||<fqdn>`, istiod's cluster name.
pub fn cluster_name(port: u32, fqdn: &str) -> String {
    format!("outbound|{port}||{fqdn}")
}
