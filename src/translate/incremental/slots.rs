//! Deciding slots: which claimant owns each touched `(route configuration, host)` slot, made
//! in batches (in parallel when large) and applied in order, so an incremental step sees the
//! same sequence of claims, and so the same errors, as a full translation.

use std::collections::BTreeMap;

use crate::parallel::{self, Cores};
use crate::state::Inputs;

use super::super::claims::{self, Slot};
use super::super::fragment::PIECE;
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
            .filter_map(|h| slots.get_key_value(&(route.clone(), h)))
            .flat_map(|(s, set)| {
                set.into_iter()
                    .filter(|(_, _, k)| k.kind == Kind::HttpRoute)
                    .filter_map(|(_, _, k)| frags.get(k))
                    .map(|f| (s.1.as_str(), f))
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
            for (slot, claim) in batch.into_iter().zip(claims) {
                self.decide(slot, claim, touched);
            }
        }
    }

    /// Applies the claim of one slot: its errors and owners, its winning virtual host (the
    /// encoded ones and the clusters' reference counts follow).
    fn decide(&mut self, slot: Slot, claim: claims::Claim, touched: &mut Touched) {
        let (route, host) = &slot;
        let claims::Claim {
            vhost: new_vh,
            owners,
            errors,
        } = claim;
        if errors.is_empty() {
            self.slot_errors.remove(&slot);
        } else {
            self.slot_errors.insert(slot.clone(), errors);
        }
        let sole = match (self.slots.get(&slot).map(|set| set.as_slice()), &owners[..]) {
            (Some([(_, _, only)]), [owner]) => **only == *owner,
            _ => false,
        };
        if owners.is_empty() || sole {
            self.owners.remove(&slot);
        } else {
            self.owners.insert(slot.clone(), owners);
        }
        let old_vh = self.vhosts.get(route).and_then(|m| m.get(host));
        if old_vh == new_vh.as_ref() {
            return;
        }
        let served = self.ctx.route_ports.contains_key(route);
        if served {
            if let Some(old) = old_vh {
                for c in envoy::vhost_clusters(old) {
                    if let Some(e) = self.clusters.get_mut(c) {
                        e.served_refs = e.served_refs.saturating_sub(1);
                        if e.served_refs == 0 {
                            touched.cluster(c);
                        }
                    }
                }
            }
            if let Some(new) = &new_vh {
                for c in envoy::vhost_clusters(new) {
                    if let Some(e) = self.clusters.get_mut(c) {
                        e.served_refs += 1;
                        if e.served_refs == 1 {
                            touched.cluster(c);
                        }
                    }
                }
            }
            if assemble::is_scoped(&self.ctx, route) {
                touched.scoped_host(host);
            } else {
                touched.route(route);
            }
        }
        if let Some(old) = old_vh {
            let name = envoy::vhost_name(old);
            if let Some(m) = self.encoded.get_mut(route) {
                m.remove(&name);
                if m.is_empty() {
                    self.encoded.remove(route);
                }
            }
        }
        if let Some(vh) = new_vh
            .as_ref()
            .filter(|_| !assemble::is_scoped(&self.ctx, route))
        {
            // Looked up before an entry is made: `entry` would copy the route's name per slot.
            let pending = sink::VhostBytes::Pending(vh.clone());
            match self.encoded.get_mut(route) {
                Some(m) => {
                    m.insert(envoy::vhost_name(vh), pending);
                }
                None => {
                    self.encoded.insert(
                        route.clone(),
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
}
