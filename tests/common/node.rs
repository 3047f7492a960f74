//! Envoy nodes as istio-proxy sends them: the id, and the pod labels under metadata `LABELS`.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

fn string(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_string())),
    }
}

/// A node with this id and `LABELS` (plus any extra string metadata, e.g. `NAMESPACE`).
pub fn istio_node(id: &str, labels: &[(&str, &str)], extra: &[(&str, &str)]) -> Node {
    let labels = Struct {
        fields: labels
            .iter()
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect(),
    };
    let mut fields: std::collections::BTreeMap<String, Value> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), string(v)))
        .collect();
    fields.insert(
        "LABELS".to_string(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: id.to_string(),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        ..Default::default()
    }
}
