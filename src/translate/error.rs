//! Why an object (or a gateway server) is left out of the translation. Each variant's text is
//! the message users read (CLI, logs, `/debug`); [`TranslateError::code`] is what tools match on.

use crate::model::diag::ErrorCode;
use crate::model::knative::RouteError;
use crate::model::ObjectKey;

/// A translation error, before it is filed against an object as an
/// [`InputError`](crate::model::diag::InputError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("backend Service {ns}/{name} not found")]
    ServiceNotFound { ns: String, name: String },
    #[error("backend Service {ns}/{name} has {count} ports; name one")]
    AmbiguousPort {
        ns: String,
        name: String,
        count: usize,
    },
    #[error("bad port {0}")]
    BadPortNumber(i64),
    #[error("backend Service {ns}/{name} has no port {port}")]
    NoPortNumber { ns: String, name: String, port: i64 },
    #[error("backend Service {ns}/{name} has no port named {port:?}")]
    NoPortNamed {
        ns: String,
        name: String,
        port: String,
    },
    #[error("backend Service {ns}/{name} has bad port {port}")]
    BadServicePort { ns: String, name: String, port: i32 },
    #[error("ExternalName Service {ns}/{name} has no externalName")]
    NoExternalName { ns: String, name: String },
    #[error("bad timeout {0:?}")]
    BadTimeout(String),
    #[error("bad perTryTimeout {0:?}")]
    BadPerTryTimeout(String),
    #[error("http route has neither route nor redirect")]
    NoRouteNorRedirect,
    #[error("destination host {0} is not a Service of this cluster")]
    ForeignHost(String),
    #[error("every destination has weight 0")]
    AllWeightsZero,
    #[error("empty authority match")]
    EmptyAuthorityMatch,
    #[error("empty match for header {0}")]
    EmptyHeaderMatch(String),
    #[error("rule {rule} has no http block")]
    NoHttp { rule: usize },
    #[error("rule {rule} path {path} has no splits")]
    NoSplits { rule: usize, path: usize },
    #[error("rule {rule} path {path}: split percents sum to {total}, not 100")]
    SplitSum {
        rule: usize,
        path: usize,
        total: i64,
    },
    #[error("rule {rule} path {path}: bad percent {percent}")]
    BadPercent {
        rule: usize,
        path: usize,
        percent: i64,
    },
    /// A Route whose KIngress cannot be derived.
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("TLS Secret {ns}/{name} not found")]
    SecretNotFound { ns: String, name: String },
    #[error("Secret {ns}/{name} is not a TLS pair (needs tls.crt and tls.key)")]
    NotTlsPair { ns: String, name: String },
    #[error("Secret {ns}/{name}: {reason} (Envoy would reject it)")]
    BadTlsPair {
        ns: String,
        name: String,
        reason: String,
    },
    #[error("HTTPS server {0} has no credentialName")]
    NoCredential(String),
    /// A value Envoy would reject (see `translate::check`): the object is left out rather than
    /// make Envoy reject the whole resource it shares with other objects.
    #[error("{0} (Envoy would reject it)")]
    EnvoyRejects(String),
    /// A Gateway API object (listener, HTTPRoute rule or filter) we cannot serve.
    #[error("{0}")]
    GatewayApi(String),
    /// Filed against the previous owner of a host, when an older object claims it.
    #[error("host {host} is also claimed by older {by}; left out here")]
    ClaimedByOlder { host: String, by: ObjectKey },
    /// Filed against an object that claims a host an older object holds.
    #[error("host {host} is already claimed by {by}; left out here")]
    AlreadyClaimed { host: String, by: ObjectKey },
}

impl TranslateError {
    /// The code `validate` classifies this error by.
    pub fn code(&self) -> ErrorCode {
        use TranslateError::*;
        match self {
            ServiceNotFound { .. } => ErrorCode::MissingService,
            NoPortNumber { .. } | NoPortNamed { .. } => ErrorCode::MissingPort,
            SplitSum { .. } => ErrorCode::SplitPercent,
            Route(r) => r.code(),
            SecretNotFound { .. } => ErrorCode::TlsSecretMissing,
            NotTlsPair { .. } | BadTlsPair { .. } => ErrorCode::TlsSecretInvalid,
            ClaimedByOlder { .. } | AlreadyClaimed { .. } => ErrorCode::DuplicateHost,
            AmbiguousPort { .. }
            | BadPortNumber(_)
            | BadServicePort { .. }
            | NoExternalName { .. }
            | BadTimeout(_)
            | BadPerTryTimeout(_)
            | NoRouteNorRedirect
            | ForeignHost(_)
            | AllWeightsZero
            | EmptyAuthorityMatch
            | EmptyHeaderMatch(_)
            | NoHttp { .. }
            | NoSplits { .. }
            | BadPercent { .. }
            | NoCredential(_)
            | GatewayApi(_) => ErrorCode::Invalid,
            EnvoyRejects(_) => ErrorCode::EnvoyRejects,
        }
    }

    /// The other object this error is about: the Secret of a TLS error.
    pub fn subject(&self) -> Option<ObjectKey> {
        match self {
            TranslateError::SecretNotFound { ns, name }
            | TranslateError::NotTlsPair { ns, name }
            | TranslateError::BadTlsPair { ns, name, .. } => Some(ObjectKey {
                kind: crate::model::Kind::Secret,
                namespace: ns.clone(),
                name: name.clone(),
            }),
            _ => None,
        }
    }

    /// This error filed against `key` (its origin looked up in the inputs).
    pub(crate) fn against(
        self,
        inputs: &crate::state::Inputs,
        key: &ObjectKey,
    ) -> crate::model::diag::InputError {
        let origin = inputs
            .get(key.kind, &key.namespace, &key.name)
            .and_then(|e| e.origin.clone());
        let mut e =
            crate::model::diag::InputError::of(key.clone(), origin, self.code(), self.to_string());
        e.subject = self.subject();
        e
    }
}
