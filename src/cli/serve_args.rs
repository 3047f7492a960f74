//! The flags of `serve`, turned once into the runtime's plain configuration
//! ([`crate::runtime::config`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, LogFormat, TranslateArgs};
use crate::runtime::config::{
    Debounce, KubeConfig, ServeConfig, SourceConfig, StatusConfig, XdsAuthConfig,
};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory of manifests to serve and watch.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    pub from: Option<PathBuf>,
    /// Watch the Kubernetes API instead of a directory (kubeconfig or in-cluster config, as
    /// kube-rs resolves it: KUBECONFIG, ~/.kube/config, then the service account).
    #[arg(long)]
    pub kube: bool,
    /// With --kube: watch only these namespaces (repeat or comma-separate; default all).
    /// ConfigMaps are always read from knative-serving.
    #[arg(long, value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// With --kube: how often a resource that is not served (CRD not installed) is listed
    /// again.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub missing_retry: Duration,
    #[command(flatten)]
    pub status: StatusArgs,
    /// ADS gRPC address (plaintext, like istiod's 15010; its callers are anonymous and never
    /// get a secret). `off` turns it off.
    #[arg(long, default_value = "0.0.0.0:15010")]
    pub xds_addr: String,
    #[command(flatten)]
    pub xds_auth: XdsAuthArgs,
    #[command(flatten)]
    pub xds_limits: XdsLimitsArgs,
    /// Debug HTTP address: /healthz, /ready, /debug/*.
    #[arg(long, default_value = crate::runtime::config::DEFAULT_DEBUG_ADDR)]
    pub debug_addr: String,
    /// A change after this long without one is pushed at once; changes closer together are
    /// collected until none came for this long.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub debounce_after: Duration,
    /// Longest a burst of changes may delay a push.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub debounce_max: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub translate: TranslateArgs,
}

/// The TLS xDS listener and how callers are authenticated (see ARCHITECTURE.md, security model).
#[derive(Debug, Clone, Args)]
pub struct XdsAuthArgs {
    /// TLS ADS address (like istiod's 15012). Served when --tls-cert-file is given.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub xds_tls_addr: String,
    /// Server certificate chain (PEM) of the TLS listener; re-read when it changes.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file; re-read when it changes.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to (the mesh root, e.g. Istio's
    /// istio-ca-root-cert). Without it, callers authenticate with tokens only.
    #[arg(long, requires = "tls_cert_file")]
    pub client_ca_file: Option<PathBuf>,
    /// SPIFFE trust domain of client certificates (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Audience a bearer token must be valid for (repeatable; any one suffices).
    #[arg(long = "token-audience", default_value = "istio-ca")]
    pub token_audiences: Vec<String>,
    /// Use the Kubernetes API (TokenReview, SubjectAccessReview) also with --from. Implied by
    /// --kube. Without an API, tokens are refused and secrets are authorized by namespace only.
    #[arg(long)]
    pub kube_auth: bool,
    /// Verify bearer tokens locally with the public keys of this file (a JWKS, e.g. the API
    /// server's /openid/v1/jwks, or PEM public keys) instead of TokenReview (for --from).
    #[arg(long)]
    pub token_jwks_file: Option<PathBuf>,
    /// With --token-jwks-file: the `iss` a token must carry.
    #[arg(long, requires = "token_jwks_file")]
    pub token_issuer: Option<String>,
    /// How long TokenReview and SubjectAccessReview answers are reused.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub auth_cache_ttl: Duration,
    /// IDENTITY_NS=GATEWAY_NS: an authenticated identity of IDENTITY_NS may receive the config
    /// of GATEWAY_NS's Gateways, besides its own namespace's (repeatable; giving it replaces the
    /// default, net-istio's layout of istio-system gateway pods serving knative-serving's
    /// Gateways). A stream whose node selects any other Gateway is refused.
    #[arg(long, default_value = "istio-system=knative-serving")]
    pub gateway_allow: Vec<String>,
}

impl XdsAuthArgs {
    /// The runtime's plain configuration of these flags.
    pub fn config(&self) -> XdsAuthConfig {
        XdsAuthConfig {
            tls_addr: self.xds_tls_addr.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            client_ca_file: self.client_ca_file.clone(),
            auth: crate::xds::auth::AuthConfig {
                trust_domain: self.trust_domain.clone(),
                audiences: self.token_audiences.clone(),
                cache_ttl: self.auth_cache_ttl,
            },
            kube_auth: self.kube_auth,
            token_jwks_file: self.token_jwks_file.clone(),
            token_issuer: self.token_issuer.clone(),
            gateway_allow: self.gateway_allow.clone(),
        }
    }
}

