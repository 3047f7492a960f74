//! The authorization rules, as pure functions (no I/O: the SubjectAccessReview answer is an
//! input).
//!
//! | rule | istiod | here |
//! |---|---|---|
//! | secrets to unauthenticated callers | never (`pilot/pkg/xds/sds.go`) | never |
//! | `kubernetes://ns/name` | only `ns` = caller's namespace | same |
//! | `kubernetes://name` | the caller's namespace | same |
//! | other secret names (`default`, `ROOTCA`, `kubernetes-gateway://`) | other rules | never |
//! | SA may read secrets | SubjectAccessReview `list secrets` in its namespace | same (cached) |
//! | node vs identity | `NAMESPACE` / `SERVICE_ACCOUNT` must match (`pilot/pkg/xds/auth.go`) | same, node id namespace included |

use super::identity::Caller;

/// The outcome of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Why a resource is not sent (also the `reason` label of the denial metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The caller proved no identity (plaintext listener).
    Unauthenticated,
    /// The secret is in another namespace than the caller's.
    OtherNamespace,
    /// SubjectAccessReview: the caller's service account may not list secrets there.
    NotPermitted,
    /// Not a `kubernetes://` secret name.
    UnsupportedName,
    /// The gateway is in another namespace than the caller's and not allow-listed.
    ForeignGateway,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Unauthenticated => "unauthenticated",
            DenyReason::OtherNamespace => "other_namespace",
            DenyReason::NotPermitted => "not_permitted",
            DenyReason::UnsupportedName => "unsupported_name",
            DenyReason::ForeignGateway => "foreign_gateway",
        }
    }
}

/// The namespace a `kubernetes://` SDS name refers to: `kubernetes://ns/name` → `ns`,
/// `kubernetes://name` → `caller_ns`. `None` for anything else.
pub fn secret_namespace<'a>(secret_name: &'a str, caller_ns: &'a str) -> Option<&'a str> {
    let rest = secret_name.strip_prefix("kubernetes://")?;
    match rest.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Some(ns),
        Some(_) => None,
        None if !rest.is_empty() => Some(caller_ns),
        None => None,
    }
}

/// May this caller receive this SDS secret? `may_list_secrets`: what a SubjectAccessReview says
/// about the caller's service account listing secrets in its own namespace.
pub fn may_receive_secret(caller: &Caller, may_list_secrets: bool, secret_name: &str) -> Decision {
    let Some(identity) = caller.identity() else {
        return Decision::Deny(DenyReason::Unauthenticated);
    };
    let Some(ns) = secret_namespace(secret_name, &identity.namespace) else {
        return Decision::Deny(DenyReason::UnsupportedName);
    };
    if ns != identity.namespace {
        return Decision::Deny(DenyReason::OtherNamespace);
    }
    if !may_list_secrets {
        return Decision::Deny(DenyReason::NotPermitted);
    }
    Decision::Allow
}

/// Why a stream is refused: the node claims to be something the identity is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeMismatch {
    #[error("the node names no namespace (node id or metadata NAMESPACE)")]
    NoNamespace,
    #[error("the node's namespace {node:?} is not the identity's {identity:?}")]
    Namespace { node: String, identity: String },
    #[error("the node's SERVICE_ACCOUNT {node:?} is not the identity's {identity:?}")]
    ServiceAccount { node: String, identity: String },
}

/// The node must be what the identity is (istiod `pilot/pkg/xds/auth.go`): its namespace (from the
/// node id, else metadata `NAMESPACE`) equals the identity's, and so does metadata
/// `SERVICE_ACCOUNT` when the node sends it. `node_meta_namespace` is checked too when it is
/// given and differs from the node id's. Anonymous callers are not checked (they get no secret).
pub fn check_node(
    caller: &Caller,
    node_namespace: Option<&str>,
    node_meta_namespace: Option<&str>,
    node_service_account: Option<&str>,
) -> Result<(), NodeMismatch> {
    let Some(identity) = caller.identity() else {
        return Ok(());
    };
    let ns = node_namespace.ok_or(NodeMismatch::NoNamespace)?;
    for claimed in std::iter::once(ns).chain(node_meta_namespace) {
        if claimed != identity.namespace {
            return Err(NodeMismatch::Namespace {
                node: claimed.to_string(),
                identity: identity.namespace.clone(),
            });
        }
    }
    if let Some(sa) = node_service_account {
        if sa != identity.service_account {
            return Err(NodeMismatch::ServiceAccount {
                node: sa.to_string(),
                identity: identity.service_account.clone(),
            });
        }
    }
    Ok(())
}

/// Namespaces whose gateways may be served to identities of other namespaces:
/// `(identity namespace, gateway namespace)` pairs, e.g. `("istio-system", "knative-serving")` for
/// the istio-system gateway pods that serve knative-serving's Gateways (net-istio's layout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayAllowList {
    pub pairs: Vec<(String, String)>,
}

impl GatewayAllowList {
    /// net-istio's layout: the `istio-system` gateway pods serve `knative-serving`'s Gateways.
    pub fn istio_default() -> GatewayAllowList {
        GatewayAllowList {
            pairs: vec![("istio-system".to_string(), "knative-serving".to_string())],
        }
    }

    /// Parses `identity-ns=gateway-ns` entries.
    pub fn parse(entries: &[String]) -> Result<GatewayAllowList, String> {
        let mut pairs = Vec::new();
        for e in entries {
            let (a, b) = e
                .split_once('=')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| {
                    format!("gateway allow-list entry {e:?} is not IDENTITY_NS=GATEWAY_NS")
                })?;
            pairs.push((a.to_string(), b.to_string()));
        }
        Ok(GatewayAllowList { pairs })
    }
}

