//! The debug HTTP server on `--debug-addr`: `/healthz`, `/ready`, `/metrics` (Prometheus),
//! `/debug/config_dump`, `/debug/syncz`, `/debug/connections`, `/debug/inputs`. It only reads
//! the hub, the connection registry and the metrics. It is unauthenticated: it listens on
//! loopback unless `--debug-addr` says otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::json;

use crate::hub::Hub;
use crate::runtime::metrics::{type_short, Metrics};
use crate::translate;
use crate::xds::server::{ConnectionInfo, ConnectionRegistry};

/// Shared state of the debug server.
#[derive(Clone)]
pub struct DebugState {
    pub hub: Arc<Hub>,
    pub registry: Arc<ConnectionRegistry>,
    pub metrics: Arc<Metrics>,
    /// Whether the input source follows its input (else it serves its last objects).
    pub source: crate::source::Health,
}

/// The debug routes.
pub fn router(state: DebugState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/debug/config_dump", get(config_dump))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/connections", get(connections))
        .route("/debug/inputs", get(inputs_debug))
        .with_state(state)
}

async fn ready(State(s): State<DebugState>) -> Response {
    if s.hub.is_ready() {
        // Still ready when the input is gone: the Envoys are served the last objects, and
        // taking every replica out of its Service at once would help nobody.
        match s.source.stale() {
            None => (StatusCode::OK, "ready\n").into_response(),
            Some(why) => (StatusCode::OK, format!("ready; input stale: {why}\n")).into_response(),
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: initial load not translated yet\n",
        )
            .into_response()
    }
}

/// `/debug/config_dump?proxyID=<node id>`: the snapshot that connection is serving (what that
/// Envoy was sent); `?gateway=external|local|ns/name`: what a gateway's pods would get now.
async fn config_dump(
    State(s): State<DebugState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let snap = if let Some(id) = q.get("proxyID") {
        match s.registry.list().into_iter().find(|c| &c.node_id == id) {
            Some(c) => c.snapshot.clone(),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    format!("no connected proxy {id:?}\n"),
                )
                    .into_response()
            }
        }
    } else {
        let gw = q.get("gateway").map(String::as_str).unwrap_or("external");
        let inputs = s.hub.inputs();
        match translate::gateway_labels(&inputs, &s.hub.opts, gw) {
            Some(l) => Arc::new(s.hub.snapshot_for(&l)),
            None => return (StatusCode::NOT_FOUND, format!("no gateway {gw:?}\n")).into_response(),
        }
    };
    match crate::xds::dump::config_dump(&snap) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn metrics(State(s): State<DebugState>) -> Response {
    match s.metrics.render(&s.hub, &s.registry) {
        Ok(text) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// The Gateways (`ns/name`) whose selector matches these proxy labels.
fn gateways_of(s: &DebugState, labels: &BTreeMap<String, String>) -> Vec<String> {
    let inputs = s.hub.inputs();
    translate::gateways(&inputs, &s.hub.opts)
        .into_iter()
        .filter(|g| {
            g.spec
                .selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|g| g.id())
        .collect()
}

/// Per connected Envoy: node, gateways, connected since, and per type (short name) the last
/// sent version and nonce, the last ACKed version, the last NACK with its time, and the
/// `state` `proxy-status` shows (`SYNCED`, `STALE`, `NOT SENT`, `NACKED`).
fn sync_view(s: &DebugState, c: &ConnectionInfo) -> serde_json::Value {
    let types: BTreeMap<&str, serde_json::Value> = c
        .status
        .types
        .iter()
        .filter(|(_, t)| t.served)
        .map(|(url, t)| {
            let nack = t.last_nack.as_ref().map(|n| {
                json!({
                    "error": n.message,
                    "version": n.version,
                    "nonce": n.nonce,
                    "resources": n.resources,
                    "at": c.last_nack_at.get(url),
                })
            });
            (
                type_short(url),
                json!({
                    "type_url": url,
                    "last_sent_version": t.last_sent_version,
                    "last_sent_nonce": t.last_sent_nonce,
                    "last_acked_version": t.last_acked_version,
                    "in_sync": t.in_sync,
                    "state": t.state,
                    "resources": t.resources_held,
                    "pushes": t.responses_sent,
                    "acks": t.acks,
                    "nacks": t.nacks,
                    "bytes_sent": t.bytes_sent,
                    "last_nack": nack,
                }),
            )
        })
        .collect();
    json!({
        "node_id": c.node_id,
        "conn_id": c.conn_id,
        "mode": c.mode,
        "identity": c.identity,
        "denied_secrets": c.denied_secrets,
        "gateways": gateways_of(s, &c.labels),
        "connected_since": c.connected_since,
        "target_generation": c.status.target_generation,
        "acked_generation": c.status.acked_generation,
        "synced": c.status.acked_generation == Some(c.status.target_generation),
        "types": types,
        "status": c.status,
    })
}

/// `/debug/syncz`: the hub's generation and each connection's sync state.
async fn syncz(State(s): State<DebugState>) -> Response {
    let conns: Vec<serde_json::Value> =
        s.registry.list().iter().map(|c| sync_view(&s, c)).collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": s.hub.is_ready(),
        "source_stale": s.source.stale(),
        "generation": s.hub.generation(),
        "connections": conns,
    }))
    .into_response()
}

/// `/debug/connections`: who is connected (short form).
async fn connections(State(s): State<DebugState>) -> Response {
    let conns: Vec<serde_json::Value> = s
        .registry
        .list()
        .iter()
        .map(|c| {
            json!({
                "conn_id": c.conn_id,
                "node_id": c.node_id,
                "namespace": c.namespace,
                "identity": c.identity,
                "denied_secrets": c.denied_secrets.len(),
                "labels": c.labels,
                "gateways": gateways_of(&s, &c.labels),
                "mode": c.mode,
                "connected_since": c.connected_since,
                "acked_generation": c.status.acked_generation,
            })
        })
        .collect();
    Json(json!({"count": conns.len(), "connections": conns})).into_response()
}

/// `/debug/inputs`: every object the sources gave (with its file and document) and the problems
/// reported for it; problems that name no object (a file that does not parse) are listed apart.
async fn inputs_debug(State(s): State<DebugState>) -> Response {
    let inputs = s.hub.raw_inputs();
    let errors = s.hub.errors();
    let mut per_object: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut other: Vec<serde_json::Value> = Vec::new();
    for e in &errors {
        match &e.object {
            Some(k) => per_object
                .entry(k.to_string())
                .or_default()
                .push(e.message.clone()),
            None => other.push(json!({"origin": e.origin, "error": e.to_string()})),
        }
    }
    let objects: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(k, e)| {
            let key = k.to_string();
            let errs = per_object.remove(&key).unwrap_or_default();
            json!({
                "object": key,
                "kind": k.kind.to_string(),
                "namespace": k.namespace,
                "name": k.name,
                "origin": e.origin,
                "errors": errs,
            })
        })
        .collect();
    // Problems of objects no longer given by a source (e.g. kept at their last good version).
    for (object, errs) in per_object {
        for e in errs {
            other.push(json!({"object": object, "error": e}));
        }
    }
    Json(json!({
        "generation": s.hub.generation(),
        "objects": objects,
        "error_count": errors.len(),
        "other_errors": other,
        // Every error as one line (kind ns/name (file document N): message), sorted.
        "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    }))
    .into_response()
}