/// What one xDS client may cost (see README, "Limits").
#[derive(Debug, Clone, Args)]
pub struct XdsLimitsArgs {
    /// Largest ADS request accepted, in bytes (gRPC's default receive limit); a larger one
    /// ends its stream with RESOURCE_EXHAUSTED before it is read.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub xds_max_request_bytes: usize,
    /// Largest Envoy node (id, metadata, locality), in bytes; a larger one is refused with
    /// INVALID_ARGUMENT.
    #[arg(long, default_value_t = 64 * 1024)]
    pub xds_max_node_bytes: usize,
    /// Distinct type URLs one stream may name (the six served included); the next one ends
    /// the stream with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 32)]
    pub xds_max_type_urls: usize,
    /// Proxy label sets (one translation each) besides the two gateways'; a new label set
    /// beyond it takes the slot of an unused one, or is refused with RESOURCE_EXHAUSTED. Each
    /// costs about 21 KB per Knative service (BENCHMARKS.md).
    #[arg(long, default_value_t = 16)]
    pub xds_max_label_sets: usize,
    /// How long the translation of a label set no connected Envoy uses is kept.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub xds_label_set_grace: Duration,
    /// How long an ADS stream that arrives before its proxy's config is translated (at start)
    /// is held open waiting for it; then it is answered UNAVAILABLE and Envoy retries. 0
    /// answers it at once.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub xds_not_ready_wait: Duration,
}

impl XdsLimitsArgs {
    /// The stream limits and the hub's engine limits of these flags.
    pub fn config(&self) -> (crate::xds::limits::Limits, crate::hub::EngineLimits) {
        (
            crate::xds::limits::Limits {
                max_request_bytes: self.xds_max_request_bytes,
                max_node_bytes: self.xds_max_node_bytes,
                max_type_urls: self.xds_max_type_urls,
                not_ready_wait: self.xds_not_ready_wait,
                ..Default::default()
            },
            crate::hub::EngineLimits {
                max_label_sets: self.xds_max_label_sets,
                grace: self.xds_label_set_grace,
            },
        )
    }
}

/// KIngress status writing (with --kube).
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Do not write status: neither KIngress status (e.g. when net-istio is the ingress class)
    /// nor that of our Gateway API GatewayClasses, Gateways and HTTPRoutes.
    #[arg(long)]
    pub no_status: bool,
    /// `status.publicLoadBalancer.ingress[0].domainInternal` of our KIngresses.
    #[arg(
        long,
        default_value = "istio-ingressgateway.istio-system.svc.cluster.local"
    )]
    pub public_lb_domain: String,
    /// `status.privateLoadBalancer.ingress[0].domainInternal` of our KIngresses.
    #[arg(
        long,
        default_value = "knative-local-gateway.istio-system.svc.cluster.local"
    )]
    pub private_lb_domain: String,
    /// Service (ns/name) whose ready endpoints are the other replicas: the status writer adds
    /// up their Envoys' progress (from their `/debug/kingress_progress`).
    #[arg(long, default_value = "knative-pilot/knative-pilot")]
    pub peers: String,
    /// Lease (ns/name) that elects the one replica that writes status.
    #[arg(long, default_value = "knative-pilot/knative-pilot-status")]
    pub lease: String,
    /// Identity in the Lease (default: $POD_NAME, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration: a holder that has not renewed for this long loses it.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// How often the holder renews (and others retry).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub lease_renew: Duration,
}

impl StatusArgs {
    /// The status writer's configuration; `None` with `--no-status`.
    pub fn config(&self) -> Option<StatusConfig> {
        (!self.no_status).then(|| StatusConfig {
            public_lb_domain: self.public_lb_domain.clone(),
            private_lb_domain: self.private_lb_domain.clone(),
            peers: self.peers.clone(),
            lease: self.lease.clone(),
            identity: self.identity.clone(),
            lease_duration: self.lease_duration,
            lease_renew: self.lease_renew,
        })
    }
}

impl ServeArgs {
    /// The runtime's configuration: the flags, turned once into plain structs.
    pub fn config(&self) -> anyhow::Result<ServeConfig> {
        let source = match (&self.from, self.kube) {
            (_, true) => SourceConfig::Kube(KubeConfig {
                namespaces: self.namespace.clone(),
                missing_retry: self.missing_retry,
                status: self.status.config(),
            }),
            (Some(d), false) => SourceConfig::Dir(d.clone()),
            (None, false) => anyhow::bail!("serve needs --from DIR or --kube"),
        };
        let (xds_limits, engine_limits) = self.xds_limits.config();
        Ok(ServeConfig {
            xds_limits,
            engine_limits,
            source,
            xds_addr: (self.xds_addr != "off").then(|| self.xds_addr.clone()),
            xds_auth: self.xds_auth.config(),
            debug_addr: self.debug_addr.clone(),
            debounce: Debounce {
                quiet: self.debounce_after,
                max: self.debounce_max,
            },
            translate: self.translate.options(),
        })
    }
}
