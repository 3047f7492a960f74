//! Watches that drop, fail, are not served or are lost: what the server keeps serving, when it
//! lists again, and what `/ready` and the log say.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_resume_and_410_relists_apply_missed_deletions() {
    let v1 = Backend::start("v1").await;
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services(ext_port, local_port));
    serve_backend(&api, "hello-00001", &v1);
    for name in ["keep", "gone"] {
        api.apply_yaml(&one_rule(
            name,
            &[&format!("{name}.default.example.com")],
            "hello-00001",
        ));
    }
    let (server, _envoy) = serve_external(&api, &[], ApiType::Grpc).await;
    wait_backend(
        ext_port,
        "keep.default.example.com",
        "/",
        Some("v1"),
        "keep",
    )
    .await;
    wait_backend(
        ext_port,
        "gone.default.example.com",
        "/",
        Some("v1"),
        "gone",
    )
    .await;
    let kingresses = "networking.internal.knative.dev/v1alpha1/ingresses";
    let lists_before = lists_of(&api, kingresses);

    // A dropped watch resumes from its resourceVersion: a change made right after is seen,
    // without a relist.
    api.drop_watches();
    api.apply_yaml(&one_rule(
        "keep",
        &["keep.default.example.com", "kept.default.example.com"],
        "hello-00001",
    ));
    wait_backend(
        ext_port,
        "kept.default.example.com",
        "/",
        Some("v1"),
        "change after a dropped watch",
    )
    .await;
    assert_eq!(
        lists_of(&api, kingresses),
        lists_before,
        "resumed without a relist"
    );

    // Disconnected while `gone` is deleted and history is compacted: the resumed watch gets
    // 410 Gone, the watcher relists, and the deletion is applied; `keep` never stops serving.
    api.delete_while_disconnected_and_compact(&[(
        "networking.internal.knative.dev/v1alpha1",
        "Ingress",
        NS,
        "gone",
    )]);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let keep = get(ext_port, "keep.default.example.com", "/").await;
        assert_eq!(
            keep.0, 200,
            "keep must be served throughout the relist: {keep:?}"
        );
        if get(ext_port, "gone.default.example.com", "/").await.0 == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion missed while disconnected was never applied\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        lists_of(&api, kingresses) > lists_before,
        "a relist happened"
    );
    assert_eq!(get(ext_port, "keep.default.example.com", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_are_skipped_and_endpoints_replace_unserved_endpoint_slices() {
    let v1 = Backend::start("v1").await;
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    // A Kourier-style cluster: no Istio CRDs; and an old one without discovery.k8s.io/v1.
    for r in [
        "apis/networking.istio.io/v1beta1/gateways",
        "apis/networking.istio.io/v1beta1/virtualservices",
        "apis/discovery.k8s.io/v1/endpointslices",
    ] {
        api.set_missing(r, true);
    }
    api.apply_yaml(&gateway_services(ext_port, local_port));
    api.apply_yaml(&revision_service(NS, "hello-00001", &[v1.port()], false));
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com"],
        "hello-00001",
    ));
    let (server, _envoy) = serve_external(&api, &[], ApiType::Grpc).await;
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "served from Endpoints",
    )
    .await;
    // Endpoints are watched: a change reaches Envoy.
    let v2 = Backend::start("v2").await;
    let eps = revision_service(NS, "hello-00001", &[v2.port()], false);
    api.apply_yaml(eps.split_once("---\n").expect("Service --- Endpoints").1);
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v2"),
        "Endpoints change",
    )
    .await;

    // Each missing CRD is logged once and listed once (retried only rarely), not an error loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = server.logs();
    for r in ["gateways", "virtualservices"] {
        let logged = logs
            .lines()
            .filter(|l| {
                l.contains("resource not served")
                    && l.contains(&format!("networking.istio.io/v1beta1/{r}"))
            })
            .count();
        assert_eq!(logged, 1, "{r}: logged {logged} times\n{logs}");
        assert_eq!(
            lists_of(&api, &format!("networking.istio.io/v1beta1/{r}")),
            1,
            "{r}"
        );
    }
    assert!(!logs.contains("watch error"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_errors_back_off_and_keep_the_server_unready_until_they_pass() {
    let api = FakeApiServer::start().await;
    let (ext_port, local_port) = gateway_ports();
    api.apply_yaml(&gateway_services(ext_port, local_port));
    let routes = "apis/serving.knative.dev/v1/routes";
    api.set_failing(routes, true);
    let server = start_server(&api, "a", &[]).await;
    // Retried with a delay (kube-runtime's default backoff: 0.8 s, 1.6 s, ... with random
    // jitter, so one delay may be shorter than the one before), not in a hot loop; not ready
    // meanwhile.
    eventually(WAIT, "three failed lists", || async {
        lists_of(&api, routes) >= 3
    })
    .await;
    assert_eq!(ready_status(&server).await, 503);
    let logs = server.logs();
    let delays: Vec<u64> = logs
        .lines()
        .filter(|l| l.contains("watch error") && l.contains("routes"))
        .filter_map(|l| {
            let plain: String = l
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .collect();
            let at = plain.find("retry_in_ms")?;
            plain[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect();
    assert!(delays.len() >= 2, "{logs}");
    assert!(
        delays.iter().all(|d| *d >= 300),
        "every retry waits (no hot loop): {delays:?}"
    );
    api.set_failing(routes, false);
    eventually(WAIT, "/ready once the list succeeds", || async {
        ready_status(&server).await == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_installed_later_is_picked_up_on_the_next_retry() {
    let v1 = Backend::start("v1").await;
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    let vs = "apis/networking.istio.io/v1beta1/virtualservices";
    api.set_missing(vs, true);
    api.apply_yaml(&gateway_services(ext_port, local_port));
    serve_backend(&api, "hello-00001", &v1);
    let (server, _envoy) = serve_external(&api, &["--missing-retry", "1s"], ApiType::Grpc).await;

    // Istio is installed: the CRD is served, and a VirtualService appears.
    api.set_missing(vs, false);
    api.apply_yaml(&hello_virtual_service());
    wait_backend(
        ext_port,
        "vs.default.example.com",
        "/",
        Some("v1"),
        "VirtualService after the CRD came",
    )
    .await;
    let logs = server.logs();
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("resource not served"))
            .count(),
        1,
        "logged once, not on every retry\n{logs}"
    );
    assert!(logs.contains("resource is served now"), "{logs}");
}

/// Watches that lose their resource never turn into deletions: the KIngress resource failing
/// (500), then not served (404, a CRD briefly gone in an upgrade), keeps the host served and
/// `/ready` 200 saying the input is stale; once listed again, `/ready` says plain "ready" and
/// a change is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_watches_keep_the_last_objects_served_and_say_so() {
    let v1 = Backend::start("v1").await;
    let api = FakeApiServer::start().await;
    let ext_port = hello_cluster(&api, &v1);
    let (server, _envoy) = serve_external(&api, &["--missing-retry", "1s"], ApiType::Grpc).await;
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "hello",
    )
    .await;
    let kingresses = "apis/networking.internal.knative.dev/v1alpha1/ingresses";

    // The status and body of /ready.
    async fn ready_body(server: &Server) -> Result<(u16, String), String> {
        server.get("/ready").await.map(|r| (r.status, r.body))
    }
    for (what, lose, restore) in [
        (
            "500",
            Box::new(|| api.set_failing(kingresses, true)) as Box<dyn Fn()>,
            Box::new(|| api.set_failing(kingresses, false)) as Box<dyn Fn()>,
        ),
        (
            "404",
            Box::new(|| api.set_missing(kingresses, true)),
            Box::new(|| api.set_missing(kingresses, false)),
        ),
    ] {
        lose();
        api.drop_watches();
        eventually(
            WAIT,
            &format!("{what}: /ready says the input is stale"),
            || async {
                ready_body(&server)
                    .await
                    .is_ok_and(|(status, body)| status == 200 && body.contains("input stale"))
            },
        )
        .await;
        let (_, body) = ready_body(&server).await.expect("/ready");
        assert!(
            body.contains("networking.internal.knative.dev/v1alpha1/ingresses")
                && body.contains("serving its last 1 objects"),
            "{what}: {body}"
        );
        assert_eq!(
            get(ext_port, "hello.default.example.com", "/").await,
            (200, Some("v1".to_string())),
            "{what}: still served"
        );
        assert!(server.logs().contains("kube watches not following"));
        restore();
        eventually(
            WAIT,
            &format!("{what}: /ready is plain ready again"),
            || async {
                ready_body(&server)
                    .await
                    .is_ok_and(|(status, body)| status == 200 && body == "ready\n")
            },
        )
        .await;
    }
    // Followed again: a new host is served.
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com", "again.default.example.com"],
        "hello-00001",
    ));
    wait_backend(
        ext_port,
        "again.default.example.com",
        "/",
        Some("v1"),
        "again",
    )
    .await;
    assert_eq!(
        get(ext_port, "hello.default.example.com", "/").await,
        (200, Some("v1".to_string()))
    );
}
