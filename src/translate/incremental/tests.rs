//! The engine against the full translation: random change sequences, and every golden case's
//! inputs fed object by object.

use super::*;
use crate::hub as cache;
use crate::model::diag::Origin;
use crate::model::parse_object;
use crate::state::Change;
use crate::tools::synth::{Form, Synth};
use serde_json::{json, Value};

fn labels(istio: &str) -> Labels {
    BTreeMap::from([("istio".to_string(), istio.to_string())])
}

fn entry(v: Value, doc: usize) -> Arc<Entry> {
    let object = parse_object(v).ok().flatten().expect("synth objects parse");
    Arc::new(Entry {
        object,
        origin: Some(Origin {
            file: "step".into(),
            doc,
            item: None,
        }),
    })
}

/// xorshift: deterministic pseudo-random steps without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One random change: upserts/deletes of traffic objects, Services, Endpoints, and the rarer
/// context changes (gateway Service, ConfigMap, KIngress TLS), plus broken objects and
/// duplicate hosts.
fn random_change(rng: &mut Rng, synth: &Synth, inputs: &Inputs, step: usize) -> Vec<Change> {
    let n = synth.services + 5;
    let i = rng.next(n);
    let objs = synth.service(i, 90);
    let key_of = |v: &Value| entry(v.clone(), 0).object.key();
    match rng.next(12) {
        // Traffic split changes (sometimes invalid: 95 + 10).
        0 | 1 => {
            let split = [90, 50, 0, 100, 95][rng.next(5)];
            let mut v = synth.service(i, split)[0].clone();
            if split == 95 {
                if let Some(t) = v.pointer_mut("/status/traffic/1/percent") {
                    *t = json!(10);
                }
                if let Some(t) = v.pointer_mut("/spec/rules/0/http/paths/0/splits/1/percent") {
                    *t = json!(10);
                }
            }
            vec![Change::Upsert(entry(v, step))]
        }
        // Add a whole service, or delete its traffic object.
        2 => objs
            .into_iter()
            .map(|v| Change::Upsert(entry(v, step)))
            .collect(),
        3 => vec![Change::Delete(key_of(&objs[0]))],
        // Endpoints change / disappear.
        4 | 5 => vec![Change::Upsert(entry(
            synth.endpoints(i, rng.next(2), step),
            step,
        ))],
        6 => vec![Change::Delete(key_of(&objs[2]))],
        // A revision Service changes its port (breaks its dependents) or comes back.
        7 => {
            let mut v = objs[1].clone();
            if rng.next(2) == 0 {
                v["spec"]["ports"][0]["port"] = json!(81);
            }
            vec![Change::Upsert(entry(v, step))]
        }
        // Duplicate hosts: a second object claims service i's hosts (two HTTPRoutes merge
        // their rules: the second one's under its own prefix, or the same catch-all), or goes.
        8 => {
            let mut v = objs[0].clone();
            v["metadata"]["name"] = json!(format!("dup-{i}"));
            v["metadata"]["creationTimestamp"] = json!(if rng.next(2) == 0 {
                "2020-01-01T00:00:00Z"
            } else {
                "2030-01-01T00:00:00Z"
            });
            if rng.next(2) == 0 {
                if let Some(p) = v.pointer_mut("/spec/rules/0/matches/0/path/value") {
                    *p = json!("/dup");
                }
            }
            // An HTTPRoute for a wildcard covering service i's hosts (its rules join theirs).
            if v["kind"] == "HTTPRoute" && rng.next(3) == 0 {
                let ns = synth.namespace(i);
                let wild =
                    [format!("*.{ns}.example.com"), "*.com".to_string()][rng.next(2)].clone();
                v["spec"]["hostnames"] = json!([wild]);
            }
            if rng.next(3) == 0 {
                return vec![Change::Delete(key_of(&v))];
            }
            vec![Change::Upsert(entry(v, step))]
        }
        // A KIngress (of our class or another) next to a Route: precedence.
        9 => {
            let ns = synth.namespace(i);
            let class = if rng.next(2) == 0 {
                "other"
            } else {
                crate::model::kingress::DEFAULT_CLASS
            };
            let v = json!({
                "apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
                "metadata": {"name": format!("svc-{i}"), "namespace": ns,
                             "annotations": {"networking.knative.dev/ingress.class": class}},
                "spec": {"rules": [{"hosts": [format!("k-{i}.example.com")], "visibility": "ExternalIP",
                    "http": {"paths": [{"splits": [{"serviceNamespace": ns,
                        "serviceName": format!("svc-{i}-00001"), "servicePort": 80, "percent": 100}]}]}}]}
            });
            if inputs
                .get(Kind::KIngress, &ns, &format!("svc-{i}"))
                .is_some()
                && rng.next(2) == 0
            {
                vec![Change::Delete(key_of(&v))]
            } else {
                vec![Change::Upsert(entry(v, step))]
            }
        }
        // Context: the external gateway Service moves its port, or config-domain changes.
        10 => {
            let mut v = synth
                .gateway_services()
                .into_iter()
                .find(|v| v["kind"] == "Service")
                .expect("a gateway Service");
            v["spec"]["ports"][0]["targetPort"] = json!(8080 + rng.next(3));
            vec![Change::Upsert(entry(v, step))]
        }
        _ => {
            let domain = ["example.com", "example.org"][rng.next(2)];
            let v = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "config-domain", "namespace": "knative-serving"},
                "data": {domain: ""}});
            vec![Change::Upsert(entry(v, step))]
        }
    }
}

