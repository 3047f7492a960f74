//! Containing a NACK: the second line of defence behind translation's own checks.
//!
//! When an Envoy rejects a response, the hub finds the objects behind the resources it carried
//! ([`Engine::contributors`]: the owners of a route configuration's virtual hosts, the objects
//! referencing a cluster) and narrows them down to the ones Envoy rejects, per proxy key (one
//! gateway's Envoys share one engine, so one translation and one quarantine):
//!
//! - **Suspects** are the contributors whose version differs from the one this key's Envoys
//!   last ACKed for that type (all contributors when none differs, as for a fresh Envoy).
//! - **One suspect** is rejected at once: quarantined for this key until it changes, and
//!   reported (`rejected-by-envoy`, with Envoy's message and the gateway).
//! - **Several**: the first half is held back (a trial) and the rest is pushed. Envoy keeps its
//!   previous config on a NACK, so a trial costs the hosts it already serves nothing. An ACK
//!   of the trial clears the rest and releases the held half (tried next); a NACK narrows the
//!   suspects to the part that was pushed. Each step halves the suspects (delta debugging).
//!
//! A quarantined object is served to that key as the version its Envoys last ACKed, or left
//! out when they never held another one. Any change to the object ends its quarantine (it is
//! tried again). The engine of a key with something quarantined translates its own view of the
//! inputs (the served inputs with those substitutions: a persistent map, so O(1) to keep
//! beside the served one); the engine's output for its view is still exactly a full translation
//! of that view.
//!
//! Listeners and secrets come from the gateways themselves (the context of every virtual
//! host): a NACK of those is reported by the stream's observers but not contained.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;

use crate::model::diag::{ErrorCode, InputError};
use crate::model::ObjectKey;
use crate::state::Inputs;
use crate::translate::incremental::{Engine, ObjectChange};
use crate::xds::conn::NackStatus;
use crate::xds::resource::{
    type_short, Snapshot, CLUSTER, ENDPOINT, ROUTE, SCOPED_ROUTE, SNAPSHOT_TYPES,
};

use super::{served_change, Hub, ProxyKey, State};

/// Types whose resources come from objects (fragments), so a NACK of them can be contained.
const CONTAINED: [&str; 4] = [CLUSTER, ENDPOINT, ROUTE, SCOPED_ROUTE];

/// The longest part of Envoy's message kept in an error.
const MESSAGE_LIMIT: usize = 2000;

/// Why an object is quarantined.
#[derive(Debug, Clone)]
struct Rejection {
    type_url: String,
    /// The resources of the rejected response.
    resources: Vec<String>,
    message: String,
    /// Served to this key as the version its Envoys last ACKed (else left out).
    substituted: bool,
}

/// What one proxy key's Envoys accepted and rejected.
#[derive(Debug, Default)]
pub(super) struct Containment {
    /// The inputs this key's engine translates while something is quarantined: the served
    /// inputs with each quarantined object replaced by its accepted version or left out.
    view: Option<Inputs>,
    /// Per type URL: the inputs of the latest generation whose response of that type an Envoy
    /// of this key ACKed.
    accepted: BTreeMap<String, Inputs>,
    /// Objects narrowed down as the ones Envoy rejects; quarantined until they change.
    rejected: BTreeMap<ObjectKey, Rejection>,
    /// Suspects held back while the others are tried.
    held: BTreeSet<ObjectKey>,
    /// The narrowing under way: the type URL and the generation of its latest step; an ACK
    /// of that type from then on releases the held objects (tried next).
    trial: Option<(String, u64)>,
    /// Per type URL, the generation since which this key's resources of that type are what
    /// they are: responses built from older snapshots say nothing about them. (Generations
    /// are global: another key's change makes new ones without changing this key's.)
    since: BTreeMap<String, u64>,
}

