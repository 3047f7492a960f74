//! `knative-pilot diff` against what a real Envoy holds: our server serves a golden manifest set
//! to a stock Envoy gateway, the test fetches Envoy's admin `/config_dump?include_eds`, and
//! `diff <that dump> --from DIR --gateway G` must find them equal (modulo the normalisations
//! documented in `src/diff.rs`), and must name the resource and field when the manifests change.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster::*;
use common::*;

const READY: Duration = Duration::from_secs(30);

/// Pod labels of a gateway.
type Labels = &'static [(&'static str, &'static str)];

/// A copy of `testdata/<case>/input` whose gateway Services map to free loopback ports (the
/// golden cases use 8080/8443/8081).
fn copy_case(case: &str) -> ManifestDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(case)
        .join("input");
    let ports: Vec<(String, String)> = ["8080", "8443", "8081"]
        .iter()
        .map(|p| {
            (
                format!("targetPort: {p}"),
                format!("targetPort: {}", free_port()),
            )
        })
        .collect();
    let dir = ManifestDir::new();
    let mut entries: Vec<_> = std::fs::read_dir(&src)
        .expect("read case dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let mut text = std::fs::read_to_string(&path).expect("read manifest");
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name == "istio-gateway-services.yaml" {
            for (from, to) in &ports {
                text = text.replace(from, to);
            }
        }
        dir.write(&name, &text);
    }
    dir
}

fn same_files(from: &ManifestDir) -> ManifestDir {
    let dir = ManifestDir::new();
    for e in std::fs::read_dir(from.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with('.') {
            dir.write(&name, &std::fs::read_to_string(&p).unwrap());
        }
    }
    dir
}

struct DiffRun {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_diff(args: &[&str]) -> DiffRun {
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .arg("diff")
        .args(args)
        .output()
        .expect("run knative-pilot diff");
    DiffRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Serves `dir` to one real Envoy with `labels`, waits until it ACKed, and writes its admin
/// config dump (with EDS) into `dir/../<tempfile>`; returns the dump file and the live parts.
async fn envoy_dump(
    dir: &ManifestDir,
    labels: Labels,
    api: ApiType,
) -> (tempfile::NamedTempFile, Server, Envoy) {
    // Over mTLS as an identity of `default`, the namespace of the goldens' TLS Secret (a
    // plaintext Envoy gets no secret); `--from` alone authorizes secrets by namespace. The
    // goldens' Gateways are knative-serving's: allow-listed for `default` here.
    // Kept beside the manifests (a hidden directory the loader skips) while Envoy runs.
    let certs = dir.path().join(".xds-certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = common::pki::Ca::new("mesh root");
    let (cert, key) = ca.server("server").write(certs.as_path(), "server");
    let ca_file = ca.write(certs.as_path(), "ca.crt");
    let (ccert, ckey) = ca
        .client("default", "default")
        .write(certs.as_path(), "client");
    let mut args = common::pki::tls_serve_args(dir.path(), &cert, &key, &ca_file);
    args.extend(["--gateway-allow".into(), "default=knative-serving".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args).await;
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let params = BootstrapParams::new(server.xds_tls_port())
        .api_type(api)
        .pod("gateway-0", "default")
        .labels(labels)
        .xds_tls(XdsTls {
            ca: s(&ca_file),
            server_name: common::pki::SERVER_NAME.to_string(),
            client_cert: Some((s(&ccert), s(&ckey))),
        });
    let envoy = Envoy::start(&render_bootstrap(&params)).await;
    envoy.wait_ready(READY).await;
    wait_synced(&server, 0, 1).await;
    let dump = envoy.config_dump().await;
    let file = tempfile::Builder::new()
        .prefix("envoy-dump-")
        .suffix(".json")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), serde_json::to_string_pretty(&dump).unwrap()).unwrap();
    (file, server, envoy)
}

fn dynamic_count(dump: &serde_json::Value) -> usize {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c.as_object().into_iter().flatten())
        .filter(|(k, _)| k.starts_with("dynamic_"))
        .map(|(_, v)| v.as_array().map_or(0, Vec::len))
        .sum()
}

/// Several golden manifest sets, external and cluster-local gateways, SotW and Delta: what the
/// real Envoy holds is what `render` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoy_holds_what_render_says() {
    let cases: &[(&str, &str, Labels, ApiType)] = &[
        (
            "seed-virtualservice",
            "external",
            EXTERNAL_LABELS,
            ApiType::Grpc,
        ),
        ("seed-route", "local", LOCAL_LABELS, ApiType::DeltaGrpc),
        (
            "tls-redirect",
            "external",
            EXTERNAL_LABELS,
            ApiType::DeltaGrpc,
        ),
        ("split-tag", "external", EXTERNAL_LABELS, ApiType::Grpc),
        ("h2c", "external", EXTERNAL_LABELS, ApiType::DeltaGrpc),
        ("externalname", "external", EXTERNAL_LABELS, ApiType::Grpc),
        ("cluster-local", "local", LOCAL_LABELS, ApiType::Grpc),
        ("errors", "external", EXTERNAL_LABELS, ApiType::Grpc),
    ];
    for (case, gateway, labels, api) in cases {
        let dir = copy_case(case);
        let (dump_file, server, envoy) = envoy_dump(&dir, labels, *api).await;
        let dump: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dump_file.path()).unwrap()).unwrap();
        assert!(
            dynamic_count(&dump) >= 3,
            "{case}: Envoy holds almost nothing: {dump:#}"
        );
        let r = run_diff(&[
            dump_file.path().to_str().unwrap(),
            "--from",
            dir.path().to_str().unwrap(),
            "--gateway",
            gateway,
            "--bind-address",
            "127.0.0.1",
        ]);
        assert_eq!(
            r.code,
            0,
            "{case}: Envoy's dump differs from render:\n{}\n{}\n{}",
            r.stdout,
            r.stderr,
            server.logs()
        );
        assert!(r.stdout.starts_with("equal: "), "{case}: {}", r.stdout);
        drop(envoy);
    }
}

