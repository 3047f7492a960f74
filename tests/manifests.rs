//! The deploy manifests: `kubectl kustomize` builds the base and each overlay (the real kubectl;
//! `.ci/run` installs it when missing, `KUBECTL` names another one), and the output is what a
//! cluster needs: least-privilege RBAC covering every watch, hardened 2-replica Deployment whose
//! arguments our CLI accepts, the Service ports, the gateway's istio-proxy pointed at that
//! Service, and the KIngress class.

use std::collections::BTreeSet;
use std::process::Command;

use clap::Parser;
use serde_json::Value;

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// `kubectl kustomize manifests/<dir>` as JSON values, one per document.
fn build(dir: &str) -> Vec<Value> {
    build_path(&format!("{}/manifests/{dir}", env!("CARGO_MANIFEST_DIR")))
}

/// `kubectl kustomize PATH`, which must succeed without a warning (kustomize v5 warns on the
/// deprecated `bases:`, `patchesStrategicMerge:` ... fields).
fn build_path(path: &str) -> Vec<Value> {
    let out = Command::new(kubectl())
        .args(["kustomize", path])
        .output()
        .unwrap_or_else(|e| panic!("running {} kustomize (install kubectl): {e}", kubectl()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl kustomize {path} failed: {stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "kubectl kustomize {path} warns: {stderr}"
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_saphyr::from_multiple::<Value>(&text).expect("yaml documents")
}

fn find<'a>(docs: &'a [Value], kind: &str, ns: Option<&str>, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str() == ns
        })
        .unwrap_or_else(|| panic!("no {kind} {ns:?}/{name} in {docs:#?}"))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn base_rbac_is_least_privilege_and_covers_every_watch() {
    let docs = build("base");
    let role = find(&docs, "ClusterRole", None, "knative-pilot");
    let rules = role["rules"].as_array().expect("rules");
    let read = set(&["get", "list", "watch"]);
    for r in rules {
        let verbs = strings(&r["verbs"]);
        let resources = strings(&r["resources"]);
        if resources == set(&["ingresses/status"]) {
            assert_eq!(verbs, set(&["update", "patch"]), "{r}");
            assert_eq!(
                strings(&r["apiGroups"]),
                set(&["networking.internal.knative.dev"])
            );
        } else if resources
            == set(&[
                "gatewayclasses/status",
                "gateways/status",
                "httproutes/status",
            ])
        {
            // The status writer re-reads the status subresource after a 409.
            assert_eq!(verbs, set(&["get", "update", "patch"]), "{r}");
            assert_eq!(
                strings(&r["apiGroups"]),
                set(&["gateway.networking.k8s.io"])
            );
        } else {
            assert_eq!(verbs, read, "only reads besides ingresses/status: {r}");
        }
        assert!(!resources.iter().any(|s| s.contains('*')), "{r}");
    }
    // Every resource the kube source lists and watches (and the Endpoints fallback).
    let allowed = |group: &str, plural: &str| {
        rules.iter().any(|r| {
            strings(&r["apiGroups"]).contains(group)
                && strings(&r["resources"]).contains(plural)
                && strings(&r["verbs"]).is_superset(&set(&["list", "watch"]))
        })
    };
    for slot in knative_pilot::source::kube::slots(&[]) {
        for r in std::iter::once(&slot.resource).chain(slot.fallback.as_ref()) {
            assert!(allowed(r.group, r.plural), "{} not allowed", r.path());
        }
    }
    let binding = find(&docs, "ClusterRoleBinding", None, "knative-pilot");
    assert_eq!(binding["subjects"][0]["name"], "knative-pilot");
    assert_eq!(binding["subjects"][0]["namespace"], "knative-pilot");
    find(
        &docs,
        "ServiceAccount",
        Some("knative-pilot"),
        "knative-pilot",
    );
    find(&docs, "Namespace", None, "knative-pilot");
    // xDS auth: create TokenReviews and SubjectAccessReviews, nothing else.
    let auth = find(&docs, "ClusterRole", None, "knative-pilot-xds-auth");
    let got: BTreeSet<(String, String, String)> = auth["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| {
            let (g, res, v) = (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            );
            g.iter()
                .flat_map(|g| {
                    res.iter().flat_map(|r| {
                        v.iter()
                            .map(|v| (g.clone(), r.clone(), v.clone()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    let b = find(&docs, "ClusterRoleBinding", None, "knative-pilot-xds-auth");
    assert_eq!(b["roleRef"]["name"], "knative-pilot-xds-auth");
    assert_eq!(b["subjects"][0]["name"], "knative-pilot");
    // The Lease: only in our namespace.
    let lease = find(&docs, "Role", Some("knative-pilot"), "knative-pilot-lease");
    assert_eq!(strings(&lease["rules"][0]["resources"]), set(&["leases"]));
    assert_eq!(
        strings(&lease["rules"][0]["verbs"]),
        set(&["get", "create", "update"])
    );
}

#[test]
fn base_deployment_is_hardened_probed_and_runs_our_cli() {
    let docs = build("base");
    let d = find(&docs, "Deployment", Some("knative-pilot"), "knative-pilot");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "knative-pilot");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 15014);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], 15014);
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{c}");
    assert!(c["resources"]["requests"]["memory"].is_string(), "{c}");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), set(&["ALL"]));
    // The arguments are a valid `serve --kube` command line for this build.
    let mut argv = vec!["knative-pilot".to_string()];
    argv.extend(strings_in_order(&c["args"]));
    let cli = knative_pilot::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("Deployment args {argv:?}: {e}"));
    let knative_pilot::cli::Command::Serve(serve) = cli.command else {
        panic!("not serve: {argv:?}");
    };
    assert!(serve.kube);
    assert!(serve.xds_addr.ends_with(":15010"));
    assert!(serve.debug_addr.starts_with("0.0.0.0:") && serve.debug_addr.ends_with(":15014"));
    // The Lease it uses is in the namespace its Role covers.
    assert!(serve.status.lease.starts_with("knative-pilot/"));
    // POD_NAME names the replica in the Lease.
    assert!(c["env"]
        .as_array()
        .is_some_and(|e| e.iter().any(|v| v["name"] == "POD_NAME"
            && v["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name")));

    let svc = find(&docs, "Service", Some("knative-pilot"), "knative-pilot");
    let ports: BTreeSet<i64> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, BTreeSet::from([15010, 15012, 15014]));
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["template"]["metadata"]["labels"]
    );
}

