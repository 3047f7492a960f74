//! One ADS stream's loop ([`drive`]: requests and snapshots into the connection machine, its
//! responses out, events to the observers and the registry) and the response stream that runs
//! it ([`Driven`]).
//!
//! The loop is not a task of its own: the response body polls it ([`Driven`]), so a snapshot
//! change wakes one task per stream (hyper's, which writes the body into the HTTP/2 stream)
//! instead of two (the loop's, then hyper's through a channel). The loop still hands each
//! response through a one-slot channel, now inside that task: a client that does not read
//! holds at most that response and the one being written, and the loop, not polled while
//! hyper waits for the client's flow-control window, takes only the latest snapshot once it
//! is (`watch`: latest value only).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::Status;
use tracing::Instrument;

use super::auth::policy::foreign_gateway;
use super::auth::policy::GatewayAllowList;
use super::auth::{DenyReason, SecretFilter};
use super::conn::{ConnStatus, DeltaConnection, Event, SharedDiffs, SotwConnection, Step, Wire};
use super::limits::{request_bound, Limits, RequestLimit};
use super::observe::{Observers, Push, StreamObserver};
use super::registry::{machine, Live, RegistryEntry};
use super::resource::type_short;
use super::server::{gateway_denied, receive_error, Incoming};
use super::waiting::shutdown_requested;
use super::{ConfigSource, ProxyIdentity, Snapshot};

/// What the stream driver needs from a state machine (SotW or Delta).
pub(super) trait Machine: Send + 'static {
    type Req: Message + Default + Send + 'static;
    fn new(snap: Arc<Snapshot>, limits: Limits, diffs: Arc<SharedDiffs>) -> Self;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn on_request(&mut self, req: Self::Req) -> Step<Wire>;
    fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Step<Wire>;
    fn status(&self) -> ConnStatus;
    fn acked_generation(&self) -> Option<u64>;
    fn target(&self) -> &Arc<Snapshot>;
}

/// The registry reads a stream's state from its machine (`registry.rs`).
impl<M: Machine> Live for Mutex<M> {
    fn status(&self) -> ConnStatus {
        machine(self).status()
    }
    fn acked_generation(&self) -> Option<u64> {
        machine(self).acked_generation()
    }
    fn snapshot(&self) -> Arc<Snapshot> {
        machine(self).target().clone()
    }
}

impl Machine for SotwConnection {
    type Req = DiscoveryRequest;
    fn new(snap: Arc<Snapshot>, limits: Limits, diffs: Arc<SharedDiffs>) -> Self {
        SotwConnection::shared(snap, limits, diffs)
    }
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(&mut self, req: DiscoveryRequest) -> Step<Wire> {
        self.on_request_wire(req)
    }
    fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Step<Wire> {
        self.on_snapshot_wire(snap)
    }
    fn status(&self) -> ConnStatus {
        SotwConnection::status(self)
    }
    fn acked_generation(&self) -> Option<u64> {
        SotwConnection::acked_generation(self)
    }
    fn target(&self) -> &Arc<Snapshot> {
        SotwConnection::target(self)
    }
}

impl Machine for DeltaConnection {
    type Req = DeltaDiscoveryRequest;
    fn new(snap: Arc<Snapshot>, limits: Limits, diffs: Arc<SharedDiffs>) -> Self {
        DeltaConnection::shared(snap, limits, diffs)
    }
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Step<Wire> {
        self.on_request_wire(req)
    }
    fn on_snapshot(&mut self, snap: Arc<Snapshot>) -> Step<Wire> {
        self.on_snapshot_wire(snap)
    }
    fn status(&self) -> ConnStatus {
        DeltaConnection::status(self)
    }
    fn acked_generation(&self) -> Option<u64> {
        DeltaConnection::acked_generation(self)
    }
    fn target(&self) -> &Arc<Snapshot> {
        DeltaConnection::target(self)
    }
}

/// Secrets denied for the first time on a stream: one WARN line naming them, the metric, and
/// the registry (debug endpoints).
pub(super) fn report_denials(
    new: &[(String, DenyReason)],
    filter: &SecretFilter,
    observers: &Observers,
    entry: &RegistryEntry,
    span: &tracing::Span,
) {
    if new.is_empty() {
        return;
    }
    for (_, reason) in new {
        for o in observers {
            o.secret_denied(reason.as_str());
        }
    }
    let denied: Vec<String> = new
        .iter()
        .map(|(n, r)| format!("{n} ({})", r.as_str()))
        .collect();
    span.in_scope(|| {
        tracing::warn!(
            identity = %filter.caller().describe(),
            secrets = ?denied,
            "SDS: secrets not sent to this caller (connect over the TLS port with an identity of the secret's namespace whose service account may list secrets there)"
        )
    });
    entry.record_denied(filter.denied());
}

