//! What Envoy would reject, found before it is sent. Envoy validates every resource it is
//! given and rejects the whole response when one field is wrong (the shared `http.80`
//! RouteConfiguration, all ClusterLoadAssignments of a SotW response), so one bad value in one
//! object would stop every host of a gateway from updating. Every value of a translated
//! object that ends up in a field Envoy checks is checked here, against the intermediate model
//! all input kinds are reduced to (VirtualServices, KIngresses and Routes alike, so `serve`,
//! `render` and `validate` apply the same rules): the object is then left out, with an error
//! naming it, the host and the value.
//!
//! The rules are Envoy 1.40's (each was confirmed with `envoy --mode validate`):
//! - header names (set, add, remove, match): not empty, at most 16 KiB, no NUL, CR or LF;
//!   names set, added or removed must not be `:`-prefixed or `host`;
//! - header values set or added: at most 16 KiB, no NUL, CR or LF, and a valid substitution
//!   format ([`format`]);
//! - virtual host domains, host rewrites, redirect hosts and paths, prefix rewrites: no NUL,
//!   CR or LF;
//! - header prefix matches and regexes are not empty; regexes are RE2 within Envoy's program
//!   size limit ([`re2`]);
//! - timeouts fit Envoy's durations (below 9,223,372,036 s);
//! - the weights of a split sum to at most 2^32 - 1;
//! - TLS pairs load ([`tls_pair`]); listener ports, bind addresses and the SNI names of HTTPS
//!   servers are checked in `gateway` (Envoy rejects a listener whose TLS filter chains
//!   overlap).

pub mod format;
pub mod re2;

use std::time::Duration;

use super::error::TranslateError;
use super::ir::{
    Action, HeaderOps, PathMatch, PathRewrite, Retry, RouteIr, StringMatchIr, VirtualHostIr,
};

/// Envoy's largest header name or value (`max_bytes: 16384`).
const MAX_HEADER_BYTES: usize = 16384;

/// The first duration Envoy refuses (its milliseconds must fit an int64 nanosecond count).
const MAX_DURATION_SECS: u64 = 9_223_372_036;

/// Checks one virtual host an object places: its host and every route's matches, actions and
/// headers, except the routes of a list already in `checked` (a list several hosts of one
/// object share, see [`VirtualHostIr::routes`], passed for the first); adds its list there.
pub(crate) fn virtual_host(
    vh: &VirtualHostIr,
    checked: &mut Vec<*const Vec<RouteIr>>,
) -> Result<(), TranslateError> {
    let at = |what: String| format!("host {:?}: {what}", vh.host);
    no_control(&vh.host).map_err(|why| reject(at(format!("the host {why}"))))?;
    let list = std::sync::Arc::as_ptr(&vh.routes);
    if checked.contains(&list) {
        return Ok(());
    }
    checked.push(list);
    for (i, r) in vh.routes.iter().enumerate() {
        route(r).map_err(|why| reject(at(format!("route {}: {why}", route_label(i, r)))))?;
    }
    Ok(())
}

fn reject(reason: String) -> TranslateError {
    TranslateError::EnvoyRejects(reason)
}

fn route_label(i: usize, r: &RouteIr) -> String {
    match &r.name {
        Some(n) if !n.is_empty() => format!("{i} ({n:?})"),
        _ => i.to_string(),
    }
}

