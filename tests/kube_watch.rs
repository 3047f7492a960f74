//! `serve --kube` end to end: kube-rs's real client and watchers against a fake API server that
//! speaks the real wire format (there is no Kubernetes API server on these machines; see
//! `common/fake_apiserver.rs`), our server translating, and a stock Envoy serving real HTTP to
//! echo backends.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::fake_apiserver::FakeApiServer;
use common::*;
use serde_json::{json, Value};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(30);

fn endpoint_slice(name: &str, svc: &str, ports: &[u16]) -> Value {
    common::fake_apiserver::endpoint_slice(NS, name, svc, ports.first().copied().unwrap_or(1))
}

/// A revision Service (`http` 80 -> 8012) without endpoints.
fn revision_svc(name: &str) -> String {
    let both = revision_service(NS, name, &[], false);
    both.split_once("---\n")
        .expect("Service --- Endpoints")
        .0
        .to_string()
}

/// A Service and its EndpointSlice pointing at `b`.
fn serve_backend(api: &FakeApiServer, name: &str, b: &Backend) {
    api.apply_yaml(&revision_svc(name));
    api.apply(endpoint_slice(&format!("{name}-abcde"), name, &[b.port()]));
}

fn one_rule(name: &str, hosts: &[&str], svc: &str) -> String {
    kingress(
        NS,
        name,
        None,
        &[KRule::external(
            hosts,
            vec![KPath::any(vec![KSplit::new(svc, 100)])],
        )],
    )
}

async fn start_server(api: &FakeApiServer, token: &str, extra: &[&str]) -> Server {
    let kubeconfig = api.kubeconfig(token);
    let mut args = vec!["--kube", "--bind-address", "127.0.0.1"];
    args.extend_from_slice(extra);
    Server::start_with_env(&args, &[("KUBECONFIG", kubeconfig.as_str())]).await
}

/// Starts the server on the fake API server, waits until it is ready, then starts the external
/// gateway Envoy against it and waits until that is ready.
async fn serve_external(api: &FakeApiServer, extra: &[&str], api_type: ApiType) -> (Server, Envoy) {
    let server = start_server(api, "a", extra).await;
    eventually(WAIT, "/ready", || async {
        ready_status(&server).await == 200
    })
    .await;
    let envoy = start_gateway(&server, "istio-ingressgateway-0", EXTERNAL_LABELS, api_type).await;
    envoy.wait_ready(WAIT).await;
    (server, envoy)
}

async fn ready_status(server: &Server) -> u16 {
    server.get("/ready").await.map(|r| r.status).unwrap_or(0)
}

/// Status and backend name of GET `host` through the gateway on `port`.
async fn get(port: u16, host: &str, path: &str) -> (u16, Option<String>) {
    match try_http_get(port, host, path, &[]).await {
        Ok(r) => (r.status, r.backend().map(str::to_string)),
        Err(_) => (0, None),
    }
}

/// Polls GET `host``path` until `ok` holds for (status, backend); panics naming `what`.
async fn wait_answer(
    port: u16,
    host: &str,
    path: &str,
    what: &str,
    ok: impl Fn(&(u16, Option<String>)) -> bool,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let last = get(port, host, path).await;
        if ok(&last) {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("{what}: {host}{path} still answers {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_backend(port: u16, host: &str, path: &str, want: Option<&str>, what: &str) {
    wait_answer(port, host, path, what, |(status, backend)| match want {
        Some(b) => *status == 200 && backend.as_deref() == Some(b),
        None => *status == 404,
    })
    .await
}

async fn wait_status(port: u16, host: &str, want: u16, what: &str) {
    wait_answer(port, host, "/", what, |(status, _)| *status == want).await
}

async fn input_names(server: &Server) -> Vec<String> {
    server.get_json("/debug/inputs").await["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|o| o["object"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_lists_then_every_kind_reaches_envoy() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let (ext_port, local_port) = gateway_ports();
    let extra_port = free_port();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services(ext_port, local_port));
    serve_backend(&api, "hello-00001", &v1);
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com"],
        "hello-00001",
    ));
    // Secrets: only TLS ones are watched (field selector type=kubernetes.io/tls).
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "opaque", "namespace": NS}, "data": {}}),
    );
    api.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "cert", "namespace": "istio-system"},
        "data": {"tls.crt": "", "tls.key": ""}}),
    );
    // ConfigMaps: only the two translation reads.
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-autoscaler", "namespace": "knative-serving"}, "data": {}}));

    // Nothing is served until every initial list is done.
    api.hold_lists(true);
    let server = start_server(&api, "a", &[]).await;
    eventually(WAIT, "the server to start listing", || async {
        api.requests().iter().any(|r| r.starts_with("GET /api"))
    })
    .await;
    assert_eq!(ready_status(&server).await, 503, "ready before the lists");
    api.hold_lists(false);
    eventually(WAIT, "/ready", || async {
        ready_status(&server).await == 200
    })
    .await;
    let names = input_names(&server).await;
    assert!(
        names.contains(&"Secret istio-system/cert".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("opaque") || n.contains("config-autoscaler")),
        "{names:?}"
    );
    // One list per watch, and a watch each: no per-object calls.
    let gets: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && !r.contains("leases") && !r.contains("watch="))
        .collect();
    assert_eq!(
        gets.len(),
        knative_pilot::source::kube::slots(&[]).len(),
        "{gets:#?}"
    );

    let envoy = start_gateway(
        &server,
        "istio-ingressgateway-0",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    envoy.wait_ready(WAIT).await;
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "initial KIngress",
    )
    .await;

    // EndpointSlice changes.
    api.apply(endpoint_slice(
        "hello-00001-abcde",
        "hello-00001",
        &[v2.port()],
    ));
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v2"),
        "EndpointSlice change",
    )
    .await;
    api.apply(endpoint_slice(
        "hello-00001-abcde",
        "hello-00001",
        &[v1.port()],
    ));
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "EndpointSlice back",
    )
    .await;

    // KIngress change: a second host.
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com", "hi.default.example.com"],
        "hello-00001",
    ));
    wait_backend(
        ext_port,
        "hi.default.example.com",
        "/",
        Some("v1"),
        "KIngress change",
    )
    .await;

    // Route (no KIngress, no VirtualService for it) and Revision Service added.
    serve_backend(&api, "routed-00001", &v2);
    api.apply_yaml(&route(NS, "routed", &[("routed-00001", 100, None)], false));
    wait_backend(
        ext_port,
        "routed.default.example.com",
        "/",
        Some("v2"),
        "Route added",
    )
    .await;
    // config-network: a KIngress without a class annotation is ours only when config-network's
    // ingress-class says so.
    let unannotated = one_rule("noclass", &["noclass.default.example.com"], "hello-00001")
        .replace(
            "  annotations:\n    networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev\n",
            "",
        );
    assert!(!unannotated.contains("ingress.class"), "{unannotated}");
    api.apply_yaml(&unannotated);
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-network", "namespace": "knative-serving"},
        "data": {"ingress-class": "knative-pilot.ingress.networking.knative.dev"}}));
    wait_backend(
        ext_port,
        "noclass.default.example.com",
        "/",
        Some("v1"),
        "config-network added",
    )
    .await;
    api.delete("v1", "ConfigMap", "knative-serving", "config-network");
    wait_backend(
        ext_port,
        "noclass.default.example.com",
        "/",
        None,
        "config-network deleted",
    )
    .await;

    // VirtualService added.
    api.apply_yaml(&format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: vs, namespace: {NS}}}