impl Containment {
    /// The inputs this key's engine translates.
    pub(super) fn inputs<'a>(&'a self, served: &'a Inputs) -> &'a Inputs {
        self.view.as_ref().unwrap_or(served)
    }

    fn quarantined(&self, key: &ObjectKey) -> bool {
        self.rejected.contains_key(key) || self.held.contains(key)
    }

    /// This key's snapshot changes from `before` to `after` at `generation` (`before`:
    /// `None` for a new engine).
    pub(super) fn changed_at(
        &mut self,
        generation: u64,
        before: Option<&Snapshot>,
        after: &Snapshot,
    ) {
        for t in SNAPSHOT_TYPES {
            if before.is_none_or(|b| b.of_type(t) != after.of_type(t)) {
                self.since.insert(t.to_string(), generation);
            }
        }
    }

    /// Whether a response of `type_url` built at `generation` was built from this key's
    /// current resources of that type.
    fn current(&self, type_url: &str, generation: u64) -> bool {
        generation >= self.since.get(type_url).copied().unwrap_or(0)
    }

    /// Objects whose raw version changed are tried again: their quarantine ends (their
    /// served version reaches the view through [`Containment::changes`]).
    pub(super) fn release(&mut self, changed: &BTreeSet<ObjectKey>) {
        self.rejected.retain(|k, _| !changed.contains(k));
        self.held.retain(|k| !changed.contains(k));
    }

    /// The changes of the served inputs as this key's engine sees them (against its view),
    /// or `None` when it translates the served inputs themselves.
    pub(super) fn changes(
        &mut self,
        served: &Inputs,
        keys: &[ObjectKey],
    ) -> Option<Vec<ObjectChange>> {
        let view = self.view.as_mut()?;
        let own = keys
            .iter()
            .filter(|k| !self.rejected.contains_key(*k) && !self.held.contains(*k))
            .map(|k| served_change(view, k, served.entry(k).cloned()))
            .collect();
        if self.rejected.is_empty() && self.held.is_empty() {
            self.view = None;
        }
        Some(own)
    }

    /// An Envoy of this key ACKed `type_url` at `generation`: remembers what it accepted,
    /// and after the latest step of a narrowing of that type releases the held objects.
    /// Returns the changes for the engine.
    pub(super) fn acked(
        &mut self,
        served: &Inputs,
        type_url: &str,
        generation: u64,
    ) -> Vec<ObjectChange> {
        if self.current(type_url, generation) {
            let now = self.inputs(served).clone();
            self.accepted.insert(type_url.to_string(), now);
        }
        if !self.trial_ends(type_url, generation) {
            return Vec::new();
        }
        let held = std::mem::take(&mut self.held);
        let out = held.iter().map(|k| self.restore(served, k)).collect();
        if self.rejected.is_empty() {
            self.view = None;
        }
        out
    }

    /// An Envoy of this key NACKed `type_url` at `generation` (`next` is the generation about
    /// to be published): narrows the suspects and quarantines one or half of them. Returns
    /// the changes for the engine (empty: nothing to try).
    pub(super) fn nacked(
        &mut self,
        served: &Inputs,
        engine: &Engine,
        type_url: &str,
        (generation, next): (u64, u64),
        nack: &NackStatus,
    ) -> Vec<ObjectChange> {
        // A NACK of an older snapshot: the current one is on its way and tells more.
        if !self.current(type_url, generation) || !CONTAINED.contains(&type_url) {
            return Vec::new();
        }
        let inputs = self.inputs(served);
        let candidates: Vec<ObjectKey> = engine
            .contributors(type_url, &nack.resources)
            .into_iter()
            .filter(|k| !self.quarantined(k))
            .collect();
        let accepted = self.accepted.get(type_url);
        let differ: Vec<ObjectKey> = candidates
            .iter()
            .filter(|k| {
                let was = accepted.and_then(|a| a.entry(k)).map(|e| &e.object);
                let now = inputs.entry(k).map(|e| &e.object);
                was != now
            })
            .cloned()
            .collect();
        let suspects = if differ.is_empty() {
            candidates
        } else {
            differ
        };
        match suspects.as_slice() {
            [] => Vec::new(),
            [one] => {
                let substituted = self.accepted_version(served, type_url, one).is_some();
                let message: String = nack.message.chars().take(MESSAGE_LIMIT).collect();
                self.rejected.insert(
                    one.clone(),
                    Rejection {
                        type_url: type_url.to_string(),
                        resources: nack.resources.clone(),
                        message,
                        substituted,
                    },
                );
                if !self.held.is_empty() {
                    self.trial = Some((type_url.to_string(), next));
                }
                vec![self.quarantine(served, type_url, one)]
            }
            many => {
                let half = &many[..many.len() / 2];
                self.held.extend(half.iter().cloned());
                self.trial = Some((type_url.to_string(), next));
                half.iter()
                    .map(|k| self.quarantine(served, type_url, k))
                    .collect()
            }
        }
    }

