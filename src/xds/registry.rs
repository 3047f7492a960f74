//! The live ADS streams, as the debug endpoints, metrics and the status writer read them: one
//! [`ConnectionInfo`] per stream, removed when the stream ends ([`RegistryEntry`] is dropped).
//!
//! A stream's status and snapshot are read from its connection machine when the registry is
//! read ([`Live`]: the machine, shared with the stream's task, which locks it for each input),
//! not copied into the registry after every input: a change reaching 10,000 streams then costs
//! no status copy, and a reader sees the state of the moment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;

use super::auth::{Caller, DenyReason};
use super::conn::{ConnStatus, Mode};
use super::{ProxyIdentity, Snapshot};

/// A live stream's state, as the registry reads it (its connection machine).
pub(super) trait Live: Send + Sync {
    fn status(&self) -> ConnStatus;
    fn acked_generation(&self) -> Option<u64>;
    /// The snapshot the stream serves (after its caller's secret filter).
    fn snapshot(&self) -> Arc<Snapshot>;
}

/// The machine behind `m`, also when a thread panicked holding it (the machine's state is then
/// the last one written: a stream's status is still worth reading).
pub(super) fn machine<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the registry keeps of a stream: all of [`ConnectionInfo`] but what is read from the
/// machine.
struct Stored {
    node_id: String,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    mode: &'static str,
    connected_since: u64,
    last_nack_at: BTreeMap<String, u64>,
    identity: Option<String>,
    denied_secrets: BTreeMap<String, DenyReason>,
    live: Arc<dyn Live>,
}

impl Stored {
    fn read(&self, conn_id: u64) -> ConnectionInfo {
        ConnectionInfo {
            conn_id,
            node_id: self.node_id.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            mode: self.mode,
            connected_since: self.connected_since,
            status: self.live.status(),
            last_nack_at: self.last_nack_at.clone(),
            identity: self.identity.clone(),
            denied_secrets: self.denied_secrets.clone(),
            snapshot: self.live.snapshot(),
        }
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("node_id", &self.node_id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// One live ADS stream, as listed by the debug endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionInfo {
    pub conn_id: u64,
    pub node_id: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// "sotw" or "delta".
    pub mode: &'static str,
    /// Unix seconds.
    pub connected_since: u64,
    pub status: ConnStatus,
    /// Per type URL: when (Unix seconds) this Envoy last NACKed a response of that type.
    pub last_nack_at: BTreeMap<String, u64>,
    /// The authenticated identity (SPIFFE URI), `None` for an anonymous (plaintext) caller.
    pub identity: Option<String>,
    /// Secrets of the snapshot this caller was not sent, with the reason.
    pub denied_secrets: BTreeMap<String, DenyReason>,
    /// The snapshot this connection is serving (what the Envoy is sent; see `status` for what
    /// it has ACKed).
    #[serde(skip)]
    pub snapshot: Arc<Snapshot>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// All live ADS streams.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    next_id: AtomicU64,
    conns: DashMap<u64, Stored>,
}

impl ConnectionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live connection, sorted by connection id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self.conns.iter().map(|e| e.read(*e.key())).collect();
        v.sort_by_key(|c| c.conn_id);
        v
    }

    pub fn get(&self, conn_id: u64) -> Option<ConnectionInfo> {
        self.conns.get(&conn_id).map(|e| e.read(conn_id))
    }

    /// Whether every live connection has fully ACKed `generation` (or a later one). True when
    /// there are no connections.
    pub fn all_acked(&self, generation: u64) -> bool {
        self.conns
            .iter()
            .all(|e| e.live.acked_generation().is_some_and(|g| g >= generation))
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub(super) fn register(
        self: &Arc<Self>,
        proxy: &ProxyIdentity,
        caller: &Caller,
        mode: Mode,
        live: Arc<dyn Live>,
    ) -> RegistryEntry {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.conns.insert(
            conn_id,
            Stored {
                node_id: proxy.id.clone(),
                namespace: proxy.namespace.clone(),
                labels: proxy.labels.clone(),
                mode: mode.as_str(),
                connected_since: unix_now(),
                last_nack_at: BTreeMap::new(),
                identity: caller.identity().map(|i| i.spiffe_uri()),
                denied_secrets: BTreeMap::new(),
                live,
            },
        );
        RegistryEntry {
            registry: Arc::clone(self),
            conn_id,
        }
    }
}

/// A connection's registry entry; removed when dropped (the stream task ends).
pub(super) struct RegistryEntry {
    registry: Arc<ConnectionRegistry>,
    pub(super) conn_id: u64,
}

impl RegistryEntry {
    pub(super) fn record_denied(&self, denied: &BTreeMap<String, DenyReason>) {
        if let Some(mut e) = self.registry.conns.get_mut(&self.conn_id) {
            e.denied_secrets = denied.clone();
        }
    }

    pub(super) fn record_nack(&self, type_url: &str) {
        if let Some(mut e) = self.registry.conns.get_mut(&self.conn_id) {
            e.last_nack_at.insert(type_url.to_string(), unix_now());
        }
    }
}

impl Drop for RegistryEntry {
    fn drop(&mut self) {
        self.registry.conns.remove(&self.conn_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::conn::DeltaConnection;
    use crate::xds::CLUSTER;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

    #[test]
    fn a_stream_is_listed_with_its_machines_state_of_the_moment_until_it_ends() {
        let registry = Arc::new(ConnectionRegistry::new());
        let first = Arc::new(Snapshot {
            generation: 1,
            ..Default::default()
        });
        let conn = Arc::new(Mutex::new(DeltaConnection::new(first.clone())));
        let proxy = ProxyIdentity {
            id: "gw-1".to_string(),
            ..Default::default()
        };
        let entry = registry.register(&proxy, &Caller::Anonymous, Mode::Delta, conn.clone());
        let listed = registry.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].node_id.as_str(), listed[0].mode),
            ("gw-1", "delta")
        );
        assert!(listed[0].status.types.is_empty());
        assert!(Arc::ptr_eq(&listed[0].snapshot, &first));
        // What the stream's loop does to its machine shows at the next read, nothing copied.
        let _ = machine(&conn).on_request(DeltaDiscoveryRequest {
            type_url: CLUSTER.to_string(),
            ..Default::default()
        });
        let second = Arc::new(Snapshot {
            generation: 2,
            ..Default::default()
        });
        let _ = machine(&conn).on_snapshot(second.clone());
        let now = registry.get(entry.conn_id).expect("listed");
        assert!(now.status.types.contains_key(CLUSTER), "{:?}", now.status);
        assert_eq!(now.status.target_generation, 2);
        assert!(Arc::ptr_eq(&now.snapshot, &second));
        assert!(!registry.all_acked(2), "the CDS response is not ACKed");
        drop(entry);
        assert!(registry.is_empty());
        assert!(registry.all_acked(2));
    }
}
