//! Load for end-to-end tests: a client that sends requests without pause while the config
//! changes, counting every request and every failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::client::HttpClient;

#[derive(Default)]
pub struct Counters {
    total: AtomicU64,
    failed: AtomicU64,
    /// The first failures, with the time since the load started.
    samples: Mutex<Vec<String>>,
}

/// A client that sends GETs to one host without pause on a keep-alive connection (reconnecting
/// when it is closed) and counts every request and every failure (non-200 or transport error).
pub struct Load {
    what: String,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Load {
    pub fn start(port: u16, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (s, c, h) = (stop.clone(), counters.clone(), host.to_string());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let fail = |msg: String| {
                c.failed.fetch_add(1, Ordering::SeqCst);
                let mut samples = c.samples.lock().unwrap();
                if samples.len() < 20 {
                    samples.push(format!("[{:?}] {msg}", started.elapsed()));
                }
            };
            let mut client: Option<HttpClient> = None;
            while !s.load(Ordering::SeqCst) {
                if client.as_ref().is_none_or(HttpClient::is_closed) {
                    match HttpClient::connect(port).await {
                        Ok(cl) => client = Some(cl),
                        Err(e) => {
                            c.total.fetch_add(1, Ordering::SeqCst);
                            fail(e);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                }
                let cl = client.as_mut().expect("client");
                match cl.get(&h, "/", &[]).await {
                    Ok(r) if r.status == 200 => {
                        c.total.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        c.total.fetch_add(1, Ordering::SeqCst);
                        fail(format!("status {}: {}", r.status, r.body.trim()));
                    }
                    // The connection was closed before the request was sent: not a request.
                    Err(e) if e.starts_with("connection not ready") => client = None,
                    Err(e) => {
                        c.total.fetch_add(1, Ordering::SeqCst);
                        fail(e);
                        client = None;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
        Load {
            what: format!("{host} via port {port}"),
            stop,
            counters,
            task,
        }
    }

    /// (total, failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.total.load(Ordering::SeqCst),
            self.counters.failed.load(Ordering::SeqCst),
        )
    }

    pub fn samples(&self) -> Vec<String> {
        self.counters.samples.lock().unwrap().clone()
    }

    /// Stops the client; returns (total, failed, first failures).
    pub async fn finish(self) -> (u64, u64, Vec<String>) {
        let Load {
            what,
            stop,
            counters,
            task,
        } = self;
        stop.store(true, Ordering::SeqCst);
        let _ = task.await;
        let (t, f) = (
            counters.total.load(Ordering::SeqCst),
            counters.failed.load(Ordering::SeqCst),
        );
        eprintln!("load {what}: {t} requests, {f} failed");
        let samples = counters.samples.lock().unwrap().clone();
        (t, f, samples)
    }

    /// Stops the client and asserts that nothing failed and that it did send requests.
    pub async fn finish_clean(self, min_requests: u64) -> u64 {
        let what = self.what.clone();
        let (t, f, samples) = self.finish().await;
        assert_eq!(
            f, 0,
            "load {what}: {f} of {t} requests failed; first: {samples:#?}"
        );
        assert!(
            t >= min_requests,
            "load {what}: only {t} requests (want >= {min_requests})"
        );
        t
    }
}