    /// Whether an ACK of `type_url` at `generation` accepts the latest step of the narrowing
    /// under way (which it then ends).
    fn trial_ends(&mut self, type_url: &str, generation: u64) -> bool {
        let ends = self
            .trial
            .as_ref()
            .is_some_and(|(t, g)| t == type_url && generation >= *g);
        if ends {
            self.trial = None;
        }
        ends
    }

    /// The version of `key` this key's Envoys last ACKed for `type_url`, when it is not the
    /// one served now.
    fn accepted_version(
        &self,
        served: &Inputs,
        type_url: &str,
        key: &ObjectKey,
    ) -> Option<std::sync::Arc<crate::state::Entry>> {
        let now = served.entry(key).map(|e| &e.object);
        self.accepted
            .get(type_url)
            .and_then(|a| a.entry(key))
            .filter(|e| Some(&e.object) != now)
            .cloned()
    }

    /// Puts `key` in quarantine in the view.
    fn quarantine(&mut self, served: &Inputs, type_url: &str, key: &ObjectKey) -> ObjectChange {
        let instead = self.accepted_version(served, type_url, key);
        let view = self.view.get_or_insert_with(|| served.clone());
        served_change(view, key, instead)
    }

    /// Takes `key` out of quarantine in the view.
    fn restore(&mut self, served: &Inputs, key: &ObjectKey) -> ObjectChange {
        let view = self.view.get_or_insert_with(|| served.clone());
        served_change(view, key, served.entry(key).cloned())
    }

    /// One error per rejected object, naming the gateway (`gateway`) and Envoy's message.
    pub(super) fn errors(&self, served: &Inputs, gateway: &str) -> Vec<InputError> {
        self.rejected
            .iter()
            .map(|(key, r)| {
                let what = if r.substituted {
                    "its version this gateway last accepted is served"
                } else {
                    "left out"
                };
                InputError {
                    object: Some(key.clone()),
                    origin: served.entry(key).and_then(|e| e.origin.clone()),
                    message: format!(
                        "rejected by Envoy of gateway {gateway} ({} {}): {}; {what} there until the object changes",
                        type_short(&r.type_url),
                        r.resources.join(", "),
                        r.message
                    ),
                    code: ErrorCode::RejectedByEnvoy,
                    subject: None,
                }
            })
            .collect()
    }
}

/// The containment entry points of an ACK and a NACK (`Hub::acked` / `Hub::nacked`, and the
/// first load's replay).
impl Hub {
    /// An ACK: what it changes in the key's quarantine (call under both locks).
    pub(super) fn on_acked(
        &self,
        proxies: &BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>,
        st: &mut State,
        key: &ProxyKey,
        type_url: &str,
        generation: u64,
    ) {
        if !st.engines.contains_key(key) {
            return;
        }
        let c = st.contain.entry(key.clone()).or_default();
        let changes = c.acked(&st.served, type_url, generation);
        self.contained(proxies, st, key, changes);
    }

