//! The names an Envoy subscribes to, without a copy per stream: the keys of a resource map the
//! snapshot already holds, plus the names it adds and the ones it lacks. An Envoy that watches
//! exactly the load assignments (or route configurations) of its snapshot, the usual case, costs
//! its stream no memory per name.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::iter::Peekable;

use super::diffs::{self, Change, SharedDiffs};
use crate::xds::resource::ResourceMap;

/// A set of resource names: `base`'s keys, less `minus`, plus `plus` (`plus` holds no key of
/// `base`, `minus` only keys of `base`).
#[derive(Debug, Clone, Default)]
pub(super) struct Names {
    base: ResourceMap,
    plus: BTreeSet<String>,
    minus: BTreeSet<String>,
    /// Total bytes of the names in `plus` and `minus` (what the set stores of its own).
    stored_bytes: usize,
}

impl Names {
    /// `names`, over `base` when that stores fewer names than the plain set.
    pub(super) fn over(names: BTreeSet<String>, base: &ResourceMap) -> Names {
        let mut out = Names::from(names);
        out.rebase(base, None);
        out
    }

    /// A plain set (no base).
    fn from(plus: BTreeSet<String>) -> Names {
        Names {
            stored_bytes: plus.iter().map(String::len).sum(),
            base: ResourceMap::new(),
            plus,
            minus: BTreeSet::new(),
        }
    }

    /// What the set stores of its own, apart from its base's keys (names the base holds cost
    /// nothing): the number of names and their bytes. This is what a subscription costs its
    /// stream, and what the per-stream name limits bound.
    pub(super) fn stored(&self) -> (usize, usize) {
        (self.plus.len() + self.minus.len(), self.stored_bytes)
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.plus.contains(name) || (self.base.contains_key(name) && !self.minus.contains(name))
    }

    /// Adds a name; whether it was new.
    pub(super) fn insert(&mut self, name: String) -> bool {
        let len = name.len();
        if self.base.contains_key(&name) {
            // Back among the base's keys: `minus` no longer stores it.
            let back = self.minus.remove(&name);
            if back {
                self.stored_bytes -= len;
            }
            back
        } else {
            let new = self.plus.insert(name);
            if new {
                self.stored_bytes += len;
            }
            new
        }
    }

    /// Removes a name; whether it was there.
    pub(super) fn remove(&mut self, name: &str) -> bool {
        let removed = if self.base.contains_key(name) {
            !self.minus.contains(name) && self.minus.insert(name.to_string())
        } else {
            self.plus.remove(name)
        };
        if removed {
            // A name leaving `plus` frees its bytes; one entering `minus` stores them.
            if self.base.contains_key(name) {
                self.stored_bytes += name.len();
            } else {
                self.stored_bytes -= name.len();
            }
        }
        removed
    }

    pub(super) fn len(&self) -> usize {
        self.base.len() - self.minus.len() + self.plus.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &String> + '_ {
        Merge {
            a: self
                .base
                .keys()
                .filter(|k| !self.minus.contains(k.as_str()))
                .peekable(),
            b: self.plus.iter().peekable(),
        }
    }

    /// The same names over the keys of `map` (a newer snapshot's map of the type), when that
    /// stores fewer of them: O(differences) between the two maps when they share subtrees.
    /// `shared`: the service's diffs and the type (every stream of a group rebases from the
    /// same map to the same map); `None` diffs here (a first subscription, over an empty base).
    pub(super) fn rebase(&mut self, map: &ResourceMap, shared: Option<(&SharedDiffs, &str)>) {
        let stored = self.plus.len() + self.minus.len();
        // At least this many names would be stored apart over `map`.
        if self.base.ptr_eq(map) || map.len().abs_diff(self.len()) > stored {
            return;
        }
        let mut plus = self.plus.clone();
        let mut minus = self.minus.clone();
        let changes = match shared {
            Some((diffs, type_url)) => diffs.between(type_url, &self.base, map),
            None => diffs::compute(&self.base, map).0,
        };
        for (n, change) in changes.iter() {
            match change {
                Change::Added(_) => {
                    if !plus.remove(n) {
                        minus.insert(n.clone());
                    }
                }
                Change::Removed(_) => {
                    if !minus.remove(n) {
                        plus.insert(n.clone());
                    }
                }
                Change::Updated(_) => {}
            }
        }
        if plus.len() + minus.len() <= stored {
            self.stored_bytes = plus.iter().chain(&minus).map(String::len).sum();
            self.base = map.clone();
            self.plus = plus;
            self.minus = minus;
        }
    }
}

