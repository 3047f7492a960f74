//! Authentication and authorization of xDS callers, as strict as istiod's:
//!
//! - **Who**: a plaintext connection is [`Caller::Anonymous`]. On the TLS listener the caller
//!   proves a service-account identity with a client certificate verified against the client CA
//!   (its SPIFFE URI SAN) or with a service-account JWT in `authorization: Bearer`, verified by
//!   TokenReview ([`kube::KubeReviewer`], cached) or, given a key file, locally
//!   ([`jwt::JwtVerifier`]); a TLS caller with neither is refused
//!   (`Unauthenticated`).
//! - **Node**: the node must claim the identity's namespace (and service account, when it sends
//!   `SERVICE_ACCOUNT`), else the stream is refused (`PermissionDenied`): [`policy::check_node`].
//! - **Secrets**: [`SecretFilter`] removes from each snapshot the SDS secrets the caller may not
//!   have ([`policy::may_receive_secret`]) before the connection state machine sees it, so a
//!   key it may not send is never in its hands; denials are reported once per stream.
//!
//! Nothing here logs or prints a token or a private key.

pub mod identity;
pub mod jwt;
pub mod kube;
pub mod policy;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use identity::{AuthMethod, Caller, Identity, IdentityError};
pub use policy::{Decision, DenyReason, NodeMismatch};
pub use tls::PeerInfo;

use super::{Snapshot, SECRET};

/// Settings of the authenticator (built by the CLI).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// SPIFFE trust domain of client certificates (`cluster.local`).
    pub trust_domain: String,
    /// Audiences a token must be valid for (one of them; `istio-ca`).
    pub audiences: Vec<String>,
    /// How long TokenReview and SubjectAccessReview answers are reused.
    pub cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            trust_domain: "cluster.local".to_string(),
            audiences: vec!["istio-ca".to_string()],
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// Why a stream is refused before it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no client certificate and no bearer token (the TLS port needs one of them)")]
    NoCredentials,
    #[error("client certificate: {0}")]
    Certificate(IdentityError),
    #[error("{0}")]
    Token(kube::TokenError),
    #[error("authorization metadata is not `Bearer <token>`")]
    BadAuthorizationHeader,
}

impl AuthFailure {
    /// The `reason` label of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::NoCredentials => "no_credentials",
            AuthFailure::Certificate(_) => "bad_certificate",
            AuthFailure::Token(kube::TokenError::Api(_) | kube::TokenError::NoApi) => {
                "token_unverifiable"
            }
            AuthFailure::Token(_) => "token_rejected",
            AuthFailure::BadAuthorizationHeader => "bad_authorization",
        }
    }
}

/// Decides who a caller is and whether it may read secrets.
pub struct Authenticator {
    config: AuthConfig,
    reviewer: Option<kube::KubeReviewer>,
    jwt: Option<jwt::JwtVerifier>,
}

impl Default for Authenticator {
    /// No Kubernetes API: client certificates only, secrets authorized by namespace alone.
    fn default() -> Self {
        Authenticator::new(AuthConfig::default(), None)
    }
}

impl Authenticator {
    /// With a client, tokens are verified by TokenReview and secret access by
    /// SubjectAccessReview; without one, tokens are refused and an authenticated caller's secret
    /// access is decided by namespace alone (`--from` without `--kube-auth`: there are no
    /// service accounts or RBAC to ask).
    pub fn new(config: AuthConfig, client: Option<::kube::Client>) -> Self {
        let reviewer = client.map(|c| {
            kube::KubeReviewer::new(
                c,
                config.audiences.clone(),
                config.trust_domain.clone(),
                config.cache_ttl,
            )
        });
        Authenticator {
            config,
            reviewer,
            jwt: None,
        }
    }

    /// Verify tokens with these keys instead of TokenReview.
    pub fn with_jwt(mut self, verifier: jwt::JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The reviewer's API call counts, when there is an API.
    pub fn api_calls(&self) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.reviewer.as_ref().map(|r| {
            (
                r.calls.token_reviews.load(Relaxed),
                r.calls.access_reviews.load(Relaxed),
            )
        })
    }

