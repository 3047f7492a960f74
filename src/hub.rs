//! The xDS cache: for every distinct set of proxy labels that has connected, the latest
//! snapshot in a `watch` channel (which holds only the latest value: a slow Envoy never makes a
//! queue grow). Sources feed it [`Change`]s; it keeps the raw inputs, updates one incremental
//! [`Engine`] per proxy label set (only what a change touches is translated and encoded again),
//! retains the last good version of objects that change into bad ones, and publishes. What a
//! gateway's Envoys NACK is narrowed down to the objects behind it and quarantined for that
//! gateway (`hub/contain.rs`, through [`ConfigSource::nacked`]). Until the first
//! [`Hub::apply`]/[`Hub::update`] the hub is not ready: `/ready` says 503, and streams wait
//! (up to `--xds-not-ready-wait`) until their gateway is translated ([`ConfigSource::readiness`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use crate::model::diag::InputError;
use crate::model::{Kind, ObjectKey};
use crate::state::{keep_last_good, Change, Entry, Inputs, PREVIOUS_VERSION_SERVED};
use crate::translate::incremental::{Engine, ObjectChange, Shared};
use crate::translate::{self, Options, ProxyConfig};
use crate::xds::conn::NackStatus;
use crate::xds::resource::{resource, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET};
use crate::xds::{ConfigSource, ProxyIdentity, Snapshot, SubscribeError};

mod contain;
mod engines;
mod first;

use contain::Containment;
pub use engines::EngineLimits;

/// Labels identify what a proxy gets: proxies with equal labels share one snapshot channel.
type ProxyKey = BTreeMap<String, String>;

/// What the hub holds under one lock: raw and served inputs, the incremental translation per
/// proxy key, and the last-good bookkeeping.
#[derive(Default)]
struct State {
    /// The inputs as the sources gave them (before last-good substitution).
    raw: Inputs,
    /// The inputs translated: raw, with the last good version of objects that turned bad.
    served: Inputs,
    /// One incremental engine per proxy key (connected, or one of the two gateways).
    engines: BTreeMap<ProxyKey, Engine>,
    /// The last version of each object that translated without error.
    last_good: BTreeMap<ObjectKey, Arc<Entry>>,
    /// Objects whose raw version is bad and whose last good one is served: their raw errors.
    kept: BTreeMap<ObjectKey, Vec<InputError>>,
    load_errors: Vec<InputError>,
    /// Objects named by translation errors after the last change.
    bad: BTreeSet<ObjectKey>,
    /// Per proxy key with an engine: what its Envoys accepted and rejected (`contain.rs`).
    contain: BTreeMap<ProxyKey, Containment>,
}

/// The xDS cache and the current inputs.
pub struct Hub {
    pub(crate) opts: Options,
    state: Mutex<State>,
    ready: AtomicBool,
    generation: AtomicU64,
    inputs: RwLock<Arc<Inputs>>,
    errors: RwLock<Vec<InputError>>,
    proxies: Mutex<BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>>,
    engine_limits: EngineLimits,
    /// Proxy keys without a receiver: since when (taken under the `proxies` lock).
    unused_since: Mutex<BTreeMap<ProxyKey, Instant>>,
    /// When recent generations started (for the convergence time metric).
    generation_times: Mutex<std::collections::VecDeque<(u64, Instant)>>,
    /// Held by [`Hub::apply`] throughout (it releases the other locks at the first load).
    applying: Mutex<()>,
    /// The first load's gateways served before it is complete (`first.rs`; taken last).
    first: Mutex<first::FirstLoad>,
    /// Counts what became servable at the first load: each early gateway, then the whole load
    /// ([`ConfigSource::readiness`]: streams that arrived too early wait on it).
    readiness: watch::Sender<u64>,
    /// Tests: called as each engine of the first load is complete, before it is served.
    #[cfg(test)]
    first_built: Mutex<Option<first::BuiltHook>>,
}

/// How many generation start times the hub remembers.
const GENERATION_TIMES: usize = 256;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Kinds whose objects can be left out for errors (and so have a last good version).
fn translatable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::VirtualService
            | Kind::KIngress
            | Kind::Route
            | Kind::Gateway
            | Kind::HttpRoute
            | Kind::K8sGateway
    )
}

