//! I/O-free ADS connection state machine.
//!
//! One [`SotwConnection`] or [`DeltaConnection`] per ADS stream. Requests and snapshot updates go
//! in, responses come out; there is no tokio, no clock and no I/O in here. Both flavours share one
//! [`Core`] that tracks, per type URL, what the Envoy subscribes to and what it holds (name ->
//! version), and decides what to send next:
//!
//! * Push order CDS, EDS, LDS, SRDS, RDS, SDS with at most one outstanding (un-acked) response
//!   per connection: the next type is sent only once the previous response was ACKed or NACKed.
//!   One exception: EDS may be sent while CDS is outstanding, because an initialized Envoy (also
//!   one that reconnects) does not ACK a CDS response until its new EDS clusters have warmed, i.e.
//!   received their load assignments (xDS protocol, "Resource warming"); waiting for that ACK
//!   would deadlock. Likewise RDS may be sent while SRDS (scoped route layout) is outstanding:
//!   new scopes warm on their RouteConfigurations.
//! * EDS goes out right after every CDS response, in the same batch, and carries the assignment
//!   of every EDS cluster that response updated even when the assignment is unchanged: Envoy
//!   replaces an updated cluster by a new one that warms until its assignment arrives again, and
//!   neither a SotW nor a Delta Envoy whose subscriptions did not change asks for it. Without it
//!   the cluster warms forever and, since Envoy holds the CDS ACK meanwhile, the gateway takes no
//!   further config. A Delta Envoy subscribing again to a name it holds gets it again.
//! * A SotW response for a by-name type (EDS, RDS, SDS) that would only leave resources out is not
//!   sent: the Envoy drops those by unsubscribing, and an Envoy that watches nothing of the type
//!   any more (its EDS clusters became DNS clusters) accepts it without an ACK, which would stall
//!   the push sequence.
//! * Make before break: clusters and cluster load assignments the Envoy holds that are absent from
//!   a new snapshot are retained (kept in SotW sets, not listed as removed in Delta) until the
//!   listeners, scopes and routes of that snapshot are ACKed; a final CDS/EDS push then removes them.
//! * Unchanged types are not resent; a NACKed set of versions is not resent until it changes.
//! * Type URLs we do not serve get one empty response per subscription, never an error.
//!
//! The connection holds only the target `Arc<Snapshot>`, the retained removals (Arcs), and per
//! type: subscription, name -> version held by the Envoy, nonces and counters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as PbResource,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    Resource, ResourceMap, Snapshot, CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE,
};

/// Version recorded for a resource whose state on the Envoy is unknown (after a NACK the Envoy may
/// have applied part of a response). Never equal to a real version, so it is always resent.
const UNKNOWN: &str = "";

/// Types that are wildcard when a SotW request names nothing (legacy wildcard). Envoy
/// subscribes to scoped route configurations without names too (all scopes of the stream).
fn sotw_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER || type_url == SCOPED_ROUTE
}

/// Types whose SotW responses carry only the resources that changed. Envoy hands a SotW RDS
/// response to the watch of each route configuration it names and leaves the others as they
/// are (`GrpcMuxImpl`: "onConfigUpdate should be called only on watches that have updates in
/// the message for EDS/RDS"), so a change to one of many RouteConfigurations (scoped route
/// layout: one per host) resends only that one.
fn sotw_changed_only(type_url: &str) -> bool {
    type_url == ROUTE
}

/// Whether we serve this type URL.
pub fn is_served(type_url: &str) -> bool {
    PUSH_ORDER.contains(&type_url)
}

/// One `name:version` pair's share of a set version.
fn pair_hash(name: &str, version: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0u8]);
    h.update(version.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The sum (mod 2^64) of the pair hashes of a set: order-independent, so a change of one pair
/// updates it in O(1).
fn set_sum<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> u64 {
    pairs
        .into_iter()
        .fold(0u64, |acc, (n, v)| acc.wrapping_add(pair_hash(n, v)))
}

fn sum_version(sum: u64) -> String {
    format!("{sum:016x}")
}

/// Deterministic version string for a set of resources: the sum of a hash of each
/// `name:version` pair (so it can be updated per changed pair).
pub fn set_version<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    sum_version(set_sum(pairs))
}

fn retain_covered(versions: &mut Versions, sub: &Subscription) {
    let gone: Vec<String> = versions
        .keys()
        .filter(|n| !sub.covers(n))
        .cloned()
        .collect();
    for n in gone {
        versions.remove(&n);
    }
}

/// Which ADS flavour a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sotw,
    Delta,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        }
    }
}

