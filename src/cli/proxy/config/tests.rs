//! The tables of golden dumps (what `render` prints: the JSON `/debug/config_dump` serves).

use super::*;

fn dump(case: &str) -> Value {
    let path = format!(
        "{}/testdata/{case}/expected/knative-serving_knative-ingress-gateway.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("golden dump")).expect("JSON")
}

/// The table's rows, each cell trimmed.
fn rows(case: &str, kind: Kind) -> Vec<Vec<String>> {
    table(kind, &resources(&dump(case), kind)).rows
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

#[test]
fn clusters_split_istio_names_and_show_their_type() {
    assert_eq!(
        rows("tls-redirect", Kind::Cluster),
        [
            row(&["BlackHoleCluster", "-", "-", "-", "STATIC"]),
            row(&[
                "secure-00001.default.svc.cluster.local",
                "80",
                "-",
                "outbound",
                "EDS"
            ]),
        ]
    );
    assert_eq!(
        rows("externalname", Kind::Cluster)[1],
        row(&[
            "my-ext.default.svc.cluster.local",
            "80",
            "-",
            "outbound",
            "STRICT_DNS"
        ])
    );
    assert_eq!(
        cluster_name_parts("outbound|8080|v1|a.b.svc.cluster.local"),
        (
            "a.b.svc.cluster.local".into(),
            "8080".into(),
            "v1".into(),
            "outbound".into()
        )
    );
}

#[test]
fn listeners_one_row_per_filter_chain() {
    assert_eq!(
        rows("tls-redirect", Kind::Listener),
        [
            row(&["0.0.0.0", "8080", "ALL", "Route: http.80"]),
            row(&[
                "0.0.0.0",
                "8443",
                "SNI: secure.default.example.com",
                "Route: https.443.default-secure-0.knative-ingress-gateway.knative-serving"
            ]),
        ]
    );
    let scoped = serde_json::json!({"filter_chains": [{"filters": [{"typed_config":
        {"scoped_routes": {"name": "http.80"}}}]}],
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}}});
    assert_eq!(
        listeners(&[scoped]).rows,
        [row(&["0.0.0.0", "8080", "ALL", "Scoped Routes: http.80"])]
    );
}

#[test]
fn routes_one_row_per_route_with_its_match_and_object() {
    let r = rows("tls-redirect", Kind::Route);
    assert_eq!(r.len(), 4);
    assert_eq!(
        r[0],
        row(&[
            "http.80",
            "secure.default.example.com:80",
            "secure.default.example.com",
            "/* (headers: k-network-hash)",
            "Ingress default/secure"
        ])
    );
    assert_eq!(r[1][3], "/*");
    assert_eq!(
        r[2][0],
        "https.443.default-secure-0.knative-ingress-gateway.knative-serving"
    );
    let vs = serde_json::json!({"metadata": {"filter_metadata": {"istio": {"config":
        "/apis/networking.istio.io/v1/namespaces/default/virtual-service/hello"}}}});
    assert_eq!(route_origin(&vs), "VirtualService default/hello");
    assert_eq!(
        route_match(&serde_json::json!({"safe_regex": {"regex": "/a.*"}})),
        "regex: /a.*"
    );
    assert_eq!(
        domains(&serde_json::json!({"domains": ["a", "b", "c", "d"]})),
        "a, b + 2 more"
    );
}

#[test]
fn endpoints_include_inline_assignments_of_dns_clusters() {
    assert_eq!(
        rows("tls-redirect", Kind::Endpoint),
        [row(&[
            "10.12.10.5:8012",
            "HEALTHY",
            "outbound|80||secure-00001.default.svc.cluster.local"
        ])]
    );
    let ext = rows("externalname", Kind::Endpoint);
    assert_eq!(ext.len(), 1, "{ext:?}");
    assert_eq!(ext[0][2], "outbound|80||my-ext.default.svc.cluster.local");
}

#[test]
fn secrets_show_the_certificate_never_the_key() {
    assert_eq!(
        rows("tls-redirect", Kind::Secret),
        [row(&[
            "kubernetes://default/secure-tls",
            "Cert Chain",
            "true",
            "32685b9dc265294df0551c12dfd4ba6296219664",
            "2126-10-30T17:26:43Z",
            "2026-11-23T17:26:43Z"
        ])]
    );
    let full = serde_json::to_string(&resources(&dump("tls-redirect"), Kind::Secret)).unwrap();
    assert!(full.contains("[redacted]"), "{full}");
    assert!(!full.contains("PRIVATE KEY") && !full.contains("LS0tLS1CRUdJTiBQUklWQVRF"));
}
