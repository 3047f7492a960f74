//! The knative-pilot binary as a child process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::client::{try_http_request, HttpVersion, Response};

/// How long `Server::start` waits for both "listening" lines.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// `knative-pilot serve ... --xds-addr 127.0.0.1:0 --debug-addr 127.0.0.1:0` (unless `args`
/// names its own `--xds-addr` / `--debug-addr`, e.g. to restart on the same port).
/// Ports are read from the stdout lines `xds listening on 127.0.0.1:<port>`
/// and `debug listening on 127.0.0.1:<port>`; stderr goes to a log file
/// (see [`Server::logs`]). Killed on drop; logs are printed if panicking.
pub struct Server {
    child: Option<Child>,
    dir: TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    xds_port: u16,
    xds_tls_port: u16,
    debug_port: u16,
}

fn parse_port(lines: &[String], prefix: &str) -> Option<u16> {
    lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix(prefix)?
            .trim()
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    })
}

impl Server {
    pub async fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[]).await
    }

    /// Like [`Server::start`] with extra environment variables (e.g. RUST_LOG).
    pub async fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let bin = env!("CARGO_BIN_EXE_knative-pilot");
        let dir = tempfile::Builder::new()
            .prefix("harness-server-")
            .tempdir()
            .expect("tempdir");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
        let mut child = Command::new(bin)
            .arg("serve")
            .args(args)
            .args(if args.contains(&"--xds-addr") {
                &[][..]
            } else {
                &["--xds-addr", "127.0.0.1:0"][..]
            })
            .args(if args.contains(&"--debug-addr") {
                &[][..]
            } else {
                &["--debug-addr", "127.0.0.1:0"][..]
            })
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stdout_pipe = child.stdout.take().expect("stdout pipe");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        {
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout_pipe).lines() {
                    match line {
                        Ok(l) => stdout.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            });
        }
        let mut server = Server {
            child: Some(child),
            dir,
            stdout,
            xds_port: 0,
            xds_tls_port: 0,
            debug_port: 0,
        };
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            {
                let lines = server.stdout.lock().unwrap();
                let xds = parse_port(&lines, "xds listening on");
                let tls = parse_port(&lines, "xds-tls listening on");
                let debug = parse_port(&lines, "debug listening on");
                // The debug line comes last.
                if let (true, Some(d)) = (xds.is_some() || tls.is_some(), debug) {
                    drop(lines);
                    server.xds_port = xds.unwrap_or(0);
                    server.xds_tls_port = tls.unwrap_or(0);
                    server.debug_port = d;
                    return server;
                }
            }
            if let Some(st) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                server.child = None;
                panic!(
                    "knative-pilot exited during startup ({st})\n{}",
                    server.logs()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "knative-pilot did not print its listening lines within \
                     {SERVER_START_TIMEOUT:?}\n{}",
                    server.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn xds_port(&self) -> u16 {
        self.xds_port
    }

    /// The TLS xDS port (`--xds-tls-addr`), 0 when not serving TLS.
    pub fn xds_tls_port(&self) -> u16 {
        self.xds_tls_port
    }

    pub fn debug_port(&self) -> u16 {
        self.debug_port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// stdout lines followed by stderr (the logs).
    pub fn logs(&self) -> String {
        let mut out = String::from("----- stdout -----\n");
        for l in self.stdout.lock().unwrap().iter() {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("----- stderr -----\n");
        out.push_str(
            &std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
        );
        out
    }

    /// GET from the debug server; Err on transport errors.
    pub async fn get(&self, path: &str) -> Result<Response, String> {
        try_http_request(
            self.debug_port,
            HttpVersion::Http1,
            "GET",
            "127.0.0.1",
            path,
            &[],
            "",
        )
        .await
    }

    /// GET a debug endpoint and parse it as JSON; panics on error, non-2xx
    /// or non-JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self
            .get(path)
            .await
            .unwrap_or_else(|e| panic!("debug GET {path}: {e}\n{}", self.logs()));
        assert!(
            (200..300).contains(&r.status),
            "debug GET {path}: status {}: {}",
            r.status,
            r.body
        );
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("debug GET {path}: not JSON ({e}): {}", r.body))
    }

    /// SIGTERM, wait up to 10s for a graceful exit, then SIGKILL.
    /// Returns the exit status if the process exited on its own.
    pub async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILL and reap (no graceful shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== knative-pilot logs =====\n{}\n===== end knative-pilot logs =====",
                self.logs()
            );
        }
    }
}
