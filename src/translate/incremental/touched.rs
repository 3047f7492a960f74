//! What one change touched, to re-resolve and re-encode ([`Touched`]).

use std::collections::BTreeSet;

use crate::translate::claims::Slot;

/// What one change touched: the slots to re-decide, then the route configurations, scoped
/// hosts, clusters and assignments to re-encode. A rebuild records nothing
/// ([`Touched::for_rebuild`]): it re-decides every slot and encodes every resource anyway, and
/// at 10,000 services the sets held ~80,000 slot and ~18,000 cluster name copies, dropped
/// unread.
#[derive(Default)]
pub(super) struct Touched {
    everything: bool,
    pub(super) slots: BTreeSet<Slot>,
    pub(super) routes: BTreeSet<String>,
    /// Hosts whose virtual host changed on a scoped route configuration.
    pub(super) scoped_hosts: BTreeSet<String>,
    pub(super) clusters: BTreeSet<String>,
    pub(super) assignments: BTreeSet<String>,
}

impl Touched {
    /// For a rebuild: everything is touched, and nothing is recorded.
    pub(super) fn for_rebuild() -> Touched {
        Touched {
            everything: true,
            ..Touched::default()
        }
    }

    /// Whether everything is touched (a rebuild: the sets stay empty).
    pub(super) fn everything(&self) -> bool {
        self.everything
    }

    pub(super) fn slot(&mut self, slot: &Slot) {
        if !self.everything {
            self.slots.insert(slot.clone());
        }
    }

    pub(super) fn route(&mut self, route: &str) {
        if !self.everything {
            self.routes.insert(route.to_string());
        }
    }

    pub(super) fn scoped_host(&mut self, host: &str) {
        if !self.everything {
            self.scoped_hosts.insert(host.to_string());
        }
    }

    pub(super) fn cluster(&mut self, name: &str) {
        if !self.everything {
            self.clusters.insert(name.to_string());
        }
    }
}
