//! What the ADS shell tells the rest of the process about its streams (as go-control-plane's
//! `Callbacks`): the server reports every push, ACK, NACK and convergence to a list of
//! [`StreamObserver`]s and imports none of them. Metrics (`runtime::metrics`) and logs
//! ([`LogObserver`]) implement it. The events come from the connection machine
//! ([`super::conn::Event`]); the server only adds what needs a clock (push and convergence
//! times). Observers are called on the stream's task, inside its `ads` span (node, connection).

use std::sync::Arc;
use std::time::Duration;

use super::conn::NackStatus;
use super::resource::type_short;

/// One response handed to a stream.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub type_url: &'a str,
    pub resources: usize,
    /// Names removed (Delta only).
    pub removed: usize,
    pub version: &'a str,
    pub nonce: &'a str,
    /// Encoded length of the response.
    pub bytes: usize,
    /// From the event that caused the response (a request or a new snapshot) to the response
    /// being handed to the stream.
    pub push_time: Duration,
}

/// Receives the events of every ADS stream. Every method has an empty default.
pub trait StreamObserver: Send + Sync + 'static {
    /// A response was handed to the stream (called inside the response's `push` span).
    fn pushed(&self, _push: &Push<'_>) {}
    /// The Envoy ACKed the response of this type with this version.
    fn acked(&self, _type_url: &str, _version: &str) {}
    /// The Envoy NACKed a response of this type.
    fn nacked(&self, _type_url: &str, _nack: &NackStatus) {}
    /// The Envoy holds every type of `generation`; `elapsed` is measured from when the source
    /// started making that generation (or the connection, if later).
    fn converged(&self, _generation: u64, _elapsed: Duration) {}
    /// A stream was refused: its caller did not authenticate, or claimed a node that is not its
    /// own (`reason`: a short code such as `node_mismatch`). The server logs it itself.
    fn auth_failed(&self, _reason: &str) {}
    /// A secret was left out of what a stream's caller receives (`reason`: why), once per
    /// secret per stream. The server logs it itself.
    fn secret_denied(&self, _reason: &str) {}
}

/// The observers of a server, called in order.
pub type Observers = Vec<Arc<dyn StreamObserver>>;

/// Logs stream events: pushes at INFO, ACKs at DEBUG, NACKs once at WARN with Envoy's message,
/// convergence at INFO.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogObserver;

impl StreamObserver for LogObserver {
    fn pushed(&self, p: &Push<'_>) {
        tracing::info!(
            type_url = p.type_url,
            resources = p.resources,
            removed = p.removed,
            bytes = p.bytes,
            "xDS push"
        );
    }

    fn acked(&self, type_url: &str, version: &str) {
        tracing::debug!(xds_type = type_short(type_url), version, "ACK");
    }

    fn nacked(&self, type_url: &str, n: &NackStatus) {
        tracing::warn!(
            xds_type = type_short(type_url),
            version = n.version.as_str(),
            nonce = n.nonce.as_str(),
            resources = ?n.resources,
            error = n.message.as_str(),
            "NACK: Envoy rejected the config"
        );
    }

    fn converged(&self, generation: u64, elapsed: Duration) {
        tracing::info!(
            generation,
            elapsed_ms = elapsed.as_millis() as u64,
            "converged: every type ACKed"
        );
    }
}
