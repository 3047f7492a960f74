//! A fake cluster for end-to-end tests: a manifest directory that `knative-pilot serve --from`
//! watches, written the way Knative and Kubernetes shape these objects, with backends on
//! 127.0.0.1 given as Endpoints, plus a running server and gateway Envoys.
//!
//! There is no Kubernetes API server here; the directory source is the real input path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::bootstrap::{render_bootstrap, ApiType, BootstrapParams};
use super::envoy::Envoy;
use super::server::Server;
use super::util::free_port;

/// Gateway Services that map Gateway port 80 to the given container ports, so that the two
/// gateway Envoys can listen on free loopback ports.
pub fn gateway_services(external_port: u16, local_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {external_port}}}
---
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
