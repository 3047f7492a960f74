//! Objects through the watches: a TLS Secret added later reaches Envoy over SDS, `--namespace`
//! limits what is watched, a bad update keeps the last good version served.

use super::*;

/// The gateway connects as istio-proxy does: TLS xDS with its service-account token (TokenReview
/// and SubjectAccessReview by the fake API server); the Secret is in the gateway's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_secret_added_later_reaches_envoy_over_sds() {
    let b = Backend::start("secure").await;
    let gw_sa = "system:serviceaccount:istio-system:istio-ingressgateway";
    let (http_port, https_port, local_port) = (free_port(), free_port(), free_port());
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services_with(
        http_port,
        Some(https_port),
        local_port,
    ));
    serve_backend(&api, "secure-00001", &b);
    api.apply_yaml(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: secure
  namespace: default
  annotations: {networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}
spec:
  tls:
  - hosts: [secure.default.example.com]
    secretName: secure-tls
    secretNamespace: istio-system
  rules:
  - hosts: [secure.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: secure-00001, servicePort: 80, percent: 100}
"#,
    );
    api.add_token("gw-token", gw_sa, &["istio-ca"]);
    api.grant(gw_sa, "list", "secrets", "istio-system");
    let ca = common::pki::Ca::new("mesh root");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.server("server").write(certs.path(), "server");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let server = start_server(
        &api,
        "a",
        &[
            "--xds-tls-addr",
            "127.0.0.1:0",
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let params = BootstrapParams::new(server.xds_tls_port())
        .api_type(ApiType::DeltaGrpc)
        .pod("istio-ingressgateway-0", "istio-system")
        .labels(EXTERNAL_LABELS)
        .xds_tls(XdsTls {
            ca: ca_file.to_str().unwrap().to_string(),
            server_name: common::pki::SERVER_NAME.to_string(),
            client_cert: None,
        })
        .bearer_token("gw-token");
    let envoy = Envoy::start(&render_bootstrap(&params)).await;
    envoy.wait_ready(WAIT).await;
    wait_backend(
        http_port,
        "secure.default.example.com",
        "/",
        Some("secure"),
        "plain HTTP",
    )
    .await;

    // The Secret arrives (as cert-manager would create it): HTTPS by SNI works.
    let secret = testdata_secret_yaml();
    let trust = Trust::Pinned(secret_certificate(&secret));
    let mut secret: Value = serde_saphyr::from_str(&secret).expect("secret yaml");
    secret["type"] = "kubernetes.io/tls".into();
    secret["metadata"]["namespace"] = "istio-system".into();
    api.apply(secret);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let last = try_https_get(https_port, "secure.default.example.com", "/", &trust).await;
        match &last {
            Ok(r) if r.response.status == 200 && r.response.backend() == Some("secure") => break,
            _ if std::time::Instant::now() > deadline => panic!(
                "HTTPS after the Secret was added: {:?}",
                last.map(|r| (r.response.status, r.response.body))
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let dump = envoy.config_dump().await.to_string();
    assert!(
        dump.contains("kubernetes://istio-system/secure-tls"),
        "secret not in Envoy's config dump"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_flag_limits_the_watches() {
    let api = FakeApiServer::start().await;
    let (ext_port, local_port) = gateway_ports();
    api.apply_yaml(&gateway_services(ext_port, local_port));
    for ns in ["default", "other"] {
        api.apply_yaml(
            &one_rule(
                "hello",
                &[&format!("hello.{ns}.example.com")],
                "hello-00001",
            )
            .replace("namespace: default", &format!("namespace: {ns}")),
        );
    }
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-domain", "namespace": "knative-serving"}, "data": {}}));
    let server = start_server(&api, "a", &["--namespace", "default,istio-system"]).await;
    eventually(WAIT, "/ready", || async {
        ready_status(&server).await == 200
    })
    .await;
    let names = input_names(&server).await;
    assert!(
        names.contains(&"Ingress default/hello".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("other/")), "{names:?}");
    // The Knative ConfigMaps are read from knative-serving regardless.
    assert!(
        names.contains(&"ConfigMap knative-serving/config-domain".to_string()),
        "{names:?}"
    );
    // Every list and watch is namespaced (no cluster-wide request), but for GatewayClasses
    // and Namespaces, which are cluster scoped.
    for r in api.requests() {
        if r.contains("leases")
            || r.contains("/gatewayclasses")
            || r.contains(" /api/v1/namespaces?")
        {
            continue;
        }
        assert!(r.contains("/namespaces/"), "cluster-wide request: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_update_names_the_object_and_keeps_serving_its_last_good_version() {
    let v1 = Backend::start("v1").await;
    let api = FakeApiServer::start().await;
    let ext_port = hello_cluster(&api, &v1);
    api.apply_yaml(&one_rule(
        "other",
        &["other.default.example.com"],
        "hello-00001",
    ));
    let server = start_server(&api, "a", &[]).await;
    let envoy = start_gateway(
        &server,
        "istio-ingressgateway-0",
        EXTERNAL_LABELS,
        ApiType::Grpc,
    )
    .await;
    envoy.wait_ready(WAIT).await;
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "hello",
    )
    .await;

    // A malformed update (rules is not a list) of one KIngress, and a change of another.
    let mut bad: Value = serde_saphyr::from_str(&one_rule(
        "hello",
        &["hello.default.example.com"],
        "hello-00001",
    ))
    .expect("yaml");
    bad["spec"]["rules"] = json!(7);
    api.apply(bad);
    api.apply_yaml(&one_rule(
        "other",
        &["other.default.example.com", "other2.default.example.com"],
        "hello-00001",
    ));
    wait_backend(
        ext_port,
        "other2.default.example.com",
        "/",
        Some("v1"),
        "the other KIngress still updates",
    )
    .await;
    let errors = server.get_json("/debug/inputs").await["errors"].clone();
    let errors: Vec<String> = errors
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Ingress default/hello: ")
                && e.ends_with("its previous version is still served")),
        "{errors:?}"
    );
    assert_eq!(
        get(ext_port, "hello.default.example.com", "/").await.0,
        200,
        "last good version served"
    );

    // Fixed: the error goes away.
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com", "hello2.default.example.com"],
        "hello-00001",
    ));
    wait_backend(
        ext_port,
        "hello2.default.example.com",
        "/",
        Some("v1"),
        "fixed",
    )
    .await;
    assert_eq!(server.get_json("/debug/inputs").await["errors"], json!([]));
}
