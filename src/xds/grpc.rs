//! The gRPC face of the ADS service: routes the two ADS methods to [`AggregatedDiscoveryService`]
//! and frames each response message into its own buffer.
//!
//! tonic's generated server encodes a stream's responses into one growing buffer that lives as
//! long as the stream, and hands out frames that share its allocation: a stream that once sent
//! a 60 MB first push keeps a buffer that size while it idles (84 MiB of heap per idle stream at
//! 10,000 services). Its request decoder (`Streaming`) likewise keeps a buffer the size of the
//! largest request (a Delta Envoy's first EDS request names every cluster: 1 MiB at 10,000
//! services). Here each response is encoded into an exact-size buffer that is freed once the
//! frame is written, and each request is gathered in a buffer of its own size that is freed once
//! it is decoded ([`Requests`], with the `--xds-max-request-bytes` limit), so an idle stream
//! holds only its connection state. Metadata and connection extensions (the TLS peer) reach the
//! service as with the generated server.
//!
//! A response's body is encoded once for every stream that sends the same resources
//! ([`super::encoder::Encoder`], one per service): each stream writes the gRPC prefix, the
//! shared body bytes and its own nonce field.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use http_body::{Body as _, Frame};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

use super::conn::Wire;
use super::encoder::{Encoder, Message};
use super::limits::RequestLimit;
use super::server::AdsService;
use super::ConfigSource;

const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS service as a tonic router service (see the module docs).
pub struct AdsGrpc<T> {
    inner: Arc<T>,
    max_request: usize,
    max_response: usize,
    encoder: Arc<Encoder>,
}

impl<T> Clone for AdsGrpc<T> {
    fn clone(&self) -> Self {
        AdsGrpc {
            inner: self.inner.clone(),
            max_request: self.max_request,
            max_response: self.max_response,
            encoder: self.encoder.clone(),
        }
    }
}

impl<T> AdsGrpc<T> {
    /// Requests above `max_request` bytes end their stream (RESOURCE_EXHAUSTED, from tonic's
    /// decoder); a response above `max_response` ends it with OUT_OF_RANGE.
    pub fn new(inner: T, max_request: usize, max_response: usize) -> Self {
        Self::with_encoder(inner, max_request, max_response, Arc::default())
    }

    /// As [`AdsGrpc::new`], sharing `encoder` (another listener's) for response bodies.
    pub fn with_encoder(
        inner: T,
        max_request: usize,
        max_response: usize,
        encoder: Arc<Encoder>,
    ) -> Self {
        AdsGrpc {
            inner: Arc::new(inner),
            max_request,
            max_response,
            encoder,
        }
    }
}

impl<T> NamedService for AdsGrpc<T> {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<S: ConfigSource> Service<http::Request<Body>> for AdsGrpc<AdsService<S>> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (inner, encoder) = (self.inner.clone(), self.encoder.clone());
        let (max_request, max_response) = (self.max_request, self.max_response);
        Box::pin(async move {
            Ok(match req.uri().path() {
                SOTW => {
                    let r = inner
                        .sotw(decode::<DiscoveryRequest>(req, max_request))
                        .await;
                    respond(r, max_response, encoder)
                }
                DELTA => {
                    let r = inner
                        .delta(decode::<DeltaDiscoveryRequest>(req, max_request))
                        .await;
                    respond(r, max_response, encoder)
                }
                _ => Status::unimplemented("").into_http(),
            })
        })
    }
}

/// The request body as a stream of messages, with the request's metadata and extensions.
fn decode<M>(req: http::Request<Body>, max_request: usize) -> tonic::Request<Requests<M>>
where
    M: prost::Message + Default + Send + 'static,
{
    let (mut parts, body) = req.into_parts();
    // The stream's task raises the bound once it knows the stream's config (`request_bound`).
    let max = RequestLimit::new(max_request);
    parts.extensions.insert(max.clone());
    let stream = Requests {
        body,
        buf: BytesMut::new(),
        max,
        done: false,
        message: PhantomData,
    };
    tonic::Request::from_http(http::Request::from_parts(parts, stream))
}

/// Buffers up to this size are kept between requests; a larger one (a request that named many
/// resources) is freed once its request is decoded.
const KEPT_BUFFER: usize = 16 * 1024;

/// A request body as a stream of messages (see the module docs). A message above `max` bytes
/// ends the stream with `OUT_OF_RANGE` before it is read (as tonic's decoder; the server turns
/// it into `RESOURCE_EXHAUSTED`), a compressed one with `UNIMPLEMENTED`.
pub(super) struct Requests<M> {
    body: Body,
    buf: BytesMut,
    max: RequestLimit,
    done: bool,
    message: PhantomData<fn() -> M>,
}

