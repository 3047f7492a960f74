//! A stream that arrives before its proxy's config exists (at start) is held open until it
//! does, rather than answered `Unavailable` (Envoy would back off 0.5 s, doubling).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;

use super::{ConfigSource, ProxyIdentity, Snapshot, SubscribeError};

/// The proxy's snapshot channel. While its config is not translated yet
/// ([`SubscribeError::NotReady`]: at start) the stream is held open (its first request kept by
/// the caller) and subscribed again each time the source's [`ConfigSource::readiness`]
/// changes, so it starts with the full config as soon as that exists (never an empty or a
/// partial one: the source answers only then). After `wait`, or at shutdown, it is answered
/// `Unavailable`, as a source without readiness (or `wait` zero) answers at once. A waiting
/// stream holds its task and its first request, for `wait` at most.
pub(super) async fn subscribe_when_ready<S: ConfigSource + ?Sized>(
    source: &S,
    proxy: &ProxyIdentity,
    wait: Duration,
    mut shutdown: Option<watch::Receiver<bool>>,
) -> Result<watch::Receiver<Arc<Snapshot>>, Status> {
    let deadline = tokio::time::Instant::now() + wait;
    // Taken before subscribing, so a change between the two is not missed.
    let mut readiness = source.readiness().filter(|_| !wait.is_zero());
    let mut waited = false;
    loop {
        if let Some(r) = readiness.as_mut() {
            r.borrow_and_update();
        }
        let e = match source.subscribe(proxy) {
            Ok(snaps) => {
                if waited {
                    tracing::info!(node = %proxy.log_id(), "ADS stream: its config is translated, starting");
                }
                return Ok(snaps);
            }
            Err(e @ SubscribeError::TooManyLabelSets { .. }) => {
                tracing::warn!(node = %proxy.log_id(), labels = ?proxy.labels, error = %e, "ADS stream refused: too many proxy label sets");
                return Err(Status::resource_exhausted(e.to_string()));
            }
            Err(e @ SubscribeError::NotReady) => e,
        };
        let Some(r) = readiness.as_mut() else {
            tracing::info!(node = %proxy.log_id(), "ADS stream refused: not ready");
            return Err(Status::unavailable(e.to_string()));
        };
        if !waited {
            tracing::info!(node = %proxy.log_id(), ?wait, "ADS stream waits: its config is not translated yet");
            waited = true;
        }
        let ended = tokio::select! {
            changed = tokio::time::timeout_at(deadline, r.changed()) => match changed {
                Ok(Ok(())) => None,
                Ok(Err(_)) => Some("the source stopped"),
                Err(_) => Some("not translated within --xds-not-ready-wait"),
            },
            _ = shutdown_requested(&mut shutdown) => Some("shutting down"),
        };
        if let Some(why) = ended {
            tracing::info!(node = %proxy.log_id(), why, "ADS stream refused: not ready");
            return Err(Status::unavailable(format!("{e} ({why})")));
        }
    }
}

/// Resolves when shutdown is requested (never without a shutdown channel).
pub(super) async fn shutdown_requested(rx: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = rx {
        if rx.wait_for(|v| *v).await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await
}
