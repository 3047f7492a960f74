//! `ingress_from_route` against the KIngress specs Knative's route controller builds.

use super::*;
use crate::khash::{go_json, k_network_hash};

fn target(rev: &str, percent: i64, tag: Option<&str>, url: Option<&str>) -> TrafficTarget {
    TrafficTarget {
        tag: tag.map(str::to_string),
        revision_name: Some(rev.to_string()),
        configuration_name: Some("my-service".to_string()),
        latest_revision: Some(tag.is_none()),
        percent: Some(percent),
        url: url.map(str::to_string),
    }
}

fn route(name: &str, url: Option<&str>, traffic: Vec<TrafficTarget>) -> Route {
    Route {
        api_version: Some(SERVING_API_VERSION.to_string()),
        kind: Some("Route".to_string()),
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            ..Default::default()
        },
        spec: RouteSpec::default(),
        status: Some(RouteStatus {
            url: url.map(str::to_string),
            traffic,
            ..Default::default()
        }),
    }
}

fn split(rev: &str, percent: i64) -> IngressBackendSplit {
    IngressBackendSplit {
        service_namespace: "default".into(),
        service_name: rev.into(),
        service_port: IntOrString::Int(80),
        percent,
        append_headers: Some(BTreeMap::from([
            (NAMESPACE_HEADER.to_string(), "default".to_string()),
            (REVISION_HEADER.to_string(), rev.to_string()),
        ])),
    }
}

fn rule(hosts: &[&str], visibility: &str, splits: Vec<IngressBackendSplit>) -> IngressRule {
    IngressRule {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        visibility: Some(visibility.to_string()),
        http: Some(HttpIngressRuleValue {
            paths: vec![HttpIngressPath {
                splits,
                ..Default::default()
            }],
        }),
    }
}

const LOCAL_HOSTS: [&str; 3] = [
    "my-service.default",
    "my-service.default.svc",
    "my-service.default.svc.cluster.local",
];

#[test]
fn seed_service() {
    let r = route(
        "my-service",
        Some("http://my-service.default.example.com"),
        vec![target("my-service-00001-nex", 100, None, None)],
    );
    let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
    assert_eq!(
        spec,
        IngressSpec {
            tls: vec![],
            rules: vec![
                rule(
                    &LOCAL_HOSTS,
                    "ClusterLocal",
                    vec![split("my-service-00001-nex", 100)]
                ),
                rule(
                    &["my-service.default.example.com"],
                    "ExternalIP",
                    vec![split("my-service-00001-nex", 100)]
                ),
            ],
            http_option: Some("Enabled".into()),
        }
    );
    // Without status.url the domain template gives the same host.
    let mut r2 = r.clone();
    if let Some(s) = r2.status.as_mut() {
        s.url = None;
    }
    assert_eq!(
        ingress_from_route(&r2, &RouteOptions::default()).expect("spec"),
        spec
    );
    // A custom domain.
    let opts = RouteOptions {
        domain: "kn.test".into(),
        ..Default::default()
    };
    let spec3 = ingress_from_route(&r2, &opts).expect("spec");
    assert_eq!(spec3.rules[1].hosts, vec!["my-service.default.kn.test"]);
}

#[test]
fn cluster_local_route() {
    let mut r = route(
        "internal-my-service",
        Some("http://internal-my-service.default.svc.cluster.local"),
        vec![target("my-service-00001-nex", 100, None, None)],
    );
    r.metadata.labels = Some(BTreeMap::from([(
        VISIBILITY_LABEL.to_string(),
        VISIBILITY_CLUSTER_LOCAL.to_string(),
    )]));
    let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
    assert_eq!(
        spec.rules,
        vec![rule(
            &[
                "internal-my-service.default",
                "internal-my-service.default.svc",
                "internal-my-service.default.svc.cluster.local"
            ],
            "ClusterLocal",
            vec![split("my-service-00001-nex", 100)]
        )]
    );
    // Legacy label, no status.url.
    r.metadata.labels = Some(BTreeMap::from([(
        LEGACY_VISIBILITY_LABEL.to_string(),
        VISIBILITY_CLUSTER_LOCAL.to_string(),
    )]));
    if let Some(s) = r.status.as_mut() {
        s.url = None;
    }
    assert_eq!(
        ingress_from_route(&r, &RouteOptions::default())
            .expect("spec")
            .rules
            .len(),
        1
    );
    // No label, but the status URL is cluster-local (config-domain svc.cluster.local).
    r.metadata.labels = None;
    if let Some(s) = r.status.as_mut() {
        s.url = Some("http://internal-my-service.default.svc.cluster.local".into());
    }
    assert_eq!(
        ingress_from_route(&r, &RouteOptions::default())
            .expect("spec")
            .rules
            .len(),
        1
    );
}

fn canary_route() -> Route {
    route(
        "my-service",
        Some("http://my-service.default.example.com"),
        vec![
            target("my-service-00002-abc", 90, None, None),
            target(
                "my-service-00001-nex",
                10,
                Some("canary"),
                Some("http://canary-my-service.default.example.com"),
            ),
        ],
    )
}

