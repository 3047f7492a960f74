//! The core/v1 Service and Endpoints and the discovery/v1 EndpointSlice as translation, status
//! and the checks read them: k8s-openapi's field names, wire format and defaults (a required
//! field missing or null reads as its default, as k8s-openapi reads it), without the fields
//! nothing here reads (skipped when decoded, as any unknown field is). There are several of
//! these per Knative service (two revision Services and their endpoints): k8s-openapi's
//! Service held ~900 bytes before its strings, an endpoint address 240 for one IP string.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LoadBalancerStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Deserializer, Serialize};

/// A required field as k8s-openapi reads it: missing or null is the default.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A core/v1 Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default, deserialize_with = "or_default")]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
}

/// What is read of a Service's spec: its ports, its selector (gateway Services), its type and
/// external name (ExternalName Services), its cluster IP (Gateway API addresses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ServicePort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerStatus>,
}

/// A core/v1 Endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    #[serde(default, deserialize_with = "or_default")]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<Vec<EndpointSubset>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<EndpointAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_addresses: Option<Vec<EndpointAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<EndpointPort>>,
}

/// An address of an Endpoints subset: its IP (its hostname, node and target are not read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointAddress {
    #[serde(default, deserialize_with = "or_default")]
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub port: i32,
}

/// A discovery/v1 EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default, deserialize_with = "or_default")]
    pub address_type: String,
    #[serde(default, deserialize_with = "or_default")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, deserialize_with = "or_default")]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<SlicePort>>,
}

/// An endpoint of a slice: its addresses and readiness, and what names it (the debug server's
/// peers leave out their own pod).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, deserialize_with = "or_default")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<EndpointConditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// The object an endpoint points at: its name is read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A port of a slice (the port number may be unset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Whether `value` reads as the same fields through k8s-openapi's type and ours.
    fn reads_alike<K, O>(value: serde_json::Value, same: impl Fn(&K, &O) -> bool) -> bool
    where
        K: serde::de::DeserializeOwned,
        O: serde::de::DeserializeOwned,
    {
        let k: K = serde_json::from_value(value.clone()).expect("k8s-openapi reads it");
        let o: O = serde_json::from_value(value).expect("we read it");
        same(&k, &o)
    }

    #[test]
    fn a_service_reads_as_k8s_openapi_reads_it_without_the_fields_nothing_reads() {
        use k8s_openapi::api::core::v1 as k;
        let full = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "n", "labels": {"a": "b"}},
            "spec": {"type": "ExternalName", "externalName": "x.example.com",
                     "clusterIP": "10.0.0.9", "clusterIPs": ["10.0.0.9"], "selector": {"app": "gw"},
                     "sessionAffinity": "None", "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http2", "port": 80, "targetPort": "web", "nodePort": 30080,
                                "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
                               {"port": null}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
        });
        assert!(reads_alike(full, |k: &k::Service, o: &Service| {
            let (ks, os) = (k.spec.as_ref().unwrap(), o.spec.as_ref().unwrap());
            let ports = |p: &k::ServicePort| {
                (
                    p.name.clone(),
                    p.port,
                    p.target_port.clone(),
                    p.protocol.clone(),
                    p.app_protocol.clone(),
                )
            };
            let ours = |p: &ServicePort| {
                (
                    p.name.clone(),
                    p.port,
                    p.target_port.clone(),
                    p.protocol.clone(),
                    p.app_protocol.clone(),
                )
            };
            k.metadata == o.metadata
                && (&ks.type_, &ks.external_name, &ks.cluster_ip, &ks.selector)
                    == (&os.type_, &os.external_name, &os.cluster_ip, &os.selector)
                && ks
                    .ports
                    .iter()
                    .flatten()
                    .map(ports)
                    .eq(os.ports.iter().flatten().map(ours))
                && k.status.as_ref().and_then(|s| s.load_balancer.clone())
                    == o.status.as_ref().and_then(|s| s.load_balancer.clone())
        }));
        // A field that is read still has to have its type.
        let bad = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": "eighty"}]}});
        assert!(serde_json::from_value::<k::Service>(bad.clone()).is_err());
        assert!(serde_json::from_value::<Service>(bad).is_err());
    }

    #[test]
    fn endpoints_and_slices_read_as_k8s_openapi_reads_them() {
        use k8s_openapi::api::core::v1 as k;
        use k8s_openapi::api::discovery::v1 as d;
        let eps = json!({
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1", "hostname": "p", "nodeName": "n",
                                        "targetRef": {"kind": "Pod", "name": "p"}}, {"ip": null}],
                         "notReadyAddresses": [{"ip": "10.0.0.2"}],
                         "ports": [{"name": "http", "port": 8012, "protocol": "TCP"}, {}]}]
        });
        assert!(reads_alike(eps, |k: &k::Endpoints, o: &Endpoints| {
            let ks = k.subsets.iter().flatten();
            let os = o.subsets.iter().flatten();
            k.metadata == o.metadata
                && ks.zip(os).all(|(a, b)| {
                    let ips = |l: &Option<Vec<k::EndpointAddress>>| {
                        l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
                    };
                    let ours = |l: &Option<Vec<EndpointAddress>>| {
                        l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
                    };
                    let ports = a.ports.iter().flatten().map(|p| (p.name.clone(), p.port));
                    ips(&a.addresses) == ours(&b.addresses)
                        && ips(&a.not_ready_addresses) == ours(&b.not_ready_addresses)
                        && ports.eq(b.ports.iter().flatten().map(|p| (p.name.clone(), p.port)))
                })
        }));
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": true},
                           "hostname": "h", "nodeName": "n", "zone": "z",
                           "targetRef": {"kind": "Pod", "name": "p", "uid": "u"}},
                          {"addresses": null}],
            "ports": [{"name": "http", "port": 8012, "protocol": "TCP"}, {"port": null}]
        });
        assert!(reads_alike(
            slice,
            |k: &d::EndpointSlice, o: &EndpointSlice| {
                let eps = k.endpoints.iter().map(|e| {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready);
                    let target = e.target_ref.as_ref().and_then(|t| t.name.clone());
                    (e.addresses.clone(), ready, e.hostname.clone(), target)
                });
                let ours = o.endpoints.iter().map(|e| {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready);
                    let target = e.target_ref.as_ref().and_then(|t| t.name.clone());
                    (e.addresses.clone(), ready, e.hostname.clone(), target)
                });
                let ports = k.ports.iter().flatten().map(|p| (p.name.clone(), p.port));
                k.metadata == o.metadata
                    && k.address_type == o.address_type
                    && eps.eq(ours)
                    && ports.eq(o.ports.iter().flatten().map(|p| (p.name.clone(), p.port)))
            }
        ));
        // Missing or null required fields read as their defaults, as k8s-openapi reads them.
        let bare: EndpointSlice =
            serde_json::from_value(json!({"addressType": null, "endpoints": null})).expect("reads");
        assert_eq!(bare, EndpointSlice::default());
    }
}
