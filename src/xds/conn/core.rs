//! The protocol logic shared by the SotW and Delta machines: per type URL, what the Envoy
//! subscribes to and holds, the outstanding responses, the retained removals (make before
//! break), the push sequence, and the events (ACK, NACK, converged) each input produced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::diffs::SharedDiffs;
use super::held::Held;
use super::names::Names;
use super::{is_served, pair_hash, set_version, sotw_wildcard_type, Event, Mode, NackStatus};
use crate::xds::limits::{truncate_bytes, LimitExceeded, Limits};
use crate::xds::resource::{
    Resource, ResourceMap, Snapshot, CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE,
};

/// Version recorded for a resource whose state on the Envoy is unknown (after a NACK the Envoy may
/// have applied part of a response). Never equal to a real version, so it is always resent.
pub(super) const UNKNOWN: &str = "";

/// Types whose SotW responses carry only the resources that changed. Envoy hands a SotW EDS or
/// RDS response to the watch of each load assignment or route configuration it names and leaves
/// the others as they are (`GrpcMuxImpl`: "onConfigUpdate should be called only on watches that
/// have updates in the message for EDS/RDS"), so a change to one of many assignments (one per
/// cluster) or RouteConfigurations (scoped route layout: one per host) resends only that one.
fn sotw_changed_only(type_url: &str) -> bool {
    type_url == ROUTE || type_url == ENDPOINT
}

