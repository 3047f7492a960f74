//! `proxy-status` and `proxy-config` against a real server and a real stock Envoy: the binary
//! reads the server's debug endpoints and prints what that Envoy was sent and whether it
//! ACKed it, as `istioctl proxy-status` / `proxy-config` do.
//!
//! The gateway connects over mTLS (a client certificate with the gateway's SPIFFE identity) so
//! that it is sent its TLS Secret, and the secret views can be checked for key material. The
//! NACK case: the external gateway's HTTP port is held by another socket, so Envoy rejects the
//! listener (`cannot bind`); listener NACKs are reported, not contained, so it stays NACKED
//! (an RDS NACK, as in `e2e_nack`, is contained within milliseconds and then shows SYNCED).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::*;
use common::pki::{Ca, SERVER_NAME};
use common::*;
use serde_json::Value;

const HOST: &str = SECURE_HOST;
const POD: &str = "istio-ingressgateway-0";
const NODE: &str =
    "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local";
const GATEWAY: &str = "knative-serving/knative-ingress-gateway";

/// Pieces of the Secret's private key as they could leak: the base64 of its PEM (what
/// `inline_bytes` would hold) and a line of the PEM body (what `inline_string` would hold).
fn key_fragments() -> Vec<String> {
    let yaml = secure_secret_yaml();
    let b64 = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("tls.key: "))
        .expect("tls.key in the fixture")
        .to_string();
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .expect("base64 key");
    let pem = String::from_utf8(pem).expect("PEM");
    let body_line = pem.lines().nth(1).expect("PEM body").to_string();
    vec![b64[..60].to_string(), body_line, "PRIVATE KEY".to_string()]
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(args)
        .output()
        .expect("run knative-pilot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `knative-pilot ARGS --debug-addr 127.0.0.1:PORT`, which must succeed; its stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let addr = format!("127.0.0.1:{}", server.debug_port());
    let mut all = args.to_vec();
    all.extend(["--debug-addr", &addr]);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{args:?}: {err}\n{out}");
    out
}