fn check(engine: &Engine, inputs: &Inputs, opts: &Options, l: &Labels, what: &str) {
    let full = crate::translate::translate(inputs, opts, l);
    let want = cache::snapshot(7, &full.config);
    let got = engine.snapshot(7);
    if got != want {
        for (t, m) in &want.resources {
            let g = got.resources.get(t).cloned().unwrap_or_default();
            for (n, r) in m {
                if g.get(n).map(|x| &x.version) != Some(&r.version) {
                    panic!("{what}: {t} {n} differs (or is missing) from a full translation");
                }
            }
            for n in g.keys() {
                assert!(m.contains_key(n), "{what}: {t} {n} should not be there");
            }
        }
        panic!("{what}: snapshots differ");
    }
    assert_eq!(engine.errors(), full.errors, "{what}: errors");
    // The owners it answers NACKs with (kept only where not a slot's one claimant) are those
    // the claims on each slot decide now.
    for slot in engine.slots.keys() {
        let mut want = engine.claim(inputs, slot).owners;
        want.sort();
        let mut got: Vec<ObjectKey> = engine.owners_of(slot).into_iter().cloned().collect();
        got.sort();
        assert_eq!(got, want, "{what}: owners of {slot:?}");
    }
}

pub(super) fn scoped() -> Options {
    Options {
        route_layout: crate::translate::RouteLayout::Scoped,
        ..Options::default()
    }
}

fn on_demand() -> Options {
    Options {
        route_layout: crate::translate::RouteLayout::OnDemand,
        ..Options::default()
    }
}

#[test]
fn incremental_changes_give_the_snapshot_of_a_full_translation() {
    for (form, seed, opts) in [
        (Form::Route, 1u64, Options::default()),
        (Form::Kingress, 2, Options::default()),
        (Form::Virtualservice, 3, Options::default()),
        (Form::Route, 4, Options::default()),
        (Form::Route, 5, scoped()),
        (Form::Kingress, 6, scoped()),
        (Form::Virtualservice, 7, scoped()),
        (Form::Httproute, 8, Options::default()),
        (Form::Httproute, 9, scoped()),
        (Form::Route, 10, on_demand()),
        (Form::Kingress, 11, on_demand()),
        (Form::Virtualservice, 12, on_demand()),
    ] {
        let synth = Synth::new(12, form);
        let mut inputs = synth.inputs();
        let gws = if form == Form::Httproute {
            crate::tools::synth::GATEWAY_API_GATEWAYS.map(|(name, _)| {
                BTreeMap::from([(
                    crate::model::gateway_api::GATEWAY_NAME_LABEL.to_string(),
                    name.to_string(),
                )])
            })
        } else {
            [labels("ingressgateway"), labels("cluster-local-gateway")]
        };
        // The gateways' engines share each object's proxy-independent translation, as the hub's
        // do (prepared up front for the first load, then per change).
        let shared = Shared::new(&inputs, &opts);
        shared.prepare_all();
        let mut engines: Vec<Engine> = gws.iter().map(|l| Engine::new_shared(&shared, l)).collect();
        drop(shared);
        for (e, l) in engines.iter().zip(&gws) {
            check(e, &inputs, &opts, l, "initial");
        }
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for step in 1..=150 {
            let changes = random_change(&mut rng, &synth, &inputs, step);
            let what = format!("{form:?} {:?} step {step}: {changes:?}", opts.route_layout);
            let mut oc = Vec::new();
            for c in changes {
                let key = match &c {
                    Change::Upsert(e) => e.object.key(),
                    Change::Delete(k) => k.clone(),
                };
                let old = inputs
                    .get(key.kind, &key.namespace, &key.name)
                    .map(|e| Arc::new(e.clone()));
                inputs.apply([c.clone()]);
                let new = inputs
                    .get(key.kind, &key.namespace, &key.name)
                    .map(|e| Arc::new(e.clone()));
                oc.push(ObjectChange { key, old, new });
            }
            let shared = Shared::new(&inputs, &opts);
            for (e, l) in engines.iter_mut().zip(&gws) {
                e.apply_shared(&shared, &oc);
                check(e, &inputs, &opts, l, &what);
            }
        }
    }
}