pub(super) fn retain_covered(versions: &mut Versions, sub: &Subscription) {
    let gone: Vec<String> = versions
        .keys()
        .filter(|n| !sub.covers(n))
        .cloned()
        .collect();
    for n in gone {
        versions.remove(&n);
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Subscription {
    pub(super) wildcard: bool,
    pub(super) names: Names,
}

impl Subscription {
    pub(super) fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

#[derive(Debug, Default)]
pub(super) struct TypeState {
    pub(super) served: bool,
    /// The Envoy has sent at least one request for this type.
    pub(super) requested: bool,
    pub(super) sub: Subscription,
    /// Bumped whenever `sub` changes: the status copies the subscribed names it shows only
    /// when this moved (`Core::status_into`).
    pub(super) sub_rev: u64,
    /// What the Envoy holds, as far as we know. When that is exactly the covered part of a
    /// resource map (no retained entries in it), that map: a new target is then diffed against
    /// it in O(changes) (persistent maps share unchanged subtrees).
    pub(super) held: Held,
    /// A response must be sent even if nothing changed (initial request, new names).
    pub(super) force: bool,
    /// Names to send again although the Envoy holds their version: the load assignments of
    /// EDS clusters a CDS response updated (the updated cluster warms until its assignment is
    /// answered, also when unchanged), and names a Delta Envoy subscribes to again.
    pub(super) resend: BTreeSet<String>,
    /// The versions of a NACKed response; not resent while the desired state equals them.
    pub(super) rejected: Option<Versions>,
    pub(super) last_nonce: Option<String>,
    pub(super) last_version: Option<String>,
    pub(super) last_acked_version: Option<String>,
    pub(super) last_acked_nonce: Option<String>,
    pub(super) last_nack: Option<NackStatus>,
    pub(super) responses: u64,
    pub(super) acks: u64,
    pub(super) nacks: u64,
    pub(super) stale: u64,
    pub(super) bytes: u64,
}

impl TypeState {
    pub(super) fn is_latest_nonce(&self, nonce: &str) -> bool {
        self.last_nonce.as_deref() == Some(nonce)
    }
}

/// The outstanding response of the push sequence.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) type_url: &'static str,
    pub(super) nonce: String,
    pub(super) version: String,
    /// What the Envoy holds for this type once it ACKs (the target map the response was built
    /// from, when no retained entry was in it).
    pub(super) held: Held,
    /// Names added, changed or removed by the response.
    pub(super) touched: Vec<String>,
    /// The generation of the snapshot the response was built from.
    pub(super) generation: u64,
}

/// One response to send, independent of the wire flavour.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) type_url: String,
    pub(super) nonce: String,
    pub(super) version: String,
    pub(super) resources: Vec<Arc<Resource>>,
    pub(super) removed: Vec<String>,
}

pub(super) type Versions = imbl::OrdMap<String, String>;

/// Covered changes from a synced map to the target: new or changed resources, removed
/// (name, version held).
pub(super) type SyncedDiff = (Vec<Arc<Resource>>, Vec<(String, String)>);

/// The protocol logic shared by SotW and Delta.
#[derive(Debug)]
pub(super) struct Core {
    pub(super) mode: Mode,
    pub(super) target: Arc<Snapshot>,
    pub(super) types: BTreeMap<String, TypeState>,
    /// Outstanding responses by type: at most one, or CDS and EDS (see the module docs).
    pub(super) pending: BTreeMap<&'static str, Pending>,
    /// Resources the Envoy holds that the target no longer has, kept until LDS/RDS are ACKed.
    pub(super) retained: BTreeMap<&'static str, BTreeMap<String, Arc<Resource>>>,
    pub(super) nonce_counter: u64,
    pub(super) acked_generation: Option<u64>,
    /// Events of the input being handled, handed out by [`Core::take_events`].
    pub(super) events: Vec<Event>,
    pub(super) limits: Limits,
    /// Set when an input went past a limit: the stream is to be ended with it.
    pub(super) refused: Option<LimitExceeded>,
    /// The diffs of two snapshots' maps, shared with the other streams of the service.
    pub(super) diffs: Arc<SharedDiffs>,
}

impl Core {
    pub(super) fn new(
        mode: Mode,
        target: Arc<Snapshot>,
        limits: Limits,
        diffs: Arc<SharedDiffs>,
    ) -> Self {
        Core {
            diffs,
            limits,
            refused: None,
            mode,
            target,
            types: BTreeMap::new(),
            pending: BTreeMap::new(),
            retained: BTreeMap::new(),
            nonce_counter: 0,
            acked_generation: None,
            events: Vec::new(),
        }
    }

    pub(super) fn next_nonce(&mut self) -> String {
        self.nonce_counter += 1;
        self.nonce_counter.to_string()
    }

    /// The state of a type, created on first use (its key is copied only then: this is called
    /// several times per request and response).
    pub(super) fn state(&mut self, type_url: &str) -> &mut TypeState {
        if !self.types.contains_key(type_url) {
            self.types.insert(
                type_url.to_string(),
                TypeState {
                    served: is_served(type_url),
                    ..TypeState::default()
                },
            );
        }
        self.types
            .get_mut(type_url)
            .expect("the type's state was inserted above")
    }

    /// Whether the Envoy holds exactly the desired state of a type (vacuously true if it never
    /// asked for the type).
    pub(super) fn in_sync(&self, type_url: &str) -> bool {
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
    pub(super) fn settled(&self, type_url: &str) -> bool {
        let requested = self.types.get(type_url).is_some_and(|st| st.requested);
        let has = self.target.of_type(type_url).is_some_and(|m| !m.is_empty());
        self.in_sync(type_url) && (requested || !has)
    }

    /// Handle the nonce of a request for a served type: ACK or NACK of the outstanding response.
    pub(super) fn resolve(&mut self, type_url: &str, nonce: &str, error: Option<&RpcStatus>) {
        let matches = self.pending.get(type_url).is_some_and(|p| p.nonce == nonce);
        if !matches {
            return;
        }
        let Some(p) = self.pending.remove(type_url) else {
            return;
        };
        let max_message = self.limits.max_nack_message_bytes;
        let st = self.state(type_url);
        match error {
            None => {
                st.held = p.held;
                st.rejected = None;
                st.last_acked_version = Some(p.version.clone());
                st.last_acked_nonce = Some(p.nonce);
                st.acks += 1;
                self.events.push(Event::Ack {
                    type_url: type_url.to_string(),
                    version: p.version,
                    generation: p.generation,
                });
            }
            Some(err) => {
                // The Envoy keeps its previous state, but may have applied part of the response.
                st.held.mark_unknown(&st.sub, &p.touched, UNKNOWN);
                st.rejected = Some(p.held.to_versions(&st.sub));
                st.nacks += 1;
                let nack = NackStatus {
                    nonce: p.nonce,
                    version: p.version,
                    message: truncate_bytes(&err.message, max_message),
                    resources: p.touched,
                };
                st.last_nack = Some(nack.clone());
                self.events.push(Event::Nack {
                    type_url: type_url.to_string(),
                    nack,
                    generation: p.generation,
                });
            }
        }
    }

    /// Count a request whose nonce is not the latest we sent for its type.
    pub(super) fn stale(&mut self, type_url: &str, nonce: &str) {
        tracing::debug!(
            type_url,
            nonce = %crate::xds::limits::for_log(nonce),
            "ignoring stale xDS request nonce"
        );
        self.state(type_url).stale += 1;
    }

    /// The Envoy's subscription of a type changes to `new` (`added` and `removed` names, for a
    /// subscription by name): it forgets what it no longer subscribes to, now and once it ACKs
    /// the outstanding response (built for the old subscription: a name subscribed meanwhile is
    /// not in it); the stream is refused when all its subscriptions name too much.
    pub(super) fn resubscribe(
        &mut self,
        type_url: &str,
        new: Subscription,
        added: &[String],
        removed: &[String],
    ) {
        self.state(type_url);
        let Some(st) = self.types.get_mut(type_url) else {
            return;
        };
        st.held.resubscribe(&st.sub, &new, added, removed);
        if let Some(p) = self.pending.get_mut(type_url) {
            p.held.resubscribe(&st.sub, &new, added, removed);
        }
        let dropped = !new.wildcard && new.names.is_empty();
        st.sub = new;
        st.sub_rev += 1;
        if dropped {
            if let Some(p) = self.pending.remove(type_url) {
                // The Envoy dropped the whole type: it may never ACK the outstanding response
                // (a Delta Envoy drops responses for types it no longer watches). Do not stall.
                tracing::debug!(type_url, nonce = %p.nonce, "type unsubscribed: outstanding response dropped");
            }
        }
        self.check_names();
    }

    /// A response for a type we do not serve: empty, so the Envoy does not wait or break.
    pub(super) fn unserved(&mut self, type_url: &str) -> Outgoing {
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
    pub(super) fn unserved_ack(&mut self, type_url: &str, error: Option<&RpcStatus>) {
        let generation = self.target.generation;
        let max_message = self.limits.max_nack_message_bytes;
        let st = self.state(type_url);
        match error {
            None => {
                st.acks += 1;
                st.last_acked_nonce = st.last_nonce.clone();
                st.last_acked_version = st.last_version.clone();
                let version = st.last_acked_version.clone().unwrap_or_default();
                self.events.push(Event::Ack {
                    type_url: type_url.to_string(),
                    version,
                    generation,
                });
            }
            Some(err) => {
                st.nacks += 1;
                let nack = NackStatus {
                    nonce: st.last_nonce.clone().unwrap_or_default(),
                    version: st.last_version.clone().unwrap_or_default(),
                    message: truncate_bytes(&err.message, max_message),
                    resources: Vec::new(),
                };
                st.last_nack = Some(nack.clone());
                self.events.push(Event::Nack {
                    type_url: type_url.to_string(),
                    nack,
                    generation,
                });
            }
        }
    }

    /// Requests the push logic does not handle: no type URL (ignored), or a type we do not
    /// serve (answered empty once per request that is not an ACK of that answer). `None` when
    /// the request is for a served type.
    pub(super) fn screen(
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
        if let Err(e) = self.admit_type(type_url) {
            self.refused = Some(e);
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

    /// A type URL may be handled: not too long, and one of the first `max_type_urls` distinct
    /// ones the stream named (O(max_type_urls), never growing).
    fn admit_type(&self, type_url: &str) -> Result<(), LimitExceeded> {
        if type_url.len() > self.limits.max_type_url_bytes {
            return Err(LimitExceeded::TypeUrlLength {
                len: type_url.len(),
                limit: self.limits.max_type_url_bytes,
            });
        }
        if self.types.get(type_url).is_some_and(|st| st.requested) {
            return Ok(());
        }
        let named = self.types.values().filter(|st| st.requested).count();
        if named >= self.limits.max_type_urls {
            return Err(LimitExceeded::TypeUrls {
                limit: self.limits.max_type_urls,
                type_url: type_url.to_string(),
            });
        }
        Ok(())
    }

    /// After a subscription changed: the stream refused when its subscriptions together store
    /// more names than the limits allow (O(types)). Only the names kept apart from the
    /// snapshot's maps count (`Names::stored`): a name the snapshot holds is a key of its map
    /// and costs the stream nothing, so an Envoy subscribing to everything its config names is
    /// never refused, whatever the size (the cluster-local gateway at 100,000 services names
    /// 200,001 resources), while names the config lacks stay bounded.
    pub(super) fn check_names(&mut self) {
        let (names, bytes) = self.types.values().fold((0, 0), |(n, b), st| {
            let (names, bytes) = st.sub.names.stored();
            (n + names, b + bytes)
        });
        if names > self.limits.max_resource_names || bytes > self.limits.max_resource_name_bytes {
            self.refused = Some(LimitExceeded::ResourceNames {
                names,
                bytes,
                max_names: self.limits.max_resource_names,
                max_bytes: self.limits.max_resource_name_bytes,
            });
        }
    }

    /// The limit an input went past, if any (the stream is to be ended with it).
    pub(super) fn take_refused(&mut self) -> Option<LimitExceeded> {
        self.refused.take()
    }

    pub(super) fn retained_count(&self) -> usize {
        self.retained.values().map(BTreeMap::len).sum()
    }

    /// New target snapshot: retain clusters/assignments the Envoy holds that it no longer has.
    /// A new target snapshot: what to send first, with the ACK bookkeeping brought up to date
    /// (shared by the SotW and Delta machines).
    pub(super) fn retarget(&mut self, snap: Arc<Snapshot>) -> Vec<Outgoing> {
        self.set_target(snap);
        let out = self.pump_all();
        self.refresh_acked();
        out
    }

    /// Every response of the push sequence that may go now: the next one, and EDS right after a
    /// CDS response (the clusters it adds or updates warm on their assignments, and the Envoy
    /// does not ACK CDS before they have warmed, nor, a Delta Envoy whose subscriptions did not
    /// change, ask for them).
    pub(super) fn pump_all(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some(o) = self.pump() {
            out.push(o);
        }
        out
    }

    /// Send the next response of the push sequence, if any is due and none is outstanding (or only
    /// CDS is outstanding and EDS is due: the Envoy waits for the assignments of warming clusters
    /// before it ACKs CDS).
    ///
    /// One piece on purpose: it walks the push order once and, for the first type that is due,
    /// builds the response either in O(changes) from the map the Envoy is known to hold, or by
    /// the full comparison; both branches end in the same [`Core::send`] and must apply the
    /// same rules (subscription, rejected versions, SotW changed-only types), which is easiest
    /// to check side by side.
    pub(super) fn pump(&mut self) -> Option<Outgoing> {
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
            let empty = ResourceMap::new();
            let target = self.target.of_type(t).unwrap_or(&empty);
            if !st.force && st.rejected.is_none() {
                if let (Some((_, sum)), Some((mut changed, removed))) =
                    (st.held.synced(), self.synced_diff(t, st))
                {
                    if resend {
                        let again = st.resend.iter().filter(|n| st.sub.covers(n));
                        changed.extend(again.filter_map(|n| target.get(n)).cloned());
                        changed.sort_by(|a, b| a.name.cmp(&b.name));
                        changed.dedup_by(|a, b| a.name == b.name);
                    }
                    if changed.is_empty() && removed.is_empty() {
                        continue;
                    }
                    // O(changes): the held set's sum and size, updated.
                    let (mut sum, mut count) = (sum, st.held.len());
                    for (n, v) in &removed {
                        sum = sum.wrapping_sub(pair_hash(n, v));
                        count -= 1;
                    }
                    for r in &changed {
                        match st.held.get(&st.sub, &r.name) {
                            Some(v) => sum = sum.wrapping_sub(pair_hash(&r.name, v)),
                            None => count += 1,
                        }
                        sum = sum.wrapping_add(r.pair_hash_as(&r.name));
                    }
                    let held = Held::Synced {
                        basis: self.held_basis(t, &st.sub),
                        sum,
                        count,
                    };
                    if self.removal_needs_no_response(t, changed.is_empty()) {
                        self.assume_held(t, held);
                        continue;
                    }
                    let mut touched: Vec<String> = changed.iter().map(|r| r.name.clone()).collect();
                    let removed: Vec<String> = removed.into_iter().map(|(n, _)| n).collect();
                    touched.extend(removed.iter().cloned());
                    let (resources, removed) = match self.mode {
                        Mode::Sotw if !sotw_changed_only(t) => {
                            let desired = self.desired(t, &st.sub);
                            (
                                desired.into_iter().map(|(_, r)| r.clone()).collect(),
                                Vec::new(),
                            )
                        }
                        Mode::Sotw => (changed, Vec::new()),
                        Mode::Delta => (changed, removed),
                    };
                    return Some(self.send(t, held, touched, resources, removed));
                }
            }
            if !st.force && !resend && self.held_is_desired(t, st) {
                continue;
            }
            let desired = self.desired(t, &st.sub);
            let rejected = st.rejected.as_ref().is_some_and(|v| {
                v.len() == desired.len()
                    && desired.iter().all(|(n, r)| v.get(*n) == Some(&r.version))
            });
            if !st.force && !resend && rejected {
                continue;
            }
            let changed: Vec<Arc<Resource>> = desired
                .iter()
                .map(|(_, r)| *r)
                .filter(|r| {
                    st.held.get(&st.sub, &r.name) != Some(r.version.as_str())
                        || st.resend.contains(&r.name)
                })
                .cloned()
                .collect();
            let removed: Vec<String> = st
                .held
                .iter(&st.sub)
                .filter(|(n, _)| !Core::desires(&desired, n))
                .map(|(n, _)| n.clone())
                .collect();
            // `desired` is the covered part of `held_basis`: once ACKed, the Envoy is synced.
            let held = Held::Synced {
                basis: self.held_basis(t, &st.sub),
                sum: desired
                    .iter()
                    .fold(0u64, |acc, (n, r)| acc.wrapping_add(r.pair_hash_as(n))),
                count: desired.len(),
            };
            if !st.force && self.removal_needs_no_response(t, changed.is_empty()) {
                self.assume_held(t, held);
                continue;
            }
            let mut touched: Vec<String> = changed.iter().map(|r| r.name.clone()).collect();
            touched.extend(removed.iter().cloned());
            let (resources, removed) = match self.mode {
                Mode::Sotw if !sotw_changed_only(t) => (
                    desired.into_iter().map(|(_, r)| r.clone()).collect(),
                    Vec::new(),
                ),
                Mode::Sotw => (changed, Vec::new()),
                Mode::Delta => (changed, removed),
            };
            return Some(self.send(t, held, touched, resources, removed));
        }
        None
    }

    /// Records and returns the next response of the push sequence.
    pub(super) fn send(
        &mut self,
        t: &'static str,
        held: Held,
        touched: Vec<String>,
        resources: Vec<Arc<Resource>>,
        removed: Vec<String>,
    ) -> Outgoing {
        let version = held.version();
        if t == CLUSTER {
            self.resend_updated_assignments(&held, &touched);
        }
        let nonce = self.next_nonce();
        let generation = self.target.generation;
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
                held,
                touched,
                generation,
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
    pub(super) fn refresh_acked(&mut self) {
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
            let generation = self.target.generation;
            if self.acked_generation != Some(generation) {
                self.events.push(Event::Converged { generation });
            }
            self.acked_generation = Some(generation);
        }
    }

    pub(super) fn note_bytes(&mut self, type_url: &str, len: usize) {
        self.state(type_url).bytes += len as u64;
    }

    /// The events since the last call, in order.
    pub(super) fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}
