//! net-istio's `knative-serving/config-istio` ConfigMap: which Gateways serve public
//! (ExternalIP) and cluster-local rules. Both of net-istio's formats are read, as net-istio
//! reads them:
//!
//! - the old keys `gateway.<ns>.<name>` and `local-gateway.<ns>.<name>` (value: the gateway
//!   Service's host name; `<name>` alone means `knative-serving`);
//! - the newer `external-gateways` / `local-gateways`, each a YAML list of
//!   `{namespace, name, service, labelSelector}`; the one entry without a `labelSelector` is the
//!   default gateway of its kind.
//!
//! Defining both formats is an error (net-istio refuses the ConfigMap), as is a list with no
//! or several default entries. We serve one gateway of each kind: the default one (old format:
//! the first key in sorted order, as net-istio orders them); gateways chosen by a label
//! selector serve only the namespaces it selects in net-istio and are not served here.

use serde::Deserialize;

use crate::model::diag::{ErrorCode, InputError};
use crate::model::{Kind, ObjectKey};
use crate::state::Inputs;

/// The ConfigMap's namespace and name.
pub const CONFIG_ISTIO: (&str, &str) = ("knative-serving", "config-istio");

/// The default gateways (`ns/name`) the ConfigMap names; `None` for a kind it leaves to the
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IstioGateways {
    pub external: Option<String>,
    pub local: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    label_selector: Option<serde_json::Value>,
}

/// The gateways config-istio names, or why it cannot be read (net-istio refuses it too).
/// `Ok(default)` when there is no such ConfigMap.
pub fn gateways(inputs: &Inputs) -> Result<IstioGateways, String> {
    let Some(cm) = inputs.config_map(CONFIG_ISTIO.0, CONFIG_ISTIO.1) else {
        return Ok(IstioGateways::default());
    };
    let data = cm.data.clone().unwrap_or_default();
    let old = |prefix: &str| -> Option<String> {
        // BTreeMap: keys come sorted.
        data.keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .find(|rest| !rest.is_empty())
            .map(|rest| match rest.split_once('.') {
                Some((ns, name)) => format!("{ns}/{name}"),
                None => format!("knative-serving/{rest}"),
            })
    };
    let new = |key: &str| -> Result<Option<String>, String> {
        let Some(text) = data.get(key).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let entries: Vec<Entry> = serde_saphyr::from_str(text)
            .map_err(|e| format!("{key}: not a list of gateways ({e})"))?;
        let defaults: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.label_selector.is_none())
            .collect();
        match defaults.as_slice() {
            // `[]`: no gateway of this kind (net-istio's mesh-only mode).
            [] if entries.is_empty() => Ok(Some(String::new())),
            [one] if !one.namespace.is_empty() && !one.name.is_empty() => {
                Ok(Some(format!("{}/{}", one.namespace, one.name)))
            }
            [_] => Err(format!(
                "{key}: the default gateway needs a namespace and a name"
            )),
            _ => Err(format!(
                "{key}: exactly one gateway without a labelSelector must be defined, found {}",
                defaults.len()
            )),
        }
    };
    let old_format = data
        .keys()
        .any(|k| k.starts_with("gateway.") || k.starts_with("local-gateway."));
    let new_format = ["external-gateways", "local-gateways"]
        .iter()
        .any(|k| data.get(*k).is_some_and(|v| !v.is_empty()));
    match (old_format, new_format) {
        (true, true) => Err(
            "external-gateways / local-gateways cannot be defined together with gateway.* / \
             local-gateway.* keys"
                .to_string(),
        ),
        (false, true) => Ok(IstioGateways {
            external: new("external-gateways")?,
            local: new("local-gateways")?,
        }),
        (true, false) => Ok(IstioGateways {
            external: old("gateway."),
            local: old("local-gateway."),
        }),
        (false, false) => Ok(IstioGateways::default()),
    }
}

