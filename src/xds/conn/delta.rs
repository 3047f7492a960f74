//! The incremental (Delta) flavour: requests subscribe and unsubscribe names; a reconnecting
//! Envoy reports what it holds (`initial_resource_versions`), and the clusters it holds that we no
//! longer have are retained until its listeners and routes are ACKed.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use std::collections::BTreeSet;

use super::core::{Core, Outgoing, Subscription, Versions};
use super::diffs::SharedDiffs;
use super::held::Held;
use super::names::Names;
use super::on_demand;
use super::wire::Wire;
use super::{ConnStatus, Mode, Step};
use crate::xds::limits::Limits;
use crate::xds::resource::{Resource, ResourceMap, Snapshot, CLUSTER, ENDPOINT};

/// Incremental (Delta) ADS connection.
#[derive(Debug)]
pub struct DeltaConnection {
    core: Core,
}

impl DeltaConnection {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self::with_limits(snapshot, Limits::default())
    }

    /// A connection bounded by `limits` (see [`crate::xds::limits`]).
    pub fn with_limits(snapshot: Arc<Snapshot>, limits: Limits) -> Self {
        Self::shared(snapshot, limits, Arc::default())
    }

    /// [`Self::with_limits`], taking the diffs of two snapshots from `diffs`, which the other
    /// streams of the service share (see [`SharedDiffs`]).
    pub fn shared(snapshot: Arc<Snapshot>, limits: Limits, diffs: Arc<SharedDiffs>) -> Self {
        DeltaConnection {
            core: Core::new(Mode::Delta, snapshot, limits, diffs),
        }
    }

    /// Handle one request from the Envoy; returns the responses to send, in order.
    pub fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Step<DeltaDiscoveryResponse> {
        self.on_request_wire(req).map(|w| w.to_delta())
    }

    /// [`DeltaConnection::on_request`], the responses by reference to the snapshot (what the ADS
    /// shell encodes and sends).
    pub fn on_request_wire(&mut self, req: DeltaDiscoveryRequest) -> Step<Wire> {
        let out = self.handle_request(req);
        self.core.refresh_acked();
        self.step(out)
    }

    fn handle_request(&mut self, req: DeltaDiscoveryRequest) -> Vec<Outgoing> {
        let t = req.type_url.as_str();
        let nonce = req.response_nonce.as_str();
        if let Some(handled) = self.core.screen(t, nonce, req.error_detail.as_ref()) {
            return handled.into_iter().collect();
        }
        let core = &mut self.core;
        if !nonce.is_empty() {
            if core.state(t).is_latest_nonce(nonce) {
                core.resolve(t, nonce, req.error_detail.as_ref());
            } else {
                // Delta: the nonce is stale, but subscription changes still apply.
                core.stale(t, nonce);
            }
        }
        let empty = ResourceMap::new();
        let base = core.target.of_type(t).cloned().unwrap_or(empty);
        let stands_for = on_demand::wildcard_names(core, t);
        let on_demand_snapshot = core.target.wildcard_clusters.is_some();
        let st = core.state(t);
        if !st.requested {
            st.requested = true;
            let wildcard = req.resource_names_subscribe.is_empty()
                || req.resource_names_subscribe.iter().any(|n| n == "*");
            let mut names: BTreeSet<String> = req
                .resource_names_subscribe
                .into_iter()
                .filter(|n| n != "*")
                .collect();
            // Only an on-demand snapshot answers absent names (no copy otherwise).
            let subscribed: Vec<String> = if on_demand_snapshot {
                names.iter().cloned().collect()
            } else {
                Vec::new()
            };
            let as_wildcard = match (&stands_for, wildcard) {
                (Some(stands), true) => {
                    names.extend(stands.iter().cloned());
                    false
                }
                _ => wildcard,
            };
            st.sub_rev += 1;
            st.sub = Subscription {
                wildcard: as_wildcard,
                names: Names::over(names, &base),
            };
            // A wildcard subscription is always answered, even when empty, so the Envoy's
            // initialization does not wait for the fetch timeout.
            st.force = wildcard;
            let held: Versions = req
                .initial_resource_versions
                .into_iter()
                .filter(|(name, _)| st.sub.covers(name))
                .collect();
            st.held = Held::Versions(held.clone());
            // A reconnecting Envoy (e.g. after our restart) may still route to clusters we no
            // longer have: keep them (by name; their bodies are never resent since the Envoy
            // holds these versions) until listeners and routes are ACKed, then remove them.
            if t == CLUSTER || t == ENDPOINT {
                let type_url: &'static str = if t == CLUSTER { CLUSTER } else { ENDPOINT };
                for (name, version) in held {
                    if core
                        .target
                        .of_type(type_url)
                        .is_some_and(|m| m.contains_key(&name))
                    {
                        continue;
                    }
                    core.retained.entry(type_url).or_default().insert(
                        name.clone(),
                        Arc::new(Resource {
                            name,
                            version,
                            body: Default::default(),
                            pair: Default::default(),
                        }),
                    );
                }
            }
            core.check_names();
            on_demand::answer_absent(core, t, &subscribed);
        } else if !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty()
        {
            let mut sub = st.sub.clone();
            let (mut added, mut removed) = (Vec::new(), Vec::new());
            for name in req.resource_names_subscribe {
                if name == "*" {
                    match &stands_for {
                        Some(stands) => {
                            for n in stands {
                                if sub.names.insert(n.clone()) {
                                    added.push(n.clone());
                                }
                            }
                        }
                        None => sub.wildcard = true,
                    }
                } else if sub.names.insert(name.clone()) {
                    added.push(name);
                } else if st.held.get(&st.sub, &name).is_some() {
                    // Subscribing again to a name it holds: the Envoy wants it sent again.
                    st.resend.insert(name);
                }
            }
            for name in req.resource_names_unsubscribe {
                if name == "*" {
                    sub.wildcard = false;
                } else if sub.names.remove(&name) {
                    removed.push(name);
                }
            }
            core.resubscribe(t, sub, &added, &removed);
            on_demand::answer_absent(core, t, &added);
        }
        if core.refused.is_some() {
            return Vec::new();
        }
        core.pump_all()
    }

    /// A new target snapshot for this proxy.
    pub fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Step<DeltaDiscoveryResponse> {
        self.on_snapshot_wire(snap).map(|w| w.to_delta())
    }

    /// [`DeltaConnection::on_snapshot`], the responses by reference to the snapshot.
    pub fn on_snapshot_wire(&mut self, snap: Arc<Snapshot>) -> Step<Wire> {
        let out = self.core.retarget(snap);
        self.step(out)
    }

    fn step(&mut self, out: Vec<Outgoing>) -> Step<Wire> {
        let responses = self.render(out);
        Step {
            responses,
            events: self.core.take_events(),
            refused: self.core.take_refused(),
        }
    }

    pub fn status(&self) -> ConnStatus {
        self.core.status()
    }

    /// The generation of the snapshot the Envoy last held in full (see
    /// [`ConnStatus::acked_generation`]).
    pub fn acked_generation(&self) -> Option<u64> {
        self.core.acked_generation
    }

    /// The snapshot this connection is serving.
    pub fn target(&self) -> &Arc<Snapshot> {
        &self.core.target
    }

    /// [`Self::status`] written over this connection's previous status, reusing its strings.
    pub fn status_into(&self, out: &mut ConnStatus) {
        self.core.status_into(out)
    }

    fn render(&mut self, out: Vec<Outgoing>) -> Vec<Wire> {
        out.into_iter()
            .map(|o| {
                let wire = Wire {
                    mode: Mode::Delta,
                    type_url: o.type_url,
                    version: o.version,
                    nonce: o.nonce,
                    resources: o.resources,
                    removed: o.removed,
                };
                self.core.note_bytes(&wire.type_url, wire.encoded_len());
                wire
            })
            .collect()
    }
}
