//! Asking the Kubernetes API: TokenReview (who is this token?) and SubjectAccessReview (may this
//! service account list secrets in its namespace?), both behind a short cache with one call in
//! flight per key, so a reconnect storm of one gateway costs one API call per cache period.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::identity::Identity;

/// Entries kept at most (a flood of distinct bad tokens must not grow memory without bound).
const MAX_ENTRIES: usize = 10_000;

struct Slot<V> {
    cell: tokio::sync::OnceCell<(V, bool)>,
    created: Instant,
}

/// A time-bounded cache where concurrent lookups of one key share one computation.
pub struct TtlCache<K, V> {
    ttl: Duration,
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value, or `compute()`'s. `compute` answers `(value, cacheable)`; a value that is
    /// not cacheable (the API could not be asked) is handed to the callers waiting for it and
    /// then forgotten.
    pub async fn get_or_compute<F, Fut>(&self, key: K, compute: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, bool)>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if slots.len() >= MAX_ENTRIES {
                slots.retain(|_, s| now.duration_since(s.created) < self.ttl);
                if slots.len() >= MAX_ENTRIES {
                    slots.clear();
                }
            }
            let fresh = slots
                .get(&key)
                .filter(|s| now.duration_since(s.created) < self.ttl)
                .cloned();
            match fresh {
                Some(s) => s,
                None => {
                    let s = Arc::new(Slot {
                        cell: tokio::sync::OnceCell::new(),
                        created: now,
                    });
                    slots.insert(key.clone(), s.clone());
                    s
                }
            }
        };
        let (value, cacheable) = slot.cell.get_or_init(compute).await.clone();
        if !cacheable {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(&key);
            }
        }
        value
    }
}

/// Why a token was not accepted (never contains the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("TokenReview did not authenticate the token: {0}")]
    Rejected(String),
    #[error("TokenReview: the token is not for audience {0:?}")]
    Audience(String),
    #[error("TokenReview: {0}")]
    NotServiceAccount(String),
    #[error("TokenReview failed: {0}")]
    Api(String),
    #[error("no way to verify tokens (start with --kube, --kube-auth or --token-jwks-file)")]
    NoApi,
}

/// Counts of API calls made (for tests and the reconnect-storm measurement).
#[derive(Debug, Default)]
pub struct ApiCalls {
    pub token_reviews: AtomicU64,
    pub access_reviews: AtomicU64,
}

/// TokenReview and SubjectAccessReview through kube's client, cached.
pub struct KubeReviewer {
    client: kube::Client,
    audiences: Vec<String>,
    trust_domain: String,
    tokens: TtlCache<[u8; 32], Result<Identity, TokenError>>,
    access: TtlCache<Identity, bool>,
    pub calls: ApiCalls,
}

/// The cache key of a token: its SHA-256 (the token itself is never kept).
fn token_key(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

impl KubeReviewer {
    pub fn new(
        client: kube::Client,
        audiences: Vec<String>,
        trust_domain: String,
        ttl: Duration,
    ) -> Self {
        KubeReviewer {
            client,
            audiences,
            trust_domain,
            tokens: TtlCache::new(ttl),
            access: TtlCache::new(ttl),
            calls: ApiCalls::default(),
        }
    }

    /// Who the token belongs to, by TokenReview (cached by the token's hash).
    pub async fn review_token(&self, token: &str) -> Result<Identity, TokenError> {
        self.tokens
            .get_or_compute(token_key(token), || async {
                self.calls.token_reviews.fetch_add(1, Ordering::Relaxed);
                let r = self.token_review_call(token).await;
                let cacheable = !matches!(r, Err(TokenError::Api(_)));
                (r, cacheable)
            })
            .await
    }

    async fn token_review_call(&self, token: &str) -> Result<Identity, TokenError> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| TokenError::Api(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(TokenError::Rejected(
                status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "not authenticated".to_string()),
            ));
        }
        // The API server answers the audiences (of ours) the token is valid for.
        let audiences = status.audiences.unwrap_or_default();
        if !self.audiences.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Audience(self.audiences.join(",")));
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        Identity::from_username(&user, &self.trust_domain)
            .map_err(|e| TokenError::NotServiceAccount(e.to_string()))
    }

    /// Whether the service account may `list secrets` in its own namespace, by
    /// SubjectAccessReview (cached per identity). An API error denies (not cached).
    pub async fn may_list_secrets(&self, identity: &Identity) -> bool {
        self.access
            .get_or_compute(identity.clone(), || async {
                self.calls.access_reviews.fetch_add(1, Ordering::Relaxed);
                match self.access_review_call(identity).await {
                    Ok(allowed) => (allowed, true),
                    Err(e) => {
                        tracing::warn!(identity = %identity, error = %e, "SubjectAccessReview failed: denying secrets");
                        (false, false)
                    }
                }
            })
            .await
    }

    async fn access_review_call(&self, identity: &Identity) -> Result<bool, kube::Error> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(identity.username()),
                groups: Some(vec![
                    "system:serviceaccounts".to_string(),
                    format!("system:serviceaccounts:{}", identity.namespace),
                    "system:authenticated".to_string(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(identity.namespace.clone()),
                    verb: Some("list".to_string()),
                    resource: Some("secrets".to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn one_computation_per_key_and_period() {
        let cache: TtlCache<u32, u32> = TtlCache::new(Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let cache = Arc::new(cache);
        for _ in 0..100 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_compute(1, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        (7, true)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Not cacheable: computed again next time.
        let n = cache.get_or_compute(2, || async { (1, false) }).await;
        assert_eq!(n, 1);
        let n = cache.get_or_compute(2, || async { (2, true) }).await;
        assert_eq!(n, 2);
        // Expired: computed again.
        let short: TtlCache<u32, u32> = TtlCache::new(Duration::from_millis(0));
        assert_eq!(short.get_or_compute(1, || async { (1, true) }).await, 1);
        assert_eq!(short.get_or_compute(1, || async { (2, true) }).await, 2);
    }
}
