//! KIngress status, when we are the ingress class (`--kube`, unless `--no-status`).
//!
//! [`desired_status`] is pure: from a KIngress, what our translation made of it, and how far the
//! gateways' Envoys have got, it computes the status Knative expects (`observedGeneration`,
//! conditions `LoadBalancerReady`, `NetworkConfigured`, `Ready`, and the public/private load
//! balancers' `domainInternal`). [`run`] is the writer (`writer.rs`; the replicas' progress
//! exchange is `progress.rs`): only while this replica holds the Lease
//! ([`crate::runtime::lease`]), it compares each KIngress of our class with its desired status and writes
//! differences through the status subresource (merge patch carrying the `resourceVersion` read,
//! so a concurrent writer makes it a 409; on 409 it re-reads and retries).
//!
//! **Ready means served.** A KIngress is Ready once every connected Envoy of each gateway that
//! must serve it (the external gateway for `ExternalIP` rules, the local one for `ClusterLocal`)
//! has ACKed a snapshot generation at least the one in which the hub first carried this
//! KIngress's current spec. Each replica only knows its own Envoys, so every replica publishes
//! its per-KIngress [`ReplicaProgress`] (for the KIngress's `metadata.generation`) on
//! `/debug/kingress_progress`, and the Lease holder adds up those of the other replicas (the
//! ready endpoints of `--peers`, our Service) with [`combine`]. An ACK means Envoy accepted every resource of that snapshot, so this
//! is exact where Knative's own prober (net-istio's `K-Network-Hash` GET to every gateway pod)
//! samples: the probe routes we serve still answer that prober with the right hash, but nothing
//! here waits for it. With no Envoy of a needed gateway connected, the KIngress is not Ready,
//! and the reason says so. KIngresses without our class annotation are never touched.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::KIngress;
use crate::xds::server::ConnectionInfo;

pub mod gateway_api;
mod gateway_api_write;
mod progress;
mod writer;

pub use progress::{router, ProgressShared};
pub use writer::run;

/// How often the writer compares desired and current status.
pub const TICK: Duration = Duration::from_millis(200);

/// How far one gateway's Envoys have got with a KIngress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayProgress {
    /// `ns/name` of the gateway.
    pub gateway: String,
    pub connected: usize,
    /// Connected Envoys that have ACKed the generation carrying the KIngress.
    pub acked: usize,
}

/// Why a KIngress is left out: the condition reason and the error's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// `TranslationFailed`, or `RejectedByEnvoy` when a gateway's Envoy rejected what it
    /// translated to (quarantined for that gateway until it changes).
    pub reason: &'static str,
    pub message: String,
}

impl LeftOut {
    /// The reason and message of an error naming the KIngress.
    pub fn of(e: &crate::model::diag::InputError) -> LeftOut {
        let reason = match e.code {
            crate::model::diag::ErrorCode::RejectedByEnvoy => "RejectedByEnvoy",
            _ => "TranslationFailed",
        };
        LeftOut {
            reason,
            message: e.message.clone(),
        }
    }
}

/// What the writer knows about one KIngress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The hub generation that first carried the current spec.
    pub generation: u64,
    /// One entry per gateway that must serve the KIngress.
    pub gateways: Vec<GatewayProgress>,
    /// Why translation (or a gateway's Envoy) left the KIngress out, if it did.
    pub translate_error: Option<LeftOut>,
    /// Other replicas that keep it from being Ready (not reachable, not there yet).
    pub replicas_waiting: Vec<String>,
}

/// One replica's view of one KIngress: the `metadata.generation` it has seen and, per needed
/// gateway, its own Envoys' progress. Every replica serves these on
/// `/debug/kingress_progress`, keyed `ns/name`; the Lease holder adds them up, because each
/// replica only knows the Envoys connected to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    pub generation: Option<i64>,
    pub gateways: Vec<GatewayProgress>,
}

/// `ns/name` -> progress, for every KIngress of our class this replica has.
pub type ProgressMap = BTreeMap<String, ReplicaProgress>;

/// What other replicas said (or why they could not be asked), by address.
pub type PeerReports = Vec<(String, Result<ProgressMap, String>)>;

