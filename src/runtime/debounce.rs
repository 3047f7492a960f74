//! The one debouncer between the sources and the hub: it receives a source's [`Batch`]es and
//! feeds [`Hub::apply`], translating once per burst rather than once per change.
//!
//! The first batch (the source's initial load: every file, or every initial list) is applied at
//! once; an Envoy waits for it. After that, a batch that ends a quiet period (nothing arrived
//! for `quiet`) is applied at once too, with whatever is already queued behind it: an isolated
//! change costs no waiting. A batch that arrives less than `quiet` after the previous one is
//! part of a burst: the burst is collected until it has been quiet for `quiet`, or for at most
//! `max` after its first batch, then applied as one: the changes in order, the errors of the
//! last batch. So a burst spread over a time T is translated at most `2 + T / max` times.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::Debounce;
use crate::hub::Hub;
use crate::source::Batch;

/// Appends a later batch to an earlier one (changes in order, the later errors).
fn merge(into: &mut Batch, later: Batch) {
    into.changes.extend(later.changes);
    into.errors = later.errors;
}

/// The debouncer's window and what it remembers between bursts: when the last batch came.
pub struct Debouncer {
    window: Debounce,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(window: Debounce) -> Debouncer {
        Debouncer { window, last: None }
    }

    /// Waits for the next burst: a batch that ends a quiet period at once (with the batches
    /// already queued), else the batches that arrive before the window closes. `None` when
    /// the source has ended.
    pub async fn next_burst(&mut self, rx: &mut mpsc::UnboundedReceiver<Batch>) -> Option<Batch> {
        let mut burst = rx.recv().await?;
        let first = Instant::now();
        while let Ok(b) = rx.try_recv() {
            merge(&mut burst, b);
        }
        let quiet_before = self
            .last
            .is_none_or(|l| first.duration_since(l) >= self.window.quiet);
        self.last = Some(first);
        if quiet_before {
            return Some(burst);
        }
        let mut last = first;
        loop {
            let deadline = (last + self.window.quiet).min(first + self.window.max);
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(b)) => {
                    merge(&mut burst, b);
                    last = Instant::now();
                    self.last = Some(last);
                }
                Ok(None) | Err(_) => return Some(burst),
            }
        }
    }
}

/// Feeds a source's batches into the hub until the source ends.
pub async fn run(hub: Arc<Hub>, mut rx: mpsc::UnboundedReceiver<Batch>, window: Debounce) {
    let Some(initial) = rx.recv().await else {
        return;
    };
    apply(&hub, initial);
    let mut debouncer = Debouncer::new(window);
    while let Some(burst) = debouncer.next_burst(&mut rx).await {
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

    fn batch(name: &str) -> Batch {
        Batch {
            changes: vec![delete(name)],
            errors: Vec::new(),
        }
    }

    const WINDOW: Debounce = Debounce {
        quiet: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn an_isolated_change_is_applied_at_once_and_a_queued_one_with_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Debouncer::new(WINDOW);
        for round in 0..3 {
            tx.send(batch(&format!("a{round}"))).unwrap();
            tx.send(batch(&format!("b{round}"))).unwrap();
            let t = Instant::now();
            let burst = d.next_burst(&mut rx).await.unwrap();
            assert_eq!(
                t.elapsed(),
                Duration::ZERO,
                "no waiting after a quiet period"
            );
            let want = vec![delete(&format!("a{round}")), delete(&format!("b{round}"))];
            assert_eq!(
                burst.changes, want,
                "what was queued together comes together"
            );
            tokio::time::sleep(WINDOW.quiet).await;
        }
        drop(tx);
        assert!(d.next_burst(&mut rx).await.is_none(), "the source ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_soon_after_another_waits_for_the_quiet_time() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut d = Debouncer::new(WINDOW);
        tx.send(batch("a")).unwrap();
        assert_eq!(
            d.next_burst(&mut rx).await.unwrap().changes,
            vec![delete("a")]
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        tx.send(batch("b")).unwrap();
        let t = Instant::now();
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(batch("c")).unwrap();
            tx
        });
        let burst = d.next_burst(&mut rx).await.unwrap();
        assert_eq!(burst.changes, vec![delete("b"), delete("c")]);
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(150),
            "quiet after the last one"
        );
        drop(feeder.await.unwrap());
    }

    /// A burst of 1,000 writes is translated a bounded number of times, whatever its pace, and
    /// no change is lost or reordered.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_a_thousand_writes_is_translated_a_bounded_number_of_times() {
        for (every, bound) in [
            // 1,000 writes in 1 s: the first at once, then at most two windows of `max`.
            (Duration::from_millis(1), 3),
            // 1,000 writes in 10 s (each within `quiet` of the last): 1 + 10 s / max + 1.
            (Duration::from_millis(10), 12),
            // Written all at once: one batch.
            (Duration::ZERO, 1),
        ] {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let feeder = tokio::spawn(async move {
                for i in 0..1000 {
                    tx.send(batch(&format!("x{i}"))).unwrap();
                    if !every.is_zero() {
                        tokio::time::sleep(every).await;
                    }
                }
            });
            let mut d = Debouncer::new(WINDOW);
            let mut bursts = 0;
            let mut changes = Vec::new();
            while let Some(b) = d.next_burst(&mut rx).await {
                bursts += 1;
                changes.extend(b.changes);
            }
            feeder.await.unwrap();
            let want: Vec<Change> = (0..1000).map(|i| delete(&format!("x{i}"))).collect();
            assert_eq!(changes, want, "every change, in order");
            assert!(
                (1..=bound).contains(&bursts),
                "{bursts} translations for writes every {every:?} (at most {bound})"
            );
        }
    }
}
