//! Bearer tokens: verified by TokenReview (and cached), authorized by SubjectAccessReview,
//! verified with a key file in `--from` mode; refused callers leave other streams working.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_by_token_review_and_cached() {
    let f = Fixture::start().await;
    f.api.add_token("gw-token", GW_SA, &["istio-ca"]);
    f.api
        .add_token("wrong-audience", GW_SA, &["something-else"]);
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, None)
        .await
        .expect("connect");
    // Rejected tokens: Unauthenticated, and never logged.
    for bad in ["not-a-token", "wrong-audience"] {
        let err = fetch(
            ch.clone(),
            node("istio-system"),
            SECRET,
            &[GW_SECRET],
            Some(bad),
        )
        .await
        .err()
        .expect("refused");
        eprintln!("{bad}: client saw: {err:?}");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        assert!(!f.server.logs().contains(bad));
    }
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_xds_auth_failures{reason=\"token_rejected\"}"
        )
        .await,
        2
    );
    // A good token gets its namespace's secret.
    let st = fetch(
        ch.clone(),
        node("istio-system"),
        SECRET,
        &[GW_SECRET],
        Some("gw-token"),
    )
    .await
    .expect("stream");
    assert_eq!(names(&st.first), vec![GW_SECRET.to_string()]);
    drop(st);
    // A reconnect storm of one gateway: 1,000 streams, a handful of API calls.
    let (tr0, sar0) = f.api.review_counts();
    for _ in 0..1000 {
        let st = fetch(
            ch.clone(),
            node("istio-system"),
            CLUSTER,
            &[],
            Some("gw-token"),
        )
        .await
        .expect("stream");
        drop(st);
    }
    let (tr, sar) = f.api.review_counts();
    eprintln!(
        "1,000 reconnects: {} TokenReviews, {} SubjectAccessReviews",
        tr - tr0,
        sar - sar0
    );
    assert!(
        tr - tr0 <= 2 && sar - sar0 <= 2,
        "{tr0}->{tr} {sar0}->{sar}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_that_may_not_list_secrets_gets_none() {
    let f = Fixture::start().await;
    // istio-system/other-sa is a valid identity, but RBAC gives it no secrets.
    let cert = f.ca.client("istio-system", "other-sa");
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(&cert))
        .await
        .expect("connect");
    let st = fetch(ch, node("istio-system"), SECRET, &[GW_SECRET], None)
        .await
        .expect("stream");
    assert!(st.first.resources.is_empty(), "{:?}", names(&st.first));
    assert_no_key(&st.first);
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_sds_denied{reason=\"not_permitted\"}"
        )
        .await,
        1
    );
    assert_eq!(f.api.review_counts().1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_streams_keep_working_while_callers_are_refused() {
    let f = Fixture::start().await;
    let cert = f.ca.client("istio-system", "istio-ingressgateway");
    let good = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(&cert))
        .await
        .expect("connect");
    let st = fetch(
        good.clone(),
        node("istio-system"),
        SECRET,
        &[GW_SECRET],
        None,
    )
    .await
    .expect("stream");
    // A refused caller on the same server.
    let anon = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, None)
        .await
        .expect("connect");
    assert!(
        fetch(anon, node("istio-system"), SECRET, &[GW_SECRET], None)
            .await
            .is_err()
    );
    // The first stream is still listed and a new one on its channel still works.
    let conns = f.server.get_json("/debug/connections").await;
    assert_eq!(conns["count"], 1, "{conns:#}");
    let again = fetch(good, node("istio-system"), SECRET, &[GW_SECRET], None)
        .await
        .expect("stream");
    assert_eq!(names(&again.first), vec![GW_SECRET.to_string()]);
    drop(st);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_mode_verifies_tokens_with_a_key_file() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let key = rcgen::KeyPair::generate().expect("key");
    let certs = tempfile::tempdir().expect("tempdir");
    let jwks = certs.path().join("sa.pub");
    std::fs::write(&jwks, key.public_key_pem()).unwrap();
    let f = Fixture::start_with(
        certs,
        &[
            "--token-jwks-file",
            jwks.to_str().unwrap(),
            "--token-issuer",
            "https://kubernetes.default.svc.cluster.local",
        ],
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |aud: &str, k: &rcgen::KeyPair| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"sub": GW_SA, "aud": [aud], "exp": now + 600, "iat": now,
                                "iss": "https://kubernetes.default.svc.cluster.local"}),
            &EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, None)
        .await
        .expect("connect");
    let good = sign("istio-ca", &key);
    let st = fetch(
        ch.clone(),
        node("istio-system"),
        SECRET,
        &[GW_SECRET],
        Some(&good),
    )
    .await
    .expect("stream");
    assert_eq!(names(&st.first), vec![GW_SECRET.to_string()]);
    for bad in [
        sign("other", &key),
        sign("istio-ca", &rcgen::KeyPair::generate().unwrap()),
    ] {
        let err = fetch(
            ch.clone(),
            node("istio-system"),
            SECRET,
            &[GW_SECRET],
            Some(&bad),
        )
        .await
        .err()
        .expect("refused");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    }
    // No API server was asked.
    assert_eq!(f.api.review_counts(), (0, 0));
}

/// The Gateways of the default layout are knative-serving's, served to istio-system's gateway
/// pods (the default allow-list). An identity of another namespace whose node selects them is
/// refused; so is a stream whose node comes to select a Gateway of a namespace that is not
/// allowed, once that Gateway exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_selecting_a_gateway_of_another_namespace_is_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let f = Fixture::start_with(certs, &["--kube-auth"]).await;
    let cert = f.ca.client("default", "default");
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(&cert))
        .await
        .expect("connect");
    let err = fetch(ch, node("default"), CLUSTER, &[], None)
        .await
        .err()
        .expect("refused");
    eprintln!("client saw: {err:?}");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains(
            "may not receive the config of Gateway knative-serving/knative-ingress-gateway"
        ),
        "{err:?}"
    );
    assert_eq!(
        metric(
            &f.server,
            "knative_pilot_xds_auth_failures{reason=\"foreign_gateway\"}"
        )
        .await,
        1
    );

    // The istio-system gateway identity is served ...
    let gw = f.ca.client("istio-system", "istio-ingressgateway");
    let ch = tls_channel(f.server.xds_tls_port(), &f.ca.cert_pem, Some(&gw))
        .await
        .expect("connect");
    let mut st = fetch(ch, node("istio-system"), CLUSTER, &[], None)
        .await
        .expect("served");
    assert!(!st.first.resources.is_empty(), "no clusters");
    // ... until its labels also select a Gateway of a namespace it is not allowed.
    f.dir.write(
        "foreign-gateway.yaml",
        r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: hijack, namespace: tenant}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#,
    );
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match st._rx.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends in time")
    .expect("with a status");
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(ended.message().contains("tenant/hijack"), "{ended:?}");
}