fn route(r: &RouteIr) -> Result<(), String> {
    match &r.path {
        PathMatch::Prefix(_) | PathMatch::Exact(_) => {}
        PathMatch::Regex(rx) => regex(rx).map_err(|why| format!("path {why}"))?,
        // Envoy: `^[^?#]+[^?#/]$`.
        PathMatch::SegmentPrefix(p) => {
            if p.is_empty() || p.ends_with('/') || p.contains(['?', '#']) {
                return Err(format!(
                    "path prefix {p:?} (a segment prefix may not be empty, end in '/' or hold \
                     '?' or '#')"
                ));
            }
            no_control(p).map_err(|why| format!("path prefix {p:?} {why}"))?;
        }
    }
    for q in &r.query {
        no_control(&q.name).map_err(|why| format!("query match name {:?} {why}", q.name))?;
        if q.name.is_empty() {
            return Err("query match has an empty name".to_string());
        }
        if let StringMatchIr::Regex(rx) = &q.matcher {
            regex(rx).map_err(|why| format!("query match {:?} {why}", q.name))?;
        }
    }
    for h in &r.headers {
        header_name(&h.name).map_err(|why| format!("header match name {:?} {why}", h.name))?;
        match &h.matcher {
            StringMatchIr::Exact(_) => {}
            StringMatchIr::Prefix(p) if p.is_empty() => {
                return Err(format!(
                    "header match {:?} has an empty prefix (Envoy requires one)",
                    h.name
                ))
            }
            StringMatchIr::Prefix(_) => {}
            StringMatchIr::Regex(rx) => {
                regex(rx).map_err(|why| format!("header match {:?} {why}", h.name))?
            }
        }
    }
    header_ops(&r.headers_ops)?;
    match &r.action {
        Action::Route {
            destinations,
            timeout,
            retry,
            host_rewrite,
            path_rewrite,
            missing_cluster_500: _,
        } => {
            for d in destinations.iter() {
                header_ops(&d.headers)
                    .map_err(|why| format!("destination {}: {why}", d.cluster))?;
            }
            let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
            if total > u64::from(u32::MAX) {
                return Err(format!(
                    "the split weights sum to {total}, more than Envoy's 4294967295"
                ));
            }
            if let Some(t) = timeout {
                duration(*t).map_err(|why| format!("timeout {why}"))?;
            }
            if let Retry::Custom {
                per_try_timeout: Some(t),
                ..
            } = retry
            {
                duration(*t).map_err(|why| format!("per-try timeout {why}"))?;
            }
            if let Some(h) = host_rewrite {
                no_control(h).map_err(|why| format!("host rewrite {h:?} {why}"))?;
            }
            if let Some(p) = path_rewrite {
                path_rewrite_ok(p)?;
            }
            // A full-path rewrite is a regex substitution, where `\` names a capture group.
            if let Some(PathRewrite::Full(p)) = path_rewrite {
                if p.contains('\\') {
                    return Err(format!("path rewrite {p:?} holds a '\\'"));
                }
            }
        }
        Action::Direct { status } => {
            if !(200..=599).contains(status) {
                return Err(format!(
                    "direct response status {status} (Envoy takes 200-599)"
                ));
            }
        }
        Action::Redirect {
            host, path, port, ..
        } => {
            if let Some(h) = host {
                no_control(h).map_err(|why| format!("redirect host {h:?} {why}"))?;
            }
            if let Some(p) = path {
                path_rewrite_ok(p).map_err(|why| format!("redirect {why}"))?;
            }
            if let Some(p) = port.filter(|p| !(1..=65535).contains(p)) {
                return Err(format!("redirect port {p} (Envoy takes 1-65535)"));
            }
        }
    }
    Ok(())
}

fn path_rewrite_ok(rw: &PathRewrite) -> Result<(), String> {
    match rw {
        PathRewrite::Full(p) => no_control(p).map_err(|why| format!("path {p:?} {why}")),
        PathRewrite::Prefix(p) => {
            no_control(p).map_err(|why| format!("prefix rewrite {p:?} {why}"))
        }
        PathRewrite::Regex {
            pattern,
            substitution,
        } => {
            regex(pattern).map_err(|why| format!("path rewrite {why}"))?;
            no_control(substitution).map_err(|why| format!("path rewrite {substitution:?} {why}"))
        }
    }
}

fn regex(rx: &str) -> Result<(), String> {
    re2::check(rx).map_err(|why| format!("regex {rx:?} {why}"))
}

fn header_ops(ops: &HeaderOps) -> Result<(), String> {
    for (verb, k, v) in ops
        .set
        .iter()
        .map(|(k, v)| ("set", k, Some(v)))
        .chain(ops.add.iter().map(|(k, v)| ("add", k, Some(v))))
        .chain(ops.remove.iter().map(|k| ("remove", k, None)))
    {
        header_name(k).map_err(|why| format!("header to {verb} {k:?} {why}"))?;
        if k.starts_with(':') || k.eq_ignore_ascii_case("host") {
            return Err(format!(
                "header to {verb} {k:?}: Envoy does not let routes {verb} ':'-prefixed or host \
                 headers"
            ));
        }
        if let Some(v) = v {
            header_value(v).map_err(|why| format!("value of header to {verb} {k:?} {why}"))?;
        }
    }
    Ok(())
}

/// Envoy's `HTTP_HEADER_NAME` (non-strict), with its length limit.
pub fn header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_string());
    }
    if name.len() > MAX_HEADER_BYTES {
        return Err(format!("is longer than {MAX_HEADER_BYTES} bytes"));
    }
    no_control(name)
}

/// Envoy's `HTTP_HEADER_VALUE` (non-strict), its length limit and the substitution format.
pub fn header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(format!("is longer than {MAX_HEADER_BYTES} bytes"));
    }
    no_control(value)?;
    format::check(value)
}

/// No NUL, CR or LF (what Envoy's non-strict header rules forbid).
fn no_control(s: &str) -> Result<(), String> {
    match s
        .char_indices()
        .find(|(_, c)| matches!(c, '\0' | '\r' | '\n'))
    {
        Some((i, c)) => Err(format!(
            "holds {} at byte {i}, which Envoy does not allow there",
            match c {
                '\0' => "a NUL",
                '\r' => "a carriage return",
                _ => "a line feed",
            }
        )),
        None => Ok(()),
    }
}