impl<M> Requests<M> {
    fn fail(&mut self, status: Status) -> Poll<Option<Result<M, Status>>> {
        self.done = true;
        Poll::Ready(Some(Err(status)))
    }
}

impl<M: prost::Message + Default> Stream for Requests<M> {
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.buf.len() >= 5 {
                if this.buf[0] != 0 {
                    return this.fail(Status::unimplemented(
                        "compressed requests are not supported",
                    ));
                }
                let len = u32::from_be_bytes([this.buf[1], this.buf[2], this.buf[3], this.buf[4]])
                    as usize;
                let max = this.max.get();
                if len > max {
                    return this.fail(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {len} bytes, the limit \
                         is: {max} bytes"
                    )));
                }
                if this.buf.len() >= 5 + len {
                    let decoded = M::decode(&this.buf[5..5 + len]);
                    this.buf.advance(5 + len);
                    if this.buf.capacity() > KEPT_BUFFER {
                        this.buf = BytesMut::from(&this.buf[..]);
                    }
                    return match decoded {
                        Ok(m) => Poll::Ready(Some(Ok(m))),
                        Err(e) => this.fail(Status::internal(format!("decoding a request: {e}"))),
                    };
                }
                // The whole frame in one buffer of its size.
                this.buf.reserve(5 + len - this.buf.len());
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(status))) => return this.fail(status),
                Poll::Ready(None) => {
                    if this.buf.is_empty() {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    return this.fail(Status::internal(
                        "the request stream ended inside a message",
                    ));
                }
            }
        }
    }
}

fn respond<S>(
    r: Result<S, Status>,
    max_response: usize,
    encoder: Arc<Encoder>,
) -> http::Response<Body>
where
    S: Stream<Item = Result<Wire, Status>> + Send + 'static,
{
    match r {
        Err(status) => status.into_http(),
        Ok(stream) => {
            let mut http = http::Response::new(Body::new(Frames {
                stream: Box::pin(stream),
                max_response,
                encoder,
                queued: Vec::new(),
                done: false,
            }));
            http.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            http
        }
    }
}

/// Messages whose shared body is at most this size are written as one contiguous frame.
const ONE_FRAME: usize = 16 * 1024;

/// A response body: one gRPC frame (flag, length, message) per message, written as its prefix,
/// its shared body and its nonce field ([`Encoder::frames`]), then the trailers
/// (`grpc-status`).
struct Frames {
    stream: Pin<Box<dyn Stream<Item = Result<Wire, Status>> + Send>>,
    max_response: usize,
    encoder: Arc<Encoder>,
    /// The rest of the current message's chunks, last first.
    queued: Vec<Bytes>,
    done: bool,
}