/// Forward responses to the client; false when it has gone away or shutdown was requested while
/// waiting for it to read. Each response is sent in a `push` span and reported to the observers
/// once the stream has room for it (its slot reserved: handing it over cannot fail then), with
/// its push time measured from `event_at` (when the request or snapshot that caused it
/// arrived); the report borrows the response, so nothing of it is copied per stream.
async fn forward<S: ConfigSource, M: Machine>(
    tx: &mpsc::Sender<Result<Wire, Status>>,
    out: Vec<Wire>,
    shutdown: &mut Option<watch::Receiver<bool>>,
    reporter: &Reporter<S>,
    event_at: Instant,
) -> bool {
    for resp in out {
        let span = tracing::info_span!(
            "push",
            xds_type = type_short(&resp.type_url),
            version = resp.version.as_str(),
            nonce = resp.nonce.as_str()
        );
        let permit = tokio::select! {
            permit = tx.reserve().instrument(span.clone()) => match permit {
                Ok(permit) => permit,
                Err(_) => return false,
            },
            _ = shutdown_requested(shutdown) => return false,
        };
        let push = Push {
            type_url: &resp.type_url,
            resources: resp.resources.len(),
            removed: resp.removed.len(),
            version: &resp.version,
            nonce: &resp.nonce,
            bytes: resp.encoded_len(),
            push_time: event_at.elapsed(),
        };
        span.in_scope(|| reporter.each(|o| o.pushed(&push)));
        permit.send(Ok(resp));
    }
    true
}

/// Ends the stream with the limit an input went past, if any (true when it did).
async fn refuse<M: Machine>(
    tx: &mpsc::Sender<Result<Wire, Status>>,
    refused: Option<super::limits::LimitExceeded>,
) -> bool {
    let Some(e) = refused else {
        return false;
    };
    tracing::warn!(error = %e, "ADS stream ended: a per-stream limit was exceeded");
    let _ = tx.send(Err(e.status())).await;
    true
}

/// Reports a stream's events to the observers and keeps its registry entry up to date.
pub(super) struct Reporter<S: ConfigSource> {
    pub(super) source: Arc<S>,
    pub(super) observers: Observers,
    pub(super) entry: RegistryEntry,
    pub(super) connected_at: Instant,
    /// Removes the secrets this caller may not have from every snapshot.
    pub(super) filter: SecretFilter,
    pub(super) gateway_allow: Arc<GatewayAllowList>,
    pub(super) proxy: ProxyIdentity,
    /// [`Limits::max_request_bytes`], for the status of a request too large.
    pub(super) max_request: usize,
    /// This stream's request bound, raised to [`request_bound`] of each config it serves (none
    /// when the requests do not come through [`super::grpc`]'s decoder).
    pub(super) request_limit: Option<RequestLimit>,
}

impl<S: ConfigSource> Reporter<S> {
    /// A Gateway of another namespace the proxy's snapshot now holds (a Gateway created or
    /// changed after the stream started), if its caller may not receive it.
    fn foreign_gateway(&self) -> Option<String> {
        // `may_serve_gateway` allows every Gateway to an anonymous caller: no lookup (it takes
        // the hub's lock, once per stream and snapshot).
        self.filter.caller().identity()?;
        let gateways = self.source.gateways(&self.proxy);
        foreign_gateway(self.filter.caller(), &gateways, &self.gateway_allow).map(str::to_string)
    }

    fn each(&self, f: impl Fn(&dyn StreamObserver)) {
        for o in &self.observers {
            f(o.as_ref());
        }
    }

    /// The events of one input.
    fn report(&self, events: &[Event]) {
        for ev in events {
            match ev {
                Event::Ack {
                    type_url,
                    version,
                    generation,
                } => {
                    self.each(|o| o.acked(type_url, version));
                    self.source.acked(&self.proxy, type_url, *generation);
                }
                Event::Nack {
                    type_url,
                    nack,
                    generation,
                } => {
                    self.entry.record_nack(type_url);
                    self.each(|o| o.nacked(type_url, nack));
                    self.source.nacked(&self.proxy, type_url, *generation, nack);
                }
                Event::Converged { generation } => {
                    let since = self
                        .source
                        .generation_time(*generation)
                        .map_or(self.connected_at, |t| t.max(self.connected_at));
                    let elapsed = since.elapsed();
                    self.each(|o| o.converged(*generation, elapsed));
                }
            }
        }
    }
}