/// Whether Envoy can load a TLS pair: `tls.crt` holds PEM certificates that parse, `tls.key` a
/// PEM private key, and the key belongs to the first certificate (Envoy: "Failed to load
/// certificate chain", "KEY_VALUES_MISMATCH"). A key type the checker cannot load is taken as
/// Envoy would (it may well support it); only a provable mismatch is refused.
pub fn tls_pair(crt: &[u8], key: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM ({e})"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no PEM certificate".to_string());
    }
    for (i, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| format!("certificate {} of tls.crt does not parse ({e})", i + 1))?;
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("tls.key holds no PEM private key ({e})"))?;
    let provider = rustls::crypto::ring::default_provider();
    let Ok(signing) = provider.key_provider.load_private_key(key) else {
        return Ok(());
    };
    match rustls::sign::CertifiedKey::new(certs, signing).keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("tls.key is not the key of the first certificate in tls.crt".to_string())
        }
        _ => Ok(()),
    }
}

fn duration(d: Duration) -> Result<(), String> {
    if d.as_secs() >= MAX_DURATION_SECS {
        return Err(format!(
            "of {} s is beyond Envoy's largest duration ({} s)",
            d.as_secs(),
            MAX_DURATION_SECS - 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ir::{HeaderMatchIr, WeightedDestination};
    use std::sync::Arc;

    fn vh(route: RouteIr) -> VirtualHostIr {
        VirtualHostIr {
            host: "a.example.com".into(),
            port: 80,
            routes: std::sync::Arc::new(vec![route]),
            require_tls: false,
        }
    }

    fn plain() -> RouteIr {
        RouteIr {
            name: None,
            path: PathMatch::Prefix("/".into()),
            headers: vec![],
            query: vec![],
            action: Action::Route {
                destinations: Arc::new([WeightedDestination {
                    cluster: "c".into(),
                    weight: 100,
                    headers: HeaderOps::default(),
                }]),
                timeout: None,
                retry: Retry::None,
                host_rewrite: None,
                path_rewrite: None,
                missing_cluster_500: false,
            },
            headers_ops: HeaderOps::default(),
            metadata: None,
        }
    }

    fn with_set(k: &str, v: &str) -> RouteIr {
        let mut r = plain();
        r.headers_ops.set.insert(k.into(), v.into());
        r
    }

    #[test]
    fn what_envoy_rejects_is_refused_with_the_host_and_value() {
        let cases: Vec<(RouteIr, &str)> = vec![
            (with_set("x-a", "a\nb"), "line feed"),
            (with_set("x-a\r", "v"), "carriage return"),
            (with_set("x-a", "a\0b"), "NUL"),
            (with_set(":authority", "v"), "':'-prefixed"),
            (with_set("Host", "v"), "host"),
            (with_set("", "v"), "empty"),
            (with_set("x-a", "100%"), "%%"),
            (with_set("x-a", &"a".repeat(16385)), "16384"),
            (
                RouteIr {
                    path: PathMatch::Regex("(?<=a)b".into()),
                    ..plain()
                },
                "regex",
            ),
            (
                RouteIr {
                    headers: vec![HeaderMatchIr {
                        name: "x".into(),
                        matcher: StringMatchIr::Prefix(String::new()),
                    }],
                    ..plain()
                },
                "empty prefix",
            ),
            (
                RouteIr {
                    action: Action::Route {
                        destinations: Arc::new([]),
                        timeout: Some(Duration::from_secs(MAX_DURATION_SECS)),
                        retry: Retry::None,
                        host_rewrite: None,
                        path_rewrite: None,
                        missing_cluster_500: false,
                    },
                    ..plain()
                },
                "largest duration",
            ),
            (
                RouteIr {
                    action: Action::Route {
                        destinations: Arc::new([]),
                        timeout: None,
                        retry: Retry::None,
                        host_rewrite: Some("a\nb".into()),
                        path_rewrite: None,
                        missing_cluster_500: false,
                    },
                    ..plain()
                },
                "host rewrite",
            ),
            (
                RouteIr {
                    action: Action::Route {
                        destinations: ["a", "b"]
                            .iter()
                            .map(|c| WeightedDestination {
                                cluster: c.to_string(),
                                weight: u32::MAX,
                                headers: HeaderOps::default(),
                            })
                            .collect(),
                        timeout: None,
                        retry: Retry::None,
                        host_rewrite: None,
                        path_rewrite: None,
                        missing_cluster_500: false,
                    },
                    ..plain()
                },
                "weights",
            ),
        ];
        for (r, want) in cases {
            let err = virtual_host(&vh(r.clone()), &mut Vec::new())
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{err} (want {want})");
            assert!(err.contains("a.example.com"), "{err}");
        }
        let mut bad_host = vh(plain());
        bad_host.host = "a\n.example.com".into();
        assert!(virtual_host(&bad_host, &mut Vec::new()).is_err());
        for ok in [
            plain(),
            with_set("x-a", "50%% %REQ(x-b)%"),
            with_set("X-Upper Space", "tab\there é"),
        ] {
            assert_eq!(
                virtual_host(&vh(ok.clone()), &mut Vec::new()),
                Ok(()),
                "{ok:?}"
            );
        }
    }
}
