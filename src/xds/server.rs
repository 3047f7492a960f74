//! tonic ADS service: a thin shell around the connection state machines in [`super::conn`].
//!
//! Per stream: wait for the first request (it carries the node), derive the [`ProxyIdentity`],
//! subscribe to the proxy's snapshot channel (held open while its config is not translated yet,
//! `waiting.rs`), then
//! feed requests and snapshot changes into the state machine and hand its responses to the
//! response stream, which runs that loop itself (`stream.rs`). Every connection is listed in a
//! [`ConnectionRegistry`] with its live [`ConnStatus`]. The events the machine returns (ACK,
//! NACK, converged) and every push are reported to the service's observers
//! ([`super::observe`]: logs by default, metrics when the runtime adds them).

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::{Request, Status};
use tracing::Instrument;

use super::auth::policy::{foreign_gateway, GatewayAllowList};
use super::auth::{Authenticator, Caller, PeerInfo, SecretFilter};
use super::conn::{DeltaConnection, Mode, SharedDiffs, SotwConnection};
use super::encoder::Encoder;
use super::limits::{request_bound, Limits, RequestLimit, REQUEST_BYTES_PER_RESOURCE};
use super::observe::{LogObserver, Observers, StreamObserver};
use super::stream::{drive, report_denials, Driven, Machine, Reporter};
use super::{ConfigSource, ProxyIdentity};

pub use super::registry::{ConnectionInfo, ConnectionRegistry};

/// Max gRPC response size (route configurations get big). Requests are bounded by
/// [`Limits::max_request_bytes`].
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// Responses buffered per stream before the state machine waits for the client to read: a
/// client that never reads holds one response here (and the one being written to it).
const RESPONSE_BUFFER: usize = 1;

/// The plaintext listener's connections, each with `TCP_NODELAY` set as the TLS listener's are
/// (`auth::tls::incoming`): a response written in several frames, or right after the previous
/// one, goes out at once instead of waiting for the peer to acknowledge what was sent before
/// (Nagle's algorithm, which with the peer's delayed ACK holds a small write for up to 40 ms).
pub fn plain_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    })
}