fn strings_in_order(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The istio-proxy proxy config the gateway pods get: discoveryAddress and auth policy.
fn proxy_config(docs: &[Value]) -> Value {
    let gw = find(
        docs,
        "Deployment",
        Some("istio-system"),
        "istio-ingressgateway",
    );
    let text = gw["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]
        .as_str()
        .expect("proxy.istio.io/config annotation");
    serde_saphyr::from_str(text).expect("proxy config YAML")
}

#[test]
fn istio_gateways_overlay_points_istio_proxy_at_our_service() {
    let docs = build("overlays/istio-gateways");
    let pc = proxy_config(&docs);
    // The address is our Service's cluster DNS name and xDS port.
    let svc = find(&docs, "Service", Some("knative-pilot"), "knative-pilot");
    let host = format!(
        "{}.{}.svc",
        svc["metadata"]["name"].as_str().unwrap_or(""),
        svc["metadata"]["namespace"].as_str().unwrap_or("")
    );
    let want = format!("{host}:15012");
    assert_eq!(pc["discoveryAddress"].as_str(), Some(want.as_str()));
    assert_eq!(pc["controlPlaneAuthPolicy"].as_str(), Some("MUTUAL_TLS"));
    assert_eq!(
        pc["proxyMetadata"]["CA_ADDR"].as_str(),
        Some("istiod.istio-system.svc:15012"),
        "workload certificates stay with istiod's CA"
    );
    // Our TLS listener: the certificate names the host istio-proxy verifies, and the files the
    // arguments name are the mounted Secret's and the mesh root ConfigMap's.
    let cert = find(
        &docs,
        "Certificate",
        Some("knative-pilot"),
        "knative-pilot-xds",
    );
    assert!(strings(&cert["spec"]["dnsNames"]).contains(&host), "{cert}");
    let d = find(&docs, "Deployment", Some("knative-pilot"), "knative-pilot");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let mut argv = vec!["knative-pilot".to_string()];
    argv.extend(strings_in_order(&c["args"]));
    let cli = knative_pilot::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("Deployment args {argv:?}: {e}"));
    let knative_pilot::cli::Command::Serve(serve) = cli.command else {
        panic!("not serve: {argv:?}");
    };
    assert_eq!(serve.xds_addr, "off");
    assert!(serve.xds_auth.xds_tls_addr.ends_with(":15012"));
    let mounts: Vec<(String, String)> = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["mountPath"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let volumes = &d["spec"]["template"]["spec"]["volumes"];
    let source_of = |file: &std::path::Path| -> Value {
        let (name, _) = mounts
            .iter()
            .find(|(_, p)| file.starts_with(p))
            .unwrap_or_else(|| panic!("{} is not mounted: {mounts:?}", file.display()));
        volumes
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name.as_str())
            .cloned()
            .unwrap_or_default()
    };
    let tls = &serve.xds_auth;
    for f in [&tls.tls_cert_file, &tls.tls_key_file] {
        let f = f.as_ref().expect("TLS file flags");
        assert_eq!(
            source_of(f)["secret"]["secretName"],
            cert["spec"]["secretName"]
        );
    }
    let ca = tls.client_ca_file.as_ref().expect("--client-ca-file");
    assert_eq!(source_of(ca)["configMap"]["name"], "istio-ca-root-cert");
    // net-istio stays the class: config-network is not touched.
    assert!(!docs.iter().any(|d| d["kind"] == "ConfigMap"));
    // Everything from the base is there.
    find(&docs, "Deployment", Some("knative-pilot"), "knative-pilot");
}

#[test]
fn ingress_class_overlay_makes_us_the_kingress_class() {
    let docs = build("overlays/ingress-class");
    let cm = find(
        &docs,
        "ConfigMap",
        Some("knative-serving"),
        "config-network",
    );
    assert_eq!(
        cm["data"]["ingress-class"].as_str(),
        Some(knative_pilot::model::kingress::DEFAULT_CLASS)
    );
    // The gateways are pointed at us as well.
    assert_eq!(
        proxy_config(&docs)["discoveryAddress"].as_str(),
        Some("knative-pilot.knative-pilot.svc:15012")
    );
}

/// Whether a Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists/
/// DoesNotExist) selects `labels`.
fn selects(selector: &Value, labels: &[(&str, &str)]) -> bool {
    let get = |k: &str| labels.iter().find(|(lk, _)| *lk == k).map(|(_, v)| *v);
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let by_exprs = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().expect("expression key");
            let values = strings(&e["values"]);
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|v| values.contains(v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                other => panic!("unknown operator {other:?}"),
            }
        });
    by_labels && by_exprs
}