/// The per-stream event loop.
pub(super) async fn drive<S: ConfigSource, M: Machine, I: Incoming<M::Req>>(
    conn: Arc<Mutex<M>>,
    mut incoming: I,
    first: M::Req,
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    tx: mpsc::Sender<Result<Wire, Status>>,
    mut reporter: Reporter<S>,
    mut shutdown: Option<watch::Receiver<bool>>,
) {
    tracing::info!("ADS stream connected");
    let event_at = Instant::now();
    let step = machine(&conn).on_request(first);
    reporter.report(&step.events);
    if !forward::<S, M>(&tx, step.responses, &mut shutdown, &reporter, event_at).await
        || refuse::<M>(&tx, step.refused).await
    {
        return;
    }
    loop {
        let event_at: Instant;
        let step = tokio::select! {
            _ = shutdown_requested(&mut shutdown) => {
                tracing::info!("shutdown: closing ADS stream");
                break;
            }
            msg = incoming.next() => match msg {
                Some(Ok(req)) => {
                    event_at = Instant::now();
                    let mut m = machine(&conn);
                    m.on_request(req)
                }
                Some(Err(status)) => {
                    let limit = reporter.request_limit.as_ref().map_or(reporter.max_request, RequestLimit::get);
                    let status = receive_error(status, limit);
                    if status.code() == tonic::Code::ResourceExhausted {
                        let _ = tx.send(Err(status)).await;
                    } else {
                        tracing::debug!(%status, "ADS stream receive error");
                    }
                    break;
                }
                None => break,
            },
            changed = snaps.changed() => match changed {
                Ok(()) => {
                    event_at = Instant::now();
                    let snap = snaps.borrow_and_update().clone();
                    if let Some(l) = &reporter.request_limit {
                        l.set(request_bound(reporter.max_request, &snap));
                    }
                    if let Some(g) = reporter.foreign_gateway() {
                        tracing::warn!(gateway = g.as_str(), "ADS stream ended: the node's labels now select a Gateway of another namespace");
                        reporter.each(|o| o.auth_failed("foreign_gateway"));
                        let _ = tx.send(Err(gateway_denied(reporter.filter.caller(), &g))).await;
                        break;
                    }
                    let (snap, denied) = reporter.filter.apply(snap);
                    report_denials(
                        &denied,
                        &reporter.filter,
                        &reporter.observers,
                        &reporter.entry,
                        &tracing::Span::current(),
                    );
                    let mut m = machine(&conn);
                    m.on_snapshot(snap)
                }
                Err(_) => {
                    tracing::info!("config source dropped this proxy: closing ADS stream");
                    break;
                }
            },
        };
        reporter.report(&step.events);
        if !forward::<S, M>(&tx, step.responses, &mut shutdown, &reporter, event_at).await
            || refuse::<M>(&tx, step.refused).await
        {
            break;
        }
    }
    tracing::info!("ADS stream closed");
}

/// A stream's responses, produced by polling its loop ([`drive`]) from the response body (see
/// the module docs): the loop's one-slot channel is read first, then the loop is polled, then
/// the channel again; the stream ends once the loop has ended and its responses are read.
pub(super) struct Driven {
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    responses: mpsc::Receiver<Result<Wire, Status>>,
}

impl Driven {
    /// `run` sends its responses into the channel `responses` reads.
    pub(super) fn new(
        run: impl Future<Output = ()> + Send + 'static,
        responses: mpsc::Receiver<Result<Wire, Status>>,
    ) -> Driven {
        Driven {
            run: Some(Box::pin(run)),
            responses,
        }
    }
}

impl tokio_stream::Stream for Driven {
    type Item = Result<Wire, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(r) = self.responses.poll_recv(cx) {
            return Poll::Ready(r);
        }
        if let Some(run) = self.run.as_mut() {
            if run.as_mut().poll(cx).is_ready() {
                // Its sender is dropped: the channel yields what is left, then the end.
                self.run = None;
            }
        }
        self.responses.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::conn::Mode;

    fn wire(nonce: &str) -> Wire {
        Wire {
            mode: Mode::Delta,
            type_url: "t".to_string(),
            version: "v".to_string(),
            nonce: nonce.to_string(),
            resources: Vec::new(),
            removed: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_response_stream_runs_its_loop_and_ends_after_its_responses() {
        let (tx, rx) = mpsc::channel(1);
        let (go_tx, mut go) = watch::channel(false);
        // Two responses, then a wait for `go`, then a third: more than the channel holds.
        let run = async move {
            for n in ["1", "2"] {
                if tx.send(Ok(wire(n))).await.is_err() {
                    return;
                }
            }
            let _ = go.wait_for(|g| *g).await;
            let _ = tx.send(Ok(wire("3"))).await;
        };
        // Nothing spawned: the loop makes progress only as the stream is polled.
        let mut s = Driven::new(run, rx);
        let nonce = |r: Option<Result<Wire, Status>>| r.map(|r| r.expect("a response").nonce);
        assert_eq!(nonce(s.next().await).as_deref(), Some("1"));
        assert_eq!(nonce(s.next().await).as_deref(), Some("2"));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await;
        assert!(waiting.is_err(), "the loop is waiting: no response, no end");
        go_tx.send_replace(true);
        assert_eq!(nonce(s.next().await).as_deref(), Some("3"));
        assert!(
            s.next().await.is_none(),
            "the loop ended: so does the stream"
        );
    }
}
