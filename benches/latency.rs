//! Change latency with a real, stock Envoy: the real `knative-pilot serve --from DIR` process
//! on the synthetic cluster (`Synth::write_dir`) and one Envoy of the external gateway (Delta
//! ADS). Each round moves one endpoint of one service (its namespace file rewritten and
//! renamed into place, as an atomic replace), after a quiet time longer than the debounce's,
//! and times it from the rename until `/debug/syncz` shows the Envoy ACKed the generation
//! carrying it. The server's log (JSON, with `knative_pilot=debug`) splits each round:
//!
//! - source: rename until the directory source logged `files reloaded`;
//! - debounce: until `inputs changed`;
//! - hub: until `translated` (the server's translation and publication);
//! - push + Envoy: until the server logged the Envoy's last ACK of the round (the response's
//!   way to Envoy, Envoy applying it, the ACK's way back): the floor, what Envoy itself needs;
//! - seen: until the bench saw the ACK on `/debug/syncz` (polled every millisecond; the time
//!   one request takes is printed too).
//!
//! `cargo bench --bench latency -- [N] [ROUNDS] [extra serve flags...]` (N = 10000, 20
//! rounds; with `BENCH_LOG_DIR` set, the server's and Envoy's logs are written there; with
//! `BENCH_ENVOY_FLUSH_ON_ADMIN` set, Envoy's bootstrap has `stats_flush_on_admin: true`).
//! Percentiles are printed as BENCHMARKS.md rows; nothing is asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{start_gateway, EXTERNAL_LABELS};
use common::*;
use knative_pilot::tools::synth::{Form, Synth};
use serde_json::{json, Value};

/// The hub generation, and whether every connected Envoy ACKed it.
async fn sync(server: &Server) -> (u64, bool) {
    let v = server.get_json("/debug/syncz").await;
    let g = v["generation"].as_u64().unwrap_or(0);
    let acked = v["connections"].as_array().is_some_and(|c| !c.is_empty())
        && v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["status"]["acked_generation"].as_u64() >= Some(g));
    (g, acked)
}

