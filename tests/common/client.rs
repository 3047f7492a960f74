//! HTTP/1.1, h2c and WebSocket client helpers (always to 127.0.0.1:port).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Deadline for one whole request (connect + response + body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1 with a `Host` header.
    Http1,
    /// HTTP/2 prior knowledge (h2c); the host goes into `:authority`.
    Http2,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Lowercased names; repeated headers joined with ",".
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// The body parsed as JSON, `Value::Null` if it is not JSON.
    pub body_json: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// `body_json["backend"]`, i.e. which echo Backend answered.
    pub fn backend(&self) -> Option<&str> {
        self.body_json.get("backend").and_then(Value::as_str)
    }

    /// A header as seen by the echo Backend (`body_json["headers"][name]`).
    pub fn echoed_header(&self, name: &str) -> Option<&str> {
        self.body_json
            .get("headers")
            .and_then(|h| h.get(name.to_ascii_lowercase()))
            .and_then(Value::as_str)
    }
}

fn build_request(
    version: HttpVersion,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let mut b = hyper::Request::builder().method(method);
    b = match version {
        HttpVersion::Http1 => b.uri(path).header(hyper::header::HOST, host),
        HttpVersion::Http2 => b
            .uri(format!("http://{host}{path}"))
            .version(hyper::Version::HTTP_2),
    };
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad request: {e}"))
}

pub(crate) async fn read_response(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<Response, String> {
    let status = resp.status().as_u16();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in resp.headers() {
        let v = String::from_utf8_lossy(v.as_bytes());
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let body_json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Response {
        status,
        headers,
        body,
        body_json,
    })
}

async fn connect(port: u16) -> Result<TokioIo<TcpStream>, String> {
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    let _ = s.set_nodelay(true);
    Ok(TokioIo::new(s))
}

/// One request on a fresh connection. Errors (connect refused, reset,
/// timeout...) are returned as strings.
pub async fn try_http_request(
    port: u16,
    version: HttpVersion,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response, String> {
    let fut = async {
        let req = build_request(version, method, host, path, headers, body)?;
        let io = connect(port).await?;
        let resp = match version {
            HttpVersion::Http1 => {
                let (mut sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("http1 handshake: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender.send_request(req).await
            }
            HttpVersion::Http2 => {
                let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender.send_request(req).await
            }
        }
        .map_err(|e| format!("{method} {host}{path}: {e}"))?;
        read_response(resp).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{method} {host}{path} on port {port}: timed out"))?
}

/// Like [`try_http_request`] but panics on a transport error.
pub async fn http_request(
    port: u16,
    version: HttpVersion,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    try_http_request(port, version, method, host, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// GET over HTTP/1.1 (new connection) to 127.0.0.1:port with `Host: host`.
pub async fn try_http_get(
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    try_http_request(port, HttpVersion::Http1, "GET", host, path, headers, "").await
}

/// GET over HTTP/1.1; panics on transport errors (any status is returned).
pub async fn http_get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(port, HttpVersion::Http1, "GET", host, path, headers, "").await
}

/// GET over h2c prior knowledge with `:authority: host`.
pub async fn try_http2_get(
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    try_http_request(port, HttpVersion::Http2, "GET", host, path, headers, "").await
}

/// GET over h2c; panics on transport errors.
pub async fn http2_get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(port, HttpVersion::Http2, "GET", host, path, headers, "").await
}

/// Backends seen for `n` GETs of `/` on `host` at `port` over one keep-alive connection
/// (reconnecting if Envoy closes it), each asserted to answer 200: backend name -> count.
pub async fn backend_spread(port: u16, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut client = HttpClient::connect(port).await.unwrap();
    for _ in 0..n {
        if client.is_closed() {
            client = HttpClient::connect(port).await.unwrap();
        }
        let r = client.get(host, "/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        *seen
            .entry(r.backend().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    seen
}

/// A keep-alive HTTP/1.1 connection: every request reuses the same socket.
pub struct HttpClient {
    port: u16,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl HttpClient {
    pub async fn connect(port: u16) -> Result<HttpClient, String> {
        let io = connect(port).await?;
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("http1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpClient { port, sender })
    }

    /// True once the server (or an error) closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Response, String> {
        let port = self.port;
        let fut = async {
            let req = build_request(HttpVersion::Http1, method, host, path, headers, body)?;
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("{method} {host}{path}: {e}"))?;
            read_response(resp).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| format!("{method} {host}{path} on port {port}: timed out"))?
    }

    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        self.request("GET", host, path, headers, "").await
    }
}

/// Open a WebSocket to ws://host/path via 127.0.0.1:port, send `msg` as a text
/// message, return the first text/binary message received, then close.
pub async fn try_ws_echo(port: u16, host: &str, path: &str, msg: &str) -> Result<String, String> {
    let fut = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        let url = format!("ws://{host}{path}");
        let (mut ws, _resp) = tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .map_err(|e| format!("websocket handshake {url}: {e}"))?;
        ws.send(Message::text(msg))
            .await
            .map_err(|e| format!("websocket send: {e}"))?;
        let reply = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break t.as_str().to_string(),
                Some(Ok(Message::Binary(b))) => break String::from_utf8_lossy(&b).into_owned(),
                Some(Ok(Message::Close(c))) => return Err(format!("websocket closed: {c:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("websocket read: {e}")),
                None => return Err("websocket stream ended".to_string()),
            }
        };
        let _ = ws.close(None).await;
        Ok(reply)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| format!("websocket ws://{host}{path} on port {port}: timed out"))?
}

/// [`try_ws_echo`], panicking on error.
pub async fn ws_echo(port: u16, host: &str, path: &str, msg: &str) -> String {
    try_ws_echo(port, host, path, msg)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
