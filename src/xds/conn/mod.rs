//! I/O-free ADS connection state machine.
//!
//! One [`SotwConnection`] or [`DeltaConnection`] per ADS stream. Requests and snapshot updates go
//! in, responses come out; there is no tokio, no clock and no I/O in here. Both flavours share one
//! `Core` (`core.rs`; the flavours are `sotw.rs` and `delta.rs`) that tracks, per type URL, what the Envoy subscribes to and what it holds (name ->
//! version), and decides what to send next:
//!
//! * Push order CDS, EDS, LDS, SRDS, RDS, SDS with at most one outstanding (un-acked) response
//!   per connection: the next type is sent only once the previous response was ACKed or NACKed.
//!   One exception: EDS may be sent while CDS is outstanding, because an initialized Envoy (also
//!   one that reconnects) does not ACK a CDS response until its new EDS clusters have warmed, i.e.
//!   received their load assignments (xDS protocol, "Resource warming"); waiting for that ACK
//!   would deadlock. Likewise RDS may be sent while SRDS (scoped route layout) is outstanding:
//!   new scopes warm on their RouteConfigurations.
//! * EDS goes out right after every CDS response, in the same batch, and carries the assignment
//!   of every EDS cluster that response updated even when the assignment is unchanged: Envoy
//!   replaces an updated cluster by a new one that warms until its assignment arrives again, and
//!   neither a SotW nor a Delta Envoy whose subscriptions did not change asks for it. Without it
//!   the cluster warms forever and, since Envoy holds the CDS ACK meanwhile, the gateway takes no
//!   further config. A Delta Envoy subscribing again to a name it holds gets it again.
//! * A SotW response for a by-name type (EDS, RDS, SDS) that would only leave resources out is not
//!   sent: the Envoy drops those by unsubscribing, and an Envoy that watches nothing of the type
//!   any more (its EDS clusters became DNS clusters) accepts it without an ACK, which would stall
//!   the push sequence.
//! * Make before break: clusters and cluster load assignments the Envoy holds that are absent from
//!   a new snapshot are retained (kept in SotW sets, not listed as removed in Delta) until the
//!   listeners, scopes and routes of that snapshot are ACKed; a final CDS/EDS push then removes them.
//! * Unchanged types are not resent; a NACKed set of versions is not resent until it changes.
//! * Type URLs we do not serve get one empty response per subscription, never an error.
//!
//! * Bounded per client ([`crate::xds::limits::Limits`]): at most `max_type_urls` distinct type
//!   URLs, each at most `max_type_url_bytes` long, and at most `max_resource_names` subscribed
//!   names (`max_resource_name_bytes` bytes) per stream; an input past one returns
//!   [`Step::refused`] and the stream is ended. NACK messages are kept truncated.
//!
//! The connection holds only the target `Arc<Snapshot>`, the retained removals (Arcs), and per
//! type: the subscription (`names.rs`: the keys of the snapshot's map of the type, plus the
//! names added and lacking), what the Envoy holds (`held.rs`: once it ACKed a response built
//! from a snapshot's map, that map itself; name -> version only after a NACK, a reconnect, or
//! with retained removals), nonces and counters. A synced idle stream so holds no copy of any
//! name or version of its snapshot.
//! * SotW EDS and RDS responses carry only the resources that changed (Envoy hands such a
//!   response to the watch of each resource it names and leaves the others as they are).
//!
//! Each input returns a [`Step`]: the responses to send and the [`Event`]s it caused (ACK,
//! NACK, converged), which the server reports to its observers (`super::observe`). The machine
//! logs nothing about them itself.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::xds::limits::LimitExceeded;
use crate::xds::resource::{pair_hash, CLUSTER, LISTENER, PUSH_ORDER, SCOPED_ROUTE};

mod core;
mod delta;
mod diffs;
mod held;
mod names;
mod on_demand;
mod resend;
mod retain;
mod sotw;
mod sync;
mod wire;

pub use delta::DeltaConnection;
pub use diffs::SharedDiffs;
pub use sotw::SotwConnection;
pub use wire::Wire;

/// Types that are wildcard when a SotW request names nothing (legacy wildcard). Envoy
/// subscribes to scoped route configurations without names too (all scopes of the stream).
fn sotw_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER || type_url == SCOPED_ROUTE
}

/// Whether we serve this type URL.
pub fn is_served(type_url: &str) -> bool {
    PUSH_ORDER.contains(&type_url)
}

/// The sum (mod 2^64) of the pair hashes of a set: order-independent, so a change of one pair
/// updates it in O(1).
fn set_sum<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    pairs
        .into_iter()
        .fold(0u64, |acc, (n, v)| acc.wrapping_add(pair_hash(n, v)))
}

fn sum_version(sum: u64) -> String {
    format!("{sum:016x}")
}

/// Deterministic version string for a set of resources: the sum of a hash of each
/// `name:version` pair (so it can be updated per changed pair).
pub fn set_version<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    sum_version(set_sum(pairs))
}

/// Which ADS flavour a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sotw,
    Delta,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        }
    }
}

