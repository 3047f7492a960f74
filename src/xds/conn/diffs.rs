//! The differences between two resource maps, computed once for every stream that needs them.
//!
//! When a snapshot changes, every stream of the gateway group that held the previous one asks
//! the same question of each type: what changed from the previous snapshot's map to the new
//! one (to rebase its subscribed names, to find what to retain for make before break, and to
//! build its response). [`SharedDiffs`], one per ADS service and shared by its streams,
//! answers it once: the first stream walks `imbl`'s diff, the others take the same list. Each
//! stream still applies its own subscription, retained removals, rejected versions, nonce and
//! limits to it; the list is a pure function of the two maps, so a stream given it sends
//! exactly what it would have sent on its own.
//!
//! A list is found again by the identity of both maps (`ptr_eq`): the entry holds the two
//! maps, so neither can be freed and another map built at its address while it is kept. What
//! is kept: the last [`KEPT`] lists that, with what the earlier map holds and the later one does
//! not, take at most [`KEPT_OLD_BYTES`] (an entry keeps the earlier map alive, so a change
//! replacing a large resource, such as the Istio layout's whole `http.80` RouteConfiguration,
//! is not kept: each stream diffs it itself, as a one-entry map costs nothing to diff; nor is
//! a change of tens of thousands of names). Secrets are never
//! shared: their maps are filtered per caller (`SecretFilter`), so no two streams' agree.

use std::sync::{Arc, Mutex};

use crate::xds::resource::{Resource, ResourceMap, SECRET};

/// How many lists are kept.
pub const KEPT: usize = 8;

/// A list is kept only if it and the resources it replaces or removes (which its entry keeps
/// alive) are at most this many bytes: what the kept lists cost is at most [`KEPT`] times this.
pub const KEPT_OLD_BYTES: usize = 2 << 20;

/// One difference of the later map from the earlier one, at a name.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// In the later map only.
    Added(Arc<Resource>),
    /// In both, another entry in the later one (the later map's entry).
    Updated(Arc<Resource>),
    /// In the earlier map only (its entry).
    Removed(Arc<Resource>),
}

/// The differences in name order.
pub(super) type ChangeList = Arc<[(String, Change)]>;

struct Entry {
    from: ResourceMap,
    to: ResourceMap,
    changes: ChangeList,
}

/// Diffs shared by the streams of a service (see the module docs).
pub struct SharedDiffs {
    /// Newest last; at most `kept`.
    recent: Mutex<Vec<Entry>>,
    kept: usize,
}

impl std::fmt::Debug for SharedDiffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDiffs")
            .field("kept", &self.kept)
            .finish_non_exhaustive()
    }
}

impl Default for SharedDiffs {
    fn default() -> Self {
        SharedDiffs::new()
    }
}

impl SharedDiffs {
    pub fn new() -> Self {
        SharedDiffs {
            recent: Mutex::new(Vec::new()),
            kept: KEPT,
        }
    }

