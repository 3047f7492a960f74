//! What an Envoy holds of one type, as far as we know. Once it has ACKed a response built from a
//! snapshot's map (nothing retained in it), that is the part of the map its subscription covers:
//! kept as the shared map itself, so a synced stream holds no copy of any name or version.
//! Otherwise (after a NACK, a reconnect with `initial_resource_versions`, retained removals) an
//! explicit name -> version map.

use super::core::{retain_covered, Subscription, Versions};
use super::{set_sum, sum_version};
use crate::xds::resource::ResourceMap;

#[derive(Debug, Clone)]
pub(super) enum Held {
    /// Exactly the resources of `basis` the subscription covers: `count` of them, whose
    /// `name:version` pairs sum (see [`super::set_version`]) to `sum`.
    Synced {
        basis: ResourceMap,
        sum: u64,
        count: usize,
    },
    /// Name -> version ([`super::core::UNKNOWN`] where the Envoy's state is unknown).
    Versions(Versions),
}

impl Default for Held {
    fn default() -> Held {
        Held::Versions(Versions::new())
    }
}

impl Held {
    /// The map the Envoy holds the covered part of, with its set sum, when known.
    pub(super) fn synced(&self) -> Option<(&ResourceMap, u64)> {
        match self {
            Held::Synced { basis, sum, .. } => Some((basis, *sum)),
            Held::Versions(_) => None,
        }
    }

    /// The version of `name` the Envoy holds.
    pub(super) fn get<'a>(&'a self, sub: &Subscription, name: &str) -> Option<&'a str> {
        match self {
            Held::Synced { basis, .. } => basis
                .get(name)
                .filter(|_| sub.covers(name))
                .map(|r| r.version.as_str()),
            Held::Versions(v) => v.get(name).map(String::as_str),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Held::Synced { count, .. } => *count,
            Held::Versions(v) => v.len(),
        }
    }

    /// Name and version of everything held, in name order.
    pub(super) fn iter<'a>(
        &'a self,
        sub: &'a Subscription,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a str)> + 'a> {
        match self {
            Held::Synced { basis, .. } => Box::new(
                basis
                    .iter()
                    .filter(|(n, _)| sub.covers(n))
                    .map(|(n, r)| (n, r.version.as_str())),
            ),
            Held::Versions(v) => Box::new(v.iter().map(|(n, v)| (n, v.as_str()))),
        }
    }

    /// An explicit copy of what is held.
    pub(super) fn to_versions(&self, sub: &Subscription) -> Versions {
        match self {
            Held::Synced { .. } => self
                .iter(sub)
                .map(|(n, v)| (n.clone(), v.to_string()))
                .collect(),
            Held::Versions(v) => v.clone(),
        }
    }

    /// The set version of what is held.
    pub(super) fn version(&self) -> String {
        match self {
            Held::Synced { sum, .. } => sum_version(*sum),
            Held::Versions(v) => {
                sum_version(set_sum(v.iter().map(|(n, v)| (n.as_str(), v.as_str()))))
            }
        }
    }

    /// The subscription goes from `old` to `new` (`added` and `removed` names, for a subscription
    /// by name): the Envoy forgets what it no longer subscribes to. O(changes) while synced: an
    /// unsubscribed name leaves the sum and count; a newly subscribed name the basis has is one
    /// the Envoy does not hold, so it leaves the basis (O(log n), the rest of the map still
    /// shared). Only a change of the wildcard copies the held names out.
    pub(super) fn resubscribe(
        &mut self,
        old: &Subscription,
        new: &Subscription,
        added: &[String],
        removed: &[String],
    ) {
        if let Held::Synced { basis, sum, count } = self {
            if old.wildcard == new.wildcard {
                if new.wildcard {
                    return;
                }
                // A name subscribed and unsubscribed in one request was never held.
                for name in removed.iter().filter(|n| old.covers(n)) {
                    if let Some(r) = basis.get(name) {
                        *sum = sum.wrapping_sub(r.pair_hash_as(name));
                        *count -= 1;
                    }
                }
                // Looked up first: imbl's `remove` copies the path of a shared map before it
                // finds a key absent, and a new name is usually not in the map.
                for name in added {
                    if basis.contains_key(name) {
                        basis.remove(name);
                    }
                }
                return;
            }
            *self = Held::Versions(self.to_versions(old));
        }
        if let Held::Versions(v) = self {
            retain_covered(v, new);
        }
    }

    /// Marks names as held at an unknown version (the Envoy NACKed a response that touched
    /// them and may have applied part of it).
    pub(super) fn mark_unknown(&mut self, sub: &Subscription, names: &[String], unknown: &str) {
        let mut v = self.to_versions(sub);
        for name in names {
            v.insert(name.clone(), unknown.to_string());
        }
        *self = Held::Versions(v);
    }
}
