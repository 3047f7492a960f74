//! Envoy admin `/config_dump`-shaped JSON (proto3 canonical JSON, proto field names, `@type` on
//! every Any) for a snapshot, through a descriptor pool of the Envoy API that envoy-types was
//! generated from (`proto/envoy_descriptor_set.bin`).
//!
//! Private keys are redacted as Envoy's admin does; nothing else is changed. Output is
//! deterministic: resources are sorted by name, and no map we emit has more than one entry.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{json, Map, Value};

use crate::xds::{Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};

static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();

/// The Envoy API descriptor pool.
pub fn pool() -> Result<&'static DescriptorPool, String> {
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!("../../proto/envoy_descriptor_set.bin")[..])
            .map_err(|e| format!("decoding the Envoy descriptor set: {e}"))
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// One `Any` as JSON with its `@type`.
pub fn any_to_json(type_url: &str, bytes: &[u8]) -> Result<Value, String> {
    let pool = pool()?;
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown message type {name}"))?;
    let msg = DynamicMessage::decode(desc, bytes).map_err(|e| format!("decoding {name}: {e}"))?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    let mut out = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut out, &opts)
        .map_err(|e| format!("encoding {name} as JSON: {e}"))?;
    let v: Value =
        serde_json::from_slice(&out.into_inner()).map_err(|e| format!("re-reading JSON: {e}"))?;
    let mut obj = Map::new();
    obj.insert("@type".to_string(), Value::String(type_url.to_string()));
    if let Value::Object(fields) = v {
        obj.extend(fields);
    }
    Ok(Value::Object(obj))
}

/// Replaces the key material of a Secret as Envoy's admin does for the fields its API marks
/// `sensitive`: a TLS certificate's private key, PKCS#12 bundle and password, session ticket
/// keys and a generic secret. Certificates (public) stay.
fn redact(mut v: Value) -> Value {
    let hidden = || json!({"inline_string": "[redacted]"});
    if let Some(tls) = v.get_mut("tls_certificate").and_then(Value::as_object_mut) {
        for field in ["private_key", "pkcs12", "password"] {
            if let Some(f) = tls.get_mut(field) {
                *f = hidden();
            }
        }
    }
    if let Some(keys) = v
        .get_mut("session_ticket_keys")
        .and_then(|k| k.get_mut("keys"))
        .and_then(Value::as_array_mut)
    {
        for k in keys {
            *k = hidden();
        }
    }
    if let Some(g) = v
        .get_mut("generic_secret")
        .and_then(|g| g.get_mut("secret"))
    {
        *g = hidden();
    }
    v
}

/// The snapshot as Envoy admin ConfigDump JSON.
pub fn config_dump(snapshot: &Snapshot) -> Result<Value, String> {
    let items = |t: &str| -> Result<Vec<(String, String, Value)>, String> {
        let mut out = Vec::new();
        for (name, r) in snapshot.of_type(t).into_iter().flatten() {
            out.push((
                name.clone(),
                r.version.clone(),
                any_to_json(&r.body.type_url, &r.body.value)?,
            ));
        }
        Ok(out)
    };
    let clusters: Vec<Value> = items(CLUSTER)?
        .into_iter()
        .map(|(_, v, c)| json!({"version_info": v, "cluster": c}))
        .collect();
    let endpoints: Vec<Value> = items(ENDPOINT)?
        .into_iter()
        .map(|(_, v, e)| json!({"version_info": v, "endpoint_config": e}))
        .collect();
    let listeners: Vec<Value> = items(LISTENER)?
        .into_iter()
        .map(|(n, v, l)| json!({"name": n, "active_state": {"version_info": v, "listener": l}}))
        .collect();
    let routes: Vec<Value> = items(ROUTE)?
        .into_iter()
        .map(|(_, v, r)| json!({"version_info": v, "route_config": r}))
        .collect();
    let secrets: Vec<Value> = items(SECRET)?
        .into_iter()
        .map(|(n, v, s)| json!({"name": n, "version_info": v, "secret": redact(s)}))
        .collect();
    // Scoped route configurations (scoped route layout only), grouped as Envoy's admin groups
    // them: by the HCM's `scoped_routes` name, which prefixes every scope's name
    // (`http.80/<host>`).
    let mut scoped: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for (n, _, s) in items(SCOPED_ROUTE)? {
        let group = n.split_once('/').map(|(g, _)| g).unwrap_or(&n).to_string();
        scoped.entry(group).or_default().push(s);
    }
    let scoped: Vec<Value> = scoped
        .into_iter()
        .map(|(name, configs)| json!({"name": name, "scoped_route_configs": configs}))
        .collect();
    let mut configs = vec![
        json!({"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": clusters}),
        json!({"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump", "dynamic_endpoint_configs": endpoints}),
        json!({"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": listeners}),
    ];
    if !scoped.is_empty() {
        configs.push(json!({"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump", "dynamic_scoped_route_configs": scoped}));
    }
    configs.extend([
        json!({"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": routes}),
        json!({"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump", "dynamic_active_secrets": secrets}),
    ]);
    Ok(json!({ "configs": configs }))
}

#[cfg(test)]
mod tests {
    use super::redact;
    use serde_json::json;

    #[test]
    fn every_sensitive_secret_field_is_redacted_and_certificates_stay() {
        let secret = json!({
            "name": "kubernetes://ns/s",
            "tls_certificate": {
                "certificate_chain": {"inline_bytes": "Q0VSVA=="},
                "private_key": {"inline_bytes": "S0VZ"},
                "password": {"inline_string": "hunter2"},
                "pkcs12": {"inline_bytes": "UEsx"}
            },
            "session_ticket_keys": {"keys": [{"inline_bytes": "a2V5MQ=="}]},
            "generic_secret": {"secret": {"inline_string": "token"}}
        });
        let text = redact(secret).to_string();
        for leaked in ["S0VZ", "hunter2", "UEsx", "a2V5MQ==", "token"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
        assert!(text.contains("Q0VSVA=="), "the certificate stays: {text}");
        assert_eq!(text.matches("[redacted]").count(), 5, "{text}");
    }
}