/// Whether a NetworkPolicy peer admits a pod with `labels` in a namespace with `ns_labels`
/// (`own_ns`: the pod is in the policy's namespace).
fn admits(peer: &Value, own_ns: bool, ns_labels: &[(&str, &str)], labels: &[(&str, &str)]) -> bool {
    let ns_ok = match peer.get("namespaceSelector") {
        Some(sel) => selects(sel, ns_labels),
        None => own_ns,
    };
    let pod_ok = peer
        .get("podSelector")
        .is_none_or(|sel| selects(sel, labels));
    assert!(peer.get("ipBlock").is_none(), "no ipBlock peers: {peer}");
    ns_ok && pod_ok
}

/// The TCP ports a pod with these labels may reach under the policy's ingress rules.
fn reachable_ports(
    policy: &Value,
    own_ns: bool,
    ns_labels: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for rule in policy["spec"]["ingress"].as_array().expect("ingress rules") {
        let from = rule["from"].as_array().expect("every rule names its peers");
        if from.iter().any(|p| admits(p, own_ns, ns_labels, labels)) {
            for p in rule["ports"]
                .as_array()
                .expect("every rule names its ports")
            {
                assert_eq!(p["protocol"], "TCP");
                out.insert(p["port"].as_i64().expect("numeric port"));
            }
        }
    }
    out
}

