//! Deciding slots: which claimant owns each touched `(route configuration, host)` slot, made
//! in batches (in parallel when large) and applied in order, so an incremental step sees the
//! same sequence of claims, and so the same errors, as a full translation.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::parallel::{self, Cores};
use crate::state::Inputs;

use super::super::claims::{self, Name, Slot};
use super::super::fragment::PIECE;
use super::super::ir::VirtualHostIr;
use super::super::{assemble, envoy};
use super::{sink, Engine, Kind, Touched, CLAIM_BATCH};

impl Engine {
    /// The claims on `slot` decided ([`claims::resolve`]) from its claimants' fragments and,
    /// for HTTPRoutes, those of the wildcard hosts covering it.
    pub(super) fn claim(&self, inputs: &Inputs, slot: &Slot) -> claims::Claim {
        let (route, host) = slot;
        let claimants = self
            .slots
            .get(slot)
            .into_iter()
            .flatten()
            .filter_map(|(_, _, k)| self.frags.get(k));
        // Looked up only when HTTPRoutes hold the slot (`resolve` reads it then only).
        let (slots, frags) = (&self.slots, &self.frags);
        let covering = std::iter::once(())
            .flat_map(|()| claims::covering_hosts(host))
            .filter_map(|h| slots.get_key_value(&(route.clone(), Name::from(h))))
            .flat_map(|(s, set)| {
                set.into_iter()
                    .filter(|(_, _, k)| k.kind == Kind::HttpRoute)
                    .filter_map(|(_, _, k)| frags.get(k))
                    .map(|f| (&*s.1, f))
            });
        claims::resolve(inputs, slot, claimants, covering)
    }