    /// A NACK: what it changes in the key's quarantine (call under both locks).
    pub(super) fn on_nacked(
        &self,
        proxies: &BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>,
        st: &mut State,
        key: &ProxyKey,
        type_url: &str,
        generation: u64,
        nack: &NackStatus,
    ) {
        let Some(engine) = st.engines.get(key) else {
            return;
        };
        let current = self.generation();
        let c = st.contain.entry(key.clone()).or_default();
        let changes = c.nacked(
            &st.served,
            engine,
            type_url,
            (generation, current + 1),
            nack,
        );
        self.contained(proxies, st, key, changes);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use tokio::sync::watch;

    use crate::hub::{lock, snapshot, Hub};
    use crate::model::diag::ErrorCode;
    use crate::source::files::parse_text;
    use crate::state::Inputs;
    use crate::translate::{self, Options};
    use crate::xds::conn::NackStatus;
    use crate::xds::resource::{CLUSTER, ROUTE};
    use crate::xds::{ConfigSource, ProxyIdentity, Snapshot};

    /// A KIngress of our class for `name.default.example.com`, appending the header
    /// `x-version: name-vV` (so a new version changes its virtual host).
    fn kingress(name: &str, v: u32) -> String {
        format!(
            r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: [{name}.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - appendHeaders: {{x-version: "{name}-v{v}"}}
        splits:
        - {{serviceNamespace: default, serviceName: {name}, servicePort: 80, percent: 100}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8012}}]
---
"#
        )
    }

    fn inputs(objects: &[(&str, u32)]) -> Inputs {
        let yaml: String = objects.iter().map(|(n, v)| kingress(n, *v)).collect();
        Inputs::from_sourced(parse_text(Path::new("t.yaml"), &yaml).objects).0
    }

    fn proxy() -> ProxyIdentity {
        ProxyIdentity {
            id: "router~1~gw.istio-system~istio-system.svc.cluster.local".into(),
            namespace: Some("istio-system".into()),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        }
    }

    fn routes(rx: &watch::Receiver<Arc<Snapshot>>) -> String {
        rx.borrow()
            .of_type(ROUTE)
            .and_then(|m| m.get("http.80"))
            .map(|r| String::from_utf8_lossy(&r.body.value).into_owned())
            .unwrap_or_default()
    }

    fn nack(message: &str) -> NackStatus {
        NackStatus {
            nonce: "1".into(),
            version: "v".into(),
            message: message.into(),
            resources: vec!["http.80".into()],
        }
    }

    /// A scripted Envoy that rejects every RouteConfiguration carrying `bad` (as a real one
    /// would reject a regex over its program size) and accepts everything else: answers the
    /// current snapshot until an answer changes nothing. Returns the number of answers.
    fn envoy_answers(hub: &Hub, rx: &watch::Receiver<Arc<Snapshot>>, bad: &str) -> usize {
        let mut answers = 0;
        loop {
            let generation = rx.borrow().generation;
            hub.acked(&proxy(), CLUSTER, generation);
            if routes(rx).contains(bad) {
                hub.nacked(&proxy(), ROUTE, generation, &nack("regex too complex"));
            } else {
                hub.acked(&proxy(), ROUTE, generation);
            }
            answers += 1;
            assert!(answers < 50, "no end to the narrowing");
            if rx.borrow().generation == generation {
                return answers;
            }
        }
    }

    /// The engine's output for a key's view is a full translation of that view.
    fn assert_incremental_is_full(hub: &Hub) {
        let labels = proxy().labels;
        let st = lock(&hub.state);
        let view = match st.contain.get(&labels) {
            Some(c) => c.inputs(&st.served).clone(),
            None => st.served.clone(),
        };
        let full = snapshot(0, &translate::translate(&view, &hub.opts, &labels).config);
        let engine = st.engines[&labels].snapshot(0);
        assert_eq!(engine, full, "incremental = full for the quarantined view");
    }

