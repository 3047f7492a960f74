//! Who a caller is: a Kubernetes service account, named by a SPIFFE URI
//! (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) or a Kubernetes username
//! (`system:serviceaccount:<ns>:<sa>`).

use std::fmt;

/// An authenticated service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a SPIFFE URI or username does not name a service account we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a SPIFFE URI of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>: {0:?}")]
    NotServiceAccountUri(String),
    #[error("trust domain {found:?} is not ours ({expected:?})")]
    WrongTrustDomain { found: String, expected: String },
    #[error("not a service account username (system:serviceaccount:<ns>:<sa>): {0:?}")]
    NotServiceAccountUser(String),
    #[error("the client certificate has no SPIFFE URI SAN")]
    NoSpiffeSan,
    #[error("the client certificate has more than one SPIFFE URI SAN")]
    SeveralSpiffeSans,
    #[error("the client certificate does not parse: {0}")]
    BadCertificate(String),
}

/// A DNS-1123 label (namespace / service account names are subdomains, but `/` and `:` are
/// what matters: they would let a name smuggle another path segment).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl Identity {
    /// `spiffe://<td>/ns/<ns>/sa/<sa>`, and the trust domain must be `trust_domain`.
    pub fn from_spiffe(uri: &str, trust_domain: &str) -> Result<Identity, IdentityError> {
        let bad = || IdentityError::NotServiceAccountUri(uri.to_string());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (td, path) = rest.split_once('/').ok_or_else(bad)?;
        let parts: Vec<&str> = path.split('/').collect();
        let ["ns", ns, "sa", sa] = parts.as_slice() else {
            return Err(bad());
        };
        if td.is_empty() || !valid_name(ns) || !valid_name(sa) {
            return Err(bad());
        }
        if !td.eq_ignore_ascii_case(trust_domain) {
            return Err(IdentityError::WrongTrustDomain {
                found: td.to_string(),
                expected: trust_domain.to_string(),
            });
        }
        Ok(Identity {
            trust_domain: trust_domain.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }

    /// `system:serviceaccount:<ns>:<sa>` (what TokenReview answers for a service-account token).
    pub fn from_username(user: &str, trust_domain: &str) -> Result<Identity, IdentityError> {
        let bad = || IdentityError::NotServiceAccountUser(user.to_string());
        let rest = user
            .strip_prefix("system:serviceaccount:")
            .ok_or_else(bad)?;
        let (ns, sa) = rest.split_once(':').ok_or_else(bad)?;
        if !valid_name(ns) || !valid_name(sa) {
            return Err(bad());
        }
        Ok(Identity {
            trust_domain: trust_domain.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }

    /// The identity of a (verified) client certificate: its one SPIFFE URI SAN.
    pub fn from_certificate(der: &[u8], trust_domain: &str) -> Result<Identity, IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|s| s.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::NoSpiffeSan),
            [one] => Identity::from_spiffe(one, trust_domain),
            _ => Err(IdentityError::SeveralSpiffeSans),
        }
    }

    pub fn spiffe_uri(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The Kubernetes username of the service account.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spiffe_uri())
    }
}

/// How a caller proved its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A client certificate verified against `--client-ca-file` (mTLS).
    ClientCertificate,
    /// A service-account JWT (`authorization: Bearer`) accepted by TokenReview.
    Token,
}

/// Who is on the other end of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Nothing proved (the plaintext listener): gets every type but secrets.
    Anonymous,
    Authenticated {
        identity: Identity,
        method: AuthMethod,
    },
}

impl Caller {
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Anonymous => None,
            Caller::Authenticated { identity, .. } => Some(identity),
        }
    }

    /// For logs and debug output: the SPIFFE URI, or `anonymous`.
    pub fn describe(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".to_string(),
            Caller::Authenticated { identity, .. } => identity.spiffe_uri(),
        }
    }

    pub fn method(&self) -> Option<AuthMethod> {
        match self {
            Caller::Anonymous => None,
            Caller::Authenticated { method, .. } => Some(*method),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_uris() {
        let id = Identity::from_spiffe(
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
            "cluster.local",
        )
        .unwrap();
        assert_eq!(id.namespace, "istio-system");
        assert_eq!(id.service_account, "istio-ingressgateway");
        assert_eq!(
            id.username(),
            "system:serviceaccount:istio-system:istio-ingressgateway"
        );
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
        );
        for bad in [
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/sa/a/ns/b",
            "spiffe:///ns/a/sa/b",
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/A:b/sa/b",
            "spiffe://cluster.local/ns//sa/b",
        ] {
            assert!(
                matches!(
                    Identity::from_spiffe(bad, "cluster.local"),
                    Err(IdentityError::NotServiceAccountUri(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Identity::from_spiffe("spiffe://other.td/ns/a/sa/b", "cluster.local"),
            Err(IdentityError::WrongTrustDomain { .. })
        ));
    }

    #[test]
    fn usernames() {
        let id = Identity::from_username("system:serviceaccount:knative-serving:gw", "td").unwrap();
        assert_eq!(id.namespace, "knative-serving");
        assert_eq!(id.service_account, "gw");
        for bad in [
            "system:serviceaccount:ns",
            "system:serviceaccount:ns:sa:x",
            "admin",
            "system:serviceaccount::sa",
        ] {
            assert!(Identity::from_username(bad, "td").is_err(), "{bad}");
        }
    }
}
