//! Envoy reads request header values as substitution format strings: `%%` is a percent sign
//! and `%COMMAND%`, `%COMMAND(arg)%`, `%COMMAND(arg):N%` are replaced per request. A value with
//! any other `%`, or a command Envoy does not know (or given an argument it does not take), makes
//! Envoy reject the whole route configuration (`Couldn't find valid command at position N`,
//! `Not supported field in StreamInfo: X`).

/// Commands that take no argument.
const PLAIN: &[&str] = &[
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "CONNECTION_ID",
    "CONNECTION_TERMINATION_DETAILS",
    "CUSTOM_FLAGS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_PEER_CERT_V_END",
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_PORT",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_TLS_VERSION",
    "DURATION",
    "HOSTNAME",
    "LOCAL_REPLY_BODY",
    "PROTOCOL",
    "REQUESTED_SERVER_NAME",
    "REQUEST_DURATION",
    "REQUEST_HEADERS_BYTES",
    "REQUEST_TX_DURATION",
    "RESPONSE_CODE",
    "RESPONSE_CODE_DETAILS",
    "RESPONSE_DURATION",
    "RESPONSE_FLAGS",
    "RESPONSE_FLAGS_LONG",
    "RESPONSE_TX_DURATION",
    "ROUTE_NAME",
    "STREAM_ID",
    "TRACE_ID",
    "UNIQUE_ID",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_CLUSTER_RAW",
    "UPSTREAM_CONNECTION_ID",
    "UPSTREAM_HOST",
    "UPSTREAM_HOST_NAME",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_LOCAL_PORT",
    "UPSTREAM_PROTOCOL",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_REMOTE_PORT",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "VIRTUAL_CLUSTER_NAME",
];

/// Commands whose argument is optional (a time format, for the times).
const OPTIONAL_ARG: &[&str] = &[
    "EMIT_TIME",
    "EMIT_TIME_LOCAL",
    "PATH",
    "START_TIME",
    "START_TIME_LOCAL",
];

/// Commands that need an argument.
const ARG: &[&str] = &[
    "CLUSTER_METADATA",
    "COMMON_DURATION",
    "DYNAMIC_METADATA",
    "ENVIRONMENT",
    "FILTER_STATE",
    "PER_REQUEST_STATE",
    "QUERY_PARAM",
    "REQ",
    "RESP",
    "TRAILER",
    "UPSTREAM_FILTER_STATE",
    "UPSTREAM_METADATA",
];

/// Commands whose argument is a header name (`name` or `name?alternative`).
const HEADER_ARG: &[&str] = &["REQ", "RESP", "TRAILER"];

/// Why Envoy would refuse `value` as a header value format string.
pub fn check(value: &str) -> Result<(), String> {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        let start = i;
        if b.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        let bad = || {
            format!(
                "has a '%' at byte {start} that starts no Envoy command (write %% for a percent \
                 sign)"
            )
        };
        let name_end = b[i + 1..]
            .iter()
            .position(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_'))
            .map_or(b.len(), |p| p + i + 1);
        let name = &value[i + 1..name_end];
        if name.is_empty() {
            return Err(bad());
        }
        let mut j = name_end;
        let mut arg = None;
        if b.get(j) == Some(&b'(') {
            let close = b[j..].iter().position(|c| *c == b')').ok_or_else(bad)? + j;
            arg = Some(&value[j + 1..close]);
            j = close + 1;
        }
        if b.get(j) == Some(&b':') {
            let digits = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad());
            }
            j += 1 + digits;
        }
        if b.get(j) != Some(&b'%') {
            return Err(bad());
        }
        let arg = arg.filter(|a| !a.is_empty());
        let known = if PLAIN.contains(&name) {
            if arg.is_some() {
                return Err(format!("passes an argument to %{name}%, which takes none"));
            }
            true
        } else if ARG.contains(&name) {
            let Some(a) = arg else {
                return Err(format!("uses %{name}% without the argument it needs"));
            };
            if HEADER_ARG.contains(&name)
                && !a
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_:?.".contains(&c))
            {
                return Err(format!("passes %{name}% a header name {a:?} Envoy refuses"));
            }
            true
        } else {
            OPTIONAL_ARG.contains(&name)
        };
        if !known {
            return Err(format!("uses %{name}%, which is not an Envoy command"));
        }
        i = j + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    /// Each value as stock Envoy 1.40 judged it in a route's request_headers_to_add.
    #[test]
    fn values_are_judged_as_envoy_judges_them() {
        for ok in [
            "plain",
            "50%% off",
            "%%",
            "%REQ(x-a)%",
            "%REQ(x-a):10%",
            "%DOWNSTREAM_REMOTE_ADDRESS%",
            "%START_TIME(%s)%",
            "%START_TIME%",
            "%HOSTNAME()%",
            "%DYNAMIC_METADATA(a:b)%",
            "a %PROTOCOL% b %UPSTREAM_CLUSTER%",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "100%",
            "%FOO%",
            "%REQ%",
            "%REQ()%",
            "%PROTOCOL(x)%",
            "%%%",
            "%a b%",
            "%REQ(a b)%",
            "%req(x)%",
            "%REQ_WITHOUT_QUERY(a)%",
            "%REQ(x",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
