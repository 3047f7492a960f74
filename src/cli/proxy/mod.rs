//! `proxy-status` and `proxy-config`: istioctl-style views of a running server, read from its
//! debug HTTP endpoints (`/debug/syncz`, `/debug/config_dump?proxyID=`). The HTTP client and
//! the errors are here; [`status`] and [`config`] turn the JSON into rows (pure, unit-tested).

pub mod config;
pub mod status;
pub mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::runtime::config::DEFAULT_DEBUG_ADDR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigOutput {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ProxyStatusArgs {
    /// The server's debug address (`serve --debug-addr`).
    #[arg(long, default_value = DEFAULT_DEBUG_ADDR)]
    pub debug_addr: String,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: StatusOutput,
}

#[derive(Debug, Args)]
pub struct ProxyConfigArgs {
    /// What to list.
    #[arg(value_enum)]
    pub kind: config::Kind,
    /// The Envoy: its node id, or a prefix of it that only one connected Envoy has.
    pub proxy: String,
    /// The server's debug address (`serve --debug-addr`).
    #[arg(long, default_value = DEFAULT_DEBUG_ADDR)]
    pub debug_addr: String,
    /// `table`, or the full resources as `json` / `yaml` (secrets with their keys redacted).
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: ConfigOutput,
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn query_escape(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET `path` from the debug server at `addr`: the status and body, or why it failed.
fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let unreachable = |e: String| {
        format!(
            "cannot reach the knative-pilot debug server at {addr} ({e}); is `knative-pilot \
             serve` running there? (--debug-addr)"
        )
    };
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("--debug-addr {addr:?} is not HOST:PORT ({e})"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    rt.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .map_err(|_| unreachable("no answer within 10s".into()))?
            .map_err(|e| {
                use std::error::Error;
                let cause = e.source().map(|s| s.to_string()).unwrap_or(e.to_string());
                unreachable(cause)
            })?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not complete within 30s".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

/// GET a JSON endpoint; a non-200 answer is an error with its body.
fn get_json(addr: &str, path: &str) -> Result<Value, String> {
    let (status, body) = get(addr, path)?;
    if status != 200 {
        return Err(format!("{addr}{path}: HTTP {status}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{addr}{path}: not JSON ({e})"))
}

/// The node id `query` names among the connected ones: itself, else the one it is a prefix of.
pub fn resolve_proxy(query: &str, connected: &[String]) -> Result<String, String> {
    if connected.iter().any(|c| c == query) {
        return Ok(query.to_string());
    }
    let mut matches: Vec<&String> = connected.iter().filter(|c| c.starts_with(query)).collect();
    matches.sort();
    matches.dedup();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "no connected proxy {query:?} (connected: {})",
            if connected.is_empty() {
                "none".to_string()
            } else {
                connected.join(", ")
            }
        )),
        many => {
            Err(format!(
            "proxy {query:?} is ambiguous: it is a prefix of {} connected proxies ({}); give more \
             of the node id",
            many.len(),
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))
        }
    }
}

fn print_or_fail(cmd: &str, text: Result<String, String>) -> ExitCode {
    match text {
        Ok(t) => super::emit(cmd, &t),
        Err(e) => {
            eprintln!("knative-pilot {cmd}: {e}");
            ExitCode::from(2)
        }
    }
}

/// `knative-pilot proxy-status`.
pub fn proxy_status(args: &ProxyStatusArgs) -> ExitCode {
    let text = get_json(&args.debug_addr, "/debug/syncz").and_then(|syncz| {
        let st = status::status(&syncz);
        if st.proxies.is_empty() {
            eprintln!(
                "knative-pilot proxy-status: no Envoy is connected to the server at {}",
                args.debug_addr
            );
        }
        match args.output {
            StatusOutput::Table => Ok(status::render(&st)),
            StatusOutput::Json => serde_json::to_string_pretty(&st)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string()),
        }
    });
    print_or_fail("proxy-status", text)
}

/// `knative-pilot proxy-config KIND PROXY`.
pub fn proxy_config(args: &ProxyConfigArgs) -> ExitCode {
    let text = (|| {
        let syncz = get_json(&args.debug_addr, "/debug/syncz")?;
        let connected: Vec<String> = syncz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["node_id"].as_str().map(str::to_string))
            .collect();
        let node = resolve_proxy(&args.proxy, &connected)?;
        let dump = get_json(
            &args.debug_addr,
            &format!("/debug/config_dump?proxyID={}", query_escape(&node)),
        )?;
        let resources = config::resources(&dump, args.kind);
        match args.output {
            ConfigOutput::Table => Ok(config::table(args.kind, &resources).render()),
            ConfigOutput::Json => serde_json::to_string_pretty(&resources)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string()),
            ConfigOutput::Yaml => serde_saphyr::to_string(&resources).map_err(|e| e.to_string()),
        }
    })();
    print_or_fail("proxy-config", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_its_node_id_or_a_unique_prefix() {
        let ids = vec![
            "router~127.0.0.1~gw-a.istio-system~istio-system.svc.cluster.local".to_string(),
            "router~127.0.0.1~gw-b.istio-system~istio-system.svc.cluster.local".to_string(),
        ];
        assert_eq!(resolve_proxy(&ids[1], &ids), Ok(ids[1].clone()));
        assert_eq!(
            resolve_proxy("router~127.0.0.1~gw-a", &ids),
            Ok(ids[0].clone())
        );
        let e = resolve_proxy("router~127.0.0.1~gw-", &ids).unwrap_err();
        assert!(
            e.contains("ambiguous") && e.contains("gw-a") && e.contains("gw-b"),
            "{e}"
        );
        let e = resolve_proxy("nope", &ids).unwrap_err();
        assert!(e.starts_with("no connected proxy \"nope\""), "{e}");
        let e = resolve_proxy("nope", &[]).unwrap_err();
        assert!(e.contains("connected: none"), "{e}");
    }

    #[test]
    fn node_ids_are_escaped_in_the_query() {
        assert_eq!(
            query_escape("router~1.2.3.4~a b&c"),
            "router~1.2.3.4~a%20b%26c"
        );
    }
}