impl Hub {
    pub fn new(opts: Options) -> Arc<Hub> {
        Self::with_engine_limits(opts, EngineLimits::default())
    }

    /// A hub that keeps at most `limits.max_label_sets` label sets besides the gateways'.
    pub fn with_engine_limits(opts: Options, limits: EngineLimits) -> Arc<Hub> {
        Arc::new(Hub {
            engine_limits: limits,
            unused_since: Mutex::new(BTreeMap::new()),
            opts,
            state: Mutex::new(State::default()),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            inputs: RwLock::new(Arc::new(Inputs::default())),
            errors: RwLock::new(Vec::new()),
            proxies: Mutex::new(BTreeMap::new()),
            generation_times: Mutex::new(std::collections::VecDeque::new()),
            applying: Mutex::new(()),
            first: Mutex::new(first::FirstLoad::default()),
            readiness: watch::channel(0).0,
            #[cfg(test)]
            first_built: Mutex::new(None),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn inputs(&self) -> Arc<Inputs> {
        self.inputs.read().map(|i| i.clone()).unwrap_or_default()
    }

    /// The inputs as the sources last gave them (bad objects included).
    pub fn raw_inputs(&self) -> Inputs {
        lock(&self.state).raw.clone()
    }

    pub fn errors(&self) -> Vec<InputError> {
        self.errors.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// The snapshot a proxy with these labels would get now (for debug endpoints).
    pub fn snapshot_for(&self, labels: &ProxyKey) -> Snapshot {
        {
            let st = lock(&self.state);
            if let Some(e) = st.engines.get(labels) {
                return e.snapshot(self.generation());
            }
        }
        let inputs = self.inputs();
        translate::translate_encoded(&inputs, &self.opts, labels, self.generation()).snapshot
    }

    /// Installs new inputs (the changes from the current raw inputs, then [`Hub::apply`]).
    pub fn update(&self, inputs: Inputs, load_errors: Vec<InputError>) {
        let changes = lock(&self.state).raw.changes_to(&inputs);
        self.apply(changes, load_errors);
    }

    /// Applies a source's changes and replaces its load errors, re-translates what they touch
    /// for every proxy key and publishes the new snapshots. Marks the hub ready after the first
    /// call.
    ///
    /// Nothing already served is lost to bad input: an object that changes to a version that
    /// fails to translate is reported, and its last version that translated cleanly keeps being
    /// served (until the object is deleted or fixed).
    ///
    /// At the first call (the hub not ready yet) the gateways' engines are built without the
    /// locks, and each gateway is served as soon as its own engine is complete (`first.rs`):
    /// never before its full translation, never a partial one.
    pub fn apply(&self, changes: Vec<Change>, load_errors: Vec<InputError>) {
        let started = Instant::now();
        let _one = lock(&self.applying);
        let first = !self.is_ready();
        let mut proxies = lock(&self.proxies);
        let mut guard = lock(&self.state);
        // Under the locks: a stream's NACK also makes a generation (`Hub::nacked`).
        let generation = self.start_generation(started);
        let st = &mut *guard;
        st.load_errors = load_errors;
        // Nothing known yet (the first load): the served inputs are the raw ones, taken whole
        // (O(1)) instead of object by object; what `serve_raw` does with nothing served,
        // nothing kept and no engine to tell.
        let fresh = st.raw.is_empty()
            && st.served.is_empty()
            && st.kept.is_empty()
            && st.engines.is_empty();
        let changed = st.apply_raw(changes);
        if fresh {
            st.served = st.raw.clone();
        }
        for c in st.contain.values_mut() {
            c.release(&changed);
        }
        // Forget proxy keys nobody has listened to for the grace period; keep the gateways'
        // engines (their errors matter even with no proxy connected).
        self.sweep(&mut proxies, st, started);
        let mut keys: BTreeSet<ProxyKey> = proxies.keys().cloned().collect();
        keys.extend(self.gateway_keys(st));
        st.engines.retain(|k, _| keys.contains(k));
        st.contain.retain(|k, _| keys.contains(k));
        let before = st.snapshots();
        if !fresh {
            st.serve_raw(&changed);
        }
        if first {
            let served = st.served.clone();
            drop(guard);
            drop(proxies);
            let built = self.serve_first(&served, &keys, generation);
            proxies = lock(&self.proxies);
            guard = lock(&self.state);
            guard.engines.extend(built);
        }
        let st = &mut *guard;
        st.add_engines(&keys, &self.opts);
        st.restore_last_good(&changed);
        st.note_changes(&before, generation);
        let (errors, bad) = st.errors();
        st.remember_good(&changed, bad);
        for e in &errors {
            tracing::warn!(error = %e, "input left out");
        }
        self.publish(&proxies, st, generation, errors);
        self.ready.store(true, Ordering::Release);
        if first {
            self.replay_first_feedback(&proxies, st);
            self.readiness.send_modify(|n| *n += 1);
        }
        tracing::info!(
            generation,
            proxies = proxies.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "translated"
        );
    }
}

impl Hub {
    /// The number of the next generation, with its start time (call under the proxies lock).
    fn start_generation(&self, started: Instant) -> u64 {
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let mut times = lock(&self.generation_times);
        if times.len() >= GENERATION_TIMES {
            times.pop_front();
        }
        times.push_back((generation, started));
        generation
    }

    /// Sends every proxy key its engine's snapshot of `generation`, then makes the generation,
    /// the served inputs and `errors` current.
    fn publish(
        &self,
        proxies: &BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>,
        st: &State,
        generation: u64,
        errors: Vec<InputError>,
    ) {
        for (labels, tx) in proxies.iter() {
            if let Some(e) = st.engines.get(labels) {
                tx.send_replace(Arc::new(e.snapshot(generation)));
            }
        }
        // The generation first, then the inputs it carries: a reader of `inputs()` then
        // `generation()` (the KIngress status writer) never sees a generation older than the
        // inputs it read.
        self.generation.store(generation, Ordering::Release);
        if let Ok(mut w) = self.inputs.write() {
            *w = Arc::new(st.served.clone());
        }
        if let Ok(mut w) = self.errors.write() {
            *w = errors;
        }
    }

    /// What an ACK or NACK of one proxy key changed in its quarantine (`changes` against its
    /// view), applied to its engine and published as a new generation.
    fn contained(
        &self,
        proxies: &BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>,
        st: &mut State,
        key: &ProxyKey,
        changes: Vec<ObjectChange>,
    ) {
        if changes.is_empty() {
            return;
        }
        let started = Instant::now();
        let generation = self.start_generation(started);
        let before = st.snapshots();
        if let (Some(e), Some(c)) = (st.engines.get_mut(key), st.contain.get(key)) {
            e.apply(c.inputs(&st.served), &changes);
        }
        st.note_changes(&before, generation);
        let (errors, _) = st.errors();
        self.publish(proxies, st, generation, errors);
        tracing::info!(
            generation,
            labels = ?key,
            objects = ?changes.iter().map(|c| c.key.to_string()).collect::<Vec<_>>(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "NACK containment: quarantine changed"
        );
    }
}

/// The steps of [`Hub::apply`], in order.
impl State {
    /// The raw inputs updated; returns the keys whose raw version changed.
    fn apply_raw(&mut self, changes: Vec<Change>) -> BTreeSet<ObjectKey> {
        let mut changed: BTreeSet<ObjectKey> = BTreeSet::new();
        for c in changes {
            changed.insert(match &c {
                Change::Upsert(e) => e.object.key(),
                Change::Delete(k) => k.clone(),
            });
            self.raw.apply([c]);
        }
        changed
    }

    /// Served inputs: the raw version of every changed object (re-judged by
    /// [`State::restore_last_good`]), applied to every engine.
    fn serve_raw(&mut self, changed: &BTreeSet<ObjectKey>) {
        let mut oc = Vec::new();
        for key in changed {
            self.kept.remove(key);
            let new = self.raw.entry(key).cloned();
            oc.push(served_change(&mut self.served, key, new));
        }
        self.apply_engines(&oc);
    }

    /// Every engine's resources now (O(1) each: persistent maps).
    fn snapshots(&self) -> BTreeMap<ProxyKey, Snapshot> {
        self.engines
            .iter()
            .map(|(k, e)| (k.clone(), e.snapshot(0)))
            .collect()
    }

    /// Tells each key's containment which of its types changed since `before`, at
    /// `generation` (O(changes): the maps share what did not change).
    fn note_changes(&mut self, before: &BTreeMap<ProxyKey, Snapshot>, generation: u64) {
        for (k, e) in &self.engines {
            let after = e.snapshot(0);
            self.contain.entry(k.clone()).or_default().changed_at(
                generation,
                before.get(k),
                &after,
            );
        }
    }

    /// Served changes into every engine: as they are, or against the key's own view when
    /// something is quarantined for it.
    fn apply_engines(&mut self, oc: &[ObjectChange]) {
        let keys: Vec<ObjectKey> = oc.iter().map(|c| c.key.clone()).collect();
        let Some(opts) = self.engines.values().next().map(|e| e.options().clone()) else {
            return;
        };
        // Each changed object's translation no proxy changes, prepared once for every engine.
        let shared = Shared::new(&self.served, &opts);
        for (pk, e) in self.engines.iter_mut() {
            let own = self
                .contain
                .get_mut(pk)
                .and_then(|c| c.changes(&self.served, &keys));
            match (own, self.contain.get(pk)) {
                (Some(own), Some(c)) => e.apply(c.inputs(&self.served), &own),
                _ => e.apply_shared(&shared, oc),
            }
        }
    }

    /// Engines for new proxy keys (the two gateways at the first load), built in parallel.
    fn add_engines(&mut self, keys: &BTreeSet<ProxyKey>, opts: &Options) {
        let missing: Vec<&ProxyKey> = keys
            .iter()
            .filter(|k| !self.engines.contains_key(*k))
            .collect();
        let built = first::build_engines(&self.served, opts, &missing, |_, _| {});
        self.engines.extend(built);
    }

    /// A changed object that is now bad: serve its last good version, if it had one.
    fn restore_last_good(&mut self, changed: &BTreeSet<ObjectKey>) {
        let mut restore = Vec::new();
        for key in changed.iter().filter(|k| translatable(k.kind)) {
            let Some(now) = self.served.entry(key) else {
                self.last_good.remove(key);
                continue;
            };
            // The last good version, unless it is the version that failed now. Without one
            // nothing is restored, so its errors are not gathered (a first load's objects).
            let Some(last) = self
                .last_good
                .get(key)
                .filter(|prev| prev.object != now.object)
                .cloned()
            else {
                continue;
            };
            let mut errors: Vec<InputError> = self
                .engines
                .values()
                .flat_map(|e| e.errors_of(key))
                .collect();
            if let Some(prev) = keep_last_good(&mut errors, Some(last), PREVIOUS_VERSION_SERVED) {
                self.kept.insert(key.clone(), errors);
                restore.push(served_change(&mut self.served, key, Some(prev)));
            }
        }
        if !restore.is_empty() {
            self.apply_engines(&restore);
        }
    }

    /// Errors: load errors, translation errors (of objects not kept), kept objects' errors,
    /// sorted; and the objects that translation errors name.
    fn errors(&self) -> (Vec<InputError>, BTreeSet<ObjectKey>) {
        let mut errors = self.load_errors.clone();
        let mut bad = BTreeSet::new();
        for e in self.engines.values() {
            for err in e.errors() {
                if let Some(k) = &err.object {
                    if self.kept.contains_key(k) {
                        continue;
                    }
                    bad.insert(k.clone());
                }
                errors.push(err);
            }
        }
        errors.extend(self.kept.values().flatten().cloned());
        for (pk, c) in &self.contain {
            let gateway = match self.engines.get(pk).map(|e| e.gateways().join(", ")) {
                Some(g) if !g.is_empty() => g,
                _ => format!("{pk:?}"),
            };
            errors.extend(c.errors(&self.served, &gateway));
        }
        errors.sort();
        errors.dedup();
        (errors, bad)
    }

    /// Remembers what translates cleanly now: changed objects, and objects that were bad.
    fn remember_good(&mut self, changed: &BTreeSet<ObjectKey>, bad: BTreeSet<ObjectKey>) {
        let recheck: Vec<ObjectKey> = changed
            .iter()
            .chain(self.bad.iter())
            .filter(|k| translatable(k.kind) && !bad.contains(*k) && !self.kept.contains_key(*k))
            .cloned()
            .collect();
        for k in recheck {
            match self.served.entry(&k) {
                Some(e) => {
                    self.last_good.insert(k, e.clone());
                }
                None => {
                    self.last_good.remove(&k);
                }
            }
        }
        self.bad = bad;
    }
}

/// The snapshot a proxy should hold for a full translation's config: every resource packed
/// into `Any` and versioned by a hash of its encoding.
pub fn snapshot(generation: u64, config: &ProxyConfig) -> Snapshot {
    let mut all = Vec::new();
    all.extend(
        config
            .clusters
            .iter()
            .map(|c| (CLUSTER, resource(&c.name, c))),
    );
    all.extend(
        config
            .endpoints
            .iter()
            .map(|e| (ENDPOINT, resource(&e.cluster_name, e))),
    );
    all.extend(
        config
            .listeners
            .iter()
            .map(|l| (LISTENER, resource(&l.name, l))),
    );
    all.extend(config.routes.iter().map(|r| (ROUTE, resource(&r.name, r))));
    all.extend(
        config
            .scoped_routes
            .iter()
            .map(|s| (SCOPED_ROUTE, resource(&s.name, s))),
    );
    all.extend(
        config
            .secrets
            .iter()
            .map(|s| (SECRET, resource(&s.name, s))),
    );
    Snapshot {
        wildcard_clusters: translate::wildcard_clusters(config.on_demand),
        ..Snapshot::from_resources(generation, all)
    }
}

/// Sets the served version of one object; returns the change as engines see it.
fn served_change(served: &mut Inputs, key: &ObjectKey, new: Option<Arc<Entry>>) -> ObjectChange {
    let old = served.entry(key).cloned();
    match &new {
        Some(e) => served.insert_entry(e.clone()),
        None => {
            served.remove(key);
        }
    }
    ObjectChange {
        key: key.clone(),
        old,
        new,
    }
}

impl ConfigSource for Hub {
    fn readiness(&self) -> Option<watch::Receiver<u64>> {
        Some(self.readiness.subscribe())
    }

    fn generation_time(&self, generation: u64) -> Option<Instant> {
        lock(&self.generation_times)
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, t)| *t)
    }

    fn gateways(&self, proxy: &ProxyIdentity) -> Vec<String> {
        if let Some(e) = lock(&self.state).engines.get(&proxy.labels) {
            return e.gateways().to_vec();
        }
        self.first_gateways(&proxy.labels)
    }

    fn subscribe(
        &self,
        proxy: &ProxyIdentity,
    ) -> Result<watch::Receiver<Arc<Snapshot>>, SubscribeError> {
        let mut proxies = lock(&self.proxies);
        // A gateway of the first load is served once its own translation is complete.
        if let Some(tx) = proxies.get(&proxy.labels) {
            return Ok(tx.subscribe());
        }
        if !self.is_ready() {
            return Err(SubscribeError::NotReady);
        }
        let mut st = lock(&self.state);
        if !st.engines.contains_key(&proxy.labels) {
            self.admit(&mut proxies, &mut st, &proxy.labels)?;
        }
        let generation = self.generation();
        let snap = {
            let st = &mut *st;
            let engine = st
                .engines
                .entry(proxy.labels.clone())
                .or_insert_with(|| Engine::new(&st.served, &self.opts, &proxy.labels));
            if engine.gateways().is_empty() {
                tracing::warn!(node = %proxy.log_id(), labels = ?proxy.labels, "no Gateway selects this proxy; serving it an empty config");
            }
            engine.snapshot(generation)
        };
        let (tx, rx) = watch::channel(Arc::new(snap));
        proxies.insert(proxy.labels.clone(), tx);
        Ok(rx)
    }

    fn acked(&self, proxy: &ProxyIdentity, type_url: &str, generation: u64) {
        let proxies = lock(&self.proxies);
        let mut guard = lock(&self.state);
        if self.defer_first_feedback(&guard, &proxy.labels, type_url, generation, None) {
            return;
        }
        self.on_acked(&proxies, &mut guard, &proxy.labels, type_url, generation);
    }

    fn nacked(&self, proxy: &ProxyIdentity, type_url: &str, generation: u64, nack: &NackStatus) {
        let proxies = lock(&self.proxies);
        let mut guard = lock(&self.state);
        if self.defer_first_feedback(&guard, &proxy.labels, type_url, generation, Some(nack)) {
            return;
        }
        self.on_nacked(
            &proxies,
            &mut guard,
            &proxy.labels,
            type_url,
            generation,
            nack,
        );
    }
}

#[cfg(test)]
mod tests;