    /// Re-decides the owner of each touched slot (the same sequence of claims as a full
    /// translation, so the same errors), and updates the winning virtual hosts and the cluster
    /// reference counts.
    pub(super) fn resolve_slots(&mut self, inputs: &Inputs, cores: &Cores, touched: &mut Touched) {
        let slots: Vec<Slot> = if touched.everything() {
            // A rebuild: every slot, in order (each slot is decided on its own, but inserting
            // the winners in key order keeps the B-tree inserts local: ~10 % faster at 10k).
            let mut all: Vec<Slot> = self.slots.keys().cloned().collect();
            all.sort_unstable();
            all
        } else {
            // A wildcard host's HTTPRoutes also serve the hosts it covers on its route
            // configuration (`claims::covering_hosts`): those are re-decided too.
            let wild: Vec<Slot> = touched
                .slots
                .iter()
                .filter(|(_, h)| h.contains('*'))
                .cloned()
                .collect();
            for (route, w) in wild {
                let covered = self
                    .slots
                    .keys()
                    .filter(|(r, h)| *r == route && claims::covers(&w, h))
                    .cloned();
                touched.slots.extend(covered.collect::<Vec<_>>());
            }
            touched.slots.iter().cloned().collect()
        };
        // A claim reads the slots and fragments only, which deciding does not change: a large
        // batch's claims are made on the free cores (a batch at a time, so that few are held
        // at once), then applied in slot order.
        // A rebuild starts with no winners: they are gathered, then made into the maps at once.
        let mut fresh = touched.everything().then(Fresh::default);
        let mut slots = slots.into_iter();
        loop {
            let batch: Vec<Slot> = slots.by_ref().take(CLAIM_BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let this = &*self;
            let claims: Vec<claims::Claim> = if batch.len() >= 4 * PIECE {
                parallel::pieces(cores, &batch, PIECE, |part| {
                    part.iter()
                        .map(|s| this.claim(inputs, s))
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .flatten()
                .collect()
            } else {
                batch.iter().map(|s| this.claim(inputs, s)).collect()
            };
            if let Some(fresh) = &mut fresh {
                for (slot, claim) in batch.into_iter().zip(claims) {
                    self.decide_fresh(slot, claim, touched, fresh);
                }
            } else {
                for (slot, claim) in batch.into_iter().zip(claims) {
                    self.decide(slot, claim, touched);
                }
            }
        }
        if let Some(fresh) = fresh {
            self.take_fresh(fresh, cores);
        }
    }

    /// Records the errors and owners of one slot's claim; returns its winning virtual host.
    fn record(&mut self, slot: &Slot, claim: claims::Claim) -> Option<Arc<VirtualHostIr>> {
        let claims::Claim {
            vhost,
            owners,
            errors,
        } = claim;
        if errors.is_empty() {
            self.slot_errors.remove(slot);
        } else {
            self.slot_errors.insert(slot.clone(), errors);
        }
        let sole = match (self.slots.get(slot).map(|set| set.as_slice()), &owners[..]) {
            (Some([(_, _, only)]), [owner]) => **only == *owner,
            _ => false,
        };
        if owners.is_empty() || sole {
            self.owners.remove(slot);
        } else {
            self.owners.insert(slot.clone(), owners);
        }
        vhost
    }

    /// A slot's winner changed from `old` to `new`: on a served route configuration, the
    /// clusters' served reference counts follow, and what to re-encode is noted.
    fn reference(
        &mut self,
        slot: &Slot,
        old: Option<&VirtualHostIr>,
        new: Option<&VirtualHostIr>,
        touched: &mut Touched,
    ) {
        let (route, host) = slot;
        if !self.ctx.route_ports.contains_key(&**route) {
            return;
        }
        for c in old.into_iter().flat_map(envoy::vhost_clusters) {
            if let Some(e) = self.clusters.get_mut(c) {
                e.served_refs = e.served_refs.saturating_sub(1);
                if e.served_refs == 0 {
                    touched.cluster(c);
                }
            }
        }
        for c in new.into_iter().flat_map(envoy::vhost_clusters) {
            if let Some(e) = self.clusters.get_mut(c) {
                e.served_refs += 1;
                if e.served_refs == 1 {
                    touched.cluster(c);
                }
            }
        }
        if assemble::is_scoped(&self.ctx, route) {
            touched.scoped_host(host);
        } else {
            touched.route(route);
        }
    }

    /// Applies the claim of one slot: its errors and owners, its winning virtual host (the
    /// encoded ones and the clusters' reference counts follow).
    fn decide(&mut self, slot: Slot, claim: claims::Claim, touched: &mut Touched) {
        let new_vh = self.record(&slot, claim);
        let (route, host) = &slot;
        let old_vh = self.vhosts.get(route).and_then(|m| m.get(host)).cloned();
        if old_vh == new_vh {
            return;
        }
        self.reference(&slot, old_vh.as_deref(), new_vh.as_deref(), touched);
        if let Some(old) = &old_vh {
            let name = envoy::vhost_name(old);
            if let Some(m) = self.encoded.get_mut(&**route) {
                m.remove(&name);
                if m.is_empty() {
                    self.encoded.remove(&**route);
                }
            }
        }
        if let Some(vh) = new_vh
            .as_ref()
            .filter(|_| !assemble::is_scoped(&self.ctx, route))
        {
            // Looked up before an entry is made: `entry` would copy the route's name per slot.
            let pending = sink::VhostBytes::Pending(vh.clone());
            match self.encoded.get_mut(&**route) {
                Some(m) => {
                    m.insert(envoy::vhost_name(vh), pending);
                }
                None => {
                    self.encoded.insert(
                        route.to_string(),
                        BTreeMap::from([(envoy::vhost_name(vh), pending)]),
                    );
                }
            }
        }
        match new_vh {
            Some(vh) => match self.vhosts.get_mut(route) {
                Some(m) => {
                    m.insert(host.clone(), vh);
                }
                None => {
                    self.vhosts
                        .insert(route.clone(), BTreeMap::from([(host.clone(), vh)]));
                }
            },
            None => {
                if let Some(m) = self.vhosts.get_mut(route) {
                    m.remove(host);
                    if m.is_empty() {
                        self.vhosts.remove(route);
                    }
                }
            }
        }
    }

    /// [`Engine::decide`] for a rebuild, where no slot has a winner yet: the winner is kept in
    /// `fresh` (in slot order) for [`Engine::take_fresh`].
    fn decide_fresh(
        &mut self,
        slot: Slot,
        claim: claims::Claim,
        touched: &mut Touched,
        fresh: &mut Fresh,
    ) {
        if let Some(vh) = self.record(&slot, claim) {
            self.reference(&slot, None, Some(&vh), touched);
            fresh.winners.push((slot, vh));
        }
    }

    /// A rebuild's winners into the maps [`Engine::decide`] keeps (the same entries), each map
    /// built at once from its sorted entries rather than by one tree insert per slot (at
    /// 100,000 services, 800,000 inserts into the cluster-local gateway's maps, each a walk
    /// comparing long common prefixes); the virtual host names on the free cores.
    fn take_fresh(&mut self, fresh: Fresh, cores: &Cores) {
        debug_assert!(self.vhosts.is_empty() && self.encoded.is_empty());
        let mut rest = &fresh.winners[..];
        while let Some(((route, _), _)) = rest.first() {
            let n = rest.iter().take_while(|((r, _), _)| r == route).count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            if !assemble::is_scoped(&self.ctx, route) {
                let named = parallel::pieces(cores, group, PIECE, |part| {
                    part.iter()
                        .map(|(_, vh)| {
                            (envoy::vhost_name(vh), sink::VhostBytes::Pending(vh.clone()))
                        })
                        .collect::<Vec<_>>()
                });
                self.encoded
                    .insert(route.to_string(), named.into_iter().flatten().collect());
            }
            let hosts = group.iter().map(|((_, h), vh)| (h.clone(), vh.clone()));
            self.vhosts.insert(route.clone(), hosts.collect());
        }
    }
}

/// A rebuild's winning virtual hosts, in slot order ([`Engine::decide_fresh`]).
#[derive(Default)]
struct Fresh {
    winners: Vec<(Slot, Arc<VirtualHostIr>)>,
}
