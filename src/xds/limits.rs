//! What one ADS client may cost: the bounds of a stream (request size, node size, distinct type
//! URLs, subscribed resource names, the NACK text kept) and the errors a stream is ended with
//! when it goes past one. Each bound lives here once; the tonic shell (`server.rs`) applies the
//! wire ones (request and node size) and the connection machine (`conn`) the protocol ones.
//!
//! Nothing a client sends is copied into a response or a log line unbounded: type URLs are
//! bounded in length and number, node ids are printed truncated ([`for_log`]), NACK messages
//! are kept truncated, and subscriptions are bounded in names and bytes.

/// The per-stream bounds (defaults: [`Limits::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request message accepted (gRPC's default receive limit is 4 MiB); a larger one
    /// ends its stream with `RESOURCE_EXHAUSTED` before it is read (`--xds-max-request-bytes`).
    pub max_request_bytes: usize,
    /// Largest encoded `Node` (id, metadata, locality...) a stream may present; larger is
    /// refused with `INVALID_ARGUMENT` (`--xds-max-node-bytes`).
    pub max_node_bytes: usize,
    /// Distinct type URLs one stream may name, the six we serve included
    /// (`--xds-max-type-urls`); the next one ends the stream with `RESOURCE_EXHAUSTED`.
    pub max_type_urls: usize,
    /// Longest type URL (Envoy's are under 100 bytes); longer ends the stream with
    /// `INVALID_ARGUMENT`.
    pub max_type_url_bytes: usize,
    /// Resource names a stream's subscriptions keep apart from its config, all types
    /// together: the names it subscribes that the config does not hold (and the config's names
    /// it leaves out of a subscription to nearly all of them). The names the config holds are
    /// the keys of the snapshot's maps, cost the stream nothing and are not counted: an Envoy
    /// at 100,000 services subscribes to about 200,000 load assignments.
    pub max_resource_names: usize,
    /// Total bytes of those names.
    pub max_resource_name_bytes: usize,
    /// NACK messages (`error_detail.message`) are kept and logged up to this many bytes.
    pub max_nack_message_bytes: usize,
    /// How long a stream whose proxy's config is not translated yet is held open waiting for
    /// it (`--xds-not-ready-wait`); then it is answered `UNAVAILABLE` (and Envoy retries).
    /// Zero answers such a stream at once.
    pub not_ready_wait: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 4 * 1024 * 1024,
            max_node_bytes: 64 * 1024,
            max_type_urls: 32,
            max_type_url_bytes: 512,
            max_resource_names: 200_000,
            max_resource_name_bytes: 32 * 1024 * 1024,
            max_nack_message_bytes: 16 * 1024,
            not_ready_wait: std::time::Duration::from_secs(30),
        }
    }
}

/// Why a stream was ended by the connection machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "type URL {type_url} is one more than the {limit} distinct type URLs a stream may name \
         (--xds-max-type-urls)"
    )]
    TypeUrls { limit: usize, type_url: String },
    #[error("a type URL of {len} bytes is longer than the limit of {limit} bytes")]
    TypeUrlLength { len: usize, limit: usize },
    #[error(
        "the stream subscribes to {names} resource names its config does not hold ({bytes} \
         bytes), more than the limit of {max_names} names / {max_bytes} bytes per stream"
    )]
    ResourceNames {
        names: usize,
        bytes: usize,
        max_names: usize,
        max_bytes: usize,
    },
}

impl LimitExceeded {
    /// The gRPC status code the stream ends with: `INVALID_ARGUMENT` for what no Envoy sends,
    /// `RESOURCE_EXHAUSTED` for a count past its bound.
    pub fn code(&self) -> tonic::Code {
        match self {
            LimitExceeded::TypeUrlLength { .. } => tonic::Code::InvalidArgument,
            LimitExceeded::TypeUrls { .. } | LimitExceeded::ResourceNames { .. } => {
                tonic::Code::ResourceExhausted
            }
        }
    }

    pub fn status(&self) -> tonic::Status {
        tonic::Status::new(self.code(), self.to_string())
    }
}

/// Request bytes allowed per resource of the largest type of a stream's config: a request may
/// name every resource of one type (a SotW EDS request; a Delta Envoy's first request of a
/// type, or its `initial_resource_versions` after a reconnect, ~80 bytes each).
pub const REQUEST_BYTES_PER_RESOURCE: usize = 128;

/// The request bound of a stream whose config is `snap`: `configured`
/// ([`Limits::max_request_bytes`]), raised to what an Envoy naming every resource of the
/// config's largest type sends, so a gateway of any size is never refused for a request its
/// own config calls for (at 100,000 services its first EDS request is ~10 MB; gRPC's 4 MiB
/// would refuse it). Until the stream's proxy is known (its first request), `configured`
/// applies alone.
pub fn request_bound(configured: usize, snap: &crate::xds::resource::Snapshot) -> usize {
    let largest = snap.resources.values().map(|m| m.len()).max().unwrap_or(0);
    configured.max(largest.saturating_mul(REQUEST_BYTES_PER_RESOURCE))
}

/// One stream's request bound, shared by its request decoder and its task (which raises it
/// to [`request_bound`] of each config it serves).
#[derive(Debug, Clone)]
pub struct RequestLimit(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl RequestLimit {
    pub fn new(bytes: usize) -> RequestLimit {
        RequestLimit(std::sync::Arc::new(bytes.into()))
    }

    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set(&self, bytes: usize) {
        self.0.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Characters of a client-supplied string (node id, nonce) printed in logs and span fields.
pub const LOG_CHARS: usize = 128;

/// `s` for a log line: its first [`LOG_CHARS`] characters, and "…" when it was longer.
pub fn for_log(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(LOG_CHARS) {
        None => std::borrow::Cow::Borrowed(s),
        Some((i, _)) => std::borrow::Cow::Owned(format!("{}…", &s[..i])),
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), with "…" when it was cut.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_for_logs_and_state() {
        assert_eq!(for_log("gw-1"), "gw-1");
        let long = "é".repeat(1000);
        let short = for_log(&long);
        assert_eq!(short.chars().count(), LOG_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(truncate_bytes("abc", 3), "abc");
        // 'é' is two bytes: 5 bytes cut back to 4.
        assert_eq!(truncate_bytes("ééé", 5), "éé…");
    }

    #[test]
    fn the_request_bound_grows_with_the_largest_type_of_the_config() {
        use crate::xds::resource::{resource_from_bytes, Snapshot, CLUSTER, ENDPOINT};
        let snap = |clusters: usize| {
            Snapshot::from_resources(
                1,
                (0..clusters)
                    .map(|i| {
                        let n = format!("c{i}");
                        (CLUSTER, resource_from_bytes(&n, "v", vec![1]))
                    })
                    .chain([(ENDPOINT, resource_from_bytes("e", "v", vec![1]))]),
            )
        };
        assert_eq!(
            request_bound(4096, &snap(3)),
            4096,
            "small: the configured bound"
        );
        assert_eq!(
            request_bound(4096, &snap(100)),
            100 * REQUEST_BYTES_PER_RESOURCE,
            "large: what naming every cluster takes"
        );
        let limit = RequestLimit::new(10);
        let shared = limit.clone();
        limit.set(20);
        assert_eq!(shared.get(), 20, "the decoder sees the task's bound");
    }

    #[test]
    fn codes_name_the_kind_of_limit() {
        let e = LimitExceeded::TypeUrls {
            limit: 2,
            type_url: "x".into(),
        };
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.to_string().contains("--xds-max-type-urls"), "{e}");
        let e = LimitExceeded::TypeUrlLength { len: 9, limit: 8 };
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
