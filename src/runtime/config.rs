//! Plain configuration of the runtime, built once by the CLI from its flags (`cli::ServeArgs`)
//! or directly (the demo, tests). Nothing here knows clap.

use std::path::PathBuf;
use std::time::Duration;

use crate::translate::Options;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub source: SourceConfig,
    /// ADS gRPC address (plaintext).
    pub xds_addr: String,
    /// Debug HTTP address: /healthz, /ready, /metrics, /debug/*.
    pub debug_addr: String,
    pub debounce: Debounce,
    pub translate: Options,
}

/// Where the inputs come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of manifests, watched.
    Dir(PathBuf),
    /// The Kubernetes API.
    Kube(KubeConfig),
}

/// The kube source, and the KIngress status writer beside it.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Namespaces to watch (empty: all).
    pub namespaces: Vec<String>,
    /// How often a resource that is not served (CRD not installed) is listed again.
    pub missing_retry: Duration,
    /// The status writer; `None` writes no status.
    pub status: Option<StatusConfig>,
}

/// How changes are batched before they are translated: `quiet` after the last one, at most
/// `max` after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    pub quiet: Duration,
    pub max: Duration,
}

/// The KIngress status writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// `status.publicLoadBalancer.ingress[0].domainInternal`.
    pub public_lb_domain: String,
    /// `status.privateLoadBalancer.ingress[0].domainInternal`.
    pub private_lb_domain: String,
    /// Service (ns/name) whose ready endpoints are the other replicas.
    pub peers: String,
    /// Lease (ns/name) that elects the one replica that writes status.
    pub lease: String,
    /// Identity in the Lease (`None`: hostname-pid).
    pub identity: Option<String>,
    /// A holder that has not renewed for this long loses the Lease.
    pub lease_duration: Duration,
    /// How often the holder renews (and others retry).
    pub lease_renew: Duration,
}
