//! What must be sent again, or need not be sent at all: the load assignments of EDS clusters a
//! CDS response updated (they warm until their assignment arrives again, and no Envoy asks),
//! names a Delta Envoy subscribes to again, and SotW responses that would only leave
//! resources out (never sent: an Envoy that stopped watching the type would not ACK them).

use super::core::{Core, TypeState};
use super::held::Held;
use super::{sotw_wildcard_type, Mode};
use crate::xds::resource::{CLUSTER, ENDPOINT};

impl Core {
    /// A SotW response for a type the Envoy subscribes to by name (EDS, RDS, SDS) that would only
    /// leave resources out: the Envoy drops such resources by unsubscribing, not because a
    /// response omits them, and when it no longer watches the type at all (an EDS cluster that
    /// became a DNS cluster) it accepts an empty response without ACKing it, which would leave the
    /// response outstanding and stall every later push. Such a change is recorded, not sent.
    pub(super) fn removal_needs_no_response(&self, type_url: &str, nothing_changed: bool) -> bool {
        self.mode == Mode::Sotw && !sotw_wildcard_type(type_url) && nothing_changed
    }
    /// Records that the Envoy holds `versions` of a type without a response (see
    /// [`Core::removal_needs_no_response`]).
    pub(super) fn assume_held(&mut self, type_url: &str, held: Held) {
        self.state(type_url).held = held;
    }
    /// Whether some name the Envoy must be sent again is in the desired state of this type.
    pub(super) fn resend_due(&self, type_url: &str, st: &TypeState) -> bool {
        !st.resend.is_empty()
            && st.resend.iter().any(|n| {
                st.sub.covers(n)
                    && self
                        .target
                        .of_type(type_url)
                        .is_some_and(|m| m.contains_key(n))
            })
    }
    /// A CDS response after which the Envoy holds `held`: every EDS cluster it updates (the Envoy held it at
    /// another version) is replaced by a new cluster in the Envoy, which warms until its load
    /// assignment arrives again; neither a SotW nor a Delta Envoy reliably asks for it (its
    /// subscription did not change), so it is resent with the CDS response even when unchanged.
    /// Added clusters need nothing: the Envoy subscribes to their new names.
    /// `touched`: the names the response adds, changes or removes (O(changes)).
    pub(super) fn resend_updated_assignments(&mut self, held: &Held, touched: &[String]) {
        let Some(cds) = self.types.get(CLUSTER) else {
            return;
        };
        let Some(assignments) = self.target.of_type(ENDPOINT) else {
            return;
        };
        let updated: Vec<String> = touched
            .iter()
            .filter(|n| {
                // What the Envoy held first: nothing on a first push, where the new held set
                // (a lookup by name in the whole snapshot's map) need not be read at all.
                let Some(old) = cds.held.get(&cds.sub, n) else {
                    return false;
                };
                held.get(&cds.sub, n).is_some_and(|new| new != old) && assignments.contains_key(*n)
            })
            .cloned()
            .collect();
        if updated.is_empty() {
            return;
        }
        let eds = self.state(ENDPOINT);
        if eds.requested {
            eds.resend.extend(updated);
        }
    }
}
