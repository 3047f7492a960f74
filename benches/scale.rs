//! Whole-pipeline figures at scale, printed as a Markdown table row per measurement:
//! cold start (load a manifest directory, translate and encode for both gateways, connect a
//! SotW and a Delta Envoy per gateway) with peak RSS, then single changes (one endpoint, one
//! traffic split, one service added, one deleted): server time and bytes to each gateway.
//!
//! `cargo bench --bench scale -- [N] [route|kingress|virtualservice|httproute] [istio|scoped]` (N defaults
//! to 1000; the last argument is the route layout, `--route-layout`, default `istio`).
//! Run one N per process: peak RSS (VmHWM) is per process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use knative_pilot::hub::Hub;
use knative_pilot::model::parse_object;
use knative_pilot::source::Origin;
use knative_pilot::state::{Change, Entry};
use knative_pilot::tools::synth::{Form, ScriptedEnvoy, Synth, Wire};
use knative_pilot::translate::{Options, RouteLayout};
use knative_pilot::xds::conn::Mode;
use knative_pilot::xds::{ConfigSource, ProxyIdentity, Snapshot};
use serde_json::Value;

#[global_allocator]
static ALLOC: knative_pilot::Allocator = knative_pilot::Allocator;

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time (user + system) of the whole process so far, exited threads included (the first
/// load translates the gateways on threads of their own): `/proc/self/stat` fields 14 and 15,
/// in clock ticks (100 per second here).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn entry(v: Value) -> Arc<Entry> {
    let object = parse_object(v).ok().flatten().expect("synth object");
    Arc::new(Entry {
        object,
        origin: Some(Origin {
            file: "bench".into(),
            doc: 1,
            item: None,
        }),
    })
}

/// A gateway pod: `istio: <name>`, or for the Gateway API form the label binding it to the
/// Gateway `<name>`.
fn proxy(form: Form, name: &str) -> ProxyIdentity {
    let key = if form == Form::Httproute {
        knative_pilot::model::gateway_api::GATEWAY_NAME_LABEL
    } else {
        "istio"
    };
    ProxyIdentity {
        id: format!("router~10.0.0.1~{name}.istio-system~istio-system.svc.cluster.local"),
        namespace: Some("istio-system".into()),
        labels: [(key.to_string(), name.to_string())].into(),
    }
}

