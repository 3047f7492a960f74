//! What the Envoy should hold of a type and how far what it holds is from it, in O(changes)
//! while the held state is a known map (`Held::Synced`): the target's covered resources plus
//! the retained removals (make before break), diffed against the held map with `imbl`'s diff,
//! which skips shared subtrees, taken from the service's [`super::diffs::SharedDiffs`] (the
//! streams of a group diff the same two maps: computed once). Retained entries are written into the held map itself
//! ([`Core::held_basis`]), so retained removals keep a stream on the O(changes) path too.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::core::{Core, Subscription, SyncedDiff, TypeState};
use super::diffs::Change;
use super::held::Held;
use crate::xds::resource::{Resource, ResourceMap};

impl Core {
    /// What the Envoy should hold for a type: target plus retained, filtered by subscription,
    /// in name order. Borrowed from the target and the retained maps (an Envoy's first
    /// request for every cluster of 100,000 services copied 200,000 names into a map here).
    pub(super) fn desired<'s>(
        &'s self,
        type_url: &str,
        sub: &Subscription,
    ) -> Vec<(&'s String, &'s Arc<Resource>)> {
        let target = self.target.of_type(type_url);
        let mut out: Vec<(&String, &Arc<Resource>)> = match target {
            Some(res) if sub.wildcard => res.iter().collect(),
            // The subscribed names come in order (`Names::iter`).
            Some(res) => sub
                .names
                .iter()
                .filter_map(|n| res.get_key_value(n.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let retained = self.retained.get(type_url).into_iter().flatten();
        let lost = retained.filter(|(name, _)| {
            sub.covers(name) && !target.is_some_and(|t| t.contains_key(name.as_str()))
        });
        let before = out.len();
        out.extend(lost);
        if out.len() > before {
            out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        out
    }

    /// Whether `name` is in a [`Core::desired`] list.
    pub(super) fn desires(desired: &[(&String, &Arc<Resource>)], name: &str) -> bool {
        desired
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .is_ok()
    }

    /// The map whose covered part is [`Core::desired`]: the target's map of the type with the
    /// covered retained entries it lacks written in (O(retained log n); the map shares every
    /// other subtree with the target's, so the next diff against a target still skips them).
    pub(super) fn held_basis(&self, type_url: &str, sub: &Subscription) -> ResourceMap {
        let mut basis = self.target.of_type(type_url).cloned().unwrap_or_default();
        if let Some(ret) = self.retained.get(type_url) {
            for (name, r) in ret {
                if sub.covers(name) && !basis.contains_key(name) {
                    basis.insert(name.clone(), r.clone());
                }
            }
        }
        basis
    }

    /// When `held` is a known map: its covered resources the target of the type lacks (with
    /// the bodies they were sent with), found in O(changes). What [`Core::set_target`]
    /// retains, whatever was retained before.
    pub(super) fn synced_lost(
        &self,
        type_url: &str,
        held: &Held,
        sub: &Subscription,
    ) -> Option<BTreeMap<String, Arc<Resource>>> {
        let (basis, _) = held.synced()?;
        let empty = ResourceMap::new();
        let target = self.target.of_type(type_url).unwrap_or(&empty);
        let mut lost = BTreeMap::new();
        if basis.ptr_eq(target) {
            return Some(lost);
        }
        for (n, change) in self.diffs.between(type_url, basis, target).iter() {
            if let Change::Removed(r) = change {
                if sub.covers(n) {
                    lost.insert(n.clone(), r.clone());
                }
            }
        }
        Some(lost)
    }

    /// Whether the Envoy holds exactly the desired state of a type; no allocation.
    pub(super) fn held_is_desired(&self, type_url: &str, st: &TypeState) -> bool {
        if let Some(changes) = self.synced_diff(type_url, st) {
            return changes.0.is_empty() && changes.1.is_empty();
        }
        let target = self.target.of_type(type_url);
        let mut count = 0usize;
        let mut check = |name: &String, r: &Arc<Resource>| {
            count += 1;
            st.held.get(&st.sub, name) == Some(r.version.as_str())
        };
        if let Some(target) = target {
            if st.sub.wildcard {
                if !target.iter().all(|(n, r)| check(n, r)) {
                    return false;
                }
            } else {
                for name in st.sub.names.iter() {
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

    /// When the Envoy holds exactly a known map of this type: the covered changes from that map
    /// to the desired state (new or changed resources in name order, removed names with the
    /// version held), found by a diff that skips shared subtrees. A removed resource that is
    /// retained stays (sent again only if the Envoy holds another version); a retained one the
    /// map lacks is sent.
    pub(super) fn synced_diff(&self, type_url: &str, st: &TypeState) -> Option<SyncedDiff> {
        let (basis, _) = st.held.synced()?;
        let empty = ResourceMap::new();
        let target = self.target.of_type(type_url).unwrap_or(&empty);
        let retained = self.retained.get(type_url).filter(|r| !r.is_empty());
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        if !basis.ptr_eq(target) {
            for (n, change) in self.diffs.between(type_url, basis, target).iter() {
                match change {
                    Change::Added(r) | Change::Updated(r) => {
                        if st.sub.covers(n) {
                            changed.push(r.clone());
                        }
                    }
                    Change::Removed(r) => {
                        if st.sub.covers(n) {
                            match retained.and_then(|m| m.get(n)) {
                                Some(kept) if kept.version == r.version => {}
                                Some(kept) => changed.push(kept.clone()),
                                None => removed.push((n.clone(), r.version.clone())),
                            }
                        }
                    }
                }
            }
        }
        if let Some(ret) = retained {
            let before = changed.len();
            for (n, kept) in ret {
                if st.sub.covers(n) && !target.contains_key(n) && !basis.contains_key(n) {
                    changed.push(kept.clone());
                }
            }
            if changed.len() != before {
                changed.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        Some((changed, removed))
    }
}