#[test]
fn split_with_tag() {
    let spec = ingress_from_route(&canary_route(), &RouteOptions::default()).expect("spec");
    let main = vec![
        split("my-service-00002-abc", 90),
        split("my-service-00001-nex", 10),
    ];
    assert_eq!(
        spec.rules,
        vec![
            rule(&LOCAL_HOSTS, "ClusterLocal", main.clone()),
            rule(&["my-service.default.example.com"], "ExternalIP", main),
            rule(
                &[
                    "canary-my-service.default",
                    "canary-my-service.default.svc",
                    "canary-my-service.default.svc.cluster.local"
                ],
                "ClusterLocal",
                vec![split("my-service-00001-nex", 100)]
            ),
            rule(
                &["canary-my-service.default.example.com"],
                "ExternalIP",
                vec![split("my-service-00001-nex", 100)]
            ),
        ]
    );
    // The tag's host comes from its status URL when present.
    let mut r = canary_route();
    if let Some(s) = r.status.as_mut() {
        s.traffic[1].url = Some("https://canary-my-service.default.other.org".into());
    }
    let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
    assert_eq!(
        spec.rules[3].hosts,
        vec!["canary-my-service.default.other.org"]
    );
    // A tag whose URL is cluster-local (placeholder Service labelled) gets only a local rule.
    if let Some(s) = r.status.as_mut() {
        s.traffic[1].url = Some("http://canary-my-service.default.svc.cluster.local".into());
    }
    let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
    assert_eq!(spec.rules.len(), 3);
    assert_eq!(
        spec.rules[2].visibility.as_deref(),
        Some(VISIBILITY_CLUSTER_LOCAL_INGRESS)
    );
}

#[test]
fn zero_percent_dropped_but_tag_gets_all() {
    let r = route(
        "my-service",
        None,
        vec![
            target("my-service-00002-abc", 100, None, None),
            target("my-service-00001-nex", 0, Some("old"), None),
        ],
    );
    let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
    assert_eq!(spec.rules.len(), 4);
    for r in &spec.rules[..2] {
        let splits = &r.http.as_ref().expect("http").paths[0].splits;
        assert_eq!(splits, &vec![split("my-service-00002-abc", 100)]);
    }
    // Knative's consolidate gives a lone tag target 100%.
    assert_eq!(
        spec.rules[3].hosts,
        vec!["old-my-service.default.example.com"]
    );
    let splits = &spec.rules[3].http.as_ref().expect("http").paths[0].splits;
    assert_eq!(splits, &vec![split("my-service-00001-nex", 100)]);
}

#[test]
fn same_revision_twice_is_merged() {
    let r = route(
        "my-service",
        None,
        vec![
            target("a", 30, None, None),
            target("b", 50, None, None),
            target("a", 20, None, None),
        ],
    );
    let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
    let splits = &spec.rules[0].http.as_ref().expect("http").paths[0].splits;
    assert_eq!(splits, &vec![split("a", 50), split("b", 50)]);
}

#[test]
fn tag_header_routing() {
    let opts = RouteOptions {
        tag_header_routing: true,
        ..Default::default()
    };
    let spec = ingress_from_route(&canary_route(), &opts).expect("spec");
    assert_eq!(spec.rules.len(), 4);
    for rule in &spec.rules[..2] {
        let paths = &rule.http.as_ref().expect("http").paths;
        assert_eq!(paths.len(), 2);
        assert_eq!(
            paths[0].headers,
            Some(BTreeMap::from([(
                TAG_HEADER.to_string(),
                HeaderMatch {
                    exact: "canary".into()
                }
            )]))
        );
        assert_eq!(paths[0].splits, vec![split("my-service-00001-nex", 100)]);
        assert_eq!(paths[0].append_headers, None);
        assert_eq!(paths[1].headers, None);
        assert_eq!(
            paths[1].append_headers,
            Some(BTreeMap::from([(
                DEFAULT_ROUTE_HEADER.to_string(),
                "true".to_string()
            )]))
        );
        assert_eq!(paths[1].splits.len(), 2);
    }
    for rule in &spec.rules[2..] {
        let paths = &rule.http.as_ref().expect("http").paths;
        assert_eq!(paths.len(), 1);
        assert_eq!(
            paths[0].append_headers,
            Some(BTreeMap::from([(
                TAG_HEADER.to_string(),
                "canary".to_string()
            )]))
        );
    }
}