/// Debug/metrics view of one connection (cheap to build, serializable).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnStatus {
    pub mode: Mode,
    /// Generation of the snapshot this connection is converging to.
    pub target_generation: u64,
    /// Latest generation this Envoy has fully ACKed: every type it subscribes to holds exactly what
    /// that snapshot says (removals included). `None` until the first time that happens.
    pub acked_generation: Option<u64>,
    /// The un-acked response of the push sequence, if any.
    pub outstanding: Option<Outstanding>,
    /// Clusters / load assignments kept for make-before-break, not yet removed.
    pub retained_removals: usize,
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outstanding {
    pub type_url: String,
    pub nonce: String,
}

/// Per type URL status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeStatus {
    pub served: bool,
    pub wildcard: bool,
    /// Explicitly subscribed names (besides the wildcard).
    pub subscribed: Vec<String>,
    /// Number of resources the Envoy holds as far as we know.
    pub resources_held: usize,
    /// Whether the Envoy holds exactly what the target snapshot says for this type.
    pub in_sync: bool,
    pub last_sent_version: Option<String>,
    pub last_sent_nonce: Option<String>,
    pub last_acked_version: Option<String>,
    pub last_acked_nonce: Option<String>,
    pub last_nack: Option<NackStatus>,
    pub responses_sent: u64,
    pub acks: u64,
    pub nacks: u64,
    pub stale_requests: u64,
    /// Sum of the encoded lengths of the responses sent for this type.
    pub bytes_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NackStatus {
    pub nonce: String,
    pub version: String,
    pub message: String,
    /// Names of the resources the NACKed response added, changed or removed.
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
}

impl Subscription {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

#[derive(Debug, Default)]
struct TypeState {
    served: bool,
    /// The Envoy has sent at least one request for this type.
    requested: bool,
    sub: Subscription,
    /// What the Envoy holds, as far as we know: name -> version (`UNKNOWN` after a NACK).
    held: Versions,
    /// When the Envoy holds exactly the covered part of this resource map (no retained entries
    /// in it): that map and the set sum of `held`. A new target is then diffed against it in
    /// O(changes) (persistent maps share unchanged subtrees).
    synced: Option<(ResourceMap, u64)>,
    /// A response must be sent even if nothing changed (initial request, new names).
    force: bool,
    /// Names to send again although the Envoy holds their version: the load assignments of
    /// EDS clusters a CDS response updated (the updated cluster warms until its assignment is
    /// answered, also when unchanged), and names a Delta Envoy subscribes to again.
    resend: BTreeSet<String>,
    /// The versions of a NACKed response; not resent while the desired state equals them.
    rejected: Option<Versions>,
    last_nonce: Option<String>,
    last_version: Option<String>,
    last_acked_version: Option<String>,
    last_acked_nonce: Option<String>,
    last_nack: Option<NackStatus>,
    responses: u64,
    acks: u64,
    nacks: u64,
    stale: u64,
    bytes: u64,
}

impl TypeState {
    fn is_latest_nonce(&self, nonce: &str) -> bool {
        self.last_nonce.as_deref() == Some(nonce)
    }
}

/// The outstanding response of the push sequence.
#[derive(Debug)]
struct Pending {
    type_url: &'static str,
    nonce: String,
    version: String,
    /// What the Envoy holds for this type once it ACKs.
    versions: Versions,
    /// The target map the response was built from (when no retained entry was in it) and the
    /// set sum of `versions`.
    basis: Option<(ResourceMap, u64)>,
    /// Names added, changed or removed by the response.
    touched: Vec<String>,
}

/// One response to send, independent of the wire flavour.
#[derive(Debug)]
struct Outgoing {
    type_url: String,
    nonce: String,
    version: String,
    resources: Vec<Arc<Resource>>,
    removed: Vec<String>,
}

type Versions = imbl::OrdMap<String, String>;

/// Covered changes from a synced map to the target: new or changed resources, removed
/// (name, version held).
type SyncedDiff = (Vec<Arc<Resource>>, Vec<(String, String)>);

/// The protocol logic shared by SotW and Delta.
#[derive(Debug)]
struct Core {
    mode: Mode,
    target: Arc<Snapshot>,
    types: BTreeMap<String, TypeState>,
    /// Outstanding responses by type: at most one, or CDS and EDS (see the module docs).
    pending: BTreeMap<&'static str, Pending>,
    /// Resources the Envoy holds that the target no longer has, kept until LDS/RDS are ACKed.
    retained: BTreeMap<&'static str, BTreeMap<String, Arc<Resource>>>,
    nonce_counter: u64,
    acked_generation: Option<u64>,
}

impl Core {
    fn new(mode: Mode, target: Arc<Snapshot>) -> Self {
        Core {
            mode,
            target,
            types: BTreeMap::new(),
            pending: BTreeMap::new(),
            retained: BTreeMap::new(),
            nonce_counter: 0,
            acked_generation: None,
        }
    }