/// How many subscribed names a [`TypeStatus`] lists (it is copied after every event of a stream,
/// and an Envoy may subscribe to one load assignment per cluster).
pub const SUBSCRIBED_SHOWN: usize = 16;

/// Debug/metrics view of one connection (cheap to build, serializable).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnStatus {
    pub mode: Mode,
    /// Generation of the snapshot this connection is converging to.
    pub target_generation: u64,
    /// Latest generation this Envoy has fully ACKed: every type it subscribes to holds exactly what
    /// that snapshot says (removals included). `None` until the first time that happens.
    pub acked_generation: Option<u64>,
    /// The un-acked response of the push sequence, if any.
    pub outstanding: Option<Outstanding>,
    /// Clusters / load assignments kept for make-before-break, not yet removed.
    pub retained_removals: usize,
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outstanding {
    pub type_url: String,
    pub nonce: String,
}

/// Per type URL status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeStatus {
    pub served: bool,
    pub wildcard: bool,
    /// How many names are subscribed explicitly (besides the wildcard).
    pub subscribed_count: usize,
    /// The first [`SUBSCRIBED_SHOWN`] of them, in name order.
    pub subscribed: Vec<String>,
    /// The revision of the subscription `subscribed` was copied from.
    #[serde(skip)]
    pub(crate) subscribed_rev: Option<u64>,
    /// Number of resources the Envoy holds as far as we know.
    pub resources_held: usize,
    /// Whether the Envoy holds exactly what the target snapshot says for this type.
    pub in_sync: bool,
    pub last_sent_version: Option<String>,
    pub last_sent_nonce: Option<String>,
    pub last_acked_version: Option<String>,
    pub last_acked_nonce: Option<String>,
    pub last_nack: Option<NackStatus>,
    /// The type's state in `istioctl proxy-status` terms ([`SyncState`]).
    pub state: SyncState,
    pub responses_sent: u64,
    pub acks: u64,
    pub nacks: u64,
    pub stale_requests: u64,
    /// Sum of the encoded lengths of the responses sent for this type.
    pub bytes_sent: u64,
}

/// Where one type of a connection stands, as `proxy-status` shows it (istioctl's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SyncState {
    /// The Envoy ACKed the latest response sent, and holds exactly what the connection's
    /// target snapshot says for this type (ACKed version = sent version = target).
    #[serde(rename = "SYNCED")]
    Synced,
    /// A response was sent and not ACKed yet, or the Envoy's ACKed state is behind the target
    /// (a newer snapshot is not sent yet).
    #[serde(rename = "STALE")]
    Stale,
    /// The Envoy asked for the type but no response of it was sent yet.
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// The latest response of the type the Envoy answered was NACKed, and no later one ACKed.
    #[serde(rename = "NACKED")]
    Nacked,
}