/// The gRPC frame of one message in one buffer: uncompressed flag, big-endian length, the
/// message (the shape [`Encoder::frames`] writes in three parts).
#[cfg(test)]
fn frame<M: prost::Message>(m: &M, max: usize) -> Result<Bytes, Status> {
    let len = m.encoded_len();
    if len > max || len > u32::MAX as usize {
        return Err(Status::out_of_range(format!(
            "response of {len} bytes is above the limit of {max} bytes"
        )));
    }
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    m.encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
    Ok(Bytes::from(buf))
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if status.add_header(&mut h).is_err() {
        h.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    h
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(b) = self.queued.pop() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let max = self.max_response;
        match self.stream.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(w))) => match self.encoder.message(&w, max, ONE_FRAME) {
                // A small message goes out as one DATA frame (copying it costs less than
                // h2's work for three); a large one as its parts, the body shared.
                Ok(Message::Whole(whole)) => Poll::Ready(Some(Ok(Frame::data(whole)))),
                Ok(Message::Parts([prefix, body, nonce])) => {
                    self.queued = [nonce, body]
                        .into_iter()
                        .filter(|b| !b.is_empty())
                        .collect();
                    Poll::Ready(Some(Ok(Frame::data(prefix))))
                }
                Err(status) => {
                    self.done = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
                }
            },
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::new(
                    tonic::Code::Ok,
                    "",
                ))))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    /// A request body delivered in these chunks.
    fn body(chunks: Vec<Vec<u8>>) -> Body {
        let frames = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c)))),
        );
        Body::new(http_body_util::StreamBody::new(frames))
    }

    fn requests(chunks: Vec<Vec<u8>>, max: usize) -> Requests<DiscoveryRequest> {
        Requests {
            body: body(chunks),
            buf: BytesMut::new(),
            max: RequestLimit::new(max),
            done: false,
            message: PhantomData,
        }
    }

    fn wire(m: &DiscoveryRequest) -> Vec<u8> {
        frame(m, usize::MAX).unwrap().to_vec()
    }

    #[tokio::test]
    async fn requests_split_anywhere_are_decoded_and_a_large_buffer_is_freed() {
        use futures::StreamExt;
        let big = DiscoveryRequest {
            resource_names: (0..20_000)
                .map(|i| format!("outbound|80||s{i}.ns.svc"))
                .collect(),
            ..Default::default()
        };
        let small = DiscoveryRequest {
            response_nonce: "7".into(),
            ..Default::default()
        };
        let mut bytes = wire(&big);
        bytes.extend(wire(&small));
        // Chunks that cut the length prefix and the messages.
        let chunks: Vec<Vec<u8>> = bytes.chunks(3_001).map(<[u8]>::to_vec).collect();
        let mut r = requests(chunks, 4 << 20);
        assert_eq!(r.next().await.unwrap().unwrap(), big);
        assert!(r.buf.capacity() <= KEPT_BUFFER, "{}", r.buf.capacity());
        assert_eq!(r.next().await.unwrap().unwrap(), small);
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn requests_over_the_limit_compressed_or_cut_end_the_stream() {
        use futures::StreamExt;
        let m = DiscoveryRequest {
            version_info: "x".repeat(100),
            ..Default::default()
        };
        let mut r = requests(vec![wire(&m)], 50);
        assert_eq!(
            r.next().await.unwrap().unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert!(r.next().await.is_none());
        let mut compressed = wire(&m);
        compressed[0] = 1;
        let mut r = requests(vec![compressed], 1 << 20);
        assert_eq!(
            r.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let mut cut = wire(&m);
        cut.truncate(20);
        let mut r = requests(vec![cut], 1 << 20);
        assert_eq!(
            r.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn a_frame_is_the_message_behind_its_grpc_prefix_in_an_exact_buffer() {
        let m = DiscoveryResponse {
            version_info: "v1".into(),
            nonce: "n".into(),
            ..Default::default()
        };
        let f = frame(&m, 1 << 20).unwrap();
        assert_eq!(f.len(), 5 + m.encoded_len());
        assert_eq!(f[0], 0);
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            m.encoded_len()
        );
        assert_eq!(DiscoveryResponse::decode(&f[5..]).unwrap(), m);
        let err = frame(&m, 2).unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
    }

    #[tokio::test]
    async fn small_and_large_responses_reach_the_client_whole_and_the_large_body_is_shared() {
        use crate::xds::conn::{Mode, Wire};
        use crate::xds::resource::Resource;
        use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
        use envoy_types::pb::google::protobuf::Any;
        use http_body_util::BodyExt;
        let resource = |size: usize| {
            Arc::new(Resource {
                name: "r".to_string(),
                version: "1".to_string(),
                body: Any {
                    type_url: "t".to_string(),
                    value: vec![7; size],
                },
                pair: Default::default(),
            })
        };
        let wire = |resource: &Arc<Resource>, nonce: &str| Wire {
            mode: Mode::Delta,
            type_url: "t".to_string(),
            version: "v".to_string(),
            nonce: nonce.to_string(),
            resources: vec![resource.clone()],
            removed: Vec::new(),
        };
        let (small, large) = (resource(10), resource(100_000));
        let encoder = Arc::new(Encoder::new());
        // The two large ones are two streams' responses of the same snapshot entry.
        let sent = vec![wire(&small, "1"), wire(&large, "2"), wire(&large, "3")];
        let stream = futures::stream::iter(sent.clone().into_iter().map(Ok));
        let response = respond(Ok(stream), usize::MAX, encoder.clone());
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let mut rest = &bytes[..];
        for w in &sent {
            assert_eq!(rest[0], 0);
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let m = DeltaDiscoveryResponse::decode(&rest[5..5 + len]).expect("decodes");
            assert_eq!(m, w.to_delta());
            rest = &rest[5 + len..];
        }
        assert!(rest.is_empty());
        // The two large responses shared one encoded body, kept as the latest of its type; the
        // small one's, written and not the latest, is gone.
        let stats = encoder.stats();
        assert_eq!(stats.kept, 1, "{stats:?}");
        assert!(stats.bytes > 100_000 && stats.bytes < 200_000, "{stats:?}");
    }
}
