//! xDS serving: versioned resources and snapshots (`resource`, the leaf every other stage may
//! import), the I/O-free ADS connection state machine (`conn`), the observer interface stream
//! events are reported through (`observe`), and the tonic service that is a thin shell around
//! the machine (`server`). `dump` renders a snapshot as Envoy's admin `/config_dump`.

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod auth;
pub mod conn;
pub mod dump;
pub mod encoder;
pub mod grpc;
pub mod limits;
pub mod observe;
pub mod registry;
pub mod resource;
pub mod server;
mod stream;
mod waiting;

pub use resource::{
    Resource, ResourceMap, Snapshot, TypeUrl, CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE,
    SCOPED_ROUTE, SECRET,
};

/// Who is asking: parsed from the Envoy node (Istio node id `router~ip~pod.ns~ns.svc.cluster.local`
/// and metadata `LABELS` / `NAMESPACE`, or a plain node id with `LABELS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyIdentity {
    pub id: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ProxyIdentity {
    /// The node id for log lines and span fields: truncated (a client chooses its length).
    pub fn log_id(&self) -> std::borrow::Cow<'_, str> {
        limits::for_log(&self.id)
    }
}

/// Why a stream gets no snapshot channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// This proxy's config is not translated yet: the first full load, or (a gateway of the
    /// first load) its own translation of it, is not complete (`UNAVAILABLE` if it does not
    /// become servable within [`limits::Limits::not_ready_wait`]).
    #[error("not ready: initial load not translated yet")]
    NotReady,
    /// Every label-set slot is used by a connected Envoy (`RESOURCE_EXHAUSTED`).
    #[error(
        "this node's proxy labels would be a new label set, and the {limit} label sets allowed \
         (--xds-max-label-sets) are all in use by connected Envoys"
    )]
    TooManyLabelSets { limit: usize },
}

/// Where connections get their config from. Implemented by the runtime over the xDS cache.
pub trait ConfigSource: Send + Sync + 'static {
    /// The live snapshot channel for this proxy; [`SubscribeError::NotReady`] while this
    /// proxy's config is not translated yet (the stream then waits for [`Self::readiness`]),
    /// or a limit that refuses this proxy.
    fn subscribe(
        &self,
        proxy: &ProxyIdentity,
    ) -> Result<tokio::sync::watch::Receiver<Arc<Snapshot>>, SubscribeError>;

    /// A channel whose value changes whenever a proxy refused [`SubscribeError::NotReady`]
    /// may have become servable (a gateway of the first load translated, the whole load
    /// complete). A stream arriving before its config exists is held open on it, up to
    /// [`limits::Limits::not_ready_wait`], and started as soon as [`Self::subscribe`]
    /// answers, instead of being answered `Unavailable` (which makes Envoy back off, 0.5 s
    /// and doubling). `None` (the default): such a stream is answered `Unavailable` at once.
    fn readiness(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The Gateways (`ns/name`) whose config this proxy's snapshot holds (for the rule that an
    /// identity only receives the Gateways it may be). Empty when unknown (the default).
    fn gateways(&self, _proxy: &ProxyIdentity) -> Vec<String> {
        Vec::new()
    }

    /// When the source started making `generation` (it saw the change that led to it), for the
    /// convergence time metric. `None` when unknown (the default).
    fn generation_time(&self, _generation: u64) -> Option<std::time::Instant> {
        None
    }

    /// An Envoy of this proxy ACKed the response of `type_url` built from the snapshot of
    /// `generation` (so it accepts what that snapshot holds of the type). Ignored by default.
    fn acked(&self, _proxy: &ProxyIdentity, _type_url: &str, _generation: u64) {}

    /// An Envoy of this proxy NACKed the response of `type_url` built from the snapshot of
    /// `generation`: `nack` names the resources the response carried and has Envoy's message.
    /// The source may change what it serves this proxy in answer (the hub quarantines the
    /// objects behind them). Ignored by default.
    fn nacked(
        &self,
        _proxy: &ProxyIdentity,
        _type_url: &str,
        _generation: u64,
        _nack: &conn::NackStatus,
    ) {
    }
}
