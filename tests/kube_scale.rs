//! Startup at scale with `serve --kube`: N Knative services (each a Route, a Revision, a
//! KIngress of our class, a revision Service and its EndpointSlice) in a fake API server that
//! speaks the real wire format, pages included (there is no Kubernetes API server here). The
//! server must come up with one paged list per kind, no per-object API calls, and every object
//! in. The time to `/ready` is printed (figures in BENCHMARKS.md; never asserted).
//!
//! `KUBE_SCALE_SERVICES` sets N (default 2,000 to keep CI quick; BENCHMARKS.md used 10,000 with
//! a release build: `cargo test --release --test kube_scale -- --nocapture`).

mod common;

use std::time::{Duration, Instant};

use common::fake_apiserver::{endpoint_slice, FakeApiServer};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_knative_services_start_with_paged_lists_only() {
    let n: usize = std::env::var("KUBE_SCALE_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let api = FakeApiServer::start().await;
    let (ext_port, local_port) = cluster::gateway_ports();
    api.apply_yaml(&cluster::gateway_services(ext_port, local_port));
    let class = "knative-pilot.ingress.networking.knative.dev";
    for i in 0..n {
        let ns = format!("ns-{}", i % 50);
        let name = format!("svc-{i}");
        let rev = format!("{name}-00001");
        let host = format!("{name}.{ns}.example.com");
        api.apply(
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": {"name": name, "namespace": ns},
            "status": {"url": format!("http://{host}"),
                       "traffic": [{"revisionName": rev, "percent": 100}]}}),
        );
        api.apply(
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": rev, "namespace": ns}}),
        );
        api.apply(
            json!({"apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {"networking.knative.dev/ingress.class": class}},
            "spec": {"rules": [{"hosts": [host], "visibility": "ExternalIP",
                "http": {"paths": [{"splits": [{"serviceName": rev, "serviceNamespace": ns,
                                                 "servicePort": 80, "percent": 100}]}]}}]}}),
        );
        api.apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": rev, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8012}]}}));
        let mut slice = endpoint_slice(&ns, &format!("{rev}-x"), &rev, 8012);
        slice["metadata"]["namespace"] = ns.clone().into();
        api.apply(slice);
    }
    let kubeconfig = api.kubeconfig("scale");
    let started = Instant::now();
    let server = Server::start_with_env(
        &["--kube", "--no-status"],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .await;
    eventually(Duration::from_secs(300), "/ready", || async {
        server.get("/ready").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let ready_after = started.elapsed();
    let inputs = server.get_json("/debug/inputs").await;
    let objects = inputs["objects"].as_array().map(Vec::len).unwrap_or(0);
    // 5 per service, plus the two gateway Services.
    assert_eq!(objects, 5 * n + 2, "every object is in");
    assert_eq!(inputs["errors"], json!([]));
    // Only paged lists (500 a page) and one watch per kind: no per-object calls.
    let requests = api.requests();
    let lists = requests
        .iter()
        .filter(|r| !r.contains("watch=") && !r.contains("leases"))
        .count();
    let pages = 5 * n.div_ceil(500) + 1 /* gateway Services share the Services list */;
    // One list each for the other watched kinds (5 of the slots hold the services' objects).
    let others = knative_pilot::source::kube::slots(&[]).len() - 5;
    assert!(
        lists <= pages + others,
        "{lists} list requests for {n} services (at most {} expected)",
        pages + others
    );
    for line in server.logs().lines() {
        if line.contains("initial lists done") || line.contains("translated") {
            println!("server: {line}");
        }
    }
    println!(
        "kube startup: {n} Knative services ({} objects): ready after {:.2}s, {lists} list requests",
        5 * n + 2,
        ready_after.as_secs_f64()
    );
}
