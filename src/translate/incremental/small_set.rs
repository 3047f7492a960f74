//! A sorted set held in a vector, for the engine's indexes: each of their keys (a host's
//! claimants, a Service's dependents and clusters) has one or a few entries, where a B-tree set
//! allocates a node of eleven slots for the first one.

/// A set of `T` in ascending order, without duplicates.
#[derive(Debug, Clone)]
pub(super) struct SmallSet<T>(Vec<T>);

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        SmallSet(Vec::new())
    }
}

impl<T: Ord> SmallSet<T> {
    /// Adds `v`; false when it was there.
    pub fn insert(&mut self, v: T) -> bool {
        match self.0.binary_search(&v) {
            Ok(_) => false,
            Err(i) => {
                // Most keys keep one entry: room for exactly one, where a vector's first
                // growth makes room for four (heaptrack at 10,000 services: the claimants of
                // each host took 27 MB, three quarters of it empty).
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, v);
                true
            }
        }
    }

    /// Removes `v`; false when it was not there.
    pub fn remove(&mut self, v: &T) -> bool {
        match self.0.binary_search(v) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The entries, in order.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, T> IntoIterator for &'a SmallSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::SmallSet;

    #[test]
    fn keeps_its_entries_sorted_and_unique() {
        let mut s = SmallSet::default();
        for v in [5, 1, 3, 1, 5, 4] {
            s.insert(v);
        }
        assert_eq!(s.into_iter().copied().collect::<Vec<_>>(), [1, 3, 4, 5]);
        assert!(s.remove(&3));
        assert!(!s.remove(&3));
        assert!(!s.insert(4));
        assert_eq!(s.into_iter().copied().collect::<Vec<_>>(), [1, 4, 5]);
        for v in [1, 4, 5] {
            s.remove(&v);
        }
        assert!(s.is_empty());
    }
}
