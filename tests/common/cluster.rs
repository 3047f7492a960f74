//! A fake cluster for end-to-end tests: a manifest directory that `knative-pilot serve --from`
//! watches, written the way Knative and Kubernetes shape these objects, with backends on
//! 127.0.0.1 given as Endpoints, plus a running server and gateway Envoys.
//!
//! There is no Kubernetes API server here; the directory source is the real input path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::bootstrap::{render_bootstrap, ApiType, BootstrapParams, XdsTls};
use super::envoy::Envoy;
use super::server::Server;
use super::util::free_port;

/// Gateway Services that map Gateway port 80 to the given container ports, so that the two
/// gateway Envoys can listen on free loopback ports.
pub fn gateway_services(external_port: u16, local_port: u16) -> String {
    gateway_services_with(external_port, None, local_port)
}

/// [`gateway_services`], with the external gateway's port 443 (`https`) mapped to `https_port`
/// when given.
pub fn gateway_services_with(
    external_port: u16,
    https_port: Option<u16>,
    local_port: u16,
) -> String {
    let https = https_port
        .map(|p| format!("  - {{name: https, port: 443, targetPort: {p}}}\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {external_port}}}
{https}---
apiVersion: v1
kind: Service
metadata: {{name: cluster-local-gateway, namespace: istio-system}}
spec:
  selector: {{istio: cluster-local-gateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {local_port}}}
"#
    )
}

/// Revision Services (HTTP/1.1 port) in `ns` for the given backends, one document each.
pub fn revision_services(ns: &str, backends: &[&super::Backend]) -> String {
    backends
        .iter()
        .map(|b| revision_service(ns, b.name(), &[b.port()], false))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A Knative revision Service (no selector; `http` 80 -> 8012, or `http2` 81 -> 8013 when
/// `h2c`) and its Endpoints pointing at backends on 127.0.0.1.
pub fn revision_service(ns: &str, name: &str, backend_ports: &[u16], h2c: bool) -> String {
    let (pname, port, target) = if h2c {
        ("http2", 81, 8013)
    } else {
        ("http", 80, 8012)
    };
    let mut s = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}, labels: {{serving.knative.dev/revision: {name}}}}}
spec:
  ports:
  - {{name: {pname}, port: {port}, targetPort: {target}}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: {name}, namespace: {ns}}}
subsets:
"#
    );
    for p in backend_ports {
        s.push_str(&format!(
            "- addresses: [{{ip: 127.0.0.1}}]\n  ports: [{{name: {pname}, port: {p}}}]\n"
        ));
    }
    if backend_ports.is_empty() {
        s.push_str("[]\n");
    }
    s
}

/// A Route as Knative's route controller reports it (status.url and status.traffic).
/// `traffic`: (revision, percent, tag).
pub fn route(
    ns: &str,
    name: &str,
    traffic: &[(&str, i64, Option<&str>)],
    cluster_local: bool,
) -> String {
    let url = if cluster_local {
        format!("http://{name}.{ns}.svc.cluster.local")
    } else {
        format!("http://{name}.{ns}.example.com")
    };
    let labels = if cluster_local {
        "\n  labels: {networking.knative.dev/visibility: cluster-local}"
    } else {
        ""
    };
    let mut t = String::new();
    for (rev, pct, tag) in traffic {
        t.push_str(&format!("  - revisionName: {rev}\n    percent: {pct}\n"));
        if let Some(tag) = tag {
            let turl = if cluster_local {
                format!("http://{tag}-{name}.{ns}.svc.cluster.local")
            } else {
                format!("http://{tag}-{name}.{ns}.example.com")
            };
            t.push_str(&format!("    tag: {tag}\n    url: {turl}\n"));
        }
    }
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Route
metadata:
  name: {name}
  namespace: {ns}{labels}
status:
  url: {url}
  traffic:
{t}"#
    )
}

/// A manifest directory.
pub struct ManifestDir {
    dir: TempDir,
}

impl ManifestDir {
    pub fn new() -> ManifestDir {
        ManifestDir {
            dir: tempfile::Builder::new()
                .prefix("kp-manifests-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file atomically (temp file + rename, as editors and kubectl-style tools do).
    pub fn write(&self, name: &str, content: &str) {
        let tmp: PathBuf = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write manifest");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename manifest");
    }

    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.path().join(name));
    }
}

impl Default for ManifestDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Labels of the two default gateways' pods.
pub const EXTERNAL_LABELS: &[(&str, &str)] = &[("istio", "ingressgateway")];
pub const LOCAL_LABELS: &[(&str, &str)] = &[("istio", "cluster-local-gateway")];

/// Starts a gateway Envoy against the server.
pub async fn start_gateway(
    server: &Server,
    pod: &str,
    labels: &[(&str, &str)],
    api: ApiType,
) -> Envoy {
    let params = BootstrapParams::new(server.xds_port())
        .api_type(api)
        .pod(pod, "istio-system")
        .labels(labels);
    Envoy::start(&render_bootstrap(&params)).await
}

