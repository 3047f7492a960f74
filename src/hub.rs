//! The xDS cache: for every distinct set of proxy labels that has connected, the latest
//! snapshot in a `watch` channel (which holds only the latest value: a slow Envoy never makes a
//! queue grow). Sources feed it [`Change`]s; it keeps the raw inputs, translates, retains the
//! last good version of objects that turn bad, and publishes. Until the first
//! [`Hub::apply`]/[`Hub::update`] the hub is not ready: streams are answered `Unavailable` and
//! `/ready` says 503.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use crate::model::ObjectKey;
use crate::source::InputError;
use crate::state::{Change, Inputs};
use crate::translate::{self, Options};
use crate::xds::{cache, ConfigSource, ProxyIdentity, Snapshot};

/// Labels identify what a proxy gets: proxies with equal labels share one snapshot channel.
type ProxyKey = BTreeMap<String, String>;

/// The xDS cache and the current inputs.
pub struct Hub {
    pub(crate) opts: Options,
    /// The inputs as the sources gave them (before last-good substitution).
    raw: Mutex<Inputs>,
    ready: AtomicBool,
    generation: AtomicU64,
    inputs: RwLock<Arc<Inputs>>,
    errors: RwLock<Vec<InputError>>,
    proxies: Mutex<BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>>,
    /// The last version of each object that translated without error.
    last_good: Mutex<BTreeMap<ObjectKey, Arc<crate::state::Entry>>>,
    /// When recent generations started (for the convergence time metric).
    generation_times: Mutex<std::collections::VecDeque<(u64, Instant)>>,
}

/// How many generation start times the hub remembers.
const GENERATION_TIMES: usize = 256;

impl Hub {
    pub fn new(opts: Options) -> Arc<Hub> {
        Arc::new(Hub {
            opts,
            raw: Mutex::new(Inputs::default()),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            inputs: RwLock::new(Arc::new(Inputs::default())),
            errors: RwLock::new(Vec::new()),
            proxies: Mutex::new(BTreeMap::new()),
            last_good: Mutex::new(BTreeMap::new()),
            generation_times: Mutex::new(std::collections::VecDeque::new()),
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
        match self.raw.lock() {
            Ok(r) => r.clone(),
            Err(r) => r.into_inner().clone(),
        }
    }

    /// Applies a source's changes and replaces its load errors, then translates and publishes
    /// (see [`Hub::update`]).
    pub fn apply(&self, changes: Vec<Change>, load_errors: Vec<InputError>) {
        let inputs = {
            let mut raw = match self.raw.lock() {
                Ok(r) => r,
                Err(r) => r.into_inner(),
            };
            raw.apply(changes);
            raw.clone()
        };
        self.update_served(inputs, load_errors);
    }

    pub fn errors(&self) -> Vec<InputError> {
        self.errors.read().map(|e| e.clone()).unwrap_or_default()
    }

    fn translate_for(
        &self,
        inputs: &Inputs,
        labels: &ProxyKey,
        generation: u64,
    ) -> (Snapshot, Vec<InputError>) {
        let t = translate::translate(inputs, &self.opts, labels);
        (cache::snapshot(generation, &t.config), t.errors)
    }

    /// The snapshot a proxy with these labels would get now (for debug endpoints).
    pub fn snapshot_for(&self, labels: &ProxyKey) -> Snapshot {
        let inputs = self.inputs();
        self.translate_for(&inputs, labels, self.generation()).0
    }

    /// Installs new inputs: translates for every connected proxy key and publishes the new
    /// snapshots. Marks the hub ready after the first call.
    ///
    /// Nothing already served is lost to bad input: an object that now fails to translate is
    /// reported, and its last version that translated cleanly keeps being served (until the
    /// object is deleted or fixed).
    pub fn update(&self, inputs: Inputs, load_errors: Vec<InputError>) {
        match self.raw.lock() {
            Ok(mut r) => *r = inputs.clone(),
            Err(r) => *r.into_inner() = inputs.clone(),
        }
        self.update_served(inputs, load_errors);
    }

    fn update_served(&self, inputs: Inputs, load_errors: Vec<InputError>) {
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let started = Instant::now();
        {
            let mut times = match self.generation_times.lock() {
                Ok(t) => t,
                Err(t) => t.into_inner(),
            };
            if times.len() >= GENERATION_TIMES {
                times.pop_front();
            }
            times.push_back((generation, started));
        }
        let mut proxies = match self.proxies.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        // Forget proxy keys nobody listens to any more.
        proxies.retain(|_, tx| tx.receiver_count() > 0);
        let mut keys: Vec<ProxyKey> = proxies.keys().cloned().collect();
        // Errors of objects no connected proxy sees still matter: translate the two gateways.
        for gw in [&self.opts.external_gateway, &self.opts.local_gateway] {
            if let Some(labels) = translate::gateway_labels(&inputs, &self.opts, gw) {
                if !keys.contains(&labels) {
                    keys.push(labels);
                }
            }
        }
        let translate_all = |inputs: &Inputs| -> (BTreeMap<ProxyKey, Snapshot>, Vec<InputError>) {
            let mut snaps = BTreeMap::new();
            let mut errors = Vec::new();
            for labels in &keys {
                let (snap, errs) = self.translate_for(inputs, labels, generation);
                errors.extend(errs);
                snaps.insert(labels.clone(), snap);
            }
            (snaps, errors)
        };
        let (mut snaps, translate_errors) = translate_all(&inputs);
        let bad: BTreeSet<ObjectKey> = translate_errors
            .iter()
            .filter_map(|e| e.object.clone())
            .collect();
        let mut errors = load_errors;
        errors.extend(translate_errors);
        let mut served = inputs;
        {
            let mut last_good = match self.last_good.lock() {
                Ok(l) => l,
                Err(l) => l.into_inner(),
            };
            let mut kept = Vec::new();
            for key in &bad {
                if let (Some(prev), Some(now)) = (
                    last_good.get(key),
                    served.get(key.kind, &key.namespace, &key.name),
                ) {
                    if prev.object != now.object {
                        kept.push(prev.clone());
                    }
                }
            }
            // Remember what translated cleanly; forget what was deleted.
            last_good.retain(|k, _| served.get(k.kind, &k.namespace, &k.name).is_some());
            for (k, e) in served.entries() {
                if !bad.contains(k) {
                    last_good.insert(k.clone(), e.clone());
                }
            }
            if !kept.is_empty() {
                for e in &mut errors {
                    if e.object
                        .as_ref()
                        .is_some_and(|k| kept.iter().any(|p| &p.object.key() == k))
                    {
                        e.message.push_str("; its previous version is still served");
                    }
                }
                for prev in kept {
                    served.insert_entry(prev);
                }
                snaps = translate_all(&served).0;
            }
        }
        for (labels, tx) in proxies.iter() {
            if let Some(snap) = snaps.remove(labels) {
                tx.send_replace(Arc::new(snap));
            }
        }
        errors.sort();
        errors.dedup();
        for e in &errors {
            tracing::warn!(error = %e, "input left out");
        }
        // The generation first, then the inputs it carries: a reader of `inputs()` then
        // `generation()` (the KIngress status writer) never sees a generation older than the
        // inputs it read.
        self.generation.store(generation, Ordering::Release);
        if let Ok(mut w) = self.inputs.write() {
            *w = Arc::new(served);
        }
        if let Ok(mut w) = self.errors.write() {
            *w = errors;
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            generation,
            proxies = proxies.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "translated"
        );
    }
}

impl ConfigSource for Hub {
    fn generation_time(&self, generation: u64) -> Option<Instant> {
        let times = match self.generation_times.lock() {
            Ok(t) => t,
            Err(t) => t.into_inner(),
        };
        times
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, t)| *t)
    }

