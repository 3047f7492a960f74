//! The I/O around [`KubeState`]: one kube-runtime watcher task per slot, all reporting into one
//! channel, and the source's loop ([`run`]) and one-shot list ([`list_once`]).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::{Ev, KubeState, Resource, Slot};
use crate::source::{Batch, BatchSender, InputError};
use crate::state::Change;

/// Whether a watch error is the API server saying the resource is not served.
fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

fn api_for(client: &kube::Client, slot: &Slot, resource: &Resource) -> Api<DynamicObject> {
    let ar = resource.api_resource();
    match &slot.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// One watch task: runs a watcher, forwards its events, backs off on errors.
async fn watch_slot(
    client: kube::Client,
    index: usize,
    slot: Slot,
    tx: mpsc::UnboundedSender<(usize, Ev)>,
    missing_retry: Duration,
) {
    let mut resource = slot.resource.clone();
    let mut reported_missing = false;
    let mut backoff = watcher::DefaultBackoff::default();
    'restart: loop {
        let mut config = watcher::Config::default();
        if let Some(f) = resource.fields {
            config = config.fields(f);
        }
        let api = api_for(&client, &slot, &resource);
        let mut stream = watcher(api, config).boxed();
        while let Some(item) = stream.next().await {
            let ev = match item {
                Ok(ev) => {
                    backoff = watcher::DefaultBackoff::default();
                    ev
                }
                Err(e) if is_not_found(&e) => {
                    if let Some(f) = slot.fallback.as_ref().filter(|f| **f != resource) {
                        tracing::info!(
                            resource = %resource.path(),
                            instead = %f.path(),
                            "resource not served; watching its fallback"
                        );
                        resource = f.clone();
                        if tx.send((index, Ev::Fallback)).is_err() {
                            return;
                        }
                        continue 'restart;
                    }
                    if !reported_missing {
                        reported_missing = true;
                        tracing::warn!(
                            resource = %resource.path(),
                            namespace = slot.namespace.as_deref().unwrap_or("*"),
                            "resource not served (CRD not installed?); treating it as empty, retrying every {:?}",
                            missing_retry
                        );
                    } else {
                        tracing::debug!(resource = %resource.path(), "still not served");
                    }
                    if tx.send((index, Ev::Missing)).is_err() {
                        return;
                    }
                    tokio::time::sleep(missing_retry).await;
                    // A fresh watcher lists again: a complete list is what tells the state
                    // the resource is followed again (and what vanished meanwhile).
                    continue 'restart;
                }
                Err(e) => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(
                        resource = %resource.path(),
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "watch error"
                    );
                    if tx.send((index, Ev::Error(e.to_string()))).is_err() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    continue 'restart;
                }
            };
            let to_value = |o: DynamicObject| serde_json::to_value(o).unwrap_or_default();
            let ev = match ev {
                watcher::Event::Init => Ev::Init,
                watcher::Event::InitApply(o) => Ev::InitApply(to_value(o)),
                watcher::Event::InitDone => {
                    if reported_missing {
                        tracing::info!(resource = %resource.path(), "resource is served now");
                        reported_missing = false;
                    }
                    Ev::InitDone
                }
                watcher::Event::Apply(o) => Ev::Apply(to_value(o)),
                watcher::Event::Delete(o) => Ev::Delete(to_value(o)),
            };
            if tx.send((index, ev)).is_err() {
                return;
            }
        }
        return;
    }
}

/// The watch tasks of one source; dropping it stops them.
struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

type Events = mpsc::UnboundedReceiver<(usize, Ev)>;

/// Starts one watch task per slot, all reporting into one channel.
fn start_watches(
    client: &kube::Client,
    slots: &[Slot],
    missing_retry: Duration,
) -> (Events, Watches) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tasks = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            tokio::spawn(watch_slot(
                client.clone(),
                i,
                slot.clone(),
                tx.clone(),
                missing_retry,
            ))
        })
        .collect();
    (rx, Watches(tasks))
}

/// Feeds events until every watch has finished its initial list; false if the watches ended.
async fn initial_lists(state: &mut KubeState, rx: &mut Events) -> bool {
    while !state.all_synced() {
        let Some((slot, ev)) = rx.recv().await else {
            return false;
        };
        state.on_event(slot, ev);
    }
    true
}

/// Lists every watched resource once, through the same watches [`run`] starts (stopped after
/// their initial lists): the changes that build the inputs, and the objects that did not parse.
/// For one-shot commands (`validate --kube`).
pub async fn list_once(
    client: kube::Client,
    namespaces: Vec<String>,
) -> (Vec<Change>, Vec<InputError>) {
    let slots = super::slots(&namespaces);
    let mut state = KubeState::new(&slots);
    let (mut rx, watches) = start_watches(&client, &slots, Duration::from_secs(3600));
    initial_lists(&mut state, &mut rx).await;
    drop(watches);
    (state.take_changes(), state.errors())
}

/// Runs the kube source: starts a watch per slot, waits until every initial list is done, sends
/// everything as one batch, then one batch per run of queued events that changed something (or
/// the errors), until the process ends or the receiver goes away.
pub async fn run(
    client: kube::Client,
    namespaces: Vec<String>,
    missing_retry: Duration,
    tx: BatchSender,
    health: crate::source::Health,
) {
    let slots = super::slots(&namespaces);
    let mut state = KubeState::new(&slots);
    let started = Instant::now();
    let (mut rx, _tasks) = start_watches(&client, &slots, missing_retry);
    if !initial_lists(&mut state, &mut rx).await {
        return;
    }
    let changes = state.take_changes();
    let mut sent_errors = state.errors();
    tracing::info!(
        objects = changes.len(),
        errors = sent_errors.len(),
        missing = ?state.missing(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "initial lists done"
    );
    let initial = Batch {
        changes,
        errors: sent_errors.clone(),
    };
    if tx.send(initial).is_err() {
        return;
    }
    let mut stale: Vec<String> = Vec::new();
    while let Some((slot, ev)) = rx.recv().await {
        state.on_event(slot, ev);
        while let Ok((slot, ev)) = rx.try_recv() {
            state.on_event(slot, ev);
        }
        let now = state.stale();
        if now != stale {
            if now.is_empty() {
                tracing::info!("every watch follows its resource again");
                health.set_live();
            } else {
                let why = format!("kube watches not following: {}", now.join("; "));
                tracing::warn!("{why}");
                health.set_stale(why);
            }
            stale = now;
        }
        let errors = state.errors();
        if !state.has_pending() && errors == sent_errors {
            continue;
        }
        sent_errors = errors.clone();
        let batch = Batch {
            changes: state.take_changes(),
            errors,
        };
        if tx.send(batch).is_err() {
            return;
        }
    }
}
