//! Checks the API server makes on an object that deserializing does not: `metadata` and
//! `spec` are mappings (serde would read `spec: []` as an empty spec), and endpoint addresses
//! are IP addresses of the slice's family (Envoy rejects a whole EDS response for one bad
//! address). Both sources go through [`super::parse_object`], so both apply them.

use std::net::IpAddr;

use super::core::{EndpointSlice, Endpoints};

use super::Object;

/// The fields that must be mappings when present (null is "not set").
pub const MAPPINGS: [&str; 2] = ["metadata", "spec"];

/// The message for a field of [`MAPPINGS`] that is `what` ("a list") instead.
pub fn not_a_mapping(field: &str, what: &str) -> String {
    format!("{field} must be a mapping, not {what}")
}

/// What is wrong with the shape of a decoded document, before it is typed.
pub fn shape(value: &serde_json::Value) -> Result<(), String> {
    for field in MAPPINGS {
        match value.get(field) {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_)) => {}
            Some(other) => {
                let what = match other {
                    serde_json::Value::Array(_) => "a list",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    _ => "a boolean",
                };
                return Err(not_a_mapping(field, what));
            }
        }
    }
    Ok(())
}

/// What is wrong with a typed object's values.
pub fn values(object: &Object) -> Result<(), String> {
    match object {
        Object::Endpoints(e) => endpoints(e),
        Object::EndpointSlice(s) => endpoint_slice(s),
        _ => Ok(()),
    }
}

fn endpoints(e: &Endpoints) -> Result<(), String> {
    for (i, subset) in e.subsets.iter().flatten().enumerate() {
        let lists = [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ];
        for (field, list) in lists {
            for (j, a) in list.iter().flatten().enumerate() {
                if a.ip.parse::<IpAddr>().is_err() {
                    return Err(format!(
                        "subsets[{i}].{field}[{j}].ip {:?} is not an IP address",
                        a.ip
                    ));
                }
            }
        }
    }
    Ok(())
}

fn endpoint_slice(s: &EndpointSlice) -> Result<(), String> {
    let v4 = match s.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        other => {
            return Err(format!(
                "addressType {other:?} is not served (Envoy's EDS needs IPv4 or IPv6 addresses)"
            ))
        }
    };
    for (i, ep) in s.endpoints.iter().enumerate() {
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => v4,
                Ok(IpAddr::V6(_)) => !v4,
                Err(_) => false,
            };
            if !ok {
                return Err(format!(
                    "endpoints[{i}].addresses[{j}] {a:?} is not an {} address",
                    s.address_type
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse_object;
    use super::super::ParseError;
    use serde_json::json;

    fn message(v: serde_json::Value) -> String {
        match parse_object(v) {
            Err(ParseError::Invalid { message, .. }) => message,
            other => panic!("expected an invalid object, got {other:?}"),
        }
    }

    #[test]
    fn endpoint_addresses_must_be_ips_of_the_slice_family() {
        let eps = |ip: &str| {
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "a"},
                   "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": ip}], "ports": [{"port": 80}]}]})
        };
        assert_eq!(
            message(eps("999.1.1.1")),
            "subsets[0].addresses[1].ip \"999.1.1.1\" is not an IP address"
        );
        assert!(parse_object(eps("fd00::1")).is_ok());
        let slice = |family: &str, ip: &str| {
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": "a-x", "labels": {"kubernetes.io/service-name": "a"}},
                   "addressType": family, "endpoints": [{"addresses": [ip]}]})
        };
        assert_eq!(
            message(slice("IPv4", "999.1.1.1")),
            "endpoints[0].addresses[0] \"999.1.1.1\" is not an IPv4 address"
        );
        assert_eq!(
            message(slice("IPv4", "fd00::1")),
            "endpoints[0].addresses[0] \"fd00::1\" is not an IPv4 address"
        );
        assert!(
            message(slice("FQDN", "a.example.com")).contains("addressType \"FQDN\" is not served")
        );
        assert!(parse_object(slice("IPv6", "fd00::1")).is_ok());
        assert!(parse_object(slice("IPv4", "10.0.0.1")).is_ok());
    }

    #[test]
    fn spec_and_metadata_must_be_mappings() {
        let kingress = json!({"apiVersion": "networking.internal.knative.dev/v1alpha1",
                              "kind": "Ingress", "metadata": {"name": "a"}, "spec": []});
        assert_eq!(message(kingress), "spec must be a mapping, not a list");
        let svc =
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": null});
        assert!(parse_object(svc).is_ok());
    }
}