#[test]
fn a_first_translation_shared_over_several_cores_is_the_full_translation() {
    // Large enough that the fragments, the slots' claims and the clusters are each done in
    // several pieces (`parallel::run`), on four cores whatever the machine has.
    let synth = Synth::new(1_200, Form::Route);
    let inputs = synth.inputs();
    let opts = Options::default();
    let cores = crate::parallel::Cores::new(4);
    cores.occupy();
    let shared = Shared::with_cores(&inputs, &opts, cores);
    let gws = [labels("ingressgateway"), labels("cluster-local-gateway")];
    let mut engines = Vec::new();
    for l in &gws {
        let engine = Engine::new_shared(&shared, l);
        assert!(
            engine.slots.len() > 4 * super::PIECE,
            "{} slots",
            engine.slots.len()
        );
        check(
            &engine,
            &inputs,
            &opts,
            l,
            "first translation on four cores",
        );
        engines.push(engine);
    }
    drop(shared);
    // A split changed afterwards: its route configuration is spliced from where the virtual
    // hosts written in pieces are (a wrong place would garble the others' bytes).
    let mut inputs = inputs;
    let route = entry(synth.service(701, 50).remove(0), 2);
    let key = route.object.key();
    let old = inputs.entry(&key).cloned();
    inputs.apply([Change::Upsert(route)]);
    let oc = [ObjectChange {
        new: inputs.entry(&key).cloned(),
        key,
        old,
    }];
    let shared = Shared::new(&inputs, &opts);
    for (e, l) in engines.iter_mut().zip(&gws) {
        e.apply_shared(&shared, &oc);
        check(e, &inputs, &opts, l, "a split changed after it");
    }
}

#[test]
fn an_endpoint_change_touches_only_its_assignment() {
    let synth = Synth::new(50, Form::Route);
    let mut inputs = synth.inputs();
    let l = labels("ingressgateway");
    let mut engine = Engine::new(&inputs, &Options::default(), &l);
    let before = engine.snapshot(1);
    let e = entry(synth.endpoints(3, 0, 1), 1);
    let key = e.object.key();
    let old = inputs
        .get(key.kind, &key.namespace, &key.name)
        .map(|e| Arc::new(e.clone()));
    inputs.apply([Change::Upsert(e.clone())]);
    engine.apply(
        &inputs,
        &[ObjectChange {
            key,
            old,
            new: Some(e),
        }],
    );
    let after = engine.snapshot(2);
    let mut changed = Vec::new();
    for (t, m) in &after.resources {
        for (n, r) in m {
            if before.resources[t].get(n).map(|x| &x.version) != Some(&r.version) {
                changed.push(n.clone());
            }
        }
    }
    assert_eq!(changed, ["outbound|80||svc-3-00001.ns-0.svc.cluster.local"]);
}

mod golden_inputs {
    use super::*;
    use crate::hub as cache;
    use crate::state::Change;
    use std::path::Path;

    /// Every golden case's inputs, fed object by object (then removed object by object) into an
    /// engine per gateway: after each step the engine holds what a full translation gives.
    #[test]
    fn golden_inputs_fed_one_object_at_a_time_match_full_translation() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let mut cases = 0;
        for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let input = dir.path().join("input");
            if !input.is_dir() {
                continue;
            }
            cases += 1;
            let (all, _) = crate::pipeline::load(&input);
            for opts in [Options::default(), super::scoped()] {
                let mut labels: Vec<Labels> = crate::translate::gateways(&all, &opts)
                    .into_iter()
                    .map(|g| g.spec.selector)
                    .collect();
                labels.dedup();
                let entries: Vec<Arc<Entry>> = all.entries().map(|(_, e)| e.clone()).collect();
                let mut inputs = Inputs::default();
                let mut engines: Vec<Engine> = labels
                    .iter()
                    .map(|l| Engine::new(&inputs, &opts, l))
                    .collect();
                let steps = entries
                    .iter()
                    .map(|e| Change::Upsert(e.clone()))
                    .chain(entries.iter().rev().map(|e| Change::Delete(e.object.key())));
                for (n, c) in steps.enumerate() {
                    let key = match &c {
                        Change::Upsert(e) => e.object.key(),
                        Change::Delete(k) => k.clone(),
                    };
                    let old = inputs.entry(&key).cloned();
                    inputs.apply([c]);
                    let new = inputs.entry(&key).cloned();
                    let oc = [ObjectChange { key, old, new }];
                    let shared = Shared::new(&inputs, &opts);
                    for (e, l) in engines.iter_mut().zip(&labels) {
                        e.apply_shared(&shared, &oc);
                        let full = crate::translate::translate(&inputs, &opts, l);
                        assert_eq!(
                            e.snapshot(1),
                            cache::snapshot(1, &full.config),
                            "{}: step {n}, labels {l:?}",
                            dir.path().display()
                        );
                        assert_eq!(
                            e.errors(),
                            full.errors,
                            "{}: step {n}",
                            dir.path().display()
                        );
                    }
                }
            }
        }
        assert!(cases >= 10, "golden cases found: {cases}");
    }
}