/// Derive who is asking from the Envoy node.
///
/// Istio node ids look like `router~10.0.0.1~pod.ns~ns.svc.cluster.local`: the namespace is the
/// first label of the 4th part; otherwise the `NAMESPACE` metadata key. Labels come from the
/// metadata key `LABELS` (a Struct of string values; other values are ignored).
pub fn proxy_identity(node: &Node) -> ProxyIdentity {
    let fields = node.metadata.as_ref().map(|m| &m.fields);
    let parts: Vec<&str> = node.id.split('~').collect();
    let from_id = (parts.len() == 4)
        .then(|| parts[3].split('.').next().unwrap_or_default())
        .filter(|ns| !ns.is_empty())
        .map(str::to_string);
    let from_meta = fields
        .and_then(|f| f.get("NAMESPACE"))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        });
    let labels = fields
        .and_then(|f| f.get("LABELS"))
        .and_then(|v| match &v.kind {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        })
        .map(|s| {
            s.fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(val)) => Some((k.clone(), val.clone())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    ProxyIdentity {
        id: node.id.clone(),
        namespace: from_id.or(from_meta),
        labels,
    }
}

/// The ADS gRPC service (SotW and Delta).
pub struct AdsService<S: ConfigSource> {
    source: Arc<S>,
    registry: Arc<ConnectionRegistry>,
    shutdown: Option<watch::Receiver<bool>>,
    observers: Observers,
    auth: Arc<Authenticator>,
    gateway_allow: Arc<GatewayAllowList>,
    limits: Limits,
    encoder: Arc<Encoder>,
    /// The diffs of two snapshots, computed once for the streams of a group ([`SharedDiffs`]).
    diffs: Arc<SharedDiffs>,
}

impl<S: ConfigSource> AdsService<S> {
    pub fn new(source: Arc<S>, registry: Arc<ConnectionRegistry>) -> Self {
        AdsService {
            source,
            registry,
            shutdown: None,
            observers: vec![Arc::new(LogObserver)],
            auth: Arc::new(Authenticator::default()),
            gateway_allow: Arc::new(GatewayAllowList::istio_default()),
            limits: Limits::default(),
            encoder: Arc::default(),
            diffs: Arc::default(),
        }
    }

    /// Share `encoder` (another service's) for response bodies ([`super::encoder`]).
    pub fn with_encoder(mut self, encoder: Arc<Encoder>) -> Self {
        self.encoder = encoder;
        self
    }

    /// Bound what each client may cost (default: [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Which Gateways of other namespaces an identity may receive (default: `istio-system`
    /// gateways may serve `knative-serving`'s Gateways, net-istio's layout).
    pub fn with_gateway_allow_list(mut self, allow: GatewayAllowList) -> Self {
        self.gateway_allow = Arc::new(allow);
        self
    }

    /// Also report pushes, ACKs, NACKs and convergence to this observer (after the log).
    pub fn with_observer(mut self, observer: Arc<dyn StreamObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Authenticate callers with this (default: no Kubernetes API; plaintext callers are always
    /// anonymous and get no secret).
    pub fn with_auth(mut self, auth: Arc<Authenticator>) -> Self {
        self.auth = auth;
        self
    }

    fn each(&self, f: impl Fn(&dyn StreamObserver)) {
        for o in &self.observers {
            f(o.as_ref());
        }
    }

    /// Who is calling (see [`Authenticator::authenticate`]); `Unauthenticated` when a TLS caller
    /// proves nothing.
    async fn authenticate(
        &self,
        peer: Option<PeerInfo>,
        authorization: Option<Vec<u8>>,
    ) -> Result<Caller, Status> {
        self.auth
            .authenticate(peer.as_ref(), authorization.as_deref())
            .await
            .map_err(|e| {
                let remote = peer.as_ref().and_then(|p| p.remote);
                tracing::warn!(?remote, reason = e.reason(), error = %e, "ADS stream refused: not authenticated");
                self.each(|o| o.auth_failed(e.reason()));
                Status::unauthenticated(e.to_string())
            })
    }

    /// `PermissionDenied` when the proxy's labels select a Gateway its caller may not be.
    fn check_gateways(&self, caller: &Caller, proxy: &ProxyIdentity) -> Result<(), Status> {
        let gateways = self.source.gateways(proxy);
        match foreign_gateway(caller, &gateways, &self.gateway_allow) {
            None => Ok(()),
            Some(g) => {
                tracing::warn!(identity = %caller.describe(), node = %proxy.log_id(), gateway = g, "ADS stream refused: the node's labels select a Gateway of another namespace");
                self.each(|o| o.auth_failed("foreign_gateway"));
                Err(gateway_denied(caller, g))
            }
        }
    }

    /// Streams end (cleanly, status OK) once this channel holds `true`.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// The tonic server: requests up to [`Limits::max_request_bytes`] (a larger one ends its
    /// stream before it is read), responses up to [`MAX_MESSAGE_SIZE`].
    pub fn server(self) -> super::grpc::AdsGrpc<Self> {
        let max_request = self.limits.max_request_bytes;
        let encoder = self.encoder.clone();
        super::grpc::AdsGrpc::with_encoder(self, max_request, MAX_MESSAGE_SIZE, encoder)
    }

    async fn start<M: Machine, I: Incoming<M::Req>>(
        &self,
        mut incoming: I,
        mode: Mode,
        caller: Caller,
        request_limit: Option<RequestLimit>,
    ) -> Result<Driven, Status> {
        let max_request = self.limits.max_request_bytes;
        let first = match incoming
            .next()
            .await
            .transpose()
            .map_err(|e| receive_error(e, max_request))?
        {
            Some(r) => r,
            None => {
                return Err(Status::invalid_argument(
                    "stream closed before the first request",
                ))
            }
        };
        let node = M::node(&first)
            .ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let node_bytes = node.encoded_len();
        if node_bytes > self.limits.max_node_bytes {
            let limit = self.limits.max_node_bytes;
            tracing::warn!(node = %super::limits::for_log(&node.id), node_bytes, limit, "ADS stream refused: the node is too large");
            return Err(Status::invalid_argument(format!(
                "the node (id, metadata, locality) is {node_bytes} bytes, more than the limit of \
                 {limit} bytes (--xds-max-node-bytes)"
            )));
        }
        let proxy = proxy_identity(node);
        if let Err(e) = super::auth::policy::check_node(
            &caller,
            proxy.namespace.as_deref(),
            meta_str(node, "NAMESPACE"),
            meta_str(node, "SERVICE_ACCOUNT"),
        ) {
            tracing::warn!(identity = %caller.describe(), node = %proxy.log_id(), error = %e, "ADS stream refused: the node is not the caller's");
            self.each(|o| o.auth_failed("node_mismatch"));
            return Err(Status::permission_denied(format!(
                "identity {} may not act as node {:?}: {e}",
                caller.describe(),
                proxy.log_id()
            )));
        }
        let may_list_secrets = self.auth.may_list_secrets(&caller).await;
        let mut filter = SecretFilter::new(caller, may_list_secrets);
        let mut snaps = super::waiting::subscribe_when_ready(
            self.source.as_ref(),
            &proxy,
            self.limits.not_ready_wait,
            self.shutdown.clone(),
        )
        .await?;
        self.check_gateways(filter.caller(), &proxy)?;
        let connected_at = Instant::now();
        let snap = snaps.borrow_and_update().clone();
        if mode == Mode::Sotw && snap.wildcard_clusters.is_some() {
            tracing::warn!(node = %proxy.log_id(), "ADS stream refused: the on-demand route layout needs Delta ADS");
            return Err(Status::failed_precondition(ON_DEMAND_NEEDS_DELTA));
        }
        if let Some(l) = &request_limit {
            l.set(request_bound(max_request, &snap));
        }
        let (snap, denied) = filter.apply(snap);
        let conn = Arc::new(std::sync::Mutex::new(M::new(
            snap,
            self.limits,
            self.diffs.clone(),
        )));
        let entry = self
            .registry
            .register(&proxy, filter.caller(), mode, conn.clone());
        let span = tracing::info_span!(
            "ads",
            node = %proxy.log_id(),
            conn = entry.conn_id,
            mode = mode.as_str(),
            identity = %filter.caller().describe()
        );
        report_denials(&denied, &filter, &self.observers, &entry, &span);
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let shutdown = self.shutdown.clone();
        let reporter = Reporter {
            source: self.source.clone(),
            observers: self.observers.clone(),
            entry,
            connected_at,
            filter,
            gateway_allow: self.gateway_allow.clone(),
            proxy: proxy.clone(),
            max_request,
            request_limit,
        };
        let run = drive(conn, incoming, first, snaps, tx, reporter, shutdown).instrument(span);
        Ok(Driven::new(run, rx))
    }
}

/// Why a SotW stream is refused in the on-demand route layout.
pub const ON_DEMAND_NEEDS_DELTA: &str = "this gateway is served in the on-demand route layout \
    (--route-layout on-demand), whose on-demand CDS needs Delta ADS: set the bootstrap's \
    ads_config api_type to DELTA_GRPC (istio-proxy: ISTIO_DELTA_XDS=true, its default since 1.22)";

/// The status a stream ends with when receiving failed: tonic's "message length too large"
/// (`OUT_OF_RANGE`, raised from the length prefix, before the message is read) becomes
/// `RESOURCE_EXHAUSTED` naming the flag, as gRPC's own receive limit is reported.
pub(super) fn receive_error(status: Status, max_request: usize) -> Status {
    if status.code() == tonic::Code::OutOfRange {
        tracing::warn!(%status, limit = max_request, "ADS stream ended: request too large");
        return Status::resource_exhausted(format!(
            "request larger than the limit of {max_request} bytes (--xds-max-request-bytes, \
             raised for a stream to {REQUEST_BYTES_PER_RESOURCE} bytes per resource of the \
             largest type of its config): {}",
            status.message()
        ));
    }
    status
}

/// The status of a stream refused (or ended) for a Gateway its caller may not receive.
pub(super) fn gateway_denied(caller: &Caller, gateway: &str) -> Status {
    Status::permission_denied(format!(
        "identity {} may not receive the config of Gateway {gateway} (another namespace, not \
         in the gateway allow-list)",
        caller.describe()
    ))
}

/// A string value of the node metadata.
fn meta_str<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    match &node.metadata.as_ref()?.fields.get(key)?.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The TLS peer and the `authorization` header of a request.
fn credentials<T>(request: &Request<T>) -> (Option<PeerInfo>, Option<Vec<u8>>) {
    let peer = request.extensions().get::<PeerInfo>().cloned();
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|v| v.as_bytes().to_vec());
    (peer, authorization)
}

/// The requests of one stream, decoded (by [`super::grpc`]).
pub(super) trait Incoming<M>:
    tokio_stream::Stream<Item = Result<M, Status>> + Send + Unpin + 'static
{
}

impl<M, T: tokio_stream::Stream<Item = Result<M, Status>> + Send + Unpin + 'static> Incoming<M>
    for T
{
}

impl<S: ConfigSource> AdsService<S> {
    /// `StreamAggregatedResources`: one state-of-the-world stream.
    pub(super) async fn sotw<I: Incoming<DiscoveryRequest>>(
        &self,
        request: Request<I>,
    ) -> Result<Driven, Status> {
        let (peer, authorization) = credentials(&request);
        let limit = request.extensions().get::<RequestLimit>().cloned();
        let caller = self.authenticate(peer, authorization).await?;
        self.start::<SotwConnection, I>(request.into_inner(), Mode::Sotw, caller, limit)
            .await
    }

    /// `DeltaAggregatedResources`: one incremental stream.
    pub(super) async fn delta<I: Incoming<DeltaDiscoveryRequest>>(
        &self,
        request: Request<I>,
    ) -> Result<Driven, Status> {
        let (peer, authorization) = credentials(&request);
        let limit = request.extensions().get::<RequestLimit>().cloned();
        let caller = self.authenticate(peer, authorization).await?;
        self.start::<DeltaConnection, I>(request.into_inner(), Mode::Delta, caller, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    fn node(id: &str, meta: Vec<(&str, Value)>) -> Node {
        Node {
            id: id.into(),
            metadata: Some(Struct {
                fields: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            }),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Value {
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: pairs.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
            })),
        }
    }

    #[tokio::test]
    async fn plaintext_connections_are_accepted_with_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut incoming = std::pin::pin!(plain_incoming(listener));
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("nodelay"));
        // What the plain listener would give without it.
        assert!(!client.nodelay().expect("nodelay"));
    }

    #[test]
    fn istio_node_id_and_labels() {
        let n = node(
            "router~10.0.0.1~istio-ingressgateway-abc.istio-system~istio-system.svc.cluster.local",
            vec![
                (
                    "LABELS",
                    labels(&[("istio", "ingressgateway"), ("app", "gw")]),
                ),
                ("NAMESPACE", s("other")),
            ],
        );
        let p = proxy_identity(&n);
        assert_eq!(p.namespace.as_deref(), Some("istio-system"));
        assert_eq!(p.labels["istio"], "ingressgateway");
        assert_eq!(p.labels.len(), 2);
        assert_eq!(p.id, n.id);
    }

    #[test]
    fn plain_node_id_uses_metadata() {
        let n = node(
            "gateway-1",
            vec![
                ("LABELS", labels(&[("app", "kourier")])),
                ("NAMESPACE", s("knative-serving")),
            ],
        );
        let p = proxy_identity(&n);
        assert_eq!(p.namespace.as_deref(), Some("knative-serving"));
        assert_eq!(p.labels["app"], "kourier");
        let bare = proxy_identity(&Node {
            id: "x".into(),
            ..Default::default()
        });
        assert_eq!(bare.namespace, None);
        assert!(bare.labels.is_empty());
    }
}
