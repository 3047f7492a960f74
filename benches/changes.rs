//! Criterion benches of the in-process parts: cold translation of a synthetic cluster for both
//! gateways, and the hub's work for one change of each kind (translate what it touches and
//! encode it, for both gateways). `cargo bench --bench changes`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use knative_pilot::hub::Hub;
use knative_pilot::model::parse_object;
use knative_pilot::state::{Change, Entry};
use knative_pilot::tools::synth::{Form, Synth};
use knative_pilot::translate::incremental::Engine;
use knative_pilot::translate::Options;
use serde_json::Value;

#[global_allocator]
static ALLOC: knative_pilot::Allocator = knative_pilot::Allocator;

fn entry(v: Value) -> Arc<Entry> {
    let object = parse_object(v).ok().flatten().expect("synth object");
    Arc::new(Entry {
        object,
        origin: None,
    })
}

fn labels(istio: &str) -> std::collections::BTreeMap<String, String> {
    [("istio".to_string(), istio.to_string())].into()
}

fn cold(c: &mut Criterion) {
    let mut g = c.benchmark_group("cold_translate");
    g.sample_size(10);
    let n = 1000usize;
    let inputs = Synth::new(n, Form::Route).inputs();
    g.bench_function(format!("{n}"), |b| {
        b.iter(|| {
            for l in ["ingressgateway", "cluster-local-gateway"] {
                black_box(Engine::new(&inputs, &Options::default(), &labels(l)));
            }
        })
    });
    g.finish();
}

fn changes(c: &mut Criterion) {
    let mut g = c.benchmark_group("change");
    g.sample_size(20);
    for n in [1000usize, 10_000] {
        let synth = Synth::new(n, Form::Route);
        let hub = Hub::new(Options::default());
        hub.update(synth.inputs(), Vec::new());
        let mid = n / 2;
        let mut round = 0usize;
        g.bench_function(format!("endpoint/{n}"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    vec![Change::Upsert(entry(synth.endpoints(mid, 0, round)))]
                },
                |ch| hub.apply(ch, Vec::new()),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("split/{n}"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    vec![Change::Upsert(entry(
                        synth.service(mid, [80, 70][round % 2])[0].clone(),
                    ))]
                },
                |ch| hub.apply(ch, Vec::new()),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("add_delete/{n}"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    let objs = synth.service(n + 1, 90);
                    if round.is_multiple_of(2) {
                        objs.into_iter().map(|v| Change::Upsert(entry(v))).collect()
                    } else {
                        objs.into_iter()
                            .map(|v| Change::Delete(entry(v).object.key()))
                            .collect::<Vec<_>>()
                    }
                },
                |ch| hub.apply(ch, Vec::new()),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, cold, changes);
criterion_main!(benches);
