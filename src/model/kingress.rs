//! `networking.internal.knative.dev/v1alpha1` Ingress (KIngress), field for field as Knative's
//! `ingress_types.go`. Field order here is the Go struct order: the K-Network-Hash encoder relies on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The class annotation Knative writes on a KIngress.
pub const CLASS_ANNOTATION: &str = "networking.knative.dev/ingress.class";
/// net-istio's class: such KIngresses are served through the VirtualServices net-istio writes.
pub const ISTIO_CLASS: &str = "istio.ingress.networking.knative.dev";
/// Our own default class.
pub const DEFAULT_CLASS: &str = "knative-pilot.ingress.networking.knative.dev";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<IngressTls>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_option: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub secret_name: String,
    #[serde(default)]
    pub secret_namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `ExternalIP` (default) or `ClusterLocal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpIngressRuleValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpIngressRuleValue {
    #[serde(default)]
    pub paths: Vec<HttpIngressPath>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpIngressPath {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, HeaderMatch>>,
    #[serde(default)]
    pub splits: Vec<IngressBackendSplit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    #[serde(default)]
    pub exact: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressBackendSplit {
    #[serde(default)]
    pub service_namespace: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub service_port: IntOrString,
    #[serde(default)]
    pub percent: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_headers: Option<BTreeMap<String, String>>,
}

/// Kubernetes `intstr.IntOrString`: encodes as a bare int or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<serde_json::Value>,
}

impl IngressSpec {
    /// Knative's `SetDefaults`: visibility defaults to `ExternalIP`; a single split with percent 0
    /// means 100.
    pub fn defaulted(&self) -> IngressSpec {
        self.defaulted_cow().into_owned()
    }

    /// [`Self::defaulted`], borrowing the spec when no default applies (a spec Knative's
    /// route controller built, or one read back after defaulting): no copy of its rules.
    pub fn defaulted_cow(&self) -> std::borrow::Cow<'_, IngressSpec> {
        fn visibility_unset(rule: &IngressRule) -> bool {
            rule.visibility.as_deref().unwrap_or("").is_empty()
        }
        fn lone_zero_split(path: &HttpIngressPath) -> bool {
            path.splits.len() == 1 && path.splits[0].percent == 0
        }
        let needs = self.rules.iter().any(|rule| {
            visibility_unset(rule)
                || rule
                    .http
                    .as_ref()
                    .is_some_and(|http| http.paths.iter().any(lone_zero_split))
        });
        if !needs {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut spec = self.clone();
        for rule in &mut spec.rules {
            if visibility_unset(rule) {
                rule.visibility = Some("ExternalIP".to_string());
            }
            for path in rule.http.iter_mut().flat_map(|h| h.paths.iter_mut()) {
                if lone_zero_split(path) {
                    path.splits[0].percent = 100;
                }
            }
        }
        std::borrow::Cow::Owned(spec)
    }
}