/// The error of a config-istio that cannot be read, against the ConfigMap.
pub fn error(inputs: &Inputs) -> Option<InputError> {
    let why = gateways(inputs).err()?;
    let key = ObjectKey {
        kind: Kind::ConfigMap,
        namespace: CONFIG_ISTIO.0.to_string(),
        name: CONFIG_ISTIO.1.to_string(),
    };
    let origin = inputs
        .get(Kind::ConfigMap, CONFIG_ISTIO.0, CONFIG_ISTIO.1)
        .and_then(|e| e.origin.clone());
    Some(InputError::of(
        key,
        origin,
        ErrorCode::Invalid,
        format!("{why}; the gateways are chosen as if it were absent"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(data: &str) -> Inputs {
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-istio, namespace: knative-serving}}\ndata:\n{data}"
        );
        let loaded = crate::source::files::parse_text(std::path::Path::new("c.yaml"), &yaml);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        Inputs::from_sourced(loaded.objects).0
    }

    #[test]
    fn both_formats_name_the_gateways() {
        let old = inputs(
            "  gateway.knative-serving.my-ingress: \"custom.istio-system.svc.cluster.local\"\n  local-gateway.mesh.my-local: \"x.istio-system.svc.cluster.local\"\n",
        );
        assert_eq!(
            gateways(&old),
            Ok(IstioGateways {
                external: Some("knative-serving/my-ingress".into()),
                local: Some("mesh/my-local".into()),
            })
        );
        let new = inputs(
            "  external-gateways: |\n    - {namespace: knative-serving, name: public, service: a.istio-system.svc.cluster.local}\n    - {namespace: knative-serving, name: team, service: b.istio-system.svc.cluster.local, labelSelector: {matchLabels: {team: a}}}\n  local-gateways: |\n    - {namespace: knative-serving, name: private, service: c.istio-system.svc.cluster.local}\n",
        );
        assert_eq!(
            gateways(&new),
            Ok(IstioGateways {
                external: Some("knative-serving/public".into()),
                local: Some("knative-serving/private".into()),
            })
        );
        let only_local = inputs("  local-gateway.knative-local-gateway: \"x\"\n");
        assert_eq!(
            gateways(&only_local),
            Ok(IstioGateways {
                external: None,
                local: Some("knative-serving/knative-local-gateway".into()),
            })
        );
    }

    #[test]
    fn a_config_net_istio_refuses_is_an_error_naming_the_configmap() {
        for data in [
            "  gateway.a.b: x\n  external-gateways: \"- {namespace: a, name: b}\"\n",
            "  external-gateways: \"- {namespace: a, name: b}\\n- {namespace: a, name: c}\"\n",
            "  external-gateways: \"not: [a list\"\n",
        ] {
            let i = inputs(data);
            assert!(gateways(&i).is_err(), "{data}");
            let e = error(&i).expect("error");
            assert!(
                e.to_string()
                    .starts_with("ConfigMap knative-serving/config-istio (c.yaml document 1): "),
                "{e}"
            );
        }
    }
}

#[cfg(test)]
mod translate_tests {
    use std::collections::BTreeMap;

    use crate::state::Inputs;
    use crate::translate::{translate, Options};

    /// Gateways `knative-serving/public` (istio: ingressgateway, port 80) and
    /// `knative-serving/private` (istio: private, port 80), a KIngress with an ExternalIP and a
    /// ClusterLocal rule, and config-istio naming the two in the newer format.
    const INPUTS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: config-istio, namespace: knative-serving}
data:
  external-gateways: |
    - {namespace: knative-serving, name: public, service: istio-ingressgateway.istio-system.svc.cluster.local}
  local-gateways: |
    - {namespace: knative-serving, name: private, service: private.istio-system.svc.cluster.local}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: public, namespace: knative-serving}
spec:
  selector: {istio: ingressgateway}
  servers: [{hosts: ["*"], port: {name: http, number: 80, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: private, namespace: knative-serving}
spec:
  selector: {istio: private}
  servers: [{hosts: ["*"], port: {name: http, number: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {name: app-00001, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8012}]
---
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: app
  namespace: default
  annotations: {networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [app.default.example.com]
    visibility: ExternalIP
    http: {paths: [{splits: [{serviceName: app-00001, serviceNamespace: default, servicePort: 80, percent: 100}]}]}
  - hosts: [app.default.svc.cluster.local]
    visibility: ClusterLocal
    http: {paths: [{splits: [{serviceName: app-00001, serviceNamespace: default, servicePort: 80, percent: 100}]}]}
"#;

    fn hosts(inputs: &Inputs, opts: &Options, selector: &str) -> Vec<String> {
        let labels = BTreeMap::from([("istio".to_string(), selector.to_string())]);
        let t = translate(inputs, opts, &labels);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        t.config
            .routes
            .iter()
            .flat_map(|r| r.virtual_hosts.iter().flat_map(|v| v.domains.clone()))
            .filter(|d| d != "*")
            .collect()
    }

    #[test]
    fn the_gateways_config_istio_names_serve_the_rules_and_flags_override_it() {
        let loaded = crate::source::files::parse_text(std::path::Path::new("i.yaml"), INPUTS);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let inputs = Inputs::from_sourced(loaded.objects).0;
        let opts = Options::default();
        assert_eq!(
            hosts(&inputs, &opts, "ingressgateway"),
            ["app.default.example.com"]
        );
        assert_eq!(
            hosts(&inputs, &opts, "private"),
            ["app.default.svc.cluster.local"]
        );
        // --local-gateway wins over the ConfigMap.
        let flagged = Options {
            local_gateway: Some("knative-serving/public".into()),
            ..Options::default()
        };
        let mut both = hosts(&inputs, &flagged, "ingressgateway");
        both.sort();
        assert_eq!(
            both,
            ["app.default.example.com", "app.default.svc.cluster.local"]
        );
        assert!(hosts(&inputs, &flagged, "private").is_empty());
    }
}
