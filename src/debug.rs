//! The debug HTTP server on `--debug-addr`: `/healthz`, `/ready`, `/debug/config_dump`,
//! `/debug/syncz`, `/debug/inputs`. It only reads the hub and the connection registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::json;

use crate::hub::Hub;
use crate::translate;
use crate::xds::server::ConnectionRegistry;

/// Shared state of the debug server.
#[derive(Clone)]
pub struct DebugState {
    pub hub: Arc<Hub>,
    pub registry: Arc<ConnectionRegistry>,
}

/// The debug routes.
pub fn router(state: DebugState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/syncz", get(syncz))
        .route("/debug/inputs", get(inputs_debug))
        .with_state(state)
}

async fn ready(State(s): State<DebugState>) -> Response {
    if s.hub.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: initial load not translated yet\n",
        )
            .into_response()
    }
}

/// `/debug/config_dump?gateway=external|local|ns/name` or `?proxyID=<node id>`.
async fn config_dump(
    State(s): State<DebugState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let labels = if let Some(id) = q.get("proxyID") {
        match s.registry.list().into_iter().find(|c| &c.node_id == id) {
            Some(c) => c.labels.clone(),
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
            Some(l) => l,
            None => return (StatusCode::NOT_FOUND, format!("no gateway {gw:?}\n")).into_response(),
        }
    };
    let snap = s.hub.snapshot_for(&labels);
    match crate::dump::config_dump(&snap) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn syncz(State(s): State<DebugState>) -> Response {
    Json(json!({
        "ready": s.hub.is_ready(),
        "generation": s.hub.generation(),
        "connections": s.registry.list(),
    }))
    .into_response()
}

async fn inputs_debug(State(s): State<DebugState>) -> Response {
    let inputs = s.hub.inputs();
    let objects: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(k, e)| json!({"object": k.to_string(), "origin": e.origin}))
        .collect();
    let errors: Vec<String> = s.hub.errors().iter().map(|e| e.to_string()).collect();
    Json(json!({"generation": s.hub.generation(), "objects": objects, "errors": errors}))
        .into_response()
}
