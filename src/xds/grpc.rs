//! The gRPC face of the ADS service: routes the two ADS methods to [`AggregatedDiscoveryService`]
//! and frames each response message into its own buffer.
//!
//! tonic's generated server encodes a stream's responses into one growing buffer that lives as
//! long as the stream, and hands out frames that share its allocation: a stream that once sent
//! a 60 MB first push keeps a buffer that size while it idles (84 MiB of heap per idle stream at
//! 10,000 services). Here each message is encoded into an exact-size buffer that is freed once
//! the frame is written, so an idle stream holds only its connection state. Requests are decoded
//! by tonic (`Streaming`, with the `--xds-max-request-bytes` limit); metadata and connection
//! extensions (the TLS peer) reach the service as with the generated server.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use http_body::Frame;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Streaming};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS service as a tonic router service (see the module docs).
pub struct AdsGrpc<T> {
    inner: Arc<T>,
    max_request: usize,
    max_response: usize,
}

impl<T> Clone for AdsGrpc<T> {
    fn clone(&self) -> Self {
        AdsGrpc {
            inner: self.inner.clone(),
            max_request: self.max_request,
            max_response: self.max_response,
        }
    }
}

impl<T> AdsGrpc<T> {
    /// Requests above `max_request` bytes end their stream (RESOURCE_EXHAUSTED, from tonic's
    /// decoder); a response above `max_response` ends it with OUT_OF_RANGE.
    pub fn new(inner: T, max_request: usize, max_response: usize) -> Self {
        AdsGrpc {
            inner: Arc::new(inner),
            max_request,
            max_response,
        }
    }
}

impl<T> NamedService for AdsGrpc<T> {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<T: AggregatedDiscoveryService> Service<http::Request<Body>> for AdsGrpc<T> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let (max_request, max_response) = (self.max_request, self.max_response);
        Box::pin(async move {
            Ok(match req.uri().path() {
                SOTW => {
                    let r = inner
                        .stream_aggregated_resources(decode::<DiscoveryRequest>(req, max_request))
                        .await;
                    respond(r, max_response)
                }
                DELTA => {
                    let r = inner
                        .delta_aggregated_resources(decode::<DeltaDiscoveryRequest>(
                            req,
                            max_request,
                        ))
                        .await;
                    respond(r, max_response)
                }
                _ => Status::unimplemented("").into_http(),
            })
        })
    }
}

/// The request body as tonic's stream of messages, with the request's metadata and extensions.
fn decode<M>(req: http::Request<Body>, max_request: usize) -> tonic::Request<Streaming<M>>
where
    M: prost::Message + Default + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let decoder = tonic_prost::ProstDecoder::<M>::new(BufferSettings::default());
    let stream = Streaming::new_request(decoder, body, None, Some(max_request));
    tonic::Request::from_http(http::Request::from_parts(parts, stream))
}

fn respond<S, M>(r: Result<tonic::Response<S>, Status>, max_response: usize) -> http::Response<Body>
where
    S: Stream<Item = Result<M, Status>> + Send + 'static,
    M: prost::Message + 'static,
{
    match r {
        Err(status) => status.into_http(),
        Ok(resp) => {
            let (metadata, stream, _) = resp.into_parts();
            let mut http = http::Response::new(Body::new(Frames {
                stream: Box::pin(stream),
                max_response,
                done: false,
            }));
            *http.headers_mut() = metadata.into_headers();
            http.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            http
        }
    }
}

/// A response body: one gRPC frame (flag, length, message) per message, each in its own
/// buffer, then the trailers (`grpc-status`).
struct Frames<M> {
    stream: Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>,
    max_response: usize,
    done: bool,
}

/// The gRPC frame of one message: uncompressed flag, big-endian length, the message.
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

impl<M: prost::Message> http_body::Body for Frames<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let max = self.max_response;
        match self.stream.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(m))) => match frame(&m, max) {
                Ok(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
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
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

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
}