    fn next_nonce(&mut self) -> String {
        self.nonce_counter += 1;
        self.nonce_counter.to_string()
    }

    fn state(&mut self, type_url: &str) -> &mut TypeState {
        self.types
            .entry(type_url.to_string())
            .or_insert_with(|| TypeState {
                served: is_served(type_url),
                ..TypeState::default()
            })
    }

    /// What the Envoy should hold for a type: target plus retained, filtered by subscription.
    fn desired(&self, type_url: &str, sub: &Subscription) -> BTreeMap<String, Arc<Resource>> {
        let mut out = BTreeMap::new();
        if let Some(ret) = self.retained.get(type_url) {
            for (name, r) in ret {
                if sub.covers(name) {
                    out.insert(name.clone(), r.clone());
                }
            }
        }
        if let Some(res) = self.target.of_type(type_url) {
            if sub.wildcard {
                for (name, r) in res {
                    out.insert(name.clone(), r.clone());
                }
            } else {
                for name in &sub.names {
                    if let Some(r) = res.get(name) {
                        out.insert(name.clone(), r.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether the Envoy holds exactly the desired state of a type; no allocation.
    fn held_is_desired(&self, type_url: &str, st: &TypeState) -> bool {
        if let Some(changes) = self.synced_diff(type_url, st) {
            return changes.0.is_empty() && changes.1.is_empty();
        }
        let target = self.target.of_type(type_url);
        let mut count = 0usize;
        let mut check = |name: &String, r: &Arc<Resource>| {
            count += 1;
            st.held.get(name) == Some(&r.version)
        };
        if let Some(target) = target {
            if st.sub.wildcard {
                if !target.iter().all(|(n, r)| check(n, r)) {
                    return false;
                }
            } else {
                for name in &st.sub.names {
                    if let Some(r) = target.get(name) {
                        if !check(name, r) {
                            return false;
                        }
                    }
                }
            }
        }
        if let Some(ret) = self.retained.get(type_url) {
            for (name, r) in ret {
                let shadowed = target.is_some_and(|t| t.contains_key(name));
                if st.sub.covers(name) && !shadowed && !check(name, r) {
                    return false;
                }
            }
        }
        count == st.held.len()
    }

    /// When the Envoy holds exactly a known map of this type and nothing is retained for it: the
    /// covered changes from that map to the target (new resources, removed names), found by
    /// a diff that skips shared subtrees.
    fn synced_diff(&self, type_url: &str, st: &TypeState) -> Option<SyncedDiff> {
        let (basis, _) = st.synced.as_ref()?;
        if self.retained.get(type_url).is_some_and(|r| !r.is_empty()) {
            return None;
        }
        let empty = ResourceMap::new();
        let target = self.target.of_type(type_url).unwrap_or(&empty);
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        if basis.ptr_eq(target) {
            return Some((changed, removed));
        }
        for item in basis.diff(target) {
            match item {
                imbl::ordmap::DiffItem::Add(n, r)
                | imbl::ordmap::DiffItem::Update { new: (n, r), .. } => {
                    if st.sub.covers(n) {
                        changed.push(r.clone());
                    }
                }
                imbl::ordmap::DiffItem::Remove(n, r) => {
                    if st.sub.covers(n) {
                        removed.push((n.clone(), r.version.clone()));
                    }
                }
            }
        }
        Some((changed, removed))
    }

    /// Whether the Envoy holds exactly the desired state of a type (vacuously true if it never
    /// asked for the type).
    fn in_sync(&self, type_url: &str) -> bool {
        match self.types.get(type_url) {
            Some(st) if st.requested => {
                let pending_here = self.pending.contains_key(type_url);
                !pending_here && !st.force && self.held_is_desired(type_url, st)
            }
            _ => true,
        }
    }

    /// In sync, and actually asked for when the target has resources of this type (a
    /// reconnecting Envoy has not asked for listeners and routes yet when it asks for clusters;
    /// the clusters it still routes to must not be removed before it has).
    fn settled(&self, type_url: &str) -> bool {
        let requested = self.types.get(type_url).is_some_and(|st| st.requested);
        let has = self.target.of_type(type_url).is_some_and(|m| !m.is_empty());
        self.in_sync(type_url) && (requested || !has)
    }

    /// Handle the nonce of a request for a served type: ACK or NACK of the outstanding response.
    fn resolve(&mut self, type_url: &str, nonce: &str, error: Option<&RpcStatus>) {
        let matches = self.pending.get(type_url).is_some_and(|p| p.nonce == nonce);
        if !matches {
            return;
        }
        let Some(p) = self.pending.remove(type_url) else {
            return;
        };
        let st = self.state(type_url);
        match error {
            None => {
                st.held = p.versions;
                st.synced = p.basis;
                st.rejected = None;
                st.last_acked_version = Some(p.version);
                st.last_acked_nonce = Some(p.nonce);
                st.acks += 1;
            }
            Some(err) => {
                tracing::warn!(
                    type_url,
                    nonce = %p.nonce,
                    version = %p.version,
                    error = %err.message,
                    resources = ?p.touched,
                    "Envoy NACKed xDS response"
                );
                // The Envoy keeps its previous state, but may have applied part of the response.
                st.synced = None;
                for name in &p.touched {
                    st.held.insert(name.clone(), UNKNOWN.to_string());
                }
                st.rejected = Some(p.versions);
                st.nacks += 1;
                st.last_nack = Some(NackStatus {
                    nonce: p.nonce,
                    version: p.version,
                    message: err.message.clone(),
                    resources: p.touched,
                });
            }
        }
    }

    /// Count a request whose nonce is not the latest we sent for its type.
    fn stale(&mut self, type_url: &str, nonce: &str) {
        tracing::debug!(type_url, nonce, "ignoring stale xDS request nonce");
        self.state(type_url).stale += 1;
    }

    /// The Envoy's subscription of a type changed: what it holds is no longer exactly the covered
    /// part of a known map, neither now nor once it ACKs the outstanding response (which was built
    /// for the old subscription: a name subscribed meanwhile is not in it).
    fn subscription_changed(&mut self, type_url: &str) {
        self.state(type_url).synced = None;
        if let Some(p) = self.pending.get_mut(type_url) {
            p.basis = None;
        }
    }

    /// Drop the subscription-independent bookkeeping for names the Envoy no longer subscribes to.
    /// (Only called when the subscription changed: otherwise everything held is covered.)
    fn drop_uncovered(&mut self, type_url: &str) {
        let Some(st) = self.types.get_mut(type_url) else {
            return;
        };
        let sub = st.sub.clone();
        retain_covered(&mut st.held, &sub);
        if let Some(p) = self.pending.get_mut(type_url) {
            retain_covered(&mut p.versions, &sub);
            if !sub.wildcard && sub.names.is_empty() {
                // The Envoy dropped the whole type: it may never ACK the outstanding response
                // (a Delta Envoy drops responses for types it no longer watches). Do not stall.
                tracing::debug!(type_url, nonce = %p.nonce, "type unsubscribed: outstanding response dropped");
                self.pending.remove(type_url);
            }
        }
    }

    /// A response for a type we do not serve: empty, so the Envoy does not wait or break.
    fn unserved(&mut self, type_url: &str) -> Outgoing {
        let nonce = self.next_nonce();
        let version = set_version(std::iter::empty());
        let st = self.state(type_url);
        st.requested = true;
        st.last_nonce = Some(nonce.clone());
        st.last_version = Some(version.clone());
        st.responses += 1;
        Outgoing {
            type_url: type_url.to_string(),
            nonce,
            version,
            resources: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// ACK/NACK bookkeeping for a type we do not serve.
    fn unserved_ack(&mut self, type_url: &str, error: Option<&RpcStatus>) {
        let st = self.state(type_url);
        match error {
            None => {
                st.acks += 1;
                st.last_acked_nonce = st.last_nonce.clone();
                st.last_acked_version = st.last_version.clone();
            }
            Some(err) => {
                tracing::warn!(type_url, error = %err.message, "Envoy NACKed empty response");
                st.nacks += 1;
                st.last_nack = Some(NackStatus {
                    nonce: st.last_nonce.clone().unwrap_or_default(),
                    version: st.last_version.clone().unwrap_or_default(),
                    message: err.message.clone(),
                    resources: Vec::new(),
                });
            }
        }
    }

    /// Requests the push logic does not handle: no type URL (ignored), or a type we do not
    /// serve (answered empty once per request that is not an ACK of that answer). `None` when
    /// the request is for a served type.
    fn screen(
        &mut self,
        type_url: &str,
        nonce: &str,
        error: Option<&RpcStatus>,
    ) -> Option<Option<Outgoing>> {
        if type_url.is_empty() {
            tracing::debug!(
                mode = self.mode.as_str(),
                "ignoring xDS request without type_url"
            );
            return Some(None);
        }
        if is_served(type_url) {
            return None;
        }
        if !nonce.is_empty() && self.state(type_url).is_latest_nonce(nonce) {
            self.unserved_ack(type_url, error);
            return Some(None);
        }
        Some(Some(self.unserved(type_url)))
    }

    fn retained_count(&self) -> usize {
        self.retained.values().map(BTreeMap::len).sum()
    }

    /// New target snapshot: retain clusters/assignments the Envoy holds that it no longer has.
    /// A new target snapshot: what to send first, with the ACK bookkeeping brought up to date
    /// (shared by the SotW and Delta machines).
    fn retarget(&mut self, snap: Arc<Snapshot>) -> Vec<Outgoing> {
        self.set_target(snap);
        let out = self.pump_all();
        self.refresh_acked();
        out
    }

    fn set_target(&mut self, snap: Arc<Snapshot>) {
        let old = std::mem::replace(&mut self.target, snap);
        for t in [CLUSTER, ENDPOINT] {
            if !self.pending.contains_key(t) {
                if let Some(st) = self.types.get(t) {
                    if let Some((basis, _)) = &st.synced {
                        if let Some((_, removed)) = self.synced_diff(t, st) {
                            // Held exactly `basis`: what it loses is what to retain.
                            let keep: BTreeMap<String, Arc<Resource>> = removed
                                .iter()
                                .filter_map(|(n, _)| basis.get(n).map(|r| (n.clone(), r.clone())))
                                .collect();
                            if keep.is_empty() {
                                self.retained.remove(t);
                            } else {
                                self.retained.insert(t, keep);
                            }
                            continue;
                        }
                    }
                }
            }
            let mut held: BTreeMap<&String, &String> = BTreeMap::new();
            if let Some(st) = self.types.get(t) {
                held.extend(st.held.iter());
            }
            if let Some(p) = self.pending.get(t) {
                held.extend(p.versions.iter());
            }
            let new_res = self.target.of_type(t);
            let old_res = old.of_type(t);
            let old_ret = self.retained.get(t);
            let mut keep = BTreeMap::new();
            for (name, version) in held {
                if new_res.is_some_and(|m| m.contains_key(name)) {
                    continue;
                }
                let candidates = [
                    old_res.and_then(|m| m.get(name)),
                    old_ret.and_then(|m| m.get(name)),
                ];
                let pick = candidates
                    .iter()
                    .flatten()
                    .find(|r| &r.version == version)
                    .or_else(|| candidates.iter().flatten().next());
                if let Some(r) = pick {
                    keep.insert(name.clone(), Arc::clone(r));
                }
            }
            if keep.is_empty() {
                self.retained.remove(t);
            } else {
                self.retained.insert(t, keep);
            }
        }
    }

    /// Every response of the push sequence that may go now: the next one, and EDS right after a
    /// CDS response (the clusters it adds or updates warm on their assignments, and the Envoy
    /// does not ACK CDS before they have warmed, nor, a Delta Envoy whose subscriptions did not
    /// change, ask for them).
    fn pump_all(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some(o) = self.pump() {
            out.push(o);
        }
        out
    }

    /// Send the next response of the push sequence, if any is due and none is outstanding (or only
    /// CDS is outstanding and EDS is due: the Envoy waits for the assignments of warming clusters
    /// before it ACKs CDS).
    fn pump(&mut self) -> Option<Outgoing> {
        let order: &[&'static str] = if self.pending.is_empty() {
            &PUSH_ORDER
        } else if self.pending.len() == 1 && self.pending.contains_key(CLUSTER) {
            &[ENDPOINT]
        } else if self.pending.len() == 1 && self.pending.contains_key(SCOPED_ROUTE) {
            &[ROUTE]
        } else {
            return None;
        };
        if self.pending.is_empty()
            && !self.retained.is_empty()
            && self.settled(LISTENER)
            && self.settled(SCOPED_ROUTE)
            && self.settled(ROUTE)
        {
            tracing::debug!(
                count = self.retained_count(),
                "listeners and routes ACKed: removing retained clusters"
            );
            self.retained.clear();
        }
        for &t in order {
            let Some(st) = self.types.get(t) else {
                continue;
            };
            if !st.requested {
                continue;
            }
            let resend = self.resend_due(t, st);
            if !st.force && !resend && st.rejected.is_none() {
                if let (Some((_, sum)), Some((changed, removed))) =
                    (&st.synced, self.synced_diff(t, st))
                {
                    if changed.is_empty() && removed.is_empty() {
                        continue;
                    }
                    // O(changes): the held map and its sum, updated.
                    let mut versions = st.held.clone();
                    let mut sum = *sum;
                    for (n, v) in &removed {
                        sum = sum.wrapping_sub(pair_hash(n, v));
                        versions.remove(n);
                    }
                    for r in &changed {
                        if let Some(v) = versions.get(&r.name) {
                            sum = sum.wrapping_sub(pair_hash(&r.name, v));
                        }
                        sum = sum.wrapping_add(pair_hash(&r.name, &r.version));
                        versions.insert(r.name.clone(), r.version.clone());
                    }
                    let basis = self.target.of_type(t).cloned().unwrap_or_default();
                    if self.removal_needs_no_response(t, changed.is_empty()) {
                        self.assume_held(t, versions, Some((basis, sum)));
                        continue;
                    }
                    let mut touched: Vec<String> = changed.iter().map(|r| r.name.clone()).collect();
                    let removed: Vec<String> = removed.into_iter().map(|(n, _)| n).collect();
                    touched.extend(removed.iter().cloned());
                    let (resources, removed) = match self.mode {
                        Mode::Sotw if !sotw_changed_only(t) => {
                            (self.desired(t, &st.sub).into_values().collect(), Vec::new())
                        }
                        Mode::Sotw => (changed, Vec::new()),
                        Mode::Delta => (changed, removed),
                    };
                    return Some(self.send(
                        t,
                        versions,
                        Some((basis, sum)),
                        touched,
                        resources,
                        removed,
                    ));
                }
            }
            if !st.force && !resend && self.held_is_desired(t, st) {
                continue;
            }
            let desired = self.desired(t, &st.sub);
            let versions: Versions = desired
                .iter()
                .map(|(n, r)| (n.clone(), r.version.clone()))
                .collect();
            if !st.force && !resend && st.rejected.as_ref() == Some(&versions) {
                continue;
            }
            let changed: Vec<Arc<Resource>> = desired
                .values()
                .filter(|r| st.held.get(&r.name) != Some(&r.version) || st.resend.contains(&r.name))
                .cloned()
                .collect();
            let removed: Vec<String> = st
                .held
                .keys()
                .filter(|n| !desired.contains_key(*n))
                .cloned()
                .collect();
            let sum = set_sum(versions.iter());
            let basis = if self.retained.get(t).is_some_and(|r| !r.is_empty()) {
                None
            } else {
                Some((self.target.of_type(t).cloned().unwrap_or_default(), sum))
            };
            if !st.force && self.removal_needs_no_response(t, changed.is_empty()) {
                self.assume_held(t, versions, basis);
                continue;
            }
            let mut touched: Vec<String> = changed.iter().map(|r| r.name.clone()).collect();
            touched.extend(removed.iter().cloned());
            let (resources, removed) = match self.mode {
                Mode::Sotw if !sotw_changed_only(t) => {
                    (desired.into_values().collect(), Vec::new())
                }
                Mode::Sotw => (changed, Vec::new()),
                Mode::Delta => (changed, removed),
            };
            return Some(self.send(t, versions, basis, touched, resources, removed));
        }
        None
    }

    /// A SotW response for a type the Envoy subscribes to by name (EDS, RDS, SDS) that would only
    /// leave resources out: the Envoy drops such resources by unsubscribing, not because a
    /// response omits them, and when it no longer watches the type at all (an EDS cluster that
    /// became a DNS cluster) it accepts an empty response without ACKing it, which would leave the
    /// response outstanding and stall every later push. Such a change is recorded, not sent.
    fn removal_needs_no_response(&self, type_url: &str, nothing_changed: bool) -> bool {
        self.mode == Mode::Sotw && !sotw_wildcard_type(type_url) && nothing_changed
    }

    /// Records that the Envoy holds `versions` of a type without a response (see
    /// [`Core::removal_needs_no_response`]).
    fn assume_held(
        &mut self,
        type_url: &str,
        versions: Versions,
        basis: Option<(ResourceMap, u64)>,
    ) {
        let st = self.state(type_url);
        st.held = versions;
        st.synced = basis;
    }

    /// Whether some name the Envoy must be sent again is in the desired state of this type.
    fn resend_due(&self, type_url: &str, st: &TypeState) -> bool {
        !st.resend.is_empty()
            && st.resend.iter().any(|n| {
                st.sub.covers(n)
                    && self
                        .target
                        .of_type(type_url)
                        .is_some_and(|m| m.contains_key(n))
            })
    }

    /// A CDS response that carries `versions`: every EDS cluster it updates (the Envoy held it at
    /// another version) is replaced by a new cluster in the Envoy, which warms until its load
    /// assignment arrives again; neither a SotW nor a Delta Envoy reliably asks for it (its
    /// subscription did not change), so it is resent with the CDS response even when unchanged.
    /// Added clusters need nothing: the Envoy subscribes to their new names.
    /// `touched`: the names the response adds, changes or removes (O(changes)).
    fn resend_updated_assignments(&mut self, versions: &Versions, touched: &[String]) {
        let Some(cds) = self.types.get(CLUSTER) else {
            return;
        };
        let Some(assignments) = self.target.of_type(ENDPOINT) else {
            return;
        };
        let updated: Vec<String> = touched
            .iter()
            .filter(|n| {
                let new = versions.get(*n);
                let held = cds.held.get(*n);
                new.is_some() && held.is_some() && new != held && assignments.contains_key(*n)
            })
            .cloned()
            .collect();
        if updated.is_empty() {
            return;
        }
        let eds = self.state(ENDPOINT);
        if eds.requested {
            eds.resend.extend(updated);
        }
    }

    /// Records and returns the next response of the push sequence.
    fn send(
        &mut self,
        t: &'static str,
        versions: Versions,
        basis: Option<(ResourceMap, u64)>,
        touched: Vec<String>,
        resources: Vec<Arc<Resource>>,
        removed: Vec<String>,
    ) -> Outgoing {
        let version = match &basis {
            Some((_, sum)) => sum_version(*sum),
            None => set_version(versions.iter()),
        };
        if t == CLUSTER {
            self.resend_updated_assignments(&versions, &touched);
        }
        let nonce = self.next_nonce();
        let st = self.state(t);
        st.force = false;
        st.resend.clear();
        st.last_nonce = Some(nonce.clone());
        st.last_version = Some(version.clone());
        st.responses += 1;
        self.pending.insert(
            t,
            Pending {
                type_url: t,
                nonce: nonce.clone(),
                version: version.clone(),
                versions,
                basis,
                touched,
            },
        );
        Outgoing {
            type_url: t.to_string(),
            nonce,
            version,
            resources,
            removed,
        }
    }

    /// Recompute `acked_generation` after an event.
    fn refresh_acked(&mut self) {
        if !self.pending.is_empty() || !self.retained.is_empty() {
            return;
        }
        let mut any = false;
        for t in PUSH_ORDER {
            match self.types.get(t) {
                Some(st) if st.requested => {
                    any = true;
                    if !self.in_sync(t) {
                        return;
                    }
                }
                _ => {
                    // The Envoy always asks for clusters and listeners: until it has, it does not
                    // hold what the target says.
                    let wanted = sotw_wildcard_type(t)
                        && self.target.of_type(t).is_some_and(|m| !m.is_empty());
                    if wanted {
                        return;
                    }
                }
            }
        }
        if any {
            self.acked_generation = Some(self.target.generation);
        }
    }

    fn note_bytes(&mut self, type_url: &str, len: usize) {
        self.state(type_url).bytes += len as u64;
    }

    fn status(&self) -> ConnStatus {
        let types = self
            .types
            .iter()
            .map(|(t, st)| {
                let in_sync = if st.served { self.in_sync(t) } else { true };
                (
                    t.clone(),
                    TypeStatus {
                        served: st.served,
                        wildcard: st.sub.wildcard,
                        subscribed: st.sub.names.iter().cloned().collect(),
                        resources_held: st.held.len(),
                        in_sync,
                        last_sent_version: st.last_version.clone(),
                        last_sent_nonce: st.last_nonce.clone(),
                        last_acked_version: st.last_acked_version.clone(),
                        last_acked_nonce: st.last_acked_nonce.clone(),
                        last_nack: st.last_nack.clone(),
                        responses_sent: st.responses,
                        acks: st.acks,
                        nacks: st.nacks,
                        stale_requests: st.stale,
                        bytes_sent: st.bytes,
                    },
                )
            })
            .collect();
        ConnStatus {
            mode: self.mode,
            target_generation: self.target.generation,
            acked_generation: self.acked_generation,
            outstanding: self.pending.values().next().map(|p| Outstanding {
                type_url: p.type_url.to_string(),
                nonce: p.nonce.clone(),
            }),
            retained_removals: self.retained_count(),
            types,
        }
    }
}

/// State-of-the-world ADS connection.
#[derive(Debug)]
pub struct SotwConnection {
    core: Core,
}

impl SotwConnection {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        SotwConnection {
            core: Core::new(Mode::Sotw, snapshot),
        }
    }

    /// Handle one request from the Envoy; returns the responses to send, in order.
    pub fn on_request(&mut self, req: DiscoveryRequest) -> Vec<DiscoveryResponse> {
        let out = self.handle_request(req);
        self.core.refresh_acked();
        self.render(out)
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
        let st = core.state(t);
        let added =
            (wildcard && !st.sub.wildcard) || names.iter().any(|n| !st.sub.names.contains(n));
        if nonce.is_empty() || added {
            st.force = true;
        }
        st.requested = true;
        let sub = Subscription { wildcard, names };
        let changed = st.sub != sub;
        st.sub = sub;
        if changed {
            core.subscription_changed(t);
        }
        // Names the Envoy no longer asks for are forgotten: it ignores them, and when it asks again
        // they are sent again.
        if changed {
            core.drop_uncovered(t);
        }
        core.pump_all()
    }

    /// A new target snapshot for this proxy.
    pub fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Vec<DiscoveryResponse> {
        let out = self.core.retarget(snap);
        self.render(out)
    }

    pub fn status(&self) -> ConnStatus {
        self.core.status()
    }

    fn render(&mut self, out: Vec<Outgoing>) -> Vec<DiscoveryResponse> {
        out.into_iter()
            .map(|o| {
                let resp = DiscoveryResponse {
                    version_info: o.version,
                    resources: o.resources.iter().map(|r| r.body.clone()).collect(),
                    type_url: o.type_url,
                    nonce: o.nonce,
                    ..Default::default()
                };
                self.core.note_bytes(&resp.type_url, resp.encoded_len());
                resp
            })
            .collect()
    }
}

/// Incremental (Delta) ADS connection.
#[derive(Debug)]
pub struct DeltaConnection {
    core: Core,
}

impl DeltaConnection {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        DeltaConnection {
            core: Core::new(Mode::Delta, snapshot),
        }
    }

    /// Handle one request from the Envoy; returns the responses to send, in order.
    pub fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Vec<DeltaDiscoveryResponse> {
        let out = self.handle_request(req);
        self.core.refresh_acked();
        self.render(out)
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
        if !core.state(t).requested
            || !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty()
        {
            core.subscription_changed(t);
        }
        let st = core.state(t);
        if !st.requested {
            st.requested = true;
            let wildcard = req.resource_names_subscribe.is_empty()
                || req.resource_names_subscribe.iter().any(|n| n == "*");
            st.sub = Subscription {
                wildcard,
                names: req
                    .resource_names_subscribe
                    .into_iter()
                    .filter(|n| n != "*")
                    .collect(),
            };
            // A wildcard subscription is always answered, even when empty, so the Envoy's
            // initialization does not wait for the fetch timeout.
            st.force = wildcard;
            for (name, version) in req.initial_resource_versions {
                if st.sub.covers(&name) {
                    st.held.insert(name, version);
                }
            }
            // A reconnecting Envoy (e.g. after our restart) may still route to clusters we no
            // longer have: keep them (by name; their bodies are never resent since the Envoy
            // holds these versions) until listeners and routes are ACKed, then remove them.
            if t == CLUSTER || t == ENDPOINT {
                let held: Vec<(String, String)> = st
                    .held
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
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
                        }),
                    );
                }
            }
        } else {
            let sub_changed = !req.resource_names_subscribe.is_empty()
                || !req.resource_names_unsubscribe.is_empty();
            for name in req.resource_names_subscribe {
                if name == "*" {
                    st.sub.wildcard = true;
                } else {
                    // Subscribing again to a name it holds: the Envoy wants it sent again.
                    if st.held.contains_key(&name) {
                        st.resend.insert(name.clone());
                    }
                    st.sub.names.insert(name);
                }
            }
            for name in &req.resource_names_unsubscribe {
                if name == "*" {
                    st.sub.wildcard = false;
                } else {
                    st.sub.names.remove(name);
                }
            }
            if sub_changed {
                core.drop_uncovered(t);
            }
        }
        core.pump_all()
    }

    /// A new target snapshot for this proxy.
    pub fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
        let out = self.core.retarget(snap);
        self.render(out)
    }

    pub fn status(&self) -> ConnStatus {
        self.core.status()
    }

    fn render(&mut self, out: Vec<Outgoing>) -> Vec<DeltaDiscoveryResponse> {
        out.into_iter()
            .map(|o| {
                let resp = DeltaDiscoveryResponse {
                    system_version_info: o.version,
                    resources: o
                        .resources
                        .iter()
                        .map(|r| PbResource {
                            name: r.name.clone(),
                            version: r.version.clone(),
                            resource: Some(r.body.clone()),
                            ..Default::default()
                        })
                        .collect(),
                    type_url: o.type_url,
                    removed_resources: o.removed,
                    nonce: o.nonce,
                    ..Default::default()
                };
                self.core.note_bytes(&resp.type_url, resp.encoded_len());
                resp
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
