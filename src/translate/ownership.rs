//! Is this KIngress ours? One answer, used by translation (which KIngresses become routes and
//! TLS servers), by the status writer (which KIngresses it marks Ready) and by `validate`
//! (which KIngresses it reports as of a foreign class). Before there was one answer, the status
//! writer read only the annotation, so a KIngress selected through config-network was served
//! but never marked Ready.
//!
//! A KIngress's class is its `networking.knative.dev/ingress.class` annotation, else the
//! `ingress-class` (or legacy `ingress.class`) key of `knative-serving/config-network`, as
//! Knative's own reconcilers decide it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::kingress;
use crate::state::Inputs;

/// The namespace and name of the ConfigMap that holds the cluster-wide ingress class.
pub const CONFIG_NETWORK: (&str, &str) = ("knative-serving", "config-network");
/// Its keys for the ingress class, in the order they are read (the second is the legacy one).
pub const CLASS_KEYS: [&str; 2] = ["ingress-class", "ingress.class"];

/// A KIngress's class: its annotation, else config-network's ingress class; `None` when neither
/// says.
pub fn kingress_class(inputs: &Inputs, meta: &ObjectMeta) -> Option<String> {
    if let Some(c) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(kingress::CLASS_ANNOTATION))
    {
        return Some(c.clone());
    }
    let data = inputs
        .config_map(CONFIG_NETWORK.0, CONFIG_NETWORK.1)
        .and_then(|cm| cm.data.as_ref())?;
    CLASS_KEYS.iter().find_map(|k| data.get(*k)).cloned()
}

/// Whether the KIngress with this metadata has class `ours` (the `--ingress-class` we serve).
pub fn is_ours(inputs: &Inputs, meta: &ObjectMeta, ours: &str) -> bool {
    kingress_class(inputs, meta).as_deref() == Some(ours)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::kingress::CLASS_ANNOTATION;

    fn inputs(yaml: &str) -> Inputs {
        Inputs::from_test_yaml(yaml)
    }

    fn config_network(key: &str, class: &str) -> Inputs {
        inputs(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-network, namespace: \
             knative-serving}}\ndata: {{{key}: {class}}}\n"
        ))
    }

    fn annotated(class: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(BTreeMap::from([(
                CLASS_ANNOTATION.to_string(),
                class.to_string(),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn the_annotation_decides_when_present() {
        let none = Inputs::default();
        assert!(!is_ours(&none, &ObjectMeta::default(), "ours"));
        assert!(!is_ours(&none, &annotated(kingress::ISTIO_CLASS), "ours"));
        assert!(is_ours(&none, &annotated("ours"), "ours"));
        // The annotation wins over config-network.
        let cm = config_network("ingress-class", "ours");
        assert!(!is_ours(&cm, &annotated("theirs"), "ours"));
    }

    #[test]
    fn without_an_annotation_config_network_decides_by_either_key() {
        for key in CLASS_KEYS {
            let cm = config_network(key, "ours");
            assert!(is_ours(&cm, &ObjectMeta::default(), "ours"), "{key}");
            assert_eq!(
                kingress_class(&cm, &ObjectMeta::default()).as_deref(),
                Some("ours")
            );
            let cm = config_network(key, "theirs");
            assert!(!is_ours(&cm, &ObjectMeta::default(), "ours"), "{key}");
        }
    }
}