    #[test]
    fn a_rejected_object_is_quarantined_for_that_gateway_and_the_rest_keeps_updating() {
        let hub = Hub::new(Options::default());
        hub.update(inputs(&[("a", 1), ("b", 1), ("c", 1)]), vec![]);
        let rx = hub.subscribe(&proxy()).expect("ready");
        assert_eq!(envoy_answers(&hub, &rx, "bad-v1"), 1);

        // The bad object arrives with a change to `a`: only they differ from what the Envoy
        // accepted; the narrowing finds `bad`.
        hub.update(inputs(&[("a", 2), ("b", 1), ("c", 1), ("bad", 1)]), vec![]);
        envoy_answers(&hub, &rx, "bad-v1");
        let served = routes(&rx);
        assert!(!served.contains("bad.default"), "{served}");
        assert!(served.contains("a-v2"), "a's update is served");
        for host in ["a.default", "b.default", "c.default"] {
            assert!(served.contains(host), "{host} is served");
        }
        let errors = hub.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].code, ErrorCode::RejectedByEnvoy);
        let text = errors[0].to_string();
        assert!(text.starts_with("Ingress default/bad"), "{text}");
        assert!(text.contains("regex too complex"), "{text}");
        assert!(
            text.contains("knative-serving/knative-ingress-gateway"),
            "{text}"
        );
        assert!(text.contains("left out"), "{text}");
        assert_incremental_is_full(&hub);

        // Later changes are served; the quarantine holds.
        hub.update(
            inputs(&[("a", 2), ("b", 1), ("c", 1), ("bad", 1), ("d", 1)]),
            vec![],
        );
        assert_eq!(envoy_answers(&hub, &rx, "bad-v1"), 1);
        let served = routes(&rx);
        assert!(served.contains("d.default") && !served.contains("bad.default"));
        assert_incremental_is_full(&hub);

        // A change is tried again; fixed (renamed host: the scripted Envoy accepts it), it is
        // served and the error goes.
        hub.update(
            inputs(&[("a", 2), ("b", 1), ("c", 1), ("bad", 2), ("d", 1)]),
            vec![],
        );
        assert!(routes(&rx).contains("bad-v2"), "tried again");
        envoy_answers(&hub, &rx, "bad-v1");
        assert!(hub
            .errors()
            .iter()
            .all(|e| e.code != ErrorCode::RejectedByEnvoy));
        assert_incremental_is_full(&hub);
    }

    #[test]
    fn a_fresh_envoy_gets_every_good_host_by_bisection() {
        let names = ["a", "b", "bad", "c", "d", "e", "f", "g"];
        let objects: Vec<(&str, u32)> = names.iter().map(|n| (*n, 1)).collect();
        let hub = Hub::new(Options::default());
        hub.update(inputs(&objects), vec![]);
        let rx = hub.subscribe(&proxy()).expect("ready");
        let answers = envoy_answers(&hub, &rx, "bad-v1");
        assert!(answers <= 10, "{answers} answers for 8 suspects");
        let served = routes(&rx);
        for n in names.iter().filter(|n| **n != "bad") {
            assert!(served.contains(&format!("{n}.default")), "{n}: {served}");
        }
        assert!(!served.contains("bad.default"));
        let rejected: Vec<String> = hub
            .errors()
            .iter()
            .filter(|e| e.code == ErrorCode::RejectedByEnvoy)
            .map(|e| e.to_string())
            .collect();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert!(rejected[0].starts_with("Ingress default/bad"));
        assert_incremental_is_full(&hub);
    }

    /// A KIngress `name` on both gateways (an ExternalIP and a ClusterLocal rule).
    fn both_gateways(name: &str, v: u32) -> String {
        let local_rule = format!(
            r#"  - hosts: [{name}.default.svc.cluster.local]
    visibility: ClusterLocal
    http:
      paths:
      - appendHeaders: {{x-version: "{name}-v{v}"}}
        splits:
        - {{serviceNamespace: default, serviceName: {name}, servicePort: 80, percent: 100}}
---
apiVersion: v1
kind: Service"#
        );
        kingress(name, v).replacen("---\napiVersion: v1\nkind: Service", &local_rule, 1)
    }

    #[test]
    fn each_gateway_contains_its_own_nack_and_one_does_not_make_the_others_stale() {
        let local = ProxyIdentity {
            id: "router~1~local.istio-system~istio-system.svc.cluster.local".into(),
            namespace: Some("istio-system".into()),
            labels: BTreeMap::from([("istio".to_string(), "cluster-local-gateway".to_string())]),
        };
        let yaml = both_gateways("a", 1) + &both_gateways("bad", 1);
        let hub = Hub::new(Options::default());
        hub.update(
            Inputs::from_sourced(parse_text(Path::new("t.yaml"), &yaml).objects).0,
            vec![],
        );
        let ext = hub.subscribe(&proxy()).expect("ready");
        let loc = hub.subscribe(&local).expect("ready");
        let local_routes = |rx: &watch::Receiver<Arc<Snapshot>>| {
            rx.borrow()
                .of_type(ROUTE)
                .and_then(|m| m.get("http.8081").or_else(|| m.get("http.80")))
                .map(|r| String::from_utf8_lossy(&r.body.value).into_owned())
                .unwrap_or_default()
        };
        assert!(
            local_routes(&loc).contains("bad-v1"),
            "{}",
            local_routes(&loc)
        );
        // Both Envoys NACK the same generation; the external one is answered first (a new
        // generation), and the local NACK, built from the older generation, still counts:
        // nothing of the local gateway changed since.
        let g = ext.borrow().generation;
        let local_before = local_routes(&loc);
        hub.nacked(&proxy(), ROUTE, g, &nack("regex too complex"));
        assert!(ext.borrow().generation > g);
        hub.nacked(&local, ROUTE, g, &nack("regex too complex"));
        assert_ne!(
            local_routes(&loc),
            local_before,
            "the local NACK is acted on"
        );
        // Narrowed down on each gateway separately (two suspects each: one held, one tried).
        for _ in 0..4 {
            for (p, rx) in [(proxy(), &ext), (local.clone(), &loc)] {
                let generation = rx.borrow().generation;
                let body = if p.labels == proxy().labels {
                    routes(rx)
                } else {
                    local_routes(rx)
                };
                if body.contains("bad-v1") {
                    hub.nacked(&p, ROUTE, generation, &nack("regex too complex"));
                } else {
                    hub.acked(&p, ROUTE, generation);
                }
            }
        }
        assert!(!routes(&ext).contains("bad-v1") && routes(&ext).contains("a-v1"));
        assert!(!local_routes(&loc).contains("bad-v1") && local_routes(&loc).contains("a-v1"));
        let rejected: Vec<String> = hub
            .errors()
            .iter()
            .filter(|e| e.code == ErrorCode::RejectedByEnvoy)
            .map(|e| e.to_string())
            .collect();
        assert_eq!(rejected.len(), 2, "one per gateway: {rejected:?}");
        assert!(rejected
            .iter()
            .all(|e| e.starts_with("Ingress default/bad ")));
        assert!(rejected[0].contains("of gateway knative-serving/cluster-local-gateway"));
        assert!(rejected[1].contains("of gateway knative-serving/knative-ingress-gateway"));
    }

    /// A scripted Envoy rejecting any route carrying one of `bad`.
    fn envoy_rejecting_any(hub: &Hub, rx: &watch::Receiver<Arc<Snapshot>>, bad: &[&str]) -> usize {
        let mut answers = 0;
        loop {
            let generation = rx.borrow().generation;
            let body = routes(rx);
            if bad.iter().any(|b| body.contains(b)) {
                hub.nacked(&proxy(), ROUTE, generation, &nack("rejected"));
            } else {
                hub.acked(&proxy(), ROUTE, generation);
            }
            answers += 1;
            assert!(answers < 50, "no end to the narrowing");
            if rx.borrow().generation == generation {
                return answers;
            }
        }
    }

    #[test]
    fn several_bad_objects_are_all_found_and_only_they_are_left_out() {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let objects: Vec<(&str, u32)> = names.iter().map(|n| (*n, 1)).collect();
        let hub = Hub::new(Options::default());
        hub.update(inputs(&objects), vec![]);
        let rx = hub.subscribe(&proxy()).expect("ready");
        envoy_rejecting_any(&hub, &rx, &["c-v1", "g-v1"]);
        let served = routes(&rx);
        for n in ["a", "b", "d", "e", "f", "h"] {
            assert!(served.contains(&format!("{n}-v1")), "{n}: {served}");
        }
        assert!(!served.contains("c-v1") && !served.contains("g-v1"));
        let rejected: Vec<String> = hub
            .errors()
            .iter()
            .filter_map(|e| e.object.as_ref().map(|o| o.name.clone()))
            .collect();
        assert_eq!(rejected, ["c", "g"]);
        assert_incremental_is_full(&hub);
    }

    #[test]
    fn a_rejected_cluster_or_scoped_host_points_at_its_object_at_once() {
        // A cluster: its Service's clusters come from `bad` only.
        let hub = Hub::new(Options::default());
        hub.update(inputs(&[("a", 1), ("bad", 1)]), vec![]);
        let rx = hub.subscribe(&proxy()).expect("ready");
        let generation = rx.borrow().generation;
        let mut n = nack("bad cluster");
        n.resources = vec!["outbound|80||bad.default.svc.cluster.local".into()];
        hub.nacked(&proxy(), CLUSTER, generation, &n);
        let errors = hub.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().starts_with("Ingress default/bad "));
        assert!(errors[0].to_string().contains("(cds outbound|80||bad"));
        assert!(!routes(&rx).contains("bad-v1") && routes(&rx).contains("a-v1"));

        // Scoped layout: the rejected RouteConfiguration is one host's.
        let opts = Options {
            route_layout: translate::RouteLayout::Scoped,
            ..Options::default()
        };
        let hub = Hub::new(opts);
        hub.update(inputs(&[("a", 1), ("bad", 1)]), vec![]);
        let rx = hub.subscribe(&proxy()).expect("ready");
        let scoped = "http.80/bad.default.example.com";
        assert!(rx
            .borrow()
            .of_type(ROUTE)
            .is_some_and(|m| m.contains_key(scoped)));
        let generation = rx.borrow().generation;
        let mut n = nack("bad route");
        n.resources = vec![scoped.into()];
        hub.nacked(&proxy(), ROUTE, generation, &n);
        let errors = hub.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().starts_with("Ingress default/bad "));
        let routes = rx.borrow().of_type(ROUTE).cloned().unwrap_or_default();
        assert!(!routes.contains_key(scoped));
        assert!(routes.contains_key("http.80/a.default.example.com"));
        assert_incremental_is_full(&hub);
    }

    #[test]
    fn a_stale_nack_or_an_unknown_resource_changes_nothing() {
        let hub = Hub::new(Options::default());
        hub.update(inputs(&[("a", 1)]), vec![]);
        let rx = hub.subscribe(&proxy()).expect("ready");
        let generation = rx.borrow().generation;
        hub.nacked(&proxy(), ROUTE, generation - 1, &nack("old"));
        let mut other = nack("listener");
        other.resources = vec!["0.0.0.0_80".into()];
        hub.nacked(&proxy(), crate::xds::LISTENER, generation, &other);
        assert_eq!(rx.borrow().generation, generation);
        assert!(hub.errors().is_empty());
    }
}