/// A header edited and a Service removed in the manifests: diff exits 1 and names the virtual
/// host and field path with both values, and the cluster that is gone; `-o json` says the same
/// for machines; a missing file is exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_change_is_named_with_its_field_path() {
    let served = copy_case("split-tag");
    let (dump_file, _server, _envoy) = envoy_dump(&served, EXTERNAL_LABELS, ApiType::Grpc).await;
    let dump = dump_file.path().to_str().unwrap();

    // Edit a header.
    let edited = same_files(&served);
    let k = std::fs::read_to_string(edited.path().join("kingress.yaml")).unwrap();
    assert!(k.contains("Knative-Serving-Revision: hello-00002"));
    edited.write(
        "kingress.yaml",
        &k.replace(
            "Knative-Serving-Revision: hello-00002",
            "Knative-Serving-Revision: hello-00002-edited",
        ),
    );
    let args = |dir: &ManifestDir| -> Vec<String> {
        vec![
            dump.to_string(),
            "--from".into(),
            dir.path().to_str().unwrap().into(),
            "--bind-address".into(),
            "127.0.0.1".into(),
        ]
    };
    let a = args(&edited);
    let r = run_diff(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("~ virtual_host http.80/hello.default.example.com:80"),
        "{}",
        r.stdout
    );
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("request_headers_to_add") && l.contains("hello-00002-edited"))
        .unwrap_or_else(|| panic!("no field line for the edited header:\n{}", r.stdout));
    assert!(
        line.trim_start().starts_with("routes[")
            && line.contains(".header.value: \"hello-00002\" -> \"hello-00002-edited\""),
        "{line}"
    );

    let mut json_args = a.clone();
    json_args.extend(["-o".to_string(), "json".to_string()]);
    let r = run_diff(&json_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["equal"], false);
    let d = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["kind"] == "virtual_host" && d["name"] == "http.80/hello.default.example.com:80"
        })
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(d["change"], "changed");
    assert!(d["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["a"] == "hello-00002" && f["b"] == "hello-00002-edited"));

    // Remove a Service: the KIngress that needs it is left out of side B, so its clusters are
    // only in A (Envoy).
    let removed = same_files(&served);
    let svc = std::fs::read_to_string(removed.path().join("revision-services.yaml")).unwrap();
    let kept: Vec<&str> = svc
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: hello-00002\n"))
        .collect();
    assert!(kept.len() < svc.split("\n---\n").count());
    removed.write("revision-services.yaml", &kept.join("\n---\n"));
    let a = args(&removed);
    let r = run_diff(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("- cluster outbound|80||hello-00002.default.svc.cluster.local (only in a)"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("input problem"), "{}", r.stderr);

    // Unreadable input: exit 2 with the file named.
    let r = run_diff(&["/nonexistent/dump.json", dump]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("/nonexistent/dump.json"), "{}", r.stderr);
    // Two real dumps of the same thing are equal.
    let r = run_diff(&[dump, dump]);
    assert_eq!(r.code, 0, "{}", r.stdout);

    // `render --format yaml` output is an input too.
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args([
            "render",
            "--format",
            "yaml",
            "--bind-address",
            "127.0.0.1",
            "--from",
        ])
        .arg(served.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(yaml.path(), &out.stdout).unwrap();
    let r = run_diff(&[dump, yaml.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // A bare list of clusters, as `istioctl proxy-config cluster -o json` prints it: only
    // clusters are compared.
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dump_file.path()).unwrap()).unwrap();
    let clusters: Vec<serde_json::Value> = full["configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["dynamic_active_clusters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| c["cluster"].clone())
        .collect();
    assert!(clusters.len() >= 3);
    let list = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(list.path(), serde_json::to_string(&clusters).unwrap()).unwrap();
    let list_path = list.path().to_str().unwrap();
    let served_dir = served.path().to_str().unwrap();
    let r = run_diff(&[
        list_path,
        "--from",
        served_dir,
        "--bind-address",
        "127.0.0.1",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("comparing only those"), "{}", r.stderr);
    let removed_dir = removed.path().to_str().unwrap();
    let r = run_diff(&[
        list_path,
        "--from",
        removed_dir,
        "--bind-address",
        "127.0.0.1",
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("- cluster outbound|80||hello-00002."),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("virtual_host"), "{}", r.stdout);
}
