//! Lifecycle as one piece: the stop signal every long-running task watches, and the drain that
//! gives them a grace period to finish before the process moves on.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long tasks get to finish after the stop signal (streams closing, the status writer
/// releasing its Lease).
pub const GRACE: Duration = Duration::from_secs(5);

/// Completes on SIGTERM or Ctrl-C.
pub async fn signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {},
            r = tokio::signal::ctrl_c() => r?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    Ok(())
}

/// The stop signal: a `watch` channel that turns `true` once. Tasks take a [`Stop::receiver`]
/// (the ADS streams, the servers, the status writer) and end when it turns.
pub struct Stop {
    tx: watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    pub fn new() -> Stop {
        Stop {
            tx: watch::channel(false).0,
        }
    }

    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// A future that completes once stop is signalled (for `with_graceful_shutdown`).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.receiver();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Signals stop.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }
}

/// Waits up to `grace` for these tasks to finish; the ones still running are left to the
/// runtime's end (the process exits after).
pub async fn drain(tasks: Vec<JoinHandle<()>>, grace: Duration) {
    let _ = tokio::time::timeout(grace, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
}