impl SyncState {
    /// The one rule (see the variants): from what was last sent, ACKed and NACKed. Nonces are
    /// this connection's counter (`Core::next_nonce`), so a later response has a larger one.
    pub(super) fn of(
        last_sent_nonce: Option<&str>,
        last_acked_nonce: Option<&str>,
        last_nack: Option<&NackStatus>,
        in_sync: bool,
    ) -> SyncState {
        let seq = |n: &str| n.parse::<u64>().unwrap_or(0);
        let Some(sent) = last_sent_nonce else {
            return SyncState::NotSent;
        };
        if let Some(nack) = last_nack {
            if last_acked_nonce.is_none_or(|a| seq(&nack.nonce) > seq(a)) {
                return SyncState::Nacked;
            }
        }
        if in_sync && last_acked_nonce == Some(sent) {
            SyncState::Synced
        } else {
            SyncState::Stale
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NackStatus {
    pub nonce: String,
    pub version: String,
    pub message: String,
    /// Names of the resources the NACKed response added, changed or removed.
    pub resources: Vec<String>,
}

impl core::Core {
    /// The debug/metrics view of the connection.
    pub(super) fn status(&self) -> ConnStatus {
        let mut status = ConnStatus {
            mode: self.mode,
            target_generation: 0,
            acked_generation: None,
            outstanding: None,
            retained_removals: 0,
            types: BTreeMap::new(),
        };
        self.status_into(&mut status);
        status
    }

    /// [`Core::status`] written over `out` (this connection's previous status), reusing its
    /// strings: the stream's task does this after every input, so building a new status and
    /// dropping the old one (nonces, versions, subscribed names of every type) would be most
    /// of what a push costs the server.
    pub(super) fn status_into(&self, out: &mut ConnStatus) {
        out.mode = self.mode;
        out.target_generation = self.target.generation;
        out.acked_generation = self.acked_generation;
        match (self.pending.values().next(), &mut out.outstanding) {
            (Some(p), Some(o)) => {
                o.type_url.clear();
                o.type_url.push_str(p.type_url);
                o.nonce.clone_from(&p.nonce);
            }
            (Some(p), None) => {
                out.outstanding = Some(Outstanding {
                    type_url: p.type_url.to_string(),
                    nonce: p.nonce.clone(),
                })
            }
            (None, _) => out.outstanding = None,
        }
        out.retained_removals = self.retained_count();
        out.types.retain(|t, _| self.types.contains_key(t));
        for (t, st) in &self.types {
            let in_sync = if st.served { self.in_sync(t) } else { true };
            let ts = match out.types.get_mut(t) {
                Some(ts) => ts,
                None => out.types.entry(t.clone()).or_insert_with(|| TypeStatus {
                    served: false,
                    wildcard: false,
                    subscribed_count: 0,
                    subscribed: Vec::new(),
                    subscribed_rev: None,
                    resources_held: 0,
                    in_sync: false,
                    last_sent_version: None,
                    last_sent_nonce: None,
                    last_acked_version: None,
                    last_acked_nonce: None,
                    last_nack: None,
                    state: SyncState::NotSent,
                    responses_sent: 0,
                    acks: 0,
                    nacks: 0,
                    stale_requests: 0,
                    bytes_sent: 0,
                }),
            };
            ts.served = st.served;
            ts.wildcard = st.sub.wildcard;
            ts.subscribed_count = st.sub.names.len();
            // Copied only when the subscription changed since the last copy (after most
            // inputs it did not, and this copy was most of what a status costs).
            if ts.subscribed_rev != Some(st.sub_rev) {
                let mut shown = 0;
                for name in st.sub.names.iter().take(SUBSCRIBED_SHOWN) {
                    match ts.subscribed.get_mut(shown) {
                        Some(s) => s.clone_from(name),
                        None => ts.subscribed.push(name.clone()),
                    }
                    shown += 1;
                }
                ts.subscribed.truncate(shown);
                ts.subscribed_rev = Some(st.sub_rev);
            }
            ts.resources_held = st.held.len();
            ts.in_sync = in_sync;
            ts.last_sent_version.clone_from(&st.last_version);
            ts.last_sent_nonce.clone_from(&st.last_nonce);
            ts.last_acked_version.clone_from(&st.last_acked_version);
            ts.last_acked_nonce.clone_from(&st.last_acked_nonce);
            if ts.last_nack != st.last_nack {
                ts.last_nack.clone_from(&st.last_nack);
            }
            ts.state = SyncState::of(
                st.last_nonce.as_deref(),
                st.last_acked_nonce.as_deref(),
                st.last_nack.as_ref(),
                in_sync,
            );
            ts.responses_sent = st.responses;
            ts.acks = st.acks;
            ts.nacks = st.nacks;
            ts.stale_requests = st.stale;
            ts.bytes_sent = st.bytes;
        }
    }
}

/// Something an input to the machine caused that observers want to know (metrics, logs).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The Envoy ACKed the response with this version, built from the snapshot of this
    /// generation.
    Ack {
        type_url: String,
        version: String,
        generation: u64,
    },
    /// The Envoy NACKed a response built from the snapshot of this generation.
    Nack {
        type_url: String,
        nack: NackStatus,
        generation: u64,
    },
    /// The Envoy now holds everything this generation's snapshot says, every type ACKed.
    Converged { generation: u64 },
}

/// What one input (a request or a new snapshot) produced: the responses to send, in order,
/// and the events.
#[derive(Debug)]
#[must_use]
pub struct Step<R> {
    pub responses: Vec<R>,
    pub events: Vec<Event>,
    /// The input went past a limit of the stream ([`crate::xds::limits`]): send `responses`,
    /// then end the stream with this.
    pub refused: Option<LimitExceeded>,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sync_state_tests {
    use super::{NackStatus, SyncState};

    fn nack(nonce: &str) -> NackStatus {
        NackStatus {
            nonce: nonce.into(),
            version: "v".into(),
            message: "rejected".into(),
            resources: vec![],
        }
    }

    #[test]
    fn each_state_from_sent_acked_and_nacked() {
        assert_eq!(SyncState::of(None, None, None, true), SyncState::NotSent);
        assert_eq!(
            SyncState::of(Some("3"), None, None, false),
            SyncState::Stale
        );
        assert_eq!(
            SyncState::of(Some("3"), Some("3"), None, true),
            SyncState::Synced
        );
        // ACKed the latest, but a newer target is not sent yet.
        assert_eq!(
            SyncState::of(Some("3"), Some("3"), None, false),
            SyncState::Stale
        );
        // Sent 4, 3 still the last ACKed.
        assert_eq!(
            SyncState::of(Some("4"), Some("3"), None, true),
            SyncState::Stale
        );
        let n = nack("9");
        assert_eq!(
            SyncState::of(Some("9"), Some("3"), Some(&n), true),
            SyncState::Nacked
        );
        assert_eq!(
            SyncState::of(Some("9"), None, Some(&n), true),
            SyncState::Nacked
        );
        // A later response ACKed: no longer NACKED (numeric, not string, order: 10 > 9).
        assert_eq!(
            SyncState::of(Some("10"), Some("10"), Some(&n), true),
            SyncState::Synced
        );
        assert_eq!(
            serde_json::to_value(SyncState::NotSent).unwrap(),
            serde_json::json!("NOT SENT")
        );
    }
}