/// glibc defers merging freed small chunks until the next large allocation: without this, the
/// SotW scripted Envoy's garbage (its name lists of every request) is merged during whatever is
/// timed next (the next change's hub apply). One large allocation here charges it to the SotW
/// figure it belongs to.
fn settle_heap() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(1 << 16)));
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Gateway {
    rx: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    sotw: ScriptedEnvoy,
    delta: ScriptedEnvoy,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let form = match args.get(1).map(String::as_str) {
        Some("kingress") => Form::Kingress,
        Some("virtualservice") => Form::Virtualservice,
        Some("httproute") => Form::Httproute,
        _ => Form::Route,
    };
    let layout = match args.get(2).map(String::as_str) {
        Some("scoped") => RouteLayout::Scoped,
        _ => RouteLayout::Istio,
    };
    let synth = Synth::new(n, form);
    let dir = tempfile::tempdir().expect("tempdir");
    synth.write_dir(dir.path()).expect("write manifests");
    let rss_before = vm_hwm_mb();

    // Cold start.
    let t0 = Instant::now();
    let (inputs, errors) = knative_pilot::pipeline::load(dir.path());
    let t_load = t0.elapsed();
    let cpu_load = process_cpu();
    assert!(errors.is_empty(), "{errors:?}");
    let objects = inputs.len();
    let hub = Hub::new(Options {
        route_layout: layout,
        ..Options::default()
    });
    hub.update(inputs, Vec::new());
    let t_translate = t0.elapsed() - t_load;
    let cpu_translate = process_cpu().saturating_sub(cpu_load);
    // The server's own peak: before the scripted Envoys below hold their copies of the config.
    let rss_server = vm_hwm_mb();
    let mut gws: Vec<Gateway> = Vec::new();
    let mut initial = Vec::new();
    let names = if form == Form::Httproute {
        knative_pilot::tools::synth::GATEWAY_API_GATEWAYS.map(|(name, _)| name)
    } else {
        ["ingressgateway", "cluster-local-gateway"]
    };
    for istio in names {
        let rx = hub.subscribe(&proxy(form, istio)).expect("ready");
        let snap = rx.borrow().clone();
        let (sotw, ws) = ScriptedEnvoy::connect(Mode::Sotw, snap.clone());
        let (delta, wd) = ScriptedEnvoy::connect(Mode::Delta, snap);
        initial.push((istio, ws, wd));
        gws.push(Gateway { rx, sotw, delta });
    }
    let t_cold = t0.elapsed();
    let rss = vm_hwm_mb();
    // The memory floor: the encoded config the server must hold (both gateways' snapshots)
    // plus the raw inputs (the manifest files' bytes).
    let encoded: usize = gws
        .iter()
        .map(|g| {
            g.rx.borrow()
                .resources
                .values()
                .flat_map(|m| m.values())
                .map(|r| r.body.value.len())
                .sum::<usize>()
        })
        .sum();
    let raw: u64 = std::fs::read_dir(dir.path())
        .expect("manifest dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("## N = {n} services ({form:?}, {layout:?} route layout), {objects} objects");
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| cold start: load manifest dir | {} |", ms(t_load));
    println!(
        "| cold start: translate + encode (both gateways) | {} |",
        ms(t_translate)
    );
    println!(
        "| cold start: translate + encode (both gateways), process CPU | {} |",
        ms(cpu_translate)
    );
    println!(
        "| cold start: total incl. first SotW+Delta push per gateway | {} |",
        ms(t_cold)
    );
    println!(
        "| peak RSS (VmHWM) after cold start | {rss:.0} MB (generator alone: {rss_before:.0} MB) |"
    );
    println!(
        "| peak RSS (VmHWM) after translation, before the scripted Envoys connect | {rss_server:.0} MB |"
    );
    let floor = (encoded as f64 + raw as f64) / 1e6;
    println!(
        "| floor: encoded config of both gateways + raw inputs | {:.1} MB + {:.1} MB = {floor:.1} MB; server peak RSS (after translation) / floor = {:.2} |",
        encoded as f64 / 1e6,
        raw as f64 / 1e6,
        rss_server * 1.048576 / floor
    );
    for (istio, ws, wd) in &initial {
        println!(
            "| initial push to {istio}: SotW / Delta | {:.1} MB / {:.1} MB |",
            ws.bytes as f64 / 1e6,
            wd.bytes as f64 / 1e6
        );
    }

    // Single changes, 5 rounds each; median server time.
    let mid = n / 2;
    let mut round = 0usize;
    let mut change = |what: &str| -> Vec<Change> {
        round += 1;
        match what {
            "endpoint" => vec![Change::Upsert(entry(synth.endpoints(mid, 0, round)))],
            "split" => vec![Change::Upsert(entry(
                synth.service(mid, [80, 70][round % 2])[0].clone(),
            ))],
            "add" => synth
                .service(n + round, 90)
                .into_iter()
                .map(|v| Change::Upsert(entry(v)))
                .collect(),
            _ => synth
                .service(round, 90)
                .into_iter()
                .map(|v| Change::Delete(entry(v).object.key()))
                .collect(),
        }
    };
    for what in ["endpoint", "split", "add", "delete"] {
        let mut apply = Vec::new();
        let mut push = Vec::new();
        let mut wires: Vec<(Wire, Wire)> = Vec::new();
        for _ in 0..5 {
            let changes = change(what);
            let t = Instant::now();
            hub.apply(changes, Vec::new());
            apply.push(t.elapsed());
            let (mut sotw_t, mut delta_t) = (Duration::ZERO, Duration::ZERO);
            let mut w = Vec::new();
            for g in &mut gws {
                let snap = g.rx.borrow_and_update().clone();
                let t = Instant::now();
                let ws = g.sotw.push(snap.clone());
                settle_heap();
                sotw_t += t.elapsed();
                let t = Instant::now();
                let wd = g.delta.push(snap);
                delta_t += t.elapsed();
                w.push((ws, wd));
            }
            push.push((sotw_t, delta_t));
            wires = w;
        }
        apply.sort();
        println!(
            "| {what}: hub apply (translate + encode, both gateways), median of 5 | {} |",
            ms(apply[2])
        );
        let mut sotw: Vec<Duration> = push.iter().map(|p| p.0).collect();
        let mut delta: Vec<Duration> = push.iter().map(|p| p.1).collect();
        sotw.sort();
        delta.sort();
        println!(
            "| {what}: connection state machines until ACKed, SotW / Delta (both gateways), median of 5 | {} / {} |",
            ms(sotw[2]),
            ms(delta[2])
        );
        for ((ws, wd), gw) in wires.iter().zip(["external", "cluster-local"]) {
            println!(
                "| {what}: bytes to {gw} gateway, SotW / Delta | {} B / {} B ({} / {} responses) |",
                ws.bytes, wd.bytes, ws.responses, wd.responses
            );
        }
    }
}
