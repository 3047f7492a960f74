//! End to end, the `--from` directory as operators really run it, with stock Envoy:
//!
//! * the directory vanishes while serving: the last objects stay served (hosts still answer),
//!   `/ready` stays 200 and says the input is stale, a WARN line says so; recreated with a
//!   changed object, it is followed again and the change is served;
//! * a ConfigMap mounted as a directory (kubelet's `..data` layout): only the visible links are
//!   read (nothing is "defined twice"), and kubelet's atomic update (new timestamped directory,
//!   `..data_tmp` link renamed over `..data`, old directory removed) is served.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use common::cluster::*;
use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// Route `app` to revision `rev` (one Service + Endpoints at `port`).
fn app(rev: &str, port: u16) -> String {
    format!(
        "{}---\n{}",
        route("default", "app", &[(rev, 100, None)], false),
        revision_service("default", rev, &[port], false)
    )
}

/// Waits until the external gateway serves `app.default.example.com` from `backend`.
async fn wait_served_by(port: u16, backend: &str) {
    eventually(WAIT, &format!("app served by {backend}"), || async {
        try_http_get(port, "app.default.example.com", "/", &[])
            .await
            .is_ok_and(|r| r.status == 200 && r.backend() == Some(backend))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_directory_keeps_serving_and_is_followed_when_it_returns() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    // Many files, so that `rm -r` takes a while: its first removals must not be applied.
    let mut fixture = Fixture::new().file("app.yaml", app("app-00001", v1.port()));
    for i in 0..200 {
        fixture = fixture.file(
            &format!("svc-{i:03}.yaml"),
            revision_service("default", &format!("svc-{i:03}"), &[v1.port()], false),
        );
    }
    let gw = fixture.external(ApiType::DeltaGrpc).start().await;
    wait_served_by(gw.ext_port, "v1").await;
    let generation = gw.server.get_json("/debug/syncz").await["generation"].clone();
    let ready = gw.server.get("/ready").await.expect("/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    let dir = gw.dir.path().to_path_buf();
    let gateways = std::fs::read_to_string(dir.join("gateways.yaml")).expect("gateways.yaml");
    std::fs::remove_dir_all(&dir).expect("remove the --from directory");
    eventually(WAIT, "/ready says the input is stale", || async {
        gw.server
            .get("/ready")
            .await
            .is_ok_and(|r| r.status == 200 && r.body.contains("input stale"))
    })
    .await;
    let ready = gw.server.get("/ready").await.expect("/ready");
    assert!(
        ready.body.contains(&format!(
            "the --from directory {} is gone; serving the last objects",
            dir.display()
        )),
        "{}",
        ready.body
    );
    let syncz = gw.server.get_json("/debug/syncz").await;
    assert!(
        syncz["source_stale"].is_string(),
        "/debug/syncz says so too"
    );
    assert_eq!(
        syncz["generation"], generation,
        "nothing was translated: no removal of the vanishing directory was applied"
    );
    // Still served, with nothing pushed away.
    let r = http_get(gw.ext_port, "app.default.example.com", "/", &[]).await;
    assert_eq!((r.status, r.backend()), (200, Some("v1")));
    let objects = gw.server.get_json("/debug/inputs").await["objects"].clone();
    assert!(
        objects.as_array().is_some_and(|o| o.len() >= 404),
        "the last objects are kept: {objects}"
    );
    assert!(
        gw.server
            .logs()
            .contains("is gone; serving the last objects"),
        "a WARN line says so"
    );

    // The directory comes back with a changed object: followed again.
    std::fs::create_dir(&dir).expect("recreate the directory");
    std::fs::write(dir.join("gateways.yaml"), gateways).expect("write gateways");
    std::fs::write(dir.join("app.yaml"), app("app-00002", v2.port())).expect("write app");
    wait_served_by(gw.ext_port, "v2").await;
    let ready = gw.server.get("/ready").await.expect("/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert!(gw.server.logs().contains("directory is back"));
}

/// Writes `files` into a new kubelet-style timestamped directory `..<stamp>` of `root`.
fn kubelet_payload(root: &Path, stamp: &str, files: &[(&str, String)]) {
    let ts = root.join(format!("..{stamp}"));
    std::fs::create_dir(&ts).expect("timestamped dir");
    for (name, content) in files {
        std::fs::write(ts.join(name), content).expect("payload file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_configmap_is_read_once_and_follows_kubelet_updates() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = Fixture::new().external(ApiType::DeltaGrpc).start().await;
    let root = gw.dir.path().to_path_buf();
    // As kubelet mounts a ConfigMap with the keys app.yaml and extra.yaml.
    let first = "2026_12_01_11_00_00.000000001";
    let files = |rev: &str, port: u16| {
        vec![
            ("app.yaml", app(rev, port)),
            (
                "extra.yaml",
                revision_service("default", "other-00001", &[v1.port()], false),
            ),
        ]
    };
    kubelet_payload(&root, first, &files("app-00001", v1.port()));
    std::os::unix::fs::symlink(format!("..{first}"), root.join("..data")).expect("..data");
    for name in ["app.yaml", "extra.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).expect("link");
    }
    wait_served_by(gw.ext_port, "v1").await;
    let inputs = gw.server.get_json("/debug/inputs").await;
    assert_eq!(
        inputs["errors"],
        json!([]),
        "nothing defined twice: {inputs}"
    );
    let route = inputs["objects"]
        .as_array()
        .and_then(|o| {
            o.iter()
                .find(|o| o["object"] == "Route default/app")
                .cloned()
        })
        .expect("the Route is loaded");
    assert_eq!(
        route["origin"]["file"], "app.yaml",
        "read through the visible link"
    );

    // kubelet's update: a new timestamped directory, a new link renamed over ..data, the old
    // directory removed.
    let second = "2026_12_01_11_05_00.000000002";
    kubelet_payload(&root, second, &files("app-00002", v2.port()));
    std::os::unix::fs::symlink(format!("..{second}"), root.join("..data_tmp")).expect("tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join(format!("..{first}"))).expect("remove old payload");
    wait_served_by(gw.ext_port, "v2").await;
    let inputs = gw.server.get_json("/debug/inputs").await;
    assert_eq!(
        inputs["errors"],
        json!([]),
        "nothing defined twice: {inputs}"
    );
    let ready = gw.server.get("/ready").await.expect("/ready");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
}
