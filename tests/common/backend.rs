//! In-process HTTP echo backend (HTTP/1.1 + h2c prior knowledge + WebSocket).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

struct Shared {
    name: String,
    count: AtomicUsize,
    requests: Mutex<Vec<Value>>,
}

/// An echo server on 127.0.0.1. Every response body is JSON:
/// `{"backend","method","path","host","proto","headers","body"}`.
///
/// * `/status/<code>` answers `<code>` (still with the JSON body);
/// * `/delay/<secs>` (float ok) sleeps, then answers 200;
/// * `K-Network-Probe: probe` answers 200 and echoes the request's
///   `K-Network-Hash` into the response header `K-Network-Hash`;
/// * an HTTP/1.1 `Upgrade: websocket` request becomes a WebSocket that echoes
///   every text/binary message.
///
/// Every response also carries `x-backend: <name>`.
/// Dropping the `Backend` (or [`Backend::stop`]) closes the listener and all
/// connections, including upgraded WebSockets.
pub struct Backend {
    shared: Arc<Shared>,
    port: u16,
    shutdown: Option<watch::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// Start on a free port.
    pub async fn start(name: &str) -> Backend {
        Self::start_on_port(name, 0).await
    }

    /// Start on a given port (e.g. to bring a stopped backend back on the
    /// same port). 0 = any free port.
    pub async fn start_on_port(name: &str, port: u16) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("backend {name}: bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            count: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let (tx, rx) = watch::channel(());
        let task = tokio::spawn(accept_loop(listener, shared.clone(), rx));
        Backend {
            shared,
            port,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Number of requests received (including probes and WebSocket upgrades).
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// The JSON echo of every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The JSON echo of the most recent request.
    pub fn last_request(&self) -> Option<Value> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    /// Close the listener (new connections are refused once this returns)
    /// and signal every open connection to close. Idempotent.
    pub async fn stop(&mut self) {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Dropping the sender wakes every task's `changed()` with an error.
        self.shutdown.take();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            let svc_stop = conn_stop.clone();
            let service = hyper::service::service_fn(move |req| {
                handle(req, shared.clone(), svc_stop.clone())
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_stop.changed() => {}
            }
        });
    }
    // listener dropped here: port closed.
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
}

async fn handle(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    stop: watch::Receiver<()>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    shared.count.fetch_add(1, Ordering::SeqCst);

    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let host = req
        .headers()
        .get(HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let proto = format!("{:?}", req.version());
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes());
        headers
            .entry(k.as_str().to_ascii_lowercase())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }

    let websocket = is_websocket_upgrade(&req);
    let ws_key = req.headers().get("sec-websocket-key").cloned();
    let on_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

    let body = if websocket {
        String::new()
    } else {
        match req.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        }
    };

    let echo = json!({
        "backend": shared.name,
        "method": method,
        "path": path,
        "host": host,
        "proto": proto,
        "headers": headers,
        "body": body,
    });
    shared.requests.lock().unwrap().push(echo.clone());

    let body_bytes = Bytes::from(serde_json::to_vec(&echo).expect("serialize echo"));
    let mut resp = hyper::Response::new(Full::new(body_bytes));
    let rh = resp.headers_mut();
    rh.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        rh.insert("x-backend", v);
    }

    // Knative network probe (what queue-proxy does).
    if headers.get("k-network-probe").map(String::as_str) == Some("probe") {
        if let Some(hash) = headers.get("k-network-hash") {
            if let Ok(v) = HeaderValue::from_str(hash) {
                resp.headers_mut().insert("k-network-hash", v);
            }
        }
        return Ok(resp);
    }

    if let (Some(on_upgrade), Some(key)) = (on_upgrade, ws_key) {
        let accept = derive_accept_key(key.as_bytes());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *resp.body_mut() = Full::new(Bytes::new());
        let rh = resp.headers_mut();
        rh.remove(CONTENT_TYPE);
        rh.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        rh.insert(UPGRADE, HeaderValue::from_static("websocket"));
        rh.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("accept key"),
        );
        let mut stop = stop;
        tokio::spawn(async move {
            let echo_loop = async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if matches!(msg, Message::Text(_) | Message::Binary(_))
                        && ws.send(msg).await.is_err()
                    {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = echo_loop => {}
                _ = stop.changed() => {}
            }
        });
        return Ok(resp);
    }

    let bare_path = path.split('?').next().unwrap_or("");
    if let Some(code) = bare_path.strip_prefix("/status/") {
        if let Some(status) = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            *resp.status_mut() = status;
        } else {
            *resp.status_mut() = StatusCode::BAD_REQUEST;
        }
    } else if let Some(secs) = bare_path.strip_prefix("/delay/") {
        match secs.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => {
                tokio::time::sleep(Duration::from_secs_f64(s)).await
            }
            _ => *resp.status_mut() = StatusCode::BAD_REQUEST,
        }
    }
    Ok(resp)
}