    /// Who is calling. `peer`: the TLS listener's connection info (`None` on the plaintext
    /// listener, whose callers are always anonymous: a token sent in the clear proves nothing
    /// worth a private key). `authorization`: the `authorization` metadata value.
    pub async fn authenticate(
        &self,
        peer: Option<&PeerInfo>,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, AuthFailure> {
        let Some(peer) = peer else {
            return Ok(Caller::Anonymous);
        };
        match &peer.client_identity {
            Some(Ok(identity)) => {
                return Ok(Caller::Authenticated {
                    identity: identity.clone(),
                    method: AuthMethod::ClientCertificate,
                })
            }
            Some(Err(e)) => return Err(AuthFailure::Certificate(e.clone())),
            None => {}
        }
        let Some(value) = authorization else {
            return Err(AuthFailure::NoCredentials);
        };
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::BadAuthorizationHeader)?;
        let identity = match (&self.jwt, &self.reviewer) {
            (Some(v), _) => v.verify(token),
            (None, Some(r)) => r.review_token(token).await,
            (None, None) => Err(kube::TokenError::NoApi),
        }
        .map_err(AuthFailure::Token)?;
        Ok(Caller::Authenticated {
            identity,
            method: AuthMethod::Token,
        })
    }

    /// Whether the caller's service account may list secrets in its namespace (SubjectAccessReview,
    /// cached); true without an API (namespace rule only), false for anonymous callers.
    pub async fn may_list_secrets(&self, caller: &Caller) -> bool {
        let Some(identity) = caller.identity() else {
            return false;
        };
        match &self.reviewer {
            Some(r) => r.may_list_secrets(identity).await,
            None => true,
        }
    }
}

/// Per stream: removes the secrets the caller may not receive from every snapshot before the
/// connection state machine sees it, and remembers what it denied (each name reported once).
#[derive(Debug, Clone)]
pub struct SecretFilter {
    caller: Caller,
    may_list_secrets: bool,
    denied: BTreeMap<String, DenyReason>,
}