/// Polls until a generation after `after` is ACKed; the time each poll took goes to `polls`.
async fn acked_after(server: &Server, after: u64, polls: &mut Vec<f64>) -> u64 {
    loop {
        let t = Instant::now();
        let (g, acked) = sync(server).await;
        polls.push(t.elapsed().as_secs_f64());
        if g > after && acked {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Seconds since the epoch, as the log's timestamps are read.
fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A log timestamp (`2026-12-01T14:40:00.123456Z`) as seconds of its day.
fn day_s(ts: &str) -> Option<f64> {
    let t = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The server's log lines: (seconds of the day, message).
fn log_events(logs: &str) -> Vec<(f64, String)> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let t = day_s(v["timestamp"].as_str()?)?;
            Some((t, v["fields"]["message"].as_str()?.to_string()))
        })
        .collect()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(n: usize, rounds: usize, extra: Vec<String>) {
    let synth = Synth::new(n, Form::Route);
    let dir = tempfile::tempdir().expect("tempdir");
    synth.write_dir(dir.path()).expect("write");
    let ext_port = free_port();
    let mut gws = synth.gateway_services();
    gws[0]["spec"]["ports"][0]["targetPort"] = json!(ext_port);
    std::fs::write(
        dir.path().join("gateways.json"),
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": gws}))
            .expect("json"),
    )
    .expect("write");

    let mut args = vec![
        "--from",
        dir.path().to_str().expect("utf-8 path"),
        "--bind-address",
        "127.0.0.1",
        "--log-format",
        "json",
    ];
    args.extend(extra.iter().map(String::as_str));
    let server = Server::start_with_env(&args, &[("RUST_LOG", "info,knative_pilot=debug")]).await;
    let envoy = if std::env::var_os("BENCH_ENVOY_FLUSH_ON_ADMIN").is_some() {
        // Envoy's stats flush (every 5 s by default) holds its main thread for seconds at
        // 10,000 services; istio-proxy's bootstrap keeps it small with a stats inclusion list.
        let params = BootstrapParams::new(server.xds_port())
            .api_type(ApiType::DeltaGrpc)
            .pod("istio-ingressgateway-bench", "istio-system")
            .labels(EXTERNAL_LABELS);
        let bootstrap = format!(
            "{}\nstats_flush_on_admin: true\n",
            render_bootstrap(&params)
        );
        Envoy::start(&bootstrap).await
    } else {
        start_gateway(
            &server,
            "istio-ingressgateway-bench",
            EXTERNAL_LABELS,
            ApiType::DeltaGrpc,
        )
        .await
    };
    let mut g = acked_after(&server, 0, &mut Vec::new()).await;
    // Envoy keeps working on the first config after its ACK (at 10,000 services, seconds):
    // the rounds start once it is idle.
    let pid = envoy.pid().expect("envoy pid");
    cpu_settled(pid, Duration::from_millis(200), 2_000_000).await;

    // (rename instant as seconds of the day, total seconds) per round.
    let mut writes: Vec<(f64, f64)> = Vec::new();
    let mut polls: Vec<f64> = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let text = serde_json::to_vec(&synth.namespace_list(0, round + 1)).expect("json");
        let tmp = dir.path().join(".ns-0.json.tmp");
        std::fs::write(&tmp, text).expect("write");
        let wall = now_s() % 86400.0;
        let t = Instant::now();
        std::fs::rename(&tmp, dir.path().join("ns-0.json")).expect("rename");
        g = acked_after(&server, g, &mut polls).await;
        writes.push((wall, t.elapsed().as_secs_f64()));
    }

    let logs = server.logs();
    if let Ok(d) = std::env::var("BENCH_LOG_DIR") {
        let d = std::path::Path::new(&d);
        let _ = std::fs::write(d.join("server.log"), &logs);
        let _ = std::fs::write(d.join("envoy.log"), envoy.logs());
    }
    let events = log_events(&logs);
    let first_after = |from: f64, until: f64, what: &str| {
        events
            .iter()
            .find(|(t, m)| *t >= from && *t < until && m == what)
            .map(|(t, _)| *t)
    };
    let mut stages: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for (i, &(w, total)) in writes.iter().enumerate() {
        let until = writes.get(i + 1).map_or(f64::MAX, |x| x.0);
        let reloaded = first_after(w - 0.001, until, "files reloaded");
        let changed = reloaded.and_then(|r| first_after(r, until, "inputs changed"));
        let translated = changed.and_then(|c| first_after(c, until, "translated"));
        let acked = translated.and_then(|tr| {
            events
                .iter()
                .filter(|(t, m)| *t >= tr && *t < w + total && m == "ACK")
                .map(|(t, _)| *t)
                .next_back()
        });
        if let (Some(r), Some(c), Some(tr), Some(a)) = (reloaded, changed, translated, acked) {
            stages[0].push((r - w).max(0.0));
            stages[1].push(c - r);
            stages[2].push(tr - c);
            stages[3].push(a - tr);
            stages[4].push((w + total - a).max(0.0));
        }
    }
    let mut totals: Vec<f64> = writes.iter().map(|w| w.1).collect();
    totals.sort_by(f64::total_cmp);
    let row = |what: &str, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        println!(
            "| N={n}: {what} | {:.1} / {:.1} / {:.1} ms |",
            pct(v, 0.5) * 1e3,
            pct(v, 0.9) * 1e3,
            v.last().copied().unwrap_or(f64::NAN) * 1e3
        );
    };
    println!(
        "N={n}, {rounds} rounds, {} split from the log (p50 / p90 / max):",
        stages[0].len()
    );
    row(
        "one endpoint moved: file rename until Envoy's ACK seen",
        &mut totals,
    );
    let names = [
        "  source: rename until the file is reloaded",
        "  debounce: until the batch is taken",
        "  hub: translated and published",
        "  push + Envoy applying + ACK (floor)",
        "  ACK until seen on /debug/syncz",
    ];
    for (name, v) in names.iter().zip(stages.iter_mut()) {
        row(name, v);
    }
    row("one /debug/syncz request (how the ACK is seen)", &mut polls);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let extra: Vec<String> = args.iter().skip(2).cloned().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(n, rounds, extra));
}