    /// Keeps nothing: every stream computes its own diffs (the path the shared one must equal;
    /// for tests).
    pub fn unshared() -> Self {
        SharedDiffs {
            recent: Mutex::new(Vec::new()),
            kept: 0,
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The differences from `from` to `to` (two maps of `type_url`), in name order.
    pub(super) fn between(
        &self,
        type_url: &str,
        from: &ResourceMap,
        to: &ResourceMap,
    ) -> ChangeList {
        let share = self.kept > 0 && type_url != SECRET;
        if share {
            let recent = self.recent();
            if let Some(e) = recent
                .iter()
                .rev()
                .find(|e| e.from.ptr_eq(from) && e.to.ptr_eq(to))
            {
                return e.changes.clone();
            }
        }
        // Computed outside the lock (a large diff would hold every other stream's lookup); two
        // streams doing it at once insert it twice, and the older copy ages out.
        let (changes, old_bytes) = compute(from, to);
        if share && old_bytes <= KEPT_OLD_BYTES {
            let mut recent = self.recent();
            if recent.len() >= self.kept {
                recent.remove(0);
            }
            recent.push(Entry {
                from: from.clone(),
                to: to.clone(),
                changes: changes.clone(),
            });
        }
        changes
    }

    /// How many lists are kept now.
    pub fn kept(&self) -> usize {
        self.recent().len()
    }
}

/// The differences, and what keeping them costs: the bytes of the earlier map's entries they
/// replace or remove (kept alive by the entry's earlier map) and of the list itself.
pub(super) fn compute(from: &ResourceMap, to: &ResourceMap) -> (ChangeList, usize) {
    let mut old_bytes = 0usize;
    let mut out = Vec::new();
    for item in from.diff(to) {
        match item {
            imbl::ordmap::DiffItem::Add(n, r) => {
                old_bytes += n.len();
                out.push((n.clone(), Change::Added(r.clone())))
            }
            imbl::ordmap::DiffItem::Update {
                old: (_, o),
                new: (n, r),
            } => {
                old_bytes += o.body.value.len() + o.name.len() + n.len();
                out.push((n.clone(), Change::Updated(r.clone())));
            }
            imbl::ordmap::DiffItem::Remove(n, r) => {
                old_bytes += r.body.value.len() + r.name.len() + n.len();
                out.push((n.clone(), Change::Removed(r.clone())));
            }
        }
    }
    old_bytes += out.len() * std::mem::size_of::<(String, Change)>();
    (out.into(), old_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::resource::{resource_from_bytes, ENDPOINT};

    fn map(items: &[(&str, usize)]) -> ResourceMap {
        items
            .iter()
            .map(|(n, size)| (n.to_string(), resource_from_bytes(n, "t", vec![1; *size])))
            .collect()
    }

    fn names(c: &ChangeList) -> Vec<String> {
        c.iter()
            .map(|(n, ch)| match ch {
                Change::Added(_) => format!("+{n}"),
                Change::Updated(_) => format!("~{n}"),
                Change::Removed(_) => format!("-{n}"),
            })
            .collect()
    }

    #[test]
    fn a_diff_is_computed_once_per_pair_of_maps_and_large_replacements_are_not_kept() {
        let diffs = SharedDiffs::new();
        let a = map(&[("x", 1), ("y", 1), ("z", 1)]);
        let mut b = a.clone();
        b.insert("w".into(), resource_from_bytes("w", "t", vec![2]));
        b.insert("y".into(), resource_from_bytes("y", "t", vec![2]));
        b.remove("z");
        let one = diffs.between(ENDPOINT, &a, &b);
        assert_eq!(names(&one), ["+w", "~y", "-z"]);
        let again = diffs.between(ENDPOINT, &a, &b);
        assert!(
            Arc::ptr_eq(&one, &again),
            "the second stream takes the first's list"
        );
        // Equal maps at other addresses are another pair.
        let other = diffs.between(ENDPOINT, &a.clone(), &b.clone());
        assert!(
            Arc::ptr_eq(&one, &other),
            "clones share their root: the same maps"
        );
        let rebuilt = map(&[("x", 1), ("y", 1), ("z", 1)]);
        let fresh = diffs.between(ENDPOINT, &rebuilt, &b);
        assert!(!Arc::ptr_eq(&one, &fresh));
        assert_eq!(diffs.kept(), 2);
        // A replaced resource above the bound is diffed, not kept.
        let big = map(&[("x", KEPT_OLD_BYTES + 1)]);
        let small = map(&[("x", 1)]);
        assert_eq!(names(&diffs.between(ENDPOINT, &big, &small)), ["~x"]);
        assert_eq!(diffs.kept(), 2);
        // Secrets (filtered per caller) and an unshared memo keep nothing.
        let _ = diffs.between(SECRET, &a, &b);
        assert_eq!(diffs.kept(), 2);
        let unshared = SharedDiffs::unshared();
        let _ = unshared.between(ENDPOINT, &a, &b);
        assert_eq!(unshared.kept(), 0);
        // At most KEPT, the oldest dropped first.
        for i in 0..KEPT + 3 {
            let mut c = b.clone();
            c.insert(format!("n{i}"), resource_from_bytes("n", "t", vec![3]));
            let _ = diffs.between(ENDPOINT, &b, &c);
        }
        assert_eq!(diffs.kept(), KEPT);
    }
}