/// A server on TLS xDS (certificates from `ca`) serving `dir`, and a Delta Envoy for the Gateway
/// API Gateway `gateway` (pod `<gateway>-0` in istio-system) authenticated as the
/// istio-ingressgateway service account, ready and synced. Keep `certs` alive with them.
pub struct TlsGatewayApi {
    pub server: Server,
    pub envoy: Envoy,
    pub certs: TempDir,
}

pub async fn start_tls_gateway_api(
    ca: &super::pki::Ca,
    dir: &Path,
    gateway: &str,
    ready: Duration,
) -> TlsGatewayApi {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca.server("server-v1").write(certs.path(), "server");
    let ca_file = ca.write(certs.path(), "ca.crt");
    let args = super::pki::tls_serve_args(dir, &cert, &key, &ca_file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args).await;
    let (c, k) = ca
        .client("istio-system", "istio-ingressgateway")
        .write(certs.path(), "client");
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let params = BootstrapParams::new(server.xds_tls_port())
        .api_type(ApiType::DeltaGrpc)
        .pod(&format!("{gateway}-0"), "istio-system")
        .labels(&[("gateway.networking.k8s.io/gateway-name", gateway)])
        .xds_tls(XdsTls {
            ca: s(&ca_file),
            server_name: super::pki::SERVER_NAME.to_string(),
            client_cert: Some((s(&c), s(&k))),
        });
    let envoy = Envoy::start(&render_bootstrap(&params)).await;
    envoy.wait_ready(ready).await;
    wait_synced(&server, 0, 1).await;
    TlsGatewayApi {
        server,
        envoy,
        certs,
    }
}

/// Waits until the server has translated a generation newer than `after`, and every connected
/// Envoy (at least `envoys` of them) has ACKed it. Returns that generation.
pub async fn wait_synced(server: &Server, after: u64, envoys: usize) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = server.get_json("/debug/syncz").await;
        let g = v["generation"].as_u64().unwrap_or(0);
        let conns = v["connections"].as_array().cloned().unwrap_or_default();
        let ok = g > after
            && conns.len() >= envoys
            && conns.iter().all(|c| {
                c["status"]["acked_generation"]
                    .as_u64()
                    .is_some_and(|a| a >= g)
            });
        if ok {
            return g;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {envoys} Envoys to ACK a generation after {after}: {v:#}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The current generation the server reports.
pub async fn generation(server: &Server) -> u64 {
    server.get_json("/debug/syncz").await["generation"]
        .as_u64()
        .unwrap_or(0)
}

/// Two free ports for the gateway listeners.
pub fn gateway_ports() -> (u16, u16) {
    (free_port(), free_port())
}

/// One split of a KIngress path: `serviceName` in the KIngress's namespace, on `servicePort`.
#[derive(Clone, Debug)]
pub struct KSplit {
    pub service: String,
    pub port: u16,
    pub percent: i64,
    pub append_headers: Vec<(String, String)>,
}

impl KSplit {
    /// A split to a revision Service's `http` port (80).
    pub fn new(service: &str, percent: i64) -> KSplit {
        KSplit {
            service: service.to_string(),
            port: 80,
            percent,
            append_headers: Vec::new(),
        }
    }

    pub fn port(mut self, port: u16) -> KSplit {
        self.port = port;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> KSplit {
        self.append_headers
            .push((name.to_string(), value.to_string()));
        self
    }
}

/// One path of a KIngress rule. `path: None` is the catch-all.
#[derive(Clone, Debug, Default)]
pub struct KPath {
    pub path: Option<String>,
    /// Exact header matches.
    pub headers: Vec<(String, String)>,
    pub append_headers: Vec<(String, String)>,
    pub splits: Vec<KSplit>,
}

impl KPath {
    /// A path matching the prefix `path`.
    pub fn prefix(path: &str, splits: Vec<KSplit>) -> KPath {
        KPath {
            path: Some(path.to_string()),
            splits,
            ..Default::default()
        }
    }

    /// A catch-all path.
    pub fn any(splits: Vec<KSplit>) -> KPath {
        KPath {
            splits,
            ..Default::default()
        }
    }

    /// Adds an exact header match.
    pub fn matching(mut self, name: &str, exact: &str) -> KPath {
        self.headers.push((name.to_string(), exact.to_string()));
        self
    }

    /// Adds a path-level appendHeaders entry.
    pub fn header(mut self, name: &str, value: &str) -> KPath {
        self.append_headers
            .push((name.to_string(), value.to_string()));
        self
    }
}

/// One rule of a KIngress.
#[derive(Clone, Debug)]
pub struct KRule {
    pub hosts: Vec<String>,
    pub cluster_local: bool,
    pub paths: Vec<KPath>,
}

impl KRule {
    /// An `ExternalIP` rule.
    pub fn external(hosts: &[&str], paths: Vec<KPath>) -> KRule {
        KRule {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cluster_local: false,
            paths,
        }
    }

    /// A `ClusterLocal` rule.
    pub fn cluster_local(hosts: &[&str], paths: Vec<KPath>) -> KRule {
        KRule {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cluster_local: true,
            paths,
        }
    }
}

/// YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yq(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// A KIngress of our class (`knative-pilot.ingress.networking.knative.dev`) as Knative's route
/// controller writes it. Splits point at Services in `ns`. `http_option`: `Some("Enabled")`,
/// `Some("Redirected")` or `None` (field absent).
pub fn kingress(ns: &str, name: &str, http_option: Option<&str>, rules: &[KRule]) -> String {
    let mut s = format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev
  generation: 1
spec:
"#
    );
    if let Some(opt) = http_option {
        s.push_str(&format!("  httpOption: {opt}\n"));
    }
    s.push_str("  rules:\n");
    for rule in rules {
        s.push_str("  - hosts:\n");
        for h in &rule.hosts {
            s.push_str(&format!("    - {}\n", yq(h)));
        }
        let vis = if rule.cluster_local {
            "ClusterLocal"
        } else {
            "ExternalIP"
        };
        s.push_str(&format!("    visibility: {vis}\n    http:\n      paths:\n"));
        for p in &rule.paths {
            s.push_str("      - splits:\n");
            for sp in &p.splits {
                s.push_str(&format!(
                    "        - serviceName: {}\n          serviceNamespace: {}\n          servicePort: {}\n          percent: {}\n",
                    yq(&sp.service),
                    yq(ns),
                    sp.port,
                    sp.percent
                ));
                if !sp.append_headers.is_empty() {
                    s.push_str("          appendHeaders:\n");
                    for (k, v) in &sp.append_headers {
                        s.push_str(&format!("            {}: {}\n", yq(k), yq(v)));
                    }
                }
            }
            if let Some(path) = &p.path {
                s.push_str(&format!("        path: {}\n", yq(path)));
            }
            if !p.headers.is_empty() {
                s.push_str("        headers:\n");
                for (k, v) in &p.headers {
                    s.push_str(&format!("          {}: {{exact: {}}}\n", yq(k), yq(v)));
                }
            }
            if !p.append_headers.is_empty() {
                s.push_str("        appendHeaders:\n");
                for (k, v) in &p.append_headers {
                    s.push_str(&format!("          {}: {}\n", yq(k), yq(v)));
                }
            }
        }
    }
    s
}

/// The host [`secure_site`] serves over HTTPS.
pub const SECURE_HOST: &str = "secure.default.example.com";

/// The tls-redirect fixture's Secret (an obviously-test key), in the gateway's namespace, as
/// net-istio copies it.
pub fn secure_secret_yaml() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/tls-redirect/input/secret.yaml"
    ))
    .expect("secret fixture")
    .replace("namespace: default", "namespace: istio-system")
}

