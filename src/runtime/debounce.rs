//! The one debouncer between the sources and the hub: it receives a source's [`Batch`]es and
//! feeds [`Hub::apply`], translating once per burst rather than once per change.
//!
//! The first batch (the source's initial load: every file, or every initial list) is applied at
//! once; an Envoy waits for it. After that a burst is collected until it has been quiet for
//! `quiet`, or for at most `max` after its first batch, then applied as one: the changes in
//! order, the errors of the last batch.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::config::Debounce;
use crate::hub::Hub;
use crate::source::Batch;

/// Appends a later batch to an earlier one (changes in order, the later errors).
fn merge(into: &mut Batch, later: Batch) {
    into.changes.extend(later.changes);
    into.errors = later.errors;
}

/// Waits for the next burst: its first batch, then every batch that arrives before the window
/// closes. `None` when the source has ended.
pub async fn next_burst(
    rx: &mut mpsc::UnboundedReceiver<Batch>,
    window: Debounce,
) -> Option<Batch> {
    let mut burst = rx.recv().await?;
    let first = Instant::now();
    let mut last = first;
    loop {
        let deadline = (last + window.quiet).min(first + window.max);
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(b)) => {
                merge(&mut burst, b);
                last = Instant::now();
            }
            Ok(None) | Err(_) => return Some(burst),
        }
    }
}

/// Feeds a source's batches into the hub until the source ends.
pub async fn run(hub: Arc<Hub>, mut rx: mpsc::UnboundedReceiver<Batch>, window: Debounce) {
    let Some(initial) = rx.recv().await else {
        return;
    };
    apply(&hub, initial);
    while let Some(burst) = next_burst(&mut rx, window).await {
        tracing::info!(changes = burst.changes.len(), "inputs changed");
        apply(&hub, burst);
    }
}

/// Translating is CPU work: keep it off the async workers' hot path.
fn apply(hub: &Hub, batch: Batch) {
    tokio::task::block_in_place(|| hub.apply(batch.changes, batch.errors));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectKey;
    use crate::state::Change;
    use std::time::Duration;

    fn delete(name: &str) -> Change {
        Change::Delete(ObjectKey {
            kind: crate::model::Kind::Service,
            namespace: "ns".into(),
            name: name.into(),
        })
    }

    #[tokio::test]
    async fn a_burst_is_one_batch_closed_by_quiet_or_max() {
        let window = Debounce {
            quiet: Duration::from_millis(50),
            max: Duration::from_millis(200),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let batch = |name: &str| Batch {
            changes: vec![delete(name)],
            errors: Vec::new(),
        };
        // What is queued together is one burst; what comes after the window is the next one.
        tx.send(batch("a")).unwrap();
        tx.send(batch("b")).unwrap();
        let burst = next_burst(&mut rx, window).await.unwrap();
        assert_eq!(burst.changes, vec![delete("a"), delete("b")]);
        tx.send(batch("c")).unwrap();
        let burst = next_burst(&mut rx, window).await.unwrap();
        assert_eq!(burst.changes, vec![delete("c")]);
        // A batch every 10 ms never lets the window go quiet: max closes it long before the
        // feeder is done (it would take 5 s).
        let feeder = tokio::spawn(async move {
            for i in 0..500 {
                if tx.send(batch(&format!("x{i}"))).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let started = std::time::Instant::now();
        let burst = next_burst(&mut rx, window).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(!burst.changes.is_empty() && burst.changes.len() < 500);
        feeder.abort();
    }
}