/// The names in `new` but not in `old` (added), and in `old` but not in `new` (removed).
pub(super) fn changes(old: &Names, new: &Names) -> (Vec<String>, Vec<String>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Less => removed.extend(a.next().cloned()),
                Ordering::Greater => added.extend(b.next().cloned()),
                Ordering::Equal => {
                    a.next();
                    b.next();
                }
            },
            (Some(_), None) => removed.extend(a.next().cloned()),
            (None, Some(_)) => added.extend(b.next().cloned()),
            (None, None) => return (added, removed),
        }
    }
}

impl PartialEq for Names {
    fn eq(&self, other: &Names) -> bool {
        self.len() == other.len() && self.iter().all(|n| other.contains(n))
    }
}

impl FromIterator<String> for Names {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Names {
        Names::from(iter.into_iter().collect())
    }
}

/// Two sorted, disjoint iterators merged in order.
struct Merge<'a, A: Iterator<Item = &'a String>, B: Iterator<Item = &'a String>> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<'a, A: Iterator<Item = &'a String>, B: Iterator<Item = &'a String>> Iterator
    for Merge<'a, A, B>
{
    type Item = &'a String;

    fn next(&mut self) -> Option<&'a String> {
        let pick_a = match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => x.cmp(y) != Ordering::Greater,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if pick_a {
            self.a.next()
        } else {
            self.b.next()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::resource::resource_from_bytes;

    fn map(names: &[&str]) -> ResourceMap {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    resource_from_bytes(n, "t", n.as_bytes().to_vec()),
                )
            })
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn list(n: &Names) -> Vec<&str> {
        n.iter().map(String::as_str).collect()
    }

    #[test]
    fn names_over_a_map_store_only_the_differences() {
        let m = map(&["a", "b", "c", "d"]);
        let n = Names::over(set(&["a", "b", "d", "e"]), &m);
        assert_eq!(list(&n), ["a", "b", "d", "e"]);
        assert_eq!((n.plus.len(), n.minus.len()), (1, 1));
        assert!(n.contains("e") && !n.contains("c") && n.len() == 4);
        // Far from the map: stored as a plain set.
        let few = Names::over(set(&["x"]), &m);
        assert_eq!((few.base.len(), list(&few)), (0, vec!["x"]));
    }

    #[test]
    fn insert_remove_and_rebase_keep_the_same_set() {
        let m = map(&["a", "b", "c"]);
        let mut n = Names::over(set(&["a", "b", "c"]), &m);
        assert!(n.remove("b") && !n.remove("b"));
        assert!(n.insert("z".into()) && !n.insert("z".into()));
        assert_eq!(n.stored(), (2, 2), "b left the map's keys, z is not one");
        assert!(n.insert("b".into()));
        assert_eq!(list(&n), ["a", "b", "c", "z"]);
        assert_eq!(n.stored(), (1, 1));
        // The next snapshot has z and lost c: after the rebase, nothing is stored apart.
        let mut next = m.clone();
        next.remove("c");
        next.insert("z".into(), resource_from_bytes("z", "t", vec![1]));
        n.remove("c");
        n.rebase(&next, None);
        assert_eq!(list(&n), ["a", "b", "z"]);
        assert_eq!((n.plus.len(), n.minus.len()), (0, 0));
        assert_eq!(
            n.stored(),
            (0, 0),
            "every name is a key of the snapshot's map"
        );
        assert_eq!(n, set(&["a", "b", "z"]).into_iter().collect::<Names>());
        assert_ne!(n, set(&["a", "b"]).into_iter().collect::<Names>());
        let other = Names::over(set(&["b", "y", "z"]), &next);
        assert_eq!(
            changes(&n, &other),
            (vec!["y".to_string()], vec!["a".to_string()])
        );
    }
}
