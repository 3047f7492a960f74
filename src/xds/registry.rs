//! The live ADS streams, as the debug endpoints, metrics and the status writer read them: one
//! [`ConnectionInfo`] per stream, updated by the stream's task after every handled event and
//! removed when the task ends ([`RegistryEntry`] is dropped).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;

use super::auth::{Caller, DenyReason};
use super::conn::ConnStatus;
use super::{ProxyIdentity, Snapshot};

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

/// All live ADS streams, updated by each stream after every handled event.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    next_id: AtomicU64,
    conns: DashMap<u64, ConnectionInfo>,
}

impl ConnectionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live connection, sorted by connection id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self.conns.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|c| c.conn_id);
        v
    }

    pub fn get(&self, conn_id: u64) -> Option<ConnectionInfo> {
        self.conns.get(&conn_id).map(|e| e.value().clone())
    }

    /// Whether every live connection has fully ACKed `generation` (or a later one). True when
    /// there are no connections.
    pub fn all_acked(&self, generation: u64) -> bool {
        self.conns
            .iter()
            .all(|e| e.status.acked_generation.is_some_and(|g| g >= generation))
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
        status: ConnStatus,
        snapshot: Arc<Snapshot>,
    ) -> RegistryEntry {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connected_since = unix_now();
        self.conns.insert(
            conn_id,
            ConnectionInfo {
                conn_id,
                node_id: proxy.id.clone(),
                namespace: proxy.namespace.clone(),
                labels: proxy.labels.clone(),
                mode: status.mode.as_str(),
                connected_since,
                status,
                last_nack_at: BTreeMap::new(),
                identity: caller.identity().map(|i| i.spiffe_uri()),
                denied_secrets: BTreeMap::new(),
                snapshot,
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
    /// Brings the entry's status up to date in place (`write` is given the current one).
    pub(super) fn update(&self, write: impl FnOnce(&mut ConnStatus)) {
        if let Some(mut e) = self.registry.conns.get_mut(&self.conn_id) {
            write(&mut e.status);
        }
    }

    pub(super) fn set_snapshot(&self, snapshot: Arc<Snapshot>) {
        if let Some(mut e) = self.registry.conns.get_mut(&self.conn_id) {
            e.snapshot = snapshot;
        }
    }

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