/// May this caller receive the config of a Gateway in `gateway_ns`? Its own namespace's, or an
/// allow-listed pair's. Anonymous callers are allowed (they get no secrets, and the plaintext
/// listener is for local use).
pub fn may_serve_gateway(caller: &Caller, gateway_ns: &str, allow: &GatewayAllowList) -> Decision {
    let Some(identity) = caller.identity() else {
        return Decision::Allow;
    };
    if identity.namespace == gateway_ns
        || allow
            .pairs
            .iter()
            .any(|(i, g)| *i == identity.namespace && g == gateway_ns)
    {
        Decision::Allow
    } else {
        Decision::Deny(DenyReason::ForeignGateway)
    }
}

/// The first of `gateways` (`ns/name`) this caller may not receive the config of, if any.
pub fn foreign_gateway<'a>(
    caller: &Caller,
    gateways: &'a [String],
    allow: &GatewayAllowList,
) -> Option<&'a str> {
    gateways
        .iter()
        .find(|g| {
            let ns = g.split_once('/').map_or("", |(ns, _)| ns);
            !may_serve_gateway(caller, ns, allow).is_allowed()
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::super::identity::{AuthMethod, Identity};
    use super::*;

    fn caller(ns: &str, sa: &str) -> Caller {
        Caller::Authenticated {
            identity: Identity {
                trust_domain: "cluster.local".into(),
                namespace: ns.into(),
                service_account: sa.into(),
            },
            method: AuthMethod::ClientCertificate,
        }
    }

    #[test]
    fn secret_names() {
        assert_eq!(secret_namespace("kubernetes://a/b", "c"), Some("a"));
        assert_eq!(secret_namespace("kubernetes://b", "c"), Some("c"));
        assert_eq!(secret_namespace("kubernetes://a/b/c", "c"), None);
        assert_eq!(secret_namespace("kubernetes:///b", "c"), None);
        assert_eq!(secret_namespace("kubernetes://", "c"), None);
        assert_eq!(secret_namespace("kubernetes-gateway://a/b", "c"), None);
        assert_eq!(secret_namespace("default", "c"), None);
    }

    #[test]
    fn secrets() {
        use DenyReason::*;
        let gw = caller("istio-system", "gw");
        let d = |c: &Caller, sar, n| may_receive_secret(c, sar, n);
        assert_eq!(
            d(&gw, true, "kubernetes://istio-system/tls"),
            Decision::Allow
        );
        assert_eq!(d(&gw, true, "kubernetes://tls"), Decision::Allow);
        assert_eq!(
            d(&gw, true, "kubernetes://default/tls"),
            Decision::Deny(OtherNamespace)
        );
        assert_eq!(
            d(&gw, false, "kubernetes://istio-system/tls"),
            Decision::Deny(NotPermitted)
        );
        assert_eq!(d(&gw, true, "ROOTCA"), Decision::Deny(UnsupportedName));
        assert_eq!(
            d(&Caller::Anonymous, true, "kubernetes://istio-system/tls"),
            Decision::Deny(Unauthenticated)
        );
    }

    #[test]
    fn nodes() {
        let gw = caller("istio-system", "gw");
        assert_eq!(check_node(&gw, Some("istio-system"), None, None), Ok(()));
        assert_eq!(
            check_node(&gw, Some("istio-system"), Some("istio-system"), Some("gw")),
            Ok(())
        );
        assert!(matches!(
            check_node(&gw, Some("default"), None, None),
            Err(NodeMismatch::Namespace { .. })
        ));
        assert!(matches!(
            check_node(&gw, Some("istio-system"), Some("default"), None),
            Err(NodeMismatch::Namespace { .. })
        ));
        assert!(matches!(
            check_node(&gw, Some("istio-system"), None, Some("other")),
            Err(NodeMismatch::ServiceAccount { .. })
        ));
        assert_eq!(
            check_node(&gw, None, None, None),
            Err(NodeMismatch::NoNamespace)
        );
        assert_eq!(check_node(&Caller::Anonymous, None, None, None), Ok(()));
    }

    #[test]
    fn gateways() {
        let allow = GatewayAllowList::parse(&["istio-system=knative-serving".into()]).unwrap();
        let gw = caller("istio-system", "gw");
        assert!(may_serve_gateway(&gw, "istio-system", &allow).is_allowed());
        assert!(may_serve_gateway(&gw, "knative-serving", &allow).is_allowed());
        assert_eq!(
            may_serve_gateway(&gw, "default", &allow),
            Decision::Deny(DenyReason::ForeignGateway)
        );
        assert_eq!(
            may_serve_gateway(&caller("knative-serving", "x"), "istio-system", &allow),
            Decision::Deny(DenyReason::ForeignGateway)
        );
        assert!(GatewayAllowList::parse(&["x".into()]).is_err());
        let gateways = vec![
            "knative-serving/knative-ingress-gateway".to_string(),
            "default/mine".to_string(),
        ];
        assert_eq!(
            foreign_gateway(&gw, &gateways, &allow),
            Some("default/mine")
        );
        assert_eq!(foreign_gateway(&gw, &gateways[..1], &allow), None);
        assert_eq!(
            foreign_gateway(&Caller::Anonymous, &gateways, &allow),
            None,
            "anonymous callers (plaintext) are not restricted by gateway"
        );
    }
}
