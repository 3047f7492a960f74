//! Engine admission and collection: how many proxy label sets the hub keeps a translation for,
//! and when the one of a label set no connected Envoy uses is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{lock, Hub, ProxyKey, State};
use crate::translate;
use crate::xds::{Snapshot, SubscribeError};

/// How many proxy label sets (each one incremental [`Engine`]: a translation kept up to date)
/// the hub keeps, and for how long one no connected Envoy uses. The two gateways' own label
/// sets are not counted and never dropped (their engines report the errors and status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Label sets besides the two gateways' (`--xds-max-label-sets`). A new one beyond it
    /// takes the slot of the one unused the longest, or is refused when every one is in use.
    pub max_label_sets: usize,
    /// An engine no connected Envoy uses is dropped this long after it was first seen unused
    /// (`--xds-label-set-grace`), so an Envoy restarting (same labels) finds it.
    pub grace: Duration,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_label_sets: 16,
            grace: Duration::from_secs(300),
        }
    }
}

/// Engine admission and collection: at most [`EngineLimits::max_label_sets`] label sets besides
/// the gateways', and an engine no Envoy uses dropped after [`EngineLimits::grace`].
impl Hub {
    /// Label sets with an engine (a translation kept up to date), the gateways' included.
    pub fn label_sets(&self) -> usize {
        lock(&self.state).engines.len()
    }

    /// Drops the engines (and snapshot channels) of label sets no Envoy has used for the grace
    /// period, counted from the first call that saw them unused; returns how many engines went.
    /// The runtime calls this periodically with `Instant::now()`; tests pass later instants.
    pub fn collect_unused(&self, now: Instant) -> usize {
        let mut proxies = lock(&self.proxies);
        let mut st = lock(&self.state);
        self.sweep(&mut proxies, &mut st, now)
    }

    /// The two gateways' label sets and those of our Gateway API Gateways (never counted,
    /// never dropped).
    pub(super) fn gateway_keys(&self, st: &State) -> BTreeSet<ProxyKey> {
        let mut keys: BTreeSet<ProxyKey> = ["external", "local"]
            .into_iter()
            .filter_map(|gw| translate::gateway_labels(&st.raw, &self.opts, gw))
            .collect();
        keys.extend(translate::gateway_api_labels(&st.raw, &self.opts));
        keys
    }

    pub(super) fn sweep(
        &self,
        proxies: &mut BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>,
        st: &mut State,
        now: Instant,
    ) -> usize {
        let gateways = self.gateway_keys(st);
        let mut unused = lock(&self.unused_since);
        let grace = self.engine_limits.grace;
        let before = st.engines.len();
        proxies.retain(|k, tx| {
            if tx.receiver_count() > 0 {
                unused.remove(k);
                return true;
            }
            let since = *unused.entry(k.clone()).or_insert(now);
            if now.saturating_duration_since(since) < grace {
                return true;
            }
            unused.remove(k);
            if !gateways.contains(k) {
                tracing::info!(labels = ?k, unused_for = ?now.saturating_duration_since(since), "dropped the engine of a proxy label set no Envoy uses");
            }
            false
        });
        st.engines
            .retain(|k, _| proxies.contains_key(k) || gateways.contains(k));
        let engines = &st.engines;
        st.contain.retain(|k, _| engines.contains_key(k));
        before - st.engines.len()
    }

    /// Room for an engine of a new label set: below the limit, or by dropping the one unused the
    /// longest; refused when every label set is in use.
    pub(super) fn admit(
        &self,
        proxies: &mut BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>,
        st: &mut State,
        labels: &ProxyKey,
    ) -> Result<(), SubscribeError> {
        let gateways = self.gateway_keys(st);
        if gateways.contains(labels) {
            return Ok(());
        }
        let counted = st.engines.keys().filter(|k| !gateways.contains(*k)).count();
        if counted < self.engine_limits.max_label_sets {
            return Ok(());
        }
        let mut unused = lock(&self.unused_since);
        let victim = proxies
            .iter()
            .filter(|(k, tx)| tx.receiver_count() == 0 && !gateways.contains(*k))
            .map(|(k, _)| (unused.get(k).copied(), k))
            // Unused the longest first; one not yet seen unused by a sweep last.
            .min_by_key(|(since, _)| (since.is_none(), *since))
            .map(|(_, k)| k.clone());
        let Some(victim) = victim else {
            return Err(SubscribeError::TooManyLabelSets {
                limit: self.engine_limits.max_label_sets,
            });
        };
        tracing::info!(labels = ?victim, "dropped the engine of an unused proxy label set to admit a new one");
        proxies.remove(&victim);
        unused.remove(&victim);
        st.engines.remove(&victim);
        st.contain.remove(&victim);
        Ok(())
    }
}
