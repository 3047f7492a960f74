//! Make before break: on a new target snapshot, the clusters and load assignments the Envoy
//! holds that the target no longer has are retained until its listeners, scopes and routes are
//! ACKed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::core::Core;
use crate::xds::resource::{Snapshot, CLUSTER, ENDPOINT};

impl Core {
    /// Sets the new target; what the Envoy holds (or is being sent) of CDS/EDS that the new
    /// target lacks is retained, with the body it was sent with.
    pub(super) fn set_target(&mut self, snap: Arc<Snapshot>) {
        let old = std::mem::replace(&mut self.target, snap);
        // Subscriptions are kept over the newest maps (see `Names`).
        for (t, st) in self.types.iter_mut() {
            if let Some(m) = self.target.of_type(t) {
                st.sub.names.rebase(m, Some((&self.diffs, t)));
            }
        }
        for t in [CLUSTER, ENDPOINT] {
            // What the Envoy holds and is being sent are known maps (the usual case): what they
            // lose is what to retain, in O(changes); the outstanding response's wins.
            if let Some(st) = self.types.get(t) {
                let pending = self.pending.get(t);
                let lost = self.synced_lost(t, &st.held, &st.sub).and_then(|mut keep| {
                    if let Some(p) = pending {
                        keep.extend(self.synced_lost(t, &p.held, &st.sub)?);
                    }
                    Some(keep)
                });
                if let Some(keep) = lost {
                    if keep.is_empty() {
                        self.retained.remove(t);
                    } else {
                        self.retained.insert(t, keep);
                    }
                    continue;
                }
            }
            let mut held: BTreeMap<&String, &str> = BTreeMap::new();
            if let Some(st) = self.types.get(t) {
                held.extend(st.held.iter(&st.sub));
                if let Some(p) = self.pending.get(t) {
                    held.extend(p.held.iter(&st.sub));
                }
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
                    .find(|r| r.version == version)
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
}