#[test]
fn http_option_and_h2c() {
    let mut r = canary_route();
    r.metadata.annotations = Some(BTreeMap::from([(
        "networking.knative.dev/http-protocol".to_string(),
        "Redirected".to_string(),
    )]));
    let opts = RouteOptions {
        h2c_revisions: BTreeSet::from(["my-service-00001-nex".to_string()]),
        ..Default::default()
    };
    let spec = ingress_from_route(&r, &opts).expect("spec");
    assert_eq!(spec.http_option.as_deref(), Some("Redirected"));
    let splits = &spec.rules[0].http.as_ref().expect("http").paths[0].splits;
    assert_eq!(splits[0].service_port, IntOrString::Int(80));
    assert_eq!(splits[1].service_port, IntOrString::Int(81));

    r.metadata.annotations = Some(BTreeMap::from([(
        "networking.knative.dev/http-protocol".to_string(),
        "bogus".to_string(),
    )]));
    assert!(ingress_from_route(&r, &opts).is_err());

    r.metadata.annotations = None;
    let opts = RouteOptions {
        http_protocol: "disabled".into(),
        ..Default::default()
    };
    assert_eq!(
        ingress_from_route(&r, &opts).expect("spec").http_option,
        None
    );
}

#[test]
fn errors() {
    let opts = RouteOptions::default();
    let mut r = canary_route();
    r.status = None;
    assert!(ingress_from_route(&r, &opts)
        .expect_err("no status")
        .to_string()
        .contains("no status"));
    let r = route("my-service", None, vec![]);
    assert!(ingress_from_route(&r, &opts)
        .expect_err("no traffic")
        .to_string()
        .contains("status.traffic"));
    let r = route(
        "my-service",
        None,
        vec![target("a", 50, None, None), target("b", 40, None, None)],
    );
    assert!(ingress_from_route(&r, &opts)
        .expect_err("sum")
        .to_string()
        .contains("sum to 90"));
    let mut r = canary_route();
    if let Some(s) = r.status.as_mut() {
        s.traffic[0].revision_name = None;
    }
    assert!(ingress_from_route(&r, &opts)
        .expect_err("no revision")
        .to_string()
        .contains("revisionName"));
}

#[test]
fn hosts_expansion_and_urls() {
    assert_eq!(
        expanded_hosts(["a.b.svc.cluster.local"], "cluster.local"),
        vec!["a.b", "a.b.svc", "a.b.svc.cluster.local"]
    );
    // An all-digit namespace cannot be a short name.
    assert_eq!(
        expanded_hosts(["a.123.svc.cluster.local"], "cluster.local"),
        vec!["a.123.svc", "a.123.svc.cluster.local"]
    );
    assert_eq!(url_host("http://a.b.example.com"), Some("a.b.example.com"));
    assert_eq!(
        url_host("https://a.example.com:8443/x?y"),
        Some("a.example.com")
    );
    assert_eq!(url_host("http://"), None);
}

#[test]
fn deserializes_route_and_revision() {
    let r: Route = serde_json::from_value(serde_json::json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Route",
        "metadata": {"name": "my-service", "namespace": "default", "generation": 1},
        "spec": {"traffic": [{"configurationName": "my-service", "latestRevision": true, "percent": 100}]},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True"}],
            "url": "http://my-service.default.example.com",
            "address": {"url": "http://my-service.default.svc.cluster.local"},
            "traffic": [{"revisionName": "my-service-00001-nex", "latestRevision": true, "percent": 100}]
        }
    }))
    .expect("route");
    assert!(r.is_ready());
    let spec = ingress_from_route(&r, &RouteOptions::default()).expect("spec");
    assert_eq!(spec.rules.len(), 2);
    // The hash is computable and stable over a JSON round trip of the spec.
    let back: IngressSpec =
        serde_json::from_str(&serde_json::to_string(&spec).expect("ser")).expect("de");
    assert_eq!(
        k_network_hash("default", "my-service", &back),
        k_network_hash("default", "my-service", &spec)
    );
    assert!(go_json(&spec).starts_with(r#"{"rules":[{"hosts":["my-service.default","#));

    let rev: Revision = serde_json::from_value(serde_json::json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": "my-service-00001-nex", "namespace": "default"},
        "spec": {"containerConcurrency": 0, "timeoutSeconds": 300,
                 "containers": [{"image": "x", "ports": [{"name": "h2c", "containerPort": 8080}]}]},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
    }))
    .expect("revision");
    assert!(!rev.is_ready());
    assert!(rev.is_h2c());
    assert_eq!(rev.service_port(), 81);
}

/// The first hash vector is hand-made (its local and external rules differ); rebuilding it
/// from typed values checks the hash through a non-serde path.
#[test]
fn hello_vector_hash() {
    let spec = IngressSpec {
        tls: vec![],
        rules: vec![
            IngressRule {
                hosts: vec![
                    "hello.default".into(),
                    "hello.default.svc".into(),
                    "hello.default.svc.cluster.local".into(),
                ],
                ..rule(&[], "ClusterLocal", vec![split("hello-00001", 100)])
            },
            rule(
                &["hello.default.example.com"],
                "ExternalIP",
                vec![split("hello-00001", 90), split("hello-00002", 10)],
            ),
        ],
        http_option: Some("Enabled".into()),
    };
    assert_eq!(
        k_network_hash("default", "hello", &spec),
        "3cb4174844bdee0fddadbbd81f00ab6228917930c77f36d77c5e2c3531d40f1f"
    );
}