impl SecretFilter {
    pub fn new(caller: Caller, may_list_secrets: bool) -> Self {
        SecretFilter {
            caller,
            may_list_secrets,
            denied: BTreeMap::new(),
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Every secret denied on this stream so far, with the reason.
    pub fn denied(&self) -> &BTreeMap<String, DenyReason> {
        &self.denied
    }

    /// The snapshot with only the allowed secrets (the same `Arc` when nothing is removed), and
    /// the secrets denied for the first time on this stream.
    pub fn apply(&mut self, snap: Arc<Snapshot>) -> (Arc<Snapshot>, Vec<(String, DenyReason)>) {
        let Some(secrets) = snap.of_type(SECRET).filter(|m| !m.is_empty()) else {
            return (snap, Vec::new());
        };
        let deny: Vec<(String, DenyReason)> = secrets
            .keys()
            .filter_map(|name| {
                match policy::may_receive_secret(&self.caller, self.may_list_secrets, name) {
                    Decision::Allow => None,
                    Decision::Deny(r) => Some((name.clone(), r)),
                }
            })
            .collect();
        if deny.is_empty() {
            return (snap, Vec::new());
        }
        let mut kept = secrets.clone();
        for (name, _) in &deny {
            kept.remove(name);
        }
        let mut filtered = (*snap).clone();
        filtered.resources.insert(SECRET, kept);
        let new: Vec<(String, DenyReason)> = deny
            .into_iter()
            .filter(|(n, r)| self.denied.insert(n.clone(), *r).is_none())
            .collect();
        (Arc::new(filtered), new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::{Resource, ResourceMap, CLUSTER};
    use envoy_types::pb::google::protobuf::Any;

    fn res(name: &str) -> Arc<Resource> {
        Arc::new(Resource {
            name: name.into(),
            version: "v".into(),
            body: Any::default(),
            pair: Default::default(),
        })
    }

    fn snap(secrets: &[&str]) -> Arc<Snapshot> {
        let mut s = Snapshot::default();
        let m: ResourceMap = secrets.iter().map(|n| (n.to_string(), res(n))).collect();
        s.resources.insert(SECRET, m);
        s.resources
            .insert(CLUSTER, [("c".to_string(), res("c"))].into_iter().collect());
        Arc::new(s)
    }

    fn gw() -> Caller {
        Caller::Authenticated {
            identity: Identity {
                trust_domain: "cluster.local".into(),
                namespace: "istio-system".into(),
                service_account: "gw".into(),
            },
            method: AuthMethod::Token,
        }
    }

    #[test]
    fn filter_keeps_only_allowed_secrets() {
        let s = snap(&["kubernetes://istio-system/a", "kubernetes://default/b"]);
        let mut f = SecretFilter::new(gw(), true);
        let (out, new) = f.apply(s.clone());
        let names: Vec<&String> = out.of_type(SECRET).unwrap().keys().collect();
        assert_eq!(names, ["kubernetes://istio-system/a"]);
        assert_eq!(
            new,
            vec![(
                "kubernetes://default/b".to_string(),
                DenyReason::OtherNamespace
            )]
        );
        assert_eq!(out.of_type(CLUSTER).unwrap().len(), 1);
        // Reported once per stream.
        let (_, again) = f.apply(s);
        assert!(again.is_empty());
        assert_eq!(f.denied().len(), 1);
        // Nothing to remove: the same Arc.
        let only = snap(&["kubernetes://istio-system/a"]);
        let (same, _) = f.apply(only.clone());
        assert!(Arc::ptr_eq(&same, &only));
    }

    #[test]
    fn anonymous_gets_no_secret() {
        let mut f = SecretFilter::new(Caller::Anonymous, true);
        let (out, new) = f.apply(snap(&["kubernetes://istio-system/a"]));
        assert!(out.of_type(SECRET).unwrap().is_empty());
        assert_eq!(new[0].1, DenyReason::Unauthenticated);
        let mut f = SecretFilter::new(gw(), false);
        let (out, new) = f.apply(snap(&["kubernetes://istio-system/a"]));
        assert!(out.of_type(SECRET).unwrap().is_empty());
        assert_eq!(new[0].1, DenyReason::NotPermitted);
    }

    #[tokio::test]
    async fn authentication_paths() {
        let a = Authenticator::default();
        assert_eq!(
            a.authenticate(None, Some(b"Bearer x")).await,
            Ok(Caller::Anonymous)
        );
        let tls = |id| PeerInfo {
            remote: None,
            client_identity: id,
        };
        assert_eq!(
            a.authenticate(Some(&tls(None)), None).await,
            Err(AuthFailure::NoCredentials)
        );
        assert_eq!(
            a.authenticate(Some(&tls(None)), Some(b"Basic x")).await,
            Err(AuthFailure::BadAuthorizationHeader)
        );
        assert_eq!(
            a.authenticate(Some(&tls(None)), Some(b"Bearer x")).await,
            Err(AuthFailure::Token(kube::TokenError::NoApi))
        );
        assert_eq!(
            a.authenticate(
                Some(&tls(Some(Err(IdentityError::NoSpiffeSan)))),
                Some(b"Bearer x")
            )
            .await,
            Err(AuthFailure::Certificate(IdentityError::NoSpiffeSan))
        );
        let id =
            Identity::from_spiffe("spiffe://cluster.local/ns/a/sa/b", "cluster.local").unwrap();
        let c = a
            .authenticate(Some(&tls(Some(Ok(id.clone())))), None)
            .await
            .unwrap();
        assert_eq!(c.identity(), Some(&id));
        assert!(a.may_list_secrets(&c).await);
        assert!(!a.may_list_secrets(&Caller::Anonymous).await);
    }
}
