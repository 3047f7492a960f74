//! One builder for the world of an end-to-end test: a manifest directory that
//! `knative-pilot serve --from` watches (with the two gateway Services mapped to free loopback
//! ports), the server, and gateway Envoys, started and waited for in one place.
//!
//! ```ignore
//! let gw = Fixture::new()
//!     .file("app.yaml", app_manifests)
//!     .external(ApiType::Grpc)
//!     .local(ApiType::DeltaGrpc)
//!     .start()
//!     .await;
//! let r = http_get(gw.ext_port, "app.default.example.com", "/", &[]).await;
//! ```

use std::time::Duration;

use super::bootstrap::{render_bootstrap, ApiType, BootstrapParams};
use super::cluster::{
    gateway_ports, gateway_services, wait_synced, ManifestDir, EXTERNAL_LABELS, LOCAL_LABELS,
};
use super::envoy::Envoy;
use super::server::Server;

/// How long a gateway Envoy may take to become ready.
pub const ENVOY_READY: Duration = Duration::from_secs(30);

/// Pod name of the external gateway Envoy a fixture starts.
pub const EXT_POD: &str = "istio-ingressgateway-0";
/// Pod name of the cluster-local gateway Envoy a fixture starts.
pub const LOCAL_POD: &str = "cluster-local-gateway-0";

/// Starts `knative-pilot serve --from DIR --bind-address 127.0.0.1 EXTRA...`.
pub async fn serve_dir(dir: &ManifestDir, extra: &[&str]) -> Server {
    let path = dir.path().to_str().expect("temp dir path is UTF-8");
    let mut args = vec!["--from", path, "--bind-address", "127.0.0.1"];
    args.extend_from_slice(extra);
    Server::start(&args).await
}

/// A gateway Envoy to start: pod name, pod labels, ADS flavour.
struct GatewaySpec {
    pod: String,
    labels: &'static [(&'static str, &'static str)],
    api: ApiType,
}

/// What to start; see the module docs.
pub struct Fixture {
    ext_port: u16,
    local_port: u16,
    gateway_services: bool,
    files: Vec<(String, String)>,
    args: Vec<String>,
    gateways: Vec<GatewaySpec>,
    wait_synced: bool,
    strict_re2: bool,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// Free ports for the two gateways' HTTP listeners, and their Services in the directory.
    pub fn new() -> Fixture {
        let (ext_port, local_port) = gateway_ports();
        Fixture {
            ext_port,
            local_port,
            gateway_services: true,
            files: Vec::new(),
            args: Vec::new(),
            gateways: Vec::new(),
            wait_synced: true,
            strict_re2: false,
        }
    }

    /// The port the external gateway's HTTP listener will use.
    pub fn ext_port(&self) -> u16 {
        self.ext_port
    }

    /// The port the cluster-local gateway's HTTP listener will use.
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Do not write the default gateway Services (the test writes its own).
    pub fn without_gateway_services(mut self) -> Fixture {
        self.gateway_services = false;
        self
    }

    /// A manifest file written before the server starts.
    pub fn file(mut self, name: &str, content: impl Into<String>) -> Fixture {
        self.files.push((name.to_string(), content.into()));
        self
    }

    /// Manifest files written before the server starts: (name, content).
    pub fn files(mut self, files: &[(&str, String)]) -> Fixture {
        for (name, content) in files {
            self.files.push((name.to_string(), content.clone()));
        }
        self
    }

    /// Extra `serve` arguments.
    pub fn args(mut self, args: &[&str]) -> Fixture {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An external gateway Envoy (`istio: ingressgateway`).
    pub fn external(self, api: ApiType) -> Fixture {
        self.gateway(EXT_POD, EXTERNAL_LABELS, api)
    }

    /// A cluster-local gateway Envoy (`istio: cluster-local-gateway`).
    pub fn local(self, api: ApiType) -> Fixture {
        self.gateway(LOCAL_POD, LOCAL_LABELS, api)
    }

    /// A gateway Envoy with any pod name and labels.
    pub fn gateway(
        mut self,
        pod: &str,
        labels: &'static [(&'static str, &'static str)],
        api: ApiType,
    ) -> Fixture {
        self.gateways.push(GatewaySpec {
            pod: pod.to_string(),
            labels,
            api,
        });
        self
    }

    /// Every Envoy runs with a stricter RE2 limit than the server assumes
    /// ([`STRICT_RE2_RUNTIME`](super::bootstrap::STRICT_RE2_RUNTIME)): the way to make it NACK.
    pub fn strict_re2(mut self) -> Fixture {
        self.strict_re2 = true;
        self
    }

    /// Return once the Envoys are ready, without waiting for them to ACK the first translation.
    pub fn no_wait_synced(mut self) -> Fixture {
        self.wait_synced = false;
        self
    }

    /// Writes the files, starts the server and the Envoys (in the order they were added), waits
    /// until every Envoy is ready and (unless [`Fixture::no_wait_synced`]) has ACKed the first
    /// translation.
    pub async fn start(self) -> Gateways {
        let dir = ManifestDir::new();
        if self.gateway_services {
            dir.write(
                "gateways.yaml",
                &gateway_services(self.ext_port, self.local_port),
            );
        }
        for (name, content) in &self.files {
            dir.write(name, content);
        }
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let server = serve_dir(&dir, &args).await;
        let mut envoys = Vec::new();
        for g in &self.gateways {
            let params = BootstrapParams::new(server.xds_port())
                .api_type(g.api)
                .pod(&g.pod, "istio-system")
                .labels(g.labels)
                .strict_re2(self.strict_re2);
            envoys.push(Envoy::start(&render_bootstrap(&params)).await);
        }
        for e in &envoys {
            e.wait_ready(ENVOY_READY).await;
        }
        let generation = if self.wait_synced && !envoys.is_empty() {
            wait_synced(&server, 0, envoys.len()).await
        } else {
            0
        };
        Gateways {
            ext_port: self.ext_port,
            local_port: self.local_port,
            generation,
            envoys,
            server,
            dir,
        }
    }
}

/// A started fixture. Dropping it stops the Envoys and the server (their logs are printed when
/// that happens during a panic) and removes the directory.
pub struct Gateways {
    /// Port of the external gateway's HTTP listener.
    pub ext_port: u16,
    /// Port of the cluster-local gateway's HTTP listener.
    pub local_port: u16,
    /// The generation every Envoy had ACKed when `start` returned (0 when not waited for).
    pub generation: u64,
    /// The Envoys, in the order they were added.
    pub envoys: Vec<Envoy>,
    pub server: Server,
    pub dir: ManifestDir,
}

impl Gateways {
    /// The first Envoy started.
    pub fn envoy(&self) -> &Envoy {
        self.envoys.first().expect("the fixture started no Envoy")
    }

    /// The `i`-th Envoy started.
    pub fn envoy_at(&self, i: usize) -> &Envoy {
        &self.envoys[i]
    }
}
