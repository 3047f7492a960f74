//! Plain configuration of the runtime, built once by the CLI from its flags (`cli::ServeArgs`)
//! or directly (the demo, tests). Nothing here knows clap.

use std::path::PathBuf;
use std::time::Duration;

use crate::translate::Options;

/// `serve --debug-addr`'s default (loopback only), also where `proxy-status` and
/// `proxy-config` look for the server.
pub const DEFAULT_DEBUG_ADDR: &str = "127.0.0.1:15014";

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub source: SourceConfig,
    /// ADS gRPC address (plaintext; its callers are anonymous and never get a secret). `None`:
    /// no plaintext listener.
    pub xds_addr: Option<String>,
    /// The TLS ADS listener and how its callers are authenticated.
    pub xds_auth: XdsAuthConfig,
    /// Debug HTTP address: /healthz, /ready, /metrics, /debug/*.
    pub debug_addr: String,
    pub debounce: Debounce,
    pub translate: Options,
    /// What one ADS client may cost (request and node size, type URLs, names per stream).
    pub xds_limits: crate::xds::limits::Limits,
    /// How many proxy label sets (translations) are kept, and for how long unused.
    pub engine_limits: crate::hub::EngineLimits,
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

/// The TLS xDS listener and how callers are authenticated (see ARCHITECTURE.md, security model).
#[derive(Debug, Clone)]
pub struct XdsAuthConfig {
    /// TLS ADS address (like istiod's 15012); served when `tls_cert_file` is set.
    pub tls_addr: String,
    /// Server certificate chain and key (PEM), re-read when they change.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle client certificates must chain to (the mesh root); `None`: tokens only.
    pub client_ca_file: Option<PathBuf>,
    /// Trust domain, token audiences, cache time.
    pub auth: crate::xds::auth::AuthConfig,
    /// Use the Kubernetes API (TokenReview, SubjectAccessReview) also with a directory source.
    pub kube_auth: bool,
    /// Verify bearer tokens locally with these public keys (JWKS or PEM) instead of TokenReview.
    pub token_jwks_file: Option<PathBuf>,
    /// With `token_jwks_file`: the `iss` a token must carry.
    pub token_issuer: Option<String>,
    /// `IDENTITY_NS=GATEWAY_NS` pairs: an identity of IDENTITY_NS may receive the config of the
    /// Gateways of GATEWAY_NS (besides its own namespace's).
    pub gateway_allow: Vec<String>,
}

impl XdsAuthConfig {
    /// No TLS listener, no Kubernetes API: every caller is anonymous and gets no secret.
    pub fn plaintext_only() -> XdsAuthConfig {
        XdsAuthConfig {
            tls_addr: "0.0.0.0:15012".to_string(),
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            auth: crate::xds::auth::AuthConfig {
                trust_domain: "cluster.local".to_string(),
                audiences: vec!["istio-ca".to_string()],
                cache_ttl: Duration::from_secs(60),
            },
            kube_auth: false,
            token_jwks_file: None,
            token_issuer: None,
            gateway_allow: vec!["istio-system=knative-serving".to_string()],
        }
    }
}
