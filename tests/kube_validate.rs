//! `knative-pilot validate --kube`: the same findings as `validate --from` on the same objects.
//!
//! There is no Kubernetes API server on these machines: the objects are served by
//! `tests/common/fake_apiserver/`, a fake that speaks the API server's wire format, so kube-rs's
//! real client and watcher code does the listing.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::fake_apiserver::FakeApiServer;
use serde_json::Value;

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/validate/manifests")
}

/// Runs `validate ARGS -o json`; returns the exit code and the findings as
/// (severity, code, object, message) sorted, leaving out where an object came from.
async fn validate(args: Vec<String>, kubeconfig: Option<String>) -> (i32, Vec<String>, Value) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_knative-pilot"));
        cmd.arg("validate").args(&args).args(["-o", "json"]);
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        let out = cmd.output().expect("run knative-pilot validate");
        let code = out.status.code().unwrap_or(-1);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "validate output is not JSON ({e}):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut findings: Vec<String> = v["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{} {} {} {}",
                    f["severity"], f["code"], f["object"], f["message"]
                )
            })
            .collect();
        findings.sort();
        (code, findings, v)
    })
    .await
    .expect("validate task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_kube_finds_what_validate_from_finds() {
    let api = FakeApiServer::start().await;
    // The fixtures give endpoints as Endpoints: serve those, as an API server without
    // EndpointSlices would (the kube source then watches Endpoints).
    api.set_missing("apis/discovery.k8s.io/v1/endpointslices", true);
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests())
        .expect("read fixtures")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    for f in &files {
        api.apply_yaml(&std::fs::read_to_string(f).expect("read fixture"));
    }

    let dir = manifests().to_string_lossy().into_owned();
    let (from_code, from_findings, _) = validate(vec!["--from".into(), dir], None).await;
    let (kube_code, kube_findings, v) =
        validate(vec!["--kube".into()], Some(api.kubeconfig("validate"))).await;

    assert_eq!(v["from"], "kube");
    assert_eq!(kube_code, 1, "errors found: exit 1\n{v:#}");
    assert_eq!(kube_code, from_code);
    assert!(
        from_findings.len() >= 6,
        "the fixtures hold several problems: {from_findings:#?}"
    );
    assert_eq!(
        kube_findings, from_findings,
        "the kube source and the files give the same findings"
    );
    // Objects read from the API have no file: the finding names kind ns/name only.
    assert!(v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|f| f.get("origin").is_none() && f["object"].is_object()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_kube_gives_up_with_exit_2_when_the_lists_do_not_complete() {
    let api = FakeApiServer::start().await;
    api.set_failing("apis/serving.knative.dev/v1/routes", true);
    let kubeconfig = api.kubeconfig("validate");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
            .args(["validate", "--kube", "--timeout", "2s"])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .expect("run knative-pilot validate")
    })
    .await
    .expect("validate task");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the lists did not complete within 2s"),
        "{stderr}"
    );
}
