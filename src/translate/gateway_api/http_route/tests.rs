//! Unit tests of one HTTPRoute's translation: rewrites, merging across routes (hostname
//! intersection is tested with the attachment rule, `attach/tests.rs`).

use super::{prefix_rewrite, PathMatch, PathRewrite};

/// The path Envoy sends upstream for `path` matched by `m` and rewritten by `rw`
/// (`prefix_rewrite` replaces the matched prefix; `regex_rewrite` every match, with `\N`
/// capture groups).
fn upstream(m: &PathMatch, rw: Option<&PathRewrite>, path: &str) -> String {
    let matched = match m {
        PathMatch::SegmentPrefix(p) | PathMatch::Prefix(p) => p.as_str(),
        _ => unreachable!("prefix matches only"),
    };
    match rw {
        None => path.to_string(),
        Some(PathRewrite::Full(to)) => to.clone(),
        Some(PathRewrite::Prefix(to)) => format!("{to}{}", &path[matched.len()..]),
        Some(PathRewrite::Regex {
            pattern,
            substitution,
        }) => regex::Regex::new(pattern)
            .expect("regex")
            .replace_all(path, substitution.replace(r"\2", "${2}").as_str())
            .into_owned(),
    }
}

/// The route names of each virtual host of `http.80` for the proxy of Gateway `gw`.
fn routes_by_host(yaml: &str) -> Vec<(String, Vec<String>)> {
    let loaded = crate::source::files::parse_text(std::path::Path::new("t.yaml"), yaml);
    let (inputs, _) = crate::state::Inputs::from_sourced(loaded.objects);
    let labels = std::collections::BTreeMap::from([(
        crate::model::gateway_api::GATEWAY_NAME_LABEL.to_string(),
        "gw".to_string(),
    )]);
    let t = crate::translate::translate(&inputs, &crate::translate::Options::default(), &labels);
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    let rc = t.config.routes.iter().find(|r| r.name == "http.80");
    rc.expect("http.80")
        .virtual_hosts
        .iter()
        .map(|vh| {
            let names = vh.routes.iter().map(|r| r.name.clone()).collect();
            (vh.name.clone(), names)
        })
        .collect()
}

/// Conformance `MatchingAcrossRoutes`: two HTTPRoutes on one listener, one for
/// example.com/example.net and one for `*.com`; example.com gets both routes' rules in the
/// spec's precedence (the longer prefix first, then on a tie the more specific hostname, the
/// older route), example.net only the first route's.
#[test]
fn http_routes_sharing_a_host_merge_their_rules() {
    let yaml = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours}
spec: {controllerName: knative-pilot.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: ours
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: part1, namespace: infra, creationTimestamp: "2024-01-01T00:00:02Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [example.com, example.net]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{name: v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: part2, namespace: infra, creationTimestamp: "2024-01-01T00:00:01Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["*.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{name: v2, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: infra}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: infra}
spec: {ports: [{port: 8080}]}
"#;
    let (p1, p2) = ("infra.part1.0", "infra.part2.0");
    let p2b = "infra.part2.1";
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        routes_by_host(yaml),
        vec![
            ("*.com:80".to_string(), s(&[p2, p2, p2b, p2b])),
            // /v2; the header matches, part1's (the more specific hostname, although
            // part2 is older) before part2's in their rule order; then `/` likewise.
            ("example.com:80".to_string(), s(&[p2, p1, p2, p2b, p1, p2b])),
            ("example.net:80".to_string(), s(&[p1, p1])),
        ]
    );
}

#[test]
fn replace_prefix_match_follows_the_spec_table() {
    let seg = |p: &str| PathMatch::SegmentPrefix(p.to_string());
    let root = PathMatch::Prefix("/".to_string());
    for (m, to, path, want) in [
        (seg("/foo"), "/xyz", "/foo/bar", "/xyz/bar"),
        (seg("/foo"), "/xyz/", "/foo/bar", "/xyz/bar"),
        (seg("/foo"), "/xyz", "/foo", "/xyz"),
        (seg("/foo"), "", "/foo/bar", "/bar"),
        (seg("/foo"), "/", "/foo/bar", "/bar"),
        (seg("/foo"), "/", "/foo", "/"),
        (seg("/foo"), "/", "/foo/", "/"),
        (seg("/foo"), "/", "/foo/bar?x=1", "/bar?x=1"),
        (seg("/strip-prefix"), "/", "/strip-prefix/three", "/three"),
        (seg("/a.b"), "/", "/a.b/c", "/c"),
        (root.clone(), "/v2", "/foo", "/v2/foo"),
        (root.clone(), "/v2/", "/foo/bar", "/v2/foo/bar"),
        (root.clone(), "/v2", "/", "/v2/"),
        (root.clone(), "/", "/foo", "/foo"),
    ] {
        let rw = prefix_rewrite(&m, to).expect("a prefix match");
        assert_eq!(
            upstream(&m, rw.as_ref(), path),
            want,
            "{m:?} -> {to:?} on {path}"
        );
    }
    // The regex escapes the prefix: `/a.b` does not strip `/axb`.
    let m = seg("/a.b");
    let rw = prefix_rewrite(&m, "/").expect("a prefix match");
    assert_eq!(upstream(&m, rw.as_ref(), "/axb/c"), "/axb/c");
    assert!(prefix_rewrite(&PathMatch::Exact("/x".to_string()), "/").is_err());
}
