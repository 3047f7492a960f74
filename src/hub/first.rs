//! The first load: each gateway is served as soon as its own translation is complete.
//!
//! Until the first [`Hub::apply`] is done the hub is not ready. The engines of that load (the
//! two gateways') are built in parallel without the hub's locks, and each, once complete, gets
//! its snapshot channel at once, so its Envoys are answered while the other gateway is still
//! being translated. What a gateway is served is its engine's full translation of the whole
//! first load, exactly what the finished load publishes again (same generation, same
//! resources): never an empty or a partial config. Other label sets, `/ready` and the status
//! writer still wait for the whole load.
//!
//! ACKs and NACKs of those Envoys arriving before the load is complete are kept and replayed,
//! in order, once it is (NACK containment needs the engine and the load's bookkeeping).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;

use super::{lock, Hub, ProxyKey, State};
use crate::state::Inputs;
use crate::translate::incremental::{Engine, Shared};
use crate::translate::Options;
use crate::xds::conn::NackStatus;
use crate::xds::Snapshot;

/// Tests: called with each first-load engine's key once it is built, before it is served.
#[cfg(test)]
pub(super) type BuiltHook = Arc<dyn Fn(&ProxyKey) + Send + Sync>;

/// What the first load has served before it is complete.
#[derive(Default)]
pub(super) struct FirstLoad {
    /// Per proxy key served early: the Gateways its config holds.
    gateways: BTreeMap<ProxyKey, Vec<String>>,
    /// ACKs (no status) and NACKs of early-served Envoys, in arrival order.
    feedback: Vec<Feedback>,
}

struct Feedback {
    key: ProxyKey,
    type_url: String,
    generation: u64,
    nack: Option<NackStatus>,
}

