//! Tests of the gateway stage: TLS servers from KIngress entries and their SNI names.

use std::collections::BTreeMap;
use std::path::Path;

use crate::state::Inputs;
use crate::translate::{translate, Options, Translation};

const CASE: [&str; 4] = [
    include_str!("../../../testdata/tls-redirect/input/istio-gateway-services.yaml"),
    include_str!("../../../testdata/tls-redirect/input/kingress.yaml"),
    include_str!("../../../testdata/tls-redirect/input/revision-services.yaml"),
    include_str!("../../../testdata/tls-redirect/input/secret.yaml"),
];

/// A second KIngress of ours with one TLS entry.
fn kingress(name: &str, created: &str, host: &str, secret: &str) -> String {
    format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  creationTimestamp: "{created}"
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: ["{host}"]
    visibility: ExternalIP
    http:
      paths:
      - splits: [{{serviceName: secure-00001, serviceNamespace: default, servicePort: 80, percent: 100}}]
  tls:
  - hosts: ["{host}"]
    secretName: {secret}
    secretNamespace: default
"#
    )
}

fn external(extra: &[String]) -> Translation {
    let mut objects = Vec::new();
    for (i, text) in CASE
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .enumerate()
    {
        let loaded = crate::source::files::parse_text(Path::new(&format!("{i}.yaml")), &text);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        objects.extend(loaded.objects);
    }
    let (inputs, _) = Inputs::from_sourced(objects);
    let labels = BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]);
    translate(&inputs, &Options::default(), &labels)
}

/// The SNI names of the TLS filter chains of listener `0.0.0.0_8443`.
fn tls_chains(t: &Translation) -> Vec<Vec<String>> {
    let l = t
        .config
        .listeners
        .iter()
        .find(|l| l.name == "0.0.0.0_8443")
        .expect("listener 0.0.0.0_8443");
    l.filter_chains
        .iter()
        .filter(|c| c.transport_socket.is_some())
        .map(|c| {
            c.filter_chain_match
                .clone()
                .unwrap_or_default()
                .server_names
        })
        .collect()
}

#[test]
fn a_tls_host_two_kingresses_name_is_served_by_the_older_only() {
    // Created after `secure`, and first by name: it still loses the host.
    let thief = kingress(
        "aaa-thief",
        "2025-01-01T00:00:00Z",
        "secure.default.example.com",
        "secure-tls",
    );
    let t = external(&[thief]);
    assert_eq!(
        tls_chains(&t),
        vec![vec!["secure.default.example.com".to_string()]]
    );
    let err = t
        .errors
        .iter()
        .find(|e| e.object.as_ref().is_some_and(|o| o.name == "aaa-thief"))
        .unwrap_or_else(|| panic!("{:?}", t.errors));
    assert!(
            err.message.contains("TLS host secure.default.example.com on port 8443 is already served by Ingress default/secure"),
            "{}",
            err.message
        );
}

#[test]
fn a_tls_host_with_a_partial_wildcard_or_a_bad_pair_is_left_out_alone() {
    let wildcard = kingress(
        "wild",
        "2025-01-01T00:00:00Z",
        "a*.example.com",
        "secure-tls",
    );
    // The certificate of secure-tls with another key.
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: mismatch, namespace: default}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
            CASE[3]
                .lines()
                .find_map(|l| l.trim().strip_prefix("tls.crt: "))
                .unwrap(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, other_key.as_bytes()),
        );
    let mismatched = kingress(
        "mismatched",
        "2025-01-01T00:00:00Z",
        "m.example.com",
        "mismatch",
    );
    let t = external(&[wildcard, mismatched, secret]);
    assert_eq!(
        tls_chains(&t),
        vec![vec!["secure.default.example.com".to_string()]]
    );
    let msgs: Vec<String> = t
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.object.as_ref().unwrap(), e.message))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("Ingress default/wild:") && m.contains("wildcard")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("Ingress default/mismatched:")
                && m.contains(
                    "Secret default/mismatch: tls.key is not the key of the first certificate"
                )),
        "{msgs:#?}"
    );
}