spec:
  gateways: [knative-serving/knative-ingress-gateway]
  hosts: [vs.default.example.com]
  http:
  - route:
    - destination: {{host: hello-00001.{NS}.svc.cluster.local, port: {{number: 80}}}}
"#
    ));
    wait_backend(
        ext_port,
        "vs.default.example.com",
        "/",
        Some("v1"),
        "VirtualService added",
    )
    .await;

    // A Gateway (replacing the defaults) with a second server on port 81, which the gateway
    // Service maps to a free port.
    api.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {ext_port}}}
  - {{name: http-extra, port: 81, targetPort: {extra_port}}}
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: knative-ingress-gateway, namespace: knative-serving}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: 81, name: http-extra, protocol: HTTP}}
    hosts: ["*"]
"#
    ));
    wait_backend(
        extra_port,
        "hello.default.example.com",
        "/",
        Some("v1"),
        "Gateway added",
    )
    .await;
    api.delete(
        "networking.istio.io/v1beta1",
        "Gateway",
        "knative-serving",
        "knative-ingress-gateway",
    );
    let gone = wait_until(WAIT, || async {
        !envoy
            .listener_names()
            .await
            .iter()
            .any(|l| l.contains(&extra_port.to_string()))
    })
    .await;
    assert!(
        gone,
        "Gateway deleted: its listener stays: {:?}",
        envoy.listener_names().await
    );

    // Deletions.
    api.delete("networking.istio.io/v1beta1", "VirtualService", NS, "vs");
    wait_backend(
        ext_port,
        "vs.default.example.com",
        "/",
        None,
        "VirtualService deleted",
    )
    .await;
    api.delete("serving.knative.dev/v1", "Route", NS, "routed");
    wait_backend(
        ext_port,
        "routed.default.example.com",
        "/",
        None,
        "Route deleted",
    )
    .await;
    api.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        NS,
        "hello-00001-abcde",
    );
    wait_status(
        ext_port,
        "hello.default.example.com",
        503,
        "EndpointSlice deleted",
    )
    .await;
    api.delete(
        "networking.internal.knative.dev/v1alpha1",
        "Ingress",
        NS,
        "hello",
    );
    wait_backend(
        ext_port,
        "hello.default.example.com",
        "/",
        None,
        "KIngress deleted",
    )
    .await;
    let names = input_names(&server).await;
    assert!(
        !names
            .iter()
            .any(|n| n.contains("hello ") || n.ends_with("/hello")),
        "{names:?}"
    );
}

/// Count of list (not watch) requests for a resource path.
fn lists_of(api: &FakeApiServer, resource: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.contains(resource) && !r.contains("watch="))
        .count()
}

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
async fn a_bad_update_names_the_object_and_keeps_serving_its_last_good_version() {
    let v1 = Backend::start("v1").await;
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services(ext_port, local_port));
    serve_backend(&api, "hello-00001", &v1);
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com"],
        "hello-00001",
    ));
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
    api.apply_yaml(&format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: vs, namespace: {NS}}}
spec:
  gateways: [knative-serving/knative-ingress-gateway]
  hosts: [vs.default.example.com]
  http:
  - route:
    - destination: {{host: hello-00001.{NS}.svc.cluster.local, port: {{number: 80}}}}
"#
    ));
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
    let (ext_port, local_port) = gateway_ports();
    let api = FakeApiServer::start().await;
    api.apply_yaml(&gateway_services(ext_port, local_port));
    serve_backend(&api, "hello-00001", &v1);
    api.apply_yaml(&one_rule(
        "hello",
        &["hello.default.example.com"],
        "hello-00001",
    ));
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