/// Builds the engines of `keys` from `served`, in parallel, each object's translation that no
/// proxy changes prepared once for all of them first ([`Shared`]); `built` is called with each
/// engine as soon as it is complete. Each engine's thread occupies a core of the load's
/// [`crate::parallel::Cores`] while it works, so an engine's large steps take helpers only on
/// the cores the others have left (the caller, which only waits, occupies none meanwhile).
pub(super) fn build_engines(
    served: &Inputs,
    opts: &Options,
    keys: &[&ProxyKey],
    built: impl Fn(&ProxyKey, &Engine) + Sync,
) -> Vec<(ProxyKey, Engine)> {
    let shared = Shared::new(served, opts);
    if keys.len() > 1 {
        shared.prepare_all();
    }
    let (shared, built) = (&shared, &built);
    let cores = &shared.cores;
    cores.vacate();
    let engines = std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .iter()
            .map(|k| {
                cores.occupy();
                scope.spawn(move || {
                    let engine = Engine::new_shared(shared, k);
                    cores.vacate();
                    built(k, &engine);
                    ((*k).clone(), engine)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    cores.occupy();
    engines
}

impl Hub {
    /// Builds the engines of `keys` from `served` in parallel, without the hub's locks, and
    /// serves each as soon as it is complete; returns them (inserted by the caller).
    pub(super) fn serve_first(
        &self,
        served: &Inputs,
        keys: &BTreeSet<ProxyKey>,
        generation: u64,
    ) -> Vec<(ProxyKey, Engine)> {
        let keys: Vec<&ProxyKey> = keys.iter().collect();
        build_engines(served, &self.opts, &keys, |k, engine| {
            #[cfg(test)]
            self.first_built_hook(k);
            self.serve_early(k, engine, generation);
        })
    }

    /// One engine of the first load, complete: its snapshot channel, open to subscribers.
    fn serve_early(&self, key: &ProxyKey, engine: &Engine, generation: u64) {
        let mut proxies = lock(&self.proxies);
        lock(&self.first)
            .gateways
            .insert(key.clone(), engine.gateways().to_vec());
        let (tx, _) = watch::channel(Arc::new(engine.snapshot(generation)));
        proxies.insert(key.clone(), tx);
        self.readiness.send_modify(|n| *n += 1);
        tracing::info!(
            generation,
            gateways = ?engine.gateways(),
            "first load: gateway translated, served before the others are"
        );
    }

    /// The Gateways of a key served early (empty for any other).
    pub(super) fn first_gateways(&self, key: &ProxyKey) -> Vec<String> {
        lock(&self.first)
            .gateways
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// While the first load is incomplete: keeps an ACK or NACK of an early-served key for
    /// [`Hub::replay_first_feedback`] and returns true. Call under both locks (the load
    /// completes under them, so nothing kept is missed).
    pub(super) fn defer_first_feedback(
        &self,
        st: &State,
        key: &ProxyKey,
        type_url: &str,
        generation: u64,
        nack: Option<&NackStatus>,
    ) -> bool {
        if self.is_ready() || st.engines.contains_key(key) {
            return false;
        }
        let mut first = lock(&self.first);
        if !first.gateways.contains_key(key) {
            return false;
        }
        first.feedback.push(Feedback {
            key: key.clone(),
            type_url: type_url.to_string(),
            generation,
            nack: nack.cloned(),
        });
        true
    }

    /// The first load is complete: what early-served Envoys said meanwhile, in order.
    pub(super) fn replay_first_feedback(
        &self,
        proxies: &BTreeMap<ProxyKey, watch::Sender<Arc<Snapshot>>>,
        st: &mut State,
    ) {
        let feedback = std::mem::take(&mut *lock(&self.first)).feedback;
        for f in feedback {
            match &f.nack {
                None => self.on_acked(proxies, st, &f.key, &f.type_url, f.generation),
                Some(n) => self.on_nacked(proxies, st, &f.key, &f.type_url, f.generation, n),
            }
        }
    }

    #[cfg(test)]
    fn first_built_hook(&self, key: &ProxyKey) {
        let hook = lock(&self.first_built).clone();
        if let Some(hook) = hook {
            hook(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::files::parse_text;
    use crate::translate::{self, Options};
    use crate::xds::resource::{CLUSTER, ROUTE, SNAPSHOT_TYPES};
    use crate::xds::{ConfigSource, ProxyIdentity, SubscribeError};
    use std::path::Path;
    use std::sync::{mpsc, Mutex};
    use std::time::{Duration, Instant};

    /// One external and one cluster-local KIngress, with their Service.
    const INPUTS: &str = r#"
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  namespace: default
  annotations: {networking.knative.dev/ingress.class: knative-pilot.ingress.networking.knative.dev}
spec:
  rules:
  - hosts: [hello.default.example.com]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: 100}
  - hosts: [hello.default.svc.cluster.local]
    visibility: ClusterLocal
    http:
      paths:
      - splits:
        - {serviceNamespace: default, serviceName: hello-00001, servicePort: 80, percent: 100}
---
apiVersion: v1
kind: Service
metadata: {name: hello-00001, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8012}]
"#;

    fn inputs() -> Inputs {
        Inputs::from_sourced(parse_text(Path::new("t.yaml"), INPUTS).objects).0
    }

    fn proxy(istio: &str) -> ProxyIdentity {
        ProxyIdentity {
            id: format!("router~1~{istio}.istio-system~istio-system.svc.cluster.local"),
            namespace: Some("istio-system".into()),
            labels: BTreeMap::from([("istio".to_string(), istio.to_string())]),
        }
    }

    fn route_text(snap: &Snapshot) -> String {
        snap.of_type(ROUTE)
            .into_iter()
            .flatten()
            .map(|(_, r)| String::from_utf8_lossy(&r.body.value).into_owned())
            .collect()
    }

    /// Subscribes until the hub answers (the first load runs on another thread).
    fn subscribed(hub: &Hub, p: &ProxyIdentity) -> watch::Receiver<Arc<Snapshot>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match hub.subscribe(p) {
                Ok(rx) => return rx,
                Err(SubscribeError::NotReady) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Starts the first load on another thread, the local gateway's engine held back (once
    /// built) until the returned sender sends.
    fn held_first_load(hub: &Arc<Hub>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (release, held) = mpsc::channel::<()>();
        let held = Mutex::new(held);
        let local_key = proxy("cluster-local-gateway").labels;
        *lock(&hub.first_built) = Some(Arc::new(move |k: &ProxyKey| {
            if *k == local_key {
                let _ = lock(&held).recv();
            }
        }));
        let hub = hub.clone();
        (
            release,
            std::thread::spawn(move || hub.update(inputs(), vec![])),
        )
    }

    #[test]
    fn a_gateway_is_served_its_full_config_while_the_other_is_still_being_translated() {
        let hub = Hub::new(Options::default());
        let (external, local) = (proxy("ingressgateway"), proxy("cluster-local-gateway"));
        let (release, loading) = held_first_load(&hub);

        let rx = subscribed(&hub, &external);
        assert!(!hub.is_ready(), "the local gateway is still held");
        assert_eq!(
            hub.subscribe(&local).err(),
            Some(SubscribeError::NotReady),
            "no config before a gateway's own translation is complete"
        );
        let early = rx.borrow().clone();
        assert!(route_text(&early).contains("hello.default.example.com"));
        assert!(!route_text(&early).contains("hello.default.svc.cluster.local"));
        assert_eq!(
            hub.gateways(&external),
            ["knative-serving/knative-ingress-gateway"]
        );
        // Never partial: the whole first load's translation for this gateway.
        let full = crate::hub::snapshot(
            early.generation,
            &translate::translate(&inputs(), &Options::default(), &external.labels).config,
        );
        for t in SNAPSHOT_TYPES {
            assert_eq!(early.of_type(t), full.of_type(t), "{t}");
        }
        // An ACK meanwhile is kept for when the load is complete.
        hub.acked(&external, CLUSTER, early.generation);

        release.send(()).expect("the local engine waits");
        loading.join().expect("first load");
        assert!(hub.is_ready());
        assert!(lock(&hub.first).feedback.is_empty(), "replayed");
        assert_eq!(
            rx.borrow().as_ref(),
            early.as_ref(),
            "the finished load publishes the same config again"
        );
        let local_rx = hub.subscribe(&local).expect("ready");
        assert!(route_text(&local_rx.borrow()).contains("hello.default.svc.cluster.local"));
    }

    #[test]
    fn a_nack_while_the_other_gateway_is_translated_is_contained_once_the_load_is_complete() {
        let hub = Hub::new(Options::default());
        let external = proxy("ingressgateway");
        let (release, loading) = held_first_load(&hub);
        let rx = subscribed(&hub, &external);
        let generation = rx.borrow().generation;
        let nack = NackStatus {
            nonce: "1".into(),
            version: "v".into(),
            message: "bad cluster".into(),
            resources: vec!["outbound|80||hello-00001.default.svc.cluster.local".into()],
        };
        hub.nacked(&external, CLUSTER, generation, &nack);
        assert!(
            hub.errors().is_empty(),
            "not contained before the load is complete"
        );

        release.send(()).expect("the local engine waits");
        loading.join().expect("first load");
        let errors = hub.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let text = errors[0].to_string();
        assert!(text.starts_with("Ingress default/hello"), "{text}");
        assert!(text.contains("bad cluster"), "{text}");
        assert!(
            !route_text(&rx.borrow()).contains("hello.default.example.com"),
            "the rejected object is left out for the external gateway"
        );
    }
}
