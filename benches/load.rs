//! Loading a manifest directory, beside its floor measured in the same run: the synthetic
//! cluster's directory (`Synth::write_dir`, one JSON `List` per namespace, what
//! `knative-pilot synth --out DIR` writes) read by
//!
//! - floor: every file read and decoded by a plain `serde_json::from_slice::<Value>`, one
//!   file after the other, and kept;
//! - `pipeline::load` (render, validate, diff): the objects and the inputs built from them;
//! - `DirState::reload(dir, None)` (serve's initial load of `--from DIR`);
//! - one file reloaded (`DirState::reload` of one namespace file after an endpoint change),
//!   the source's share of an isolated change.
//!
//! `cargo bench --bench load -- [N] [ROUNDS]` (N = 10000 services, 5 rounds; min and median
//! printed as BENCHMARKS.md rows). Each round's result is dropped after its clock stops (serve
//! keeps what it loads). Nothing is asserted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knative_pilot::pipeline;
use knative_pilot::source::dir::DirState;
use knative_pilot::source::files;
use knative_pilot::tools::synth::{Form, Synth};

#[global_allocator]
static ALLOC: knative_pilot::Allocator = knative_pilot::Allocator;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Min and median of `rounds` runs of `f`. What `f` returns is dropped after the clock stops:
/// serve keeps what it loaded, so every row (the floor too) is the read, without the drop.
fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let out = std::hint::black_box(f());
            let took = t.elapsed();
            drop(out);
            took
        })
        .collect();
    times.sort();
    (times[0], times[times.len() / 2])
}

/// Every file read and decoded as a `serde_json::Value`, one after the other, and kept.
fn floor(dir: &Path, files: &[PathBuf]) -> Vec<serde_json::Value> {
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(f)).expect("read");
            serde_json::from_slice(&bytes).expect("json")
        })
        .collect()
}

fn count(values: &[serde_json::Value]) -> usize {
    values
        .iter()
        .map(|v| v["items"].as_array().map_or(1, Vec::len))
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let synth = Synth::new(n, Form::Route);
    let dir = tempfile::tempdir().expect("tempdir");
    synth.write_dir(dir.path()).expect("write");
    let list = files::list_files(dir.path()).expect("list");
    let bytes: u64 = list
        .iter()
        .map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()))
        .sum();
    let objects = count(&floor(dir.path(), &list));
    println!(
        "N={n}: {} files, {:.1} MB, {objects} objects, {rounds} rounds (min / median)",
        list.len(),
        bytes as f64 / 1e6
    );
    let row = |what: &str, (min, med): (Duration, Duration), floor: Duration| {
        println!(
            "| N={n}: {what} | {} / {} | {:.2}x |",
            ms(min),
            ms(med),
            min.as_secs_f64() / floor.as_secs_f64()
        );
    };
    let fl = time(rounds, || floor(dir.path(), &list));
    row(
        "floor: serde_json::from_slice::<Value> of every file",
        fl,
        fl.0,
    );
    row(
        "pipeline::load (objects + inputs)",
        time(rounds, || pipeline::load(dir.path())),
        fl.0,
    );
    row(
        "DirState::reload(dir, None) (serve's initial load)",
        time(rounds, || {
            let mut state = DirState::default();
            let changes = state.reload(dir.path(), None);
            (state, changes)
        }),
        fl.0,
    );

    // One namespace file rewritten with one endpoint moved, reloaded alone.
    let mut state = DirState::default();
    state.reload(dir.path(), None);
    let one: BTreeSet<PathBuf> = [PathBuf::from("ns-0.json")].into();
    let file_floor = time(rounds, || floor(dir.path(), &[PathBuf::from("ns-0.json")]));
    let mut reloads: Vec<Duration> = (0..rounds.max(1))
        .map(|round| {
            let text = serde_json::to_vec(&synth.namespace_list(0, round + 1)).expect("json");
            std::fs::write(dir.path().join("ns-0.json"), text).expect("write");
            let t = Instant::now();
            let changes = state.reload(dir.path(), Some(&one));
            let took = t.elapsed();
            assert_eq!(changes.len(), 1, "one endpoint moved");
            took
        })
        .collect();
    reloads.sort();
    let reload = (reloads[0], reloads[reloads.len() / 2]);
    println!(
        "| N={n}: one file ({} objects) reloaded after one endpoint moved, floor: the same file by serde_json | {} | {} |",
        objects / list.len().max(1),
        ms(reload.1),
        ms(file_floor.1)
    );
}