/// The table's data rows as cells (split at runs of 3+ spaces, as `Table` pads them).
fn rows(table: &str) -> Vec<Vec<String>> {
    let sep = regex::Regex::new(r" {3,}").expect("regex");
    table
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| sep.split(l).map(str::to_string).collect())
        .collect()
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Names of a kind's dynamic resources in Envoy's own config dump.
fn envoy_names(dump: &Value, section: &str, list: &str, field: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(section)))
        .flat_map(|c| c[list].as_array().cloned().unwrap_or_default())
        .filter_map(|e| {
            field
                .iter()
                .fold(&e, |v, f| &v[*f])
                .as_str()
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn json_names(text: &str, field: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).expect("-o json is JSON");
    let mut names: Vec<String> = v
        .as_array()
        .expect("-o json is a list of resources")
        .iter()
        .filter_map(|r| r[field].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_and_proxy_config_show_what_a_real_gateway_was_sent() {
    let backend = Backend::start("secure-00001").await;
    let SecureSite {
        dir,
        http_port,
        https_port,
        ..
    } = secure_site(backend.port(), None);
    let ca = Ca::new("mesh root");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.server("server").write(certs.path(), "server");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let args = common::pki::tls_serve_args(dir.path(), &cert, &key, &ca_file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args).await;
    let (c, k) = ca
        .client("istio-system", "istio-ingressgateway")
        .write(certs.path(), "client");
    let params = BootstrapParams::new(server.xds_tls_port())
        .api_type(ApiType::DeltaGrpc)
        .pod(POD, "istio-system")
        .labels(EXTERNAL_LABELS)
        .xds_tls(XdsTls {
            ca: path(&ca_file),
            server_name: SERVER_NAME.to_string(),
            client_cert: Some((path(&c), path(&k))),
        });
    let envoy = Envoy::start(&render_bootstrap(&params)).await;
    envoy.wait_ready(Duration::from_secs(30)).await;
    wait_synced(&server, 0, 1).await;

    // proxy-status: one row, its node id and gateway, every type it asked for SYNCED.
    let table = ok(&server, &["proxy-status"]);
    eprintln!("{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "GATEWAYS", "CDS", "LDS", "EDS", "RDS", "SDS", "VERSION"],
        "{table}"
    );
    let r = rows(&table);
    assert_eq!(r.len(), 1, "{table}");
    assert_eq!(r[0][0], NODE);
    assert_eq!(r[0][1], GATEWAY);
    assert_eq!(r[0][2..7], ["SYNCED"; 5], "{table}");
    assert_eq!(
        r[0][7],
        format!("knative-pilot-{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(!table.contains("NACKED"), "{table}");
    let json: Value =
        serde_json::from_str(&ok(&server, &["proxy-status", "-o", "json"])).expect("JSON");
    assert_eq!(json["proxies"][0]["name"], NODE, "{json:#}");
    assert_eq!(json["proxies"][0]["gateways"][0], GATEWAY);
    for t in ["cds", "eds", "lds", "rds", "sds"] {
        let ty = &json["proxies"][0]["types"][t];
        assert_eq!(ty["state"], "SYNCED", "{t}: {json:#}");
        assert_eq!(ty["sent_version"], ty["acked_version"], "{t}: {json:#}");
    }

    // proxy-config, by a unique prefix of the node id: the names Envoy holds.
    let prefix = "router~127.0.0.1~istio-ingressgateway";
    let dump = envoy.config_dump().await;
    let clusters = ok(&server, &["proxy-config", "cluster", prefix]);
    assert!(
        rows(&clusters).contains(&vec![
            "secure-00001.default.svc.cluster.local".to_string(),
            "80".into(),
            "-".into(),
            "outbound".into(),
            "EDS".into()
        ]),
        "{clusters}"
    );
    let sent = json_names(
        &ok(&server, &["proxy-config", "cluster", prefix, "-o", "json"]),
        "name",
    );
    assert_eq!(
        sent,
        envoy_names(
            &dump,
            "ClustersConfigDump",
            "dynamic_active_clusters",
            &["cluster", "name"]
        )
    );

    let listeners = ok(&server, &["proxy-config", "listener", prefix]);
    let lr = rows(&listeners);
    assert!(
        lr.contains(&vec![
            "127.0.0.1".to_string(),
            http_port.to_string(),
            "ALL".into(),
            "Route: http.80".into()
        ]),
        "{listeners}"
    );
    assert!(
        lr.iter()
            .any(|r| r[1] == https_port.to_string() && r[2] == format!("SNI: {HOST}")),
        "{listeners}"
    );
    let sent = json_names(
        &ok(&server, &["proxy-config", "listener", prefix, "-o", "json"]),
        "name",
    );
    assert_eq!(
        sent,
        envoy_names(&dump, "ListenersConfigDump", "dynamic_listeners", &["name"])
    );

    let routes = ok(&server, &["proxy-config", "route", prefix]);
    let rr = rows(&routes);
    assert!(
        rr.iter().any(|r| r[0] == "http.80"
            && r[1] == format!("{HOST}:80")
            && r[2] == HOST
            && r[3] == "/*"
            && r[4] == "Ingress default/secure"),
        "{routes}"
    );
    let sent = json_names(
        &ok(&server, &["proxy-config", "route", prefix, "-o", "json"]),
        "name",
    );
    assert_eq!(
        sent,
        envoy_names(
            &dump,
            "RoutesConfigDump",
            "dynamic_route_configs",
            &["route_config", "name"]
        )
    );

    let endpoints = ok(&server, &["proxy-config", "endpoint", prefix]);
    assert_eq!(
        rows(&endpoints),
        [vec![
            format!("127.0.0.1:{}", backend.port()),
            "HEALTHY".to_string(),
            "outbound|80||secure-00001.default.svc.cluster.local".to_string()
        ]],
        "{endpoints}"
    );

    // Secrets: the certificate's facts, never the key, in any format.
    let secrets = ok(&server, &["proxy-config", "secret", NODE]);
    eprintln!("{clusters}\n{listeners}\n{routes}\n{endpoints}\n{secrets}");
    let sr = rows(&secrets);
    assert_eq!(sr.len(), 1, "{secrets}");
    assert_eq!(
        sr[0][..3],
        ["kubernetes://istio-system/secure-tls", "Cert Chain", "true"]
    );
    assert_eq!(sr[0][4], "2126-10-30T17:26:43Z", "{secrets}");
    let sent = json_names(
        &ok(&server, &["proxy-config", "secret", NODE, "-o", "json"]),
        "name",
    );
    assert_eq!(
        sent,
        envoy_names(
            &dump,
            "SecretsConfigDump",
            "dynamic_active_secrets",
            &["name"]
        )
    );
    for format in ["table", "json", "yaml"] {
        let out = ok(&server, &["proxy-config", "secret", NODE, "-o", format]);
        for leak in key_fragments() {
            assert!(
                !out.contains(&leak),
                "-o {format} shows key material {leak:?}:\n{out}"
            );
        }
        if format != "table" {
            assert!(out.contains("[redacted]"), "{out}");
        }
    }
    let yaml = ok(&server, &["proxy-config", "cluster", prefix, "-o", "yaml"]);
    assert!(
        yaml.contains("name: outbound|80||secure-00001.default.svc.cluster.local"),
        "{yaml}"
    );

    // Errors: exit 2, naming what is wrong.
    let addr = format!("127.0.0.1:{}", server.debug_port());
    let (code, _, err) = run(&[
        "proxy-config",
        "cluster",
        "router~nobody",
        "--debug-addr",
        &addr,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no connected proxy \"router~nobody\""),
        "{err}"
    );
    assert!(err.contains(NODE), "the connected ones are listed: {err}");
    let nothing = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = run(&["proxy-status", "--debug-addr", &nothing]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the knative-pilot debug server at {nothing}"
        )),
        "{err}"
    );
    let (code, _, err) = run(&["proxy-config", "nonsense", NODE, "--debug-addr", &addr]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_shows_a_nack_with_envoys_error() {
    // The external gateway's HTTP listener port is taken: Envoy cannot bind it and rejects the
    // LDS response.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = blocker.local_addr().expect("addr").port();
    let dir = ManifestDir::new();
    dir.write("gateways.yaml", &gateway_services(taken, free_port()));
    let server = serve_dir(&dir, &[]).await;
    let _envoy = start_gateway(&server, POD, EXTERNAL_LABELS, ApiType::Grpc).await;
    eventually(
        Duration::from_secs(30),
        "LDS NACKED in proxy-status",
        || async { ok(&server, &["proxy-status"]).contains("NACKED") },
    )
    .await;
    let table = ok(&server, &["proxy-status"]);
    eprintln!("{table}");
    let r = rows(&table);
    assert_eq!(r[0][0], NODE, "{table}");
    assert_eq!(r[0][3], "NACKED", "LDS: {table}");
    assert_eq!(r[0][2], "SYNCED", "CDS: {table}");
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{NODE} LDS (version ")))
        .unwrap_or_else(|| panic!("no NACK line under the table:\n{table}"));
    assert!(
        line.contains(&format!("127.0.0.1:{taken}")),
        "Envoy's error: {line}"
    );
    let json: Value =
        serde_json::from_str(&ok(&server, &["proxy-status", "-o", "json"])).expect("JSON");
    let lds = &json["proxies"][0]["types"]["lds"];
    assert_eq!(lds["state"], "NACKED", "{json:#}");
    assert!(
        lds["error"]
            .as_str()
            .is_some_and(|e| e.contains(&taken.to_string())),
        "{json:#}"
    );
    drop(blocker);
}