#[test]
fn the_network_policy_admits_only_gateways_to_xds_and_keeps_debug_off_the_pod_network() {
    let gateway = [("app", "istio-ingressgateway"), ("istio", "ingressgateway")];
    let old_local_gateway = [
        ("app", "cluster-local-gateway"),
        ("istio", "cluster-local-gateway"),
    ];
    let istio_system = [("kubernetes.io/metadata.name", "istio-system")];
    let monitoring = [("kubernetes.io/metadata.name", "monitoring")];
    let tenant_ns = [("kubernetes.io/metadata.name", "default")];
    for build_dir in ["base", "overlays/istio-gateways", "overlays/ingress-class"] {
        let docs = build(build_dir);
        let policy = find(
            &docs,
            "NetworkPolicy",
            Some("knative-pilot"),
            "knative-pilot",
        );
        let deployment = find(&docs, "Deployment", Some("knative-pilot"), "knative-pilot");
        let pod_labels: Vec<(String, String)> = deployment["spec"]["template"]["metadata"]
            ["labels"]
            .as_object()
            .expect("pod labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let pod_labels: Vec<(&str, &str)> = pod_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(
            selects(&policy["spec"]["podSelector"], &pod_labels),
            "{build_dir}: the policy selects our pods"
        );
        assert_eq!(strings(&policy["spec"]["policyTypes"]), set(&["Ingress"]));
        // The xDS ports our container really listens on, and the debug port.
        let ports: BTreeSet<i64> = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .expect("container ports")
            .iter()
            .filter_map(|p| p["containerPort"].as_i64())
            .collect();
        let xds: BTreeSet<i64> = ports.iter().copied().filter(|p| *p != 15014).collect();
        assert!(
            !xds.is_empty() && ports.contains(&15014),
            "{build_dir}: {ports:?}"
        );
        for gw in [&gateway[..], &old_local_gateway[..]] {
            let reach = reachable_ports(policy, false, &istio_system, gw);
            assert!(
                reach.is_superset(&xds),
                "{build_dir}: gateways reach xDS {xds:?}: {reach:?}"
            );
            assert!(
                !reach.contains(&15014),
                "{build_dir}: gateways do not reach debug"
            );
        }
        // A tenant pod, anywhere else, reaches nothing; a pod in istio-system that is no
        // gateway neither.
        assert!(reachable_ports(policy, false, &tenant_ns, &[("app", "x")]).is_empty());
        assert!(reachable_ports(policy, false, &tenant_ns, &gateway).is_empty());
        assert!(reachable_ports(policy, false, &istio_system, &[("app", "istiod")]).is_empty());
        // The debug port: our own replicas (the status writer's peers) and monitoring only.
        assert_eq!(
            reachable_ports(policy, true, &[], &pod_labels),
            BTreeSet::from([15014])
        );
        assert_eq!(
            reachable_ports(policy, false, &monitoring, &[("app", "prometheus")]),
            BTreeSet::from([15014])
        );
    }
}

/// Copies a directory tree.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// README's kubectl-only way to set the image (an `images:` entry in the base's
/// kustomization) reaches the Deployment of both overlays, and the overlays use `resources:`
/// (no `bases:`, which kustomize v5 warns about).
#[test]
fn readme_image_setting_reaches_the_deployment_of_each_overlay() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("    images:\n")
        .expect("README shows the images: block");
    let block: String = readme[start..]
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    let block = block
        .replace(
            "REGISTRY/knative-pilot",
            "registry.example.com/team/knative-pilot",
        )
        .replace("TAG", "v1.2.3");
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_tree(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests")),
        tmp.path(),
    );
    let base = tmp.path().join("base/kustomization.yaml");
    let mut k = std::fs::read_to_string(&base).expect("base kustomization");
    k.push_str(&block);
    std::fs::write(&base, k).expect("write");
    for overlay in ["istio-gateways", "ingress-class"] {
        let kust = std::fs::read_to_string(
            tmp.path()
                .join(format!("overlays/{overlay}/kustomization.yaml")),
        )
        .expect("overlay kustomization");
        assert!(
            !kust.lines().any(|l| l.starts_with("bases:")),
            "{overlay} uses bases:"
        );
        let docs = build_path(
            tmp.path()
                .join("overlays")
                .join(overlay)
                .to_str()
                .expect("utf-8"),
        );
        let d = find(&docs, "Deployment", Some("knative-pilot"), "knative-pilot");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example.com/team/knative-pilot:v1.2.3",
            "{overlay}"
        );
    }
}
