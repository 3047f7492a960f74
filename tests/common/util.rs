//! Small generic helpers: free ports and polling.

use std::future::Future;
use std::time::{Duration, Instant};

/// Interval between polls in [`wait_until`] / [`eventually`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Bind 127.0.0.1:0, read the port the kernel picked, release it.
/// Only for values that must be written into a config up front (there is a
/// small race with other processes; prefer port 0 + discovery when possible).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Poll `f` every 100ms until it returns true or `timeout` elapses.
/// Returns whether the predicate became true (it is always evaluated at least
/// once, and once more right at the deadline).
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Like [`wait_until`] but panics with `what` on timeout.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !wait_until(timeout, f).await {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Run `program --version`-style probes etc. with a deadline (blocking).
/// Returns (success, stdout + stderr) or None if it could not be spawned or
/// did not finish in time (the process is killed then).
pub(crate) fn run_with_timeout(
    cmd: &mut std::process::Command,
    timeout: Duration,
) -> Option<(bool, String)> {
    use std::io::Read;
    use std::process::Stdio;
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