    fn subscribe(&self, proxy: &ProxyIdentity) -> Option<watch::Receiver<Arc<Snapshot>>> {
        if !self.is_ready() {
            return None;
        }
        let mut proxies = match self.proxies.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        if let Some(tx) = proxies.get(&proxy.labels) {
            return Some(tx.subscribe());
        }
        let inputs = self.inputs();
        let t = translate::translate(&inputs, &self.opts, &proxy.labels);
        if t.gateways.is_empty() {
            tracing::warn!(node = %proxy.id, labels = ?proxy.labels, "no Gateway selects this proxy; serving it an empty config");
        }
        let snap = cache::snapshot(self.generation(), &t.config);
        let (tx, rx) = watch::channel(Arc::new(snap));
        proxies.insert(proxy.labels.clone(), tx);
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::files::parse_text;
    use crate::xds::ROUTE;
    use std::path::Path;

    fn inputs(yaml: &str) -> Inputs {
        Inputs::from_sourced(parse_text(Path::new("t.yaml"), yaml).objects).0
    }

    fn kingress(percent: i64) -> String {
        format!(
            r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {{networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}}
spec:
  rules:
  - hosts: [hello.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {{serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: {percent}}}
---
apiVersion: v1
kind: Service
metadata: {{name: hello-00001, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8012}}]
"#
        )
    }

    fn proxy() -> ProxyIdentity {
        ProxyIdentity {
            id: "router~1~gw.istio-system~istio-system.svc.cluster.local".into(),
            namespace: Some("istio-system".into()),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        }
    }

    fn route_bytes(rx: &watch::Receiver<Arc<Snapshot>>) -> Vec<u8> {
        rx.borrow()
            .of_type(ROUTE)
            .and_then(|m| m.get("http.80"))
            .map(|r| r.body.value.clone())
            .unwrap_or_default()
    }

    #[test]
    fn not_ready_until_the_first_update() {
        let hub = Hub::new(Options::default());
        assert!(hub.subscribe(&proxy()).is_none());
        hub.update(inputs(&kingress(100)), vec![]);
        assert!(hub.subscribe(&proxy()).is_some());
    }

    #[test]
    fn a_broken_object_keeps_its_last_good_version_until_deleted() {
        let hub = Hub::new(Options::default());
        hub.update(inputs(&kingress(100)), vec![]);
        let rx = hub.subscribe(&proxy()).unwrap();
        let good = route_bytes(&rx);
        assert!(String::from_utf8_lossy(&good).contains("hello.default.example.com"));

        hub.update(inputs(&kingress(90)), vec![]);
        assert_eq!(
            route_bytes(&rx),
            good,
            "the last good KIngress is still served"
        );
        let errors = hub.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("sum to 90"), "{}", errors[0]);
        assert!(errors[0]
            .to_string()
            .contains("previous version is still served"));

        // Deleted: gone for real.
        hub.update(Inputs::default(), vec![]);
        assert!(!String::from_utf8_lossy(&route_bytes(&rx)).contains("hello.default.example.com"));
        // A broken object with no good past is simply left out.
        hub.update(inputs(&kingress(90)), vec![]);
        assert!(!String::from_utf8_lossy(&route_bytes(&rx)).contains("hello.default.example.com"));
    }
}
