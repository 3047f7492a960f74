//! The state-of-the-world flavour: every request names the whole subscription; a request with
//! a stale nonce is ignored.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::core::{Core, Outgoing, Subscription};
use super::diffs::SharedDiffs;
use super::names::{changes, Names};
use super::wire::Wire;
use super::{sotw_wildcard_type, ConnStatus, Mode, Step};
use crate::xds::limits::Limits;
use crate::xds::resource::{ResourceMap, Snapshot};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

/// State-of-the-world ADS connection.
#[derive(Debug)]
pub struct SotwConnection {
    core: Core,
}

impl SotwConnection {
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
        SotwConnection {
            core: Core::new(Mode::Sotw, snapshot, limits, diffs),
        }
    }

    /// Handle one request from the Envoy; returns the responses to send, in order.
    pub fn on_request(&mut self, req: DiscoveryRequest) -> Step<DiscoveryResponse> {
        self.on_request_wire(req).map(|w| w.to_sotw())
    }

    /// [`SotwConnection::on_request`], the responses by reference to the snapshot (what the ADS
    /// shell encodes and sends).
    pub fn on_request_wire(&mut self, req: DiscoveryRequest) -> Step<Wire> {
        let out = self.handle_request(req);
        self.core.refresh_acked();
        self.step(out)
    }

    fn handle_request(&mut self, req: DiscoveryRequest) -> Vec<Outgoing> {
        let t = req.type_url.as_str();
        let nonce = req.response_nonce.as_str();
        if let Some(handled) = self.core.screen(t, nonce, req.error_detail.as_ref()) {
            return handled.into_iter().collect();
        }
        let core = &mut self.core;
        if !nonce.is_empty() {
            if !core.state(t).is_latest_nonce(nonce) {
                // SotW: a stale request is ignored entirely; a newer one will follow.
                core.stale(t, nonce);
                return Vec::new();
            }
            core.resolve(t, nonce, req.error_detail.as_ref());
        }
        let wildcard = req.resource_names.iter().any(|n| n == "*")
            || (req.resource_names.is_empty() && sotw_wildcard_type(t));
        let names: BTreeSet<String> = req
            .resource_names
            .into_iter()
            .filter(|n| n != "*")
            .collect();
        let empty = ResourceMap::new();
        let base = core.target.of_type(t).unwrap_or(&empty);
        let sub = Subscription {
            wildcard,
            names: Names::over(names, base),
        };
        let st = core.state(t);
        let (added, removed) = changes(&st.sub.names, &sub.names);
        if nonce.is_empty() || (wildcard && !st.sub.wildcard) || !added.is_empty() {
            st.force = true;
        }
        st.requested = true;
        // The same test as `st.sub != sub`, from the differences already computed (comparing
        // the two name sets again would walk both a second time).
        if st.sub.wildcard != sub.wildcard || !added.is_empty() || !removed.is_empty() {
            // Names the Envoy no longer asks for are forgotten: it ignores them, and when it asks
            // again they are sent again.
            core.resubscribe(t, sub, &added, &removed);
            if core.refused.is_some() {
                return Vec::new();
            }
        }
        core.pump_all()
    }

    /// A new target snapshot for this proxy.
    pub fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Step<DiscoveryResponse> {
        self.on_snapshot_wire(snap).map(|w| w.to_sotw())
    }

    /// [`SotwConnection::on_snapshot`], the responses by reference to the snapshot.
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
                    mode: Mode::Sotw,
                    type_url: o.type_url,
                    version: o.version,
                    nonce: o.nonce,
                    resources: o.resources,
                    removed: Vec::new(),
                };
                self.core.note_bytes(&wire.type_url, wire.encoded_len());
                wire
            })
            .collect()
    }
}
