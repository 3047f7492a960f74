//! README's first command, `knative-pilot demo`, starts a working demo: the seed services reach
//! their backends through both stock Envoy gateways, and SIGTERM stops everything.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_seed_services_through_both_gateways() {
    let (xds, debug, ext, local) = (free_port(), free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .args([
            "--xds-port",
            &xds.to_string(),
            "--debug-port",
            &debug.to_string(),
        ])
        .args([
            "--external-port",
            &ext.to_string(),
            "--local-port",
            &local.to_string(),
        ])
        .env("ENVOY_BIN", envoy_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let served = wait_until(Duration::from_secs(30), || async move {
        try_http_get(ext, "my-service.default.example.com", "/", &[])
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    // The two gateways start independently: poll the local one too.
    let local_ok = served
        && wait_until(Duration::from_secs(30), || async move {
            try_http_get(
                local,
                "internal-my-service.default.svc.cluster.local",
                "/",
                &[],
            )
            .await
            .is_ok_and(|r| r.status == 200 && r.body.contains("internal-my-service-00001-sub"))
        })
        .await;
    let ext_404 = try_http_get(
        ext,
        "internal-my-service.default.svc.cluster.local",
        "/",
        &[],
    )
    .await
    .map(|r| r.status);
    // The demo's own files (Envoy bootstraps, logs) are not taken for manifests.
    let inputs = try_http_get(debug, "127.0.0.1", "/debug/inputs", &[])
        .await
        .map(|r| r.body_json);
    let validate = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(["validate", "--from"])
        .arg(dir.path())
        .output()
        .expect("run validate");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exited = wait_until(Duration::from_secs(10), || {
        let done = child.try_wait().ok().flatten().is_some();
        async move { done }
    })
    .await;
    if !exited {
        let _ = child.kill();
    }
    assert!(served, "external gateway never served my-service");
    assert!(local_ok, "local gateway does not serve internal-my-service");
    assert_eq!(ext_404, Ok(404));
    let inputs = inputs.expect("GET /debug/inputs");
    assert_eq!(inputs["error_count"], 0, "{inputs:#}");
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stdout)
    );
    assert!(exited, "demo did not exit on SIGTERM");
    // The gateways went with it.
    let gone = wait_until(Duration::from_secs(5), || async move {
        try_http_get(ext, "my-service.default.example.com", "/", &[])
            .await
            .is_err()
    })
    .await;
    assert!(gone, "gateway Envoy still running after the demo stopped");
}