/// Adds the peers' progress for `key` (at `generation`) to ours. A peer that could not be
/// asked, or has not seen this generation yet, is named in the returned reasons to wait.
pub fn combine(
    own: &[GatewayProgress],
    key: &str,
    generation: Option<i64>,
    peers: &PeerReports,
) -> (Vec<GatewayProgress>, Vec<String>) {
    let mut total: Vec<GatewayProgress> = own.to_vec();
    let mut waiting = Vec::new();
    for (addr, report) in peers {
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                waiting.push(format!("replica {addr} could not be asked: {e}"));
                continue;
            }
        };
        match report.get(key) {
            Some(p) if p.generation == generation => {
                for g in &p.gateways {
                    if let Some(t) = total.iter_mut().find(|t| t.gateway == g.gateway) {
                        t.connected += g.connected;
                        t.acked += g.acked;
                    }
                }
            }
            _ => waiting.push(format!("replica {addr} has not seen this generation yet")),
        }
    }
    (total, waiting)
}

/// The other replicas' debug addresses (`host:port`): the ready endpoints of the `ns/name`
/// Service on its `http-monitoring` port (15014 when unnamed), except our own pod (`me`).
pub fn peer_addresses(inputs: &crate::state::Inputs, service: &str, me: &str) -> Vec<String> {
    let Some((ns, name)) = service.split_once('/') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for slice in inputs.endpoint_slices(ns, name) {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http-monitoring"))
            .and_then(|p| p.port)
            .unwrap_or(15014);
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let own = ep
                .target_ref
                .as_ref()
                .and_then(|t| t.name.as_deref())
                .is_some_and(|n| n == me)
                || ep.hostname.as_deref() == Some(me);
            if !ready || own {
                continue;
            }
            for a in &ep.addresses {
                out.push(if a.contains(':') {
                    format!("[{a}]:{port}")
                } else {
                    format!("{a}:{port}")
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The load balancers we report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancers {
    pub public_domain: String,
    pub private_domain: String,
}

/// Whether the KIngress needs the (external, local) gateway.
pub fn needed_gateways(ing: &KIngress) -> (bool, bool) {
    let mut external = false;
    let mut local = false;
    for r in &ing.spec.rules {
        match r.visibility.as_deref() {
            Some("ClusterLocal") => local = true,
            _ => external = true,
        }
    }
    (external, local)
}

fn condition(
    previous: &[Value],
    now: &str,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let before = previous.iter().find(|c| c["type"] == kind);
    let since = before
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let mut c = json!({"type": kind, "status": status, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = r.into();
    }
    if let Some(m) = message {
        c["message"] = m.into();
    }
    c
}

/// The status our KIngress should have. `now` (RFC 3339) stamps conditions whose status changes;
/// unchanged conditions keep their `lastTransitionTime`, so an unchanged situation yields the
/// current status byte for byte and causes no write.
pub fn desired_status(ing: &KIngress, facts: &Facts, lbs: &LoadBalancers, now: &str) -> Value {
    let previous: Vec<Value> = ing
        .status
        .as_ref()
        .and_then(|s| s.get("conditions"))
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();
    let cond = |kind: &str, status: &str, reason: Option<&str>, message: Option<&str>| {
        condition(&previous, now, kind, status, reason, message)
    };
    let mut status = json!({});
    if let Some(g) = ing.metadata.generation {
        status["observedGeneration"] = g.into();
    }
    let conditions = if let Some(err) = &facts.translate_error {
        let (reason, msg) = (err.reason, err.message.as_str());
        vec![
            cond(
                "LoadBalancerReady",
                "Unknown",
                Some("NotConfigured"),
                Some("the ingress could not be translated"),
            ),
            cond("NetworkConfigured", "False", Some(reason), Some(msg)),
            cond("Ready", "False", Some(reason), Some(msg)),
        ]
    } else {
        let waiting: Vec<String> = facts
            .gateways
            .iter()
            .filter_map(|g| {
                if g.connected == 0 {
                    Some(format!("no Envoy of gateway {} is connected", g.gateway))
                } else if g.acked < g.connected {
                    Some(format!(
                        "{} of {} Envoys of gateway {} have ACKed the config carrying it",
                        g.acked, g.connected, g.gateway
                    ))
                } else {
                    None
                }
            })
            .chain(facts.replicas_waiting.iter().cloned())
            .collect();
        if waiting.is_empty() {
            status["publicLoadBalancer"] =
                json!({"ingress": [{"domainInternal": lbs.public_domain}]});
            status["privateLoadBalancer"] =
                json!({"ingress": [{"domainInternal": lbs.private_domain}]});
            vec![
                cond("LoadBalancerReady", "True", None, None),
                cond("NetworkConfigured", "True", None, None),
                cond("Ready", "True", None, None),
            ]
        } else {
            let msg = waiting.join("; ");
            vec![
                cond(
                    "LoadBalancerReady",
                    "Unknown",
                    Some("Uninitialized"),
                    Some(&msg),
                ),
                cond("NetworkConfigured", "True", None, None),
                cond("Ready", "Unknown", Some("Uninitialized"), Some(&msg)),
            ]
        }
    };
    status["conditions"] = Value::Array(conditions);
    status
}

/// Progress of the Envoys whose labels the gateway selects.
pub fn gateway_progress(
    gateway: &str,
    selector: Option<&BTreeMap<String, String>>,
    conns: &[ConnectionInfo],
    generation: u64,
) -> GatewayProgress {
    let mut p = GatewayProgress {
        gateway: gateway.to_string(),
        connected: 0,
        acked: 0,
    };
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return p;
    };
    for c in conns {
        if sel.iter().all(|(k, v)| c.labels.get(k) == Some(v)) {
            p.connected += 1;
            if c.status.acked_generation.is_some_and(|g| g >= generation) {
                p.acked += 1;
            }
        }
    }
    p
}

pub(crate) fn rfc3339_now() -> String {
    // Knative's apis.VolatileTime is RFC 3339 with second precision.
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kingress::{IngressRule, IngressSpec};

    fn ing(rules: &[&str]) -> KIngress {
        KIngress {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("hello".into()),
                namespace: Some("default".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: IngressSpec {
                rules: rules
                    .iter()
                    .map(|v| IngressRule {
                        visibility: Some(v.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            status: None,
        }
    }

    fn lbs() -> LoadBalancers {
        LoadBalancers {
            public_domain: "pub.svc".into(),
            private_domain: "priv.svc".into(),
        }
    }

    fn progress(gw: &str, connected: usize, acked: usize) -> GatewayProgress {
        GatewayProgress {
            gateway: gw.into(),
            connected,
            acked,
        }
    }

    fn cond<'a>(s: &'a Value, t: &str) -> &'a Value {
        s["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t))
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn ready_when_every_needed_gateway_acked() {
        let i = ing(&["ExternalIP", "ClusterLocal"]);
        assert_eq!(needed_gateways(&i), (true, true));
        let facts = Facts {
            generation: 7,
            gateways: vec![progress("ext", 2, 2), progress("local", 1, 1)],
            translate_error: None,
            replicas_waiting: vec![],
        };
        let s = desired_status(&i, &facts, &lbs(), "2026-01-01T00:00:00Z");
        assert_eq!(s["observedGeneration"], 3);
        for t in ["LoadBalancerReady", "NetworkConfigured", "Ready"] {
            assert_eq!(cond(&s, t)["status"], "True", "{t}: {s}");
        }
        assert_eq!(
            s["publicLoadBalancer"]["ingress"][0]["domainInternal"],
            "pub.svc"
        );
        assert_eq!(
            s["privateLoadBalancer"]["ingress"][0]["domainInternal"],
            "priv.svc"
        );
    }

    #[test]
    fn not_ready_while_an_envoy_lags_or_none_is_connected() {
        let i = ing(&["ExternalIP"]);
        let facts = Facts {
            generation: 7,
            gateways: vec![progress("knative-serving/gw", 2, 1)],
            translate_error: None,
            replicas_waiting: vec![],
        };
        let s = desired_status(&i, &facts, &lbs(), "t0");
        assert_eq!(cond(&s, "Ready")["status"], "Unknown");
        assert_eq!(cond(&s, "NetworkConfigured")["status"], "True");
        assert_eq!(
            cond(&s, "Ready")["message"],
            "1 of 2 Envoys of gateway knative-serving/gw have ACKed the config carrying it"
        );
        assert!(s.get("publicLoadBalancer").is_none());
        let facts = Facts {
            gateways: vec![progress("knative-serving/gw", 0, 0)],
            ..facts
        };
        let s = desired_status(&i, &facts, &lbs(), "t0");
        assert_eq!(
            cond(&s, "LoadBalancerReady")["message"],
            "no Envoy of gateway knative-serving/gw is connected"
        );
    }

    #[test]
    fn a_kingress_an_envoy_rejected_is_not_ready_and_says_why() {
        let e = crate::model::diag::InputError::of(
            crate::model::ObjectKey {
                kind: crate::model::Kind::KIngress,
                namespace: "default".into(),
                name: "hello".into(),
            },
            None,
            crate::model::diag::ErrorCode::RejectedByEnvoy,
            "rejected by Envoy of gateway gw (rds http.80): bad regex; left out there until the object changes",
        );
        let facts = Facts {
            generation: 1,
            gateways: vec![progress("gw", 1, 1)],
            translate_error: Some(LeftOut::of(&e)),
            replicas_waiting: vec![],
        };
        let s = desired_status(&ing(&["ExternalIP"]), &facts, &lbs(), "t0");
        assert_eq!(cond(&s, "Ready")["status"], "False");
        assert_eq!(cond(&s, "Ready")["reason"], "RejectedByEnvoy");
        assert_eq!(cond(&s, "Ready")["message"], e.message);
        assert_eq!(cond(&s, "NetworkConfigured")["reason"], "RejectedByEnvoy");
    }

    #[test]
    fn translation_errors_are_reported_and_unchanged_status_is_stable() {
        let mut i = ing(&["ExternalIP"]);
        let facts = Facts {
            generation: 1,
            gateways: vec![progress("gw", 1, 1)],
            translate_error: Some(LeftOut {
                reason: "TranslationFailed",
                message: "splits sum to 90".into(),
            }),
            replicas_waiting: vec![],
        };
        let s = desired_status(&i, &facts, &lbs(), "t0");
        assert_eq!(cond(&s, "NetworkConfigured")["status"], "False");
        assert_eq!(cond(&s, "Ready")["message"], "splits sum to 90");
        // Written, then recomputed later with nothing changed: identical (no write).
        i.status = Some(s.clone());
        assert_eq!(desired_status(&i, &facts, &lbs(), "t1"), s);
        // Fixed: Ready flips and gets the new transition time; the others keep theirs if same.
        let ok = Facts {
            translate_error: None,
            ..facts
        };
        let s2 = desired_status(&i, &ok, &lbs(), "t2");
        assert_eq!(cond(&s2, "Ready")["status"], "True");
        assert_eq!(cond(&s2, "Ready")["lastTransitionTime"], "t2");
    }

    #[test]
    fn peers_progress_adds_up_and_unknown_or_stale_peers_wait() {
        let own = vec![progress("gw", 1, 1)];
        let report = |gen: i64, c: usize, a: usize| {
            ProgressMap::from([(
                "ns/x".to_string(),
                ReplicaProgress {
                    generation: Some(gen),
                    gateways: vec![progress("gw", c, a)],
                },
            )])
        };
        let peers: PeerReports = vec![
            ("10.0.0.2:15014".into(), Ok(report(2, 2, 1))),
            ("10.0.0.3:15014".into(), Ok(report(1, 5, 5))),
            ("10.0.0.4:15014".into(), Err("timed out".into())),
        ];
        let (total, waiting) = combine(&own, "ns/x", Some(2), &peers);
        assert_eq!(total, vec![progress("gw", 3, 2)]);
        assert_eq!(
            waiting,
            vec![
                "replica 10.0.0.3:15014 has not seen this generation yet".to_string(),
                "replica 10.0.0.4:15014 could not be asked: timed out".to_string(),
            ]
        );
        let facts = Facts {
            generation: 1,
            gateways: total,
            translate_error: None,
            replicas_waiting: waiting,
        };
        let s = desired_status(&ing(&["ExternalIP"]), &facts, &lbs(), "t");
        assert_eq!(cond(&s, "Ready")["status"], "Unknown");
        assert!(cond(&s, "Ready")["message"].as_str().is_some_and(|m| m
            .starts_with("2 of 3 Envoys of gateway gw")
            && m.contains("10.0.0.4")));
    }

    #[test]
    fn peers_are_the_ready_endpoints_of_our_service_but_us() {
        let yaml = r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kp-1, namespace: knative-pilot, labels: {kubernetes.io/service-name: knative-pilot}}
addressType: IPv4
ports: [{name: grpc-xds, port: 15010}, {name: http-monitoring, port: 15014}]
endpoints:
- {addresses: [10.0.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: me}}
- {addresses: [10.0.0.2], conditions: {ready: true}, targetRef: {kind: Pod, name: other}}
- {addresses: [10.0.0.3], conditions: {ready: false}, targetRef: {kind: Pod, name: starting}}
"#;
        let loaded = crate::source::files::parse_text(std::path::Path::new("s.yaml"), yaml);
        let inputs = crate::state::Inputs::from_sourced(loaded.objects).0;
        assert_eq!(
            peer_addresses(&inputs, "knative-pilot/knative-pilot", "me"),
            vec!["10.0.0.2:15014".to_string()]
        );
        assert!(peer_addresses(&inputs, "knative-pilot/other", "me").is_empty());
    }
}
