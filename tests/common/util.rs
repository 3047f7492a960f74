//! Small generic helpers: free ports and polling.

use std::future::Future;
use std::time::{Duration, Instant};

/// Interval between polls in [`wait_until`] / [`eventually`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A port that is free on 127.0.0.1 now, for values that must be written into a config up front
/// (Envoy listener ports come from the gateway Services in the manifests).
///
/// Picked at random *below* the kernel's ephemeral range (`ip_local_port_range`): a port the
/// kernel handed out for `bind(0)` is also a candidate for every outgoing connection's local
/// port, so under load another socket could take it before Envoy binds it. Below the range only
/// another explicit bind can. Falls back to `bind(0)` if no candidate is free.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor = 10_000u16;
    if low > floor + 1000 {
        for _ in 0..64 {
            let r = {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(std::process::id());
                h.finish()
            };
            let port = floor + (r % u64::from(low - floor)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
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

pub(crate) use knative_pilot::tools::envoy_bin::run_with_timeout;

/// CPU time of every thread of a process so far (ns), from `/proc/<pid>/task/*/schedstat`; 0
/// when it cannot be read.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until a process's CPU time grows by less than `under_ns` over one `every`; returns it.
pub async fn cpu_settled(pid: u32, every: Duration, under_ns: u64) -> u64 {
    let mut last = cpu_ns(pid);
    loop {
        tokio::time::sleep(every).await;
        let now = cpu_ns(pid);
        if now - last < under_ns {
            return now;
        }
        last = now;
    }
}