/// A KIngress of our class serving [`SECURE_HOST`] with that Secret to revision Service
/// `default/secure-00001`; `http_option` is its `httpOption` (e.g. `Redirected`).
pub fn secure_kingress(http_option: Option<&str>) -> String {
    let option = http_option.map_or(String::new(), |o| format!("  httpOption: {o}\n"));
    format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: secure
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
{option}  tls:
  - hosts: [{SECURE_HOST}]
    secretName: secure-tls
    secretNamespace: istio-system
  rules:
  - hosts: [{SECURE_HOST}]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {{serviceNamespace: default, serviceName: secure-00001, servicePort: 80, percent: 100}}
"#
    )
}

/// A manifest directory serving [`SECURE_HOST`] over HTTPS: the gateway Services (on free
/// ports), the Secret, revision Service `secure-00001` at `backend_port` and
/// [`secure_kingress`].
pub struct SecureSite {
    pub dir: ManifestDir,
    pub http_port: u16,
    pub https_port: u16,
    pub local_port: u16,
}

pub fn secure_site(backend_port: u16, http_option: Option<&str>) -> SecureSite {
    let (http_port, https_port, local_port) = (free_port(), free_port(), free_port());
    let dir = ManifestDir::new();
    dir.write(
        "gateways.yaml",
        &gateway_services_with(http_port, Some(https_port), local_port),
    );
    dir.write("secret.yaml", &secure_secret_yaml());
    dir.write(
        "rev.yaml",
        &revision_service("default", "secure-00001", &[backend_port], false),
    );
    dir.write("kingress.yaml", &secure_kingress(http_option));
    SecureSite {
        dir,
        http_port,
        https_port,
        local_port,
    }
}

/// Two GatewayClasses: `knative-pilot` (ours) and `foreign` (another controller's).
pub const GATEWAY_API_CLASSES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: knative-pilot}
spec: {controllerName: knative-pilot.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: foreign}
spec: {controllerName: example.com/other-controller}
"#;

/// A Service `ns/name` port `port` (h2c by appProtocol when asked) with Endpoints at a backend
/// on 127.0.0.1.
pub fn gateway_api_service(
    ns: &str,
    name: &str,
    port: u16,
    backend_port: u16,
    h2c: bool,
) -> String {
    let proto = if h2c {
        ", appProtocol: kubernetes.io/h2c"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: {port}, targetPort: {backend_port}{proto}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: {name}, namespace: {ns}}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: http, port: {backend_port}}}]
"#
    )
}
