//! Replicas' progress: each replica serves its own on `/debug/kingress_progress`; the Lease
//! holder asks its peers for theirs.

use std::sync::Arc;
use std::time::Duration;

use super::ProgressMap;

/// Asks one replica for its progress.
pub(super) async fn fetch_progress(addr: &str) -> Result<ProgressMap, String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}/debug/kingress_progress")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(1), client.get(uri))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let body = tokio::time::timeout(Duration::from_secs(2), resp.into_body().collect())
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// This replica's progress, shared with the debug route.
#[derive(Debug, Default)]
pub struct ProgressShared {
    progress: std::sync::RwLock<Arc<ProgressMap>>,
}

impl ProgressShared {
    pub fn get(&self) -> Arc<ProgressMap> {
        self.progress.read().map(|p| p.clone()).unwrap_or_default()
    }

    pub(super) fn set(&self, p: ProgressMap) {
        if let Ok(mut w) = self.progress.write() {
            *w = Arc::new(p);
        }
    }
}

/// `GET /debug/kingress_progress`: this replica's [`ProgressMap`].
pub fn router(shared: Arc<ProgressShared>) -> axum::Router {
    axum::Router::new().route(
        "/debug/kingress_progress",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move { axum::Json((*shared.get()).clone()) }
        }),
    )
}
