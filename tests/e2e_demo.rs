//! README's first command, `knative-pilot demo`, starts a working demo: the seed services reach
//! their backends through both stock Envoy gateways, and SIGTERM stops everything.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// `knative-pilot demo` on the given ports (xds, debug, external, local), in `dir` if given.
fn spawn_demo(ports: (u16, u16, u16, u16), dir: Option<&std::path::Path>, stdout: Stdio) -> Child {
    let (xds, debug, ext, local) = ports;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knative-pilot"));
    cmd.arg("demo");
    if let Some(d) = dir {
        cmd.arg("--dir").arg(d);
    }
    cmd.args([
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
    .stdout(stdout)
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn demo")
}

/// SIGTERM, then wait up to 10 s (killed if it does not exit); whether it exited by itself.
async fn stop(child: &mut Child) -> bool {
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
    exited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_seed_services_through_both_gateways() {
    let ports = (free_port(), free_port(), free_port(), free_port());
    let (_, debug, ext, local) = ports;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_demo(ports, Some(dir.path()), Stdio::null());
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
    let exited = stop(&mut child).await;
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

/// A port the demo needs is taken: it says which flag to change, before starting anything.
#[test]
fn demo_refuses_a_busy_port_naming_its_flag() {
    let busy = std::net::TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let out = Command::new(env!("CARGO_BIN_EXE_knative-pilot"))
        .args(["demo", "--external-port", &port.to_string()])
        .args(["--xds-port", &free_port().to_string()])
        .args(["--debug-port", &free_port().to_string()])
        .args(["--local-port", &free_port().to_string()])
        .env("ENVOY_BIN", envoy_bin())
        .output()
        .expect("run demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} on 127.0.0.1 is not free"))
            && stderr.contains("--external-port"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("curl"),
        "printed curl lines for a demo that did not start"
    );
}

/// Without --dir the demo writes into a temporary directory of its own, and removes it on exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_removes_its_temporary_directory() {
    use std::io::{BufRead, BufReader};
    let ports = (free_port(), free_port(), free_port(), free_port());
    let ext = ports.2;
    let mut child = spawn_demo(ports, None, Stdio::piped());
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let dir = loop {
        let line = lines
            .next()
            .expect("the demo prints its directory")
            .expect("utf-8");
        if let Some(d) = line.strip_prefix("knative-pilot demo: manifests in ") {
            break std::path::PathBuf::from(d.trim());
        }
    };
    // It prints commands that work from here: through cargo, since it runs from target/.
    let rest: Vec<String> = lines.by_ref().take(20).map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("cargo run --release -- validate --from")),
        "{rest:#?}"
    );
    let ready = wait_until(Duration::from_secs(30), || async move {
        try_http_get(ext, "my-service.default.example.com", "/", &[])
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(dir.join("seed.yaml").is_file(), "{}", dir.display());
    let exited = stop(&mut child).await;
    assert!(ready, "the demo did not serve");
    assert!(exited, "demo did not exit on SIGTERM");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
