//! The Kubernetes API as a source: one `kube::runtime::watcher` per watched kind (and
//! namespace, with `--namespace`), whose events become [`Change`]s for [`Hub::apply`].
//!
//! ```text
//!  watcher(Route) ─┐                      KubeState (pure)                 debounce
//!  watcher(...)   ─┼─ mpsc<(slot, Ev)> ──> per-slot keys, relist diffs, ──> Vec<Change> ──> Hub::apply
//!  watcher(Secret)─┘                       parse errors (kind ns/name)
//! ```
//!
//! - Every object goes through [`parse_object`], the parser the manifest files use, so the two
//!   sources can never translate differently. Kube objects have no file origin (`origin: None`):
//!   errors name `kind ns/name`.
//! - Nothing is handed to the hub until every watch has finished its initial list (an
//!   uninstalled CRD counts as an empty, finished list); then one `Hub::apply` carries everything.
//!   Afterwards events are batched with the same debounce as the files (`--debounce-after/max`).
//! - A relist (`Init` .. `InitDone`: first start, 410 Gone, or a watch that could not resume)
//!   replaces the slot's objects: objects that vanished while disconnected are deleted, objects
//!   still there are kept (and not re-sent when unchanged).
//! - A 404 on the list means the resource is not served (CRD not installed): logged once, the
//!   kind counts as empty and synced, and the list is retried every `--missing-retry`
//!   ([`MISSING_RETRY`] by default) without
//!   logging. Where `discovery.k8s.io/v1` EndpointSlices are not served, Endpoints are watched
//!   instead. Other watch errors are logged and retried with kube-runtime's default backoff.
//! - An object that stops parsing keeps its last good version served, with an error saying so.
//! - Secrets: only `type=kubernetes.io/tls` (a field selector the API server supports), the kind
//!   Gateways and KIngresses reference. ConfigMaps: only `knative-serving`'s `config-network` and
//!   `config-domain`, the two translation reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::model::{kind_from_name, parse_object, Kind, ObjectKey, ParseError};
use crate::source::InputError;
use crate::state::{Change, Entry};

/// How often a resource that was not served (404) is listed again, by default.
pub const MISSING_RETRY: Duration = Duration::from_secs(60);

/// The namespace of the Knative ConfigMaps translation reads.
pub const KNATIVE_NAMESPACE: &str = "knative-serving";
/// The ConfigMaps translation reads.
pub const CONFIG_MAPS: &[&str] = &["config-network", "config-domain"];

/// One kind we watch: its API resource and how to select objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub group: &'static str,
    pub version: &'static str,
    pub api_kind: &'static str,
    pub plural: &'static str,
    /// Field selector for list and watch.
    pub fields: Option<&'static str>,
}

impl Resource {
    const fn new(
        kind: Kind,
        group: &'static str,
        version: &'static str,
        api_kind: &'static str,
        plural: &'static str,
    ) -> Resource {
        Resource {
            kind,
            group,
            version,
            api_kind,
            plural,
            fields: None,
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.api_kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// `group/version/plural` for logs.
    pub fn path(&self) -> String {
        format!("{}/{}", self.api_version(), self.plural)
    }
}

pub const ROUTE: Resource =
    Resource::new(Kind::Route, "serving.knative.dev", "v1", "Route", "routes");
pub const REVISION: Resource = Resource::new(
    Kind::Revision,
    "serving.knative.dev",
    "v1",
    "Revision",
    "revisions",
);
pub const KINGRESS: Resource = Resource::new(
    Kind::KIngress,
    "networking.internal.knative.dev",
    "v1alpha1",
    "Ingress",
    "ingresses",
);
pub const VIRTUAL_SERVICE: Resource = Resource::new(
    Kind::VirtualService,
    "networking.istio.io",
    "v1beta1",
    "VirtualService",
    "virtualservices",
);
pub const GATEWAY: Resource = Resource::new(
    Kind::Gateway,
    "networking.istio.io",
    "v1beta1",
    "Gateway",
    "gateways",
);
pub const SERVICE: Resource = Resource::new(Kind::Service, "", "v1", "Service", "services");
pub const ENDPOINT_SLICE: Resource = Resource::new(
    Kind::EndpointSlice,
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices",
);
pub const ENDPOINTS: Resource = Resource::new(Kind::Endpoints, "", "v1", "Endpoints", "endpoints");
pub const SECRET: Resource = Resource {
    fields: Some("type=kubernetes.io/tls"),
    ..Resource::new(Kind::Secret, "", "v1", "Secret", "secrets")
};
pub const CONFIG_MAP: Resource =
    Resource::new(Kind::ConfigMap, "", "v1", "ConfigMap", "configmaps");

/// One watch: a resource in one namespace (or all), and what replaces it when it is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub fallback: Option<Resource>,
}

/// The watches for `namespaces` (empty: all namespaces). ConfigMaps are watched in
/// [`KNATIVE_NAMESPACE`] only.
pub fn slots(namespaces: &[String]) -> Vec<Slot> {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        let set: BTreeSet<&String> = namespaces.iter().collect();
        set.into_iter().map(|n| Some(n.clone())).collect()
    };
    let mut out = Vec::new();
    for r in [
        ROUTE,
        REVISION,
        KINGRESS,
        VIRTUAL_SERVICE,
        GATEWAY,
        SERVICE,
        ENDPOINT_SLICE,
        SECRET,
    ] {
        for ns in &scopes {
            out.push(Slot {
                fallback: (r == ENDPOINT_SLICE).then_some(ENDPOINTS),
                resource: r.clone(),
                namespace: ns.clone(),
            });
        }
    }
    out.push(Slot {
        resource: CONFIG_MAP,
        namespace: Some(KNATIVE_NAMESPACE.to_string()),
        fallback: None,
    });
    out
}

/// What a watch task reports. Objects are JSON as the API server sent them.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    /// A (re)list starts.
    Init,
    InitApply(serde_json::Value),
    /// The (re)list is complete: objects not listed since `Init` are gone.
    InitDone,
    Apply(serde_json::Value),
    Delete(serde_json::Value),
    /// The resource is not served (404): counts as an empty, finished list.
    Missing,
    /// The slot now watches its fallback resource (EndpointSlices not served: Endpoints).
    Fallback,
}

/// The watches' combined view, with no I/O: turns events into changes and errors.
#[derive(Debug, Default)]
pub struct KubeState {
    slots: Vec<SlotState>,
    /// The objects handed to the hub (last good version of each).
    current: BTreeMap<ObjectKey, Arc<Entry>>,
    /// Parse errors, by the object they name.
    errors: BTreeMap<ObjectKey, InputError>,
    /// Errors that name no object (a document with no name).
    anonymous: BTreeMap<String, InputError>,
    /// Changes not yet handed to the hub, coalesced per object.
    pending: BTreeMap<ObjectKey, Change>,
}

#[derive(Debug)]
struct SlotState {
    resource: Resource,
    synced: bool,
    missing: bool,
    /// Objects this slot produced (to find deletions on a relist).
    keys: BTreeSet<ObjectKey>,
    /// During a relist: what has been listed so far.
    relist: Option<BTreeSet<ObjectKey>>,
}

impl KubeState {
    pub fn new(slots: &[Slot]) -> KubeState {
        KubeState {
            slots: slots
                .iter()
                .map(|s| SlotState {
                    resource: s.resource.clone(),
                    synced: false,
                    missing: false,
                    keys: BTreeSet::new(),
                    relist: None,
                })
                .collect(),
            ..KubeState::default()
        }
    }

    /// Whether every watch has finished its initial list (or found its resource missing).
    pub fn all_synced(&self) -> bool {
        self.slots.iter().all(|s| s.synced)
    }

    /// Resources not served (404), for logs and tests.
    pub fn missing(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.missing)
            .map(|s| s.resource.path())
            .collect()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The changes since the last call, sorted by object.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending).into_values().collect()
    }

    /// The current parse errors, sorted.
    pub fn errors(&self) -> Vec<InputError> {
        let mut v: Vec<InputError> = self.errors.values().cloned().collect();
        v.extend(self.anonymous.values().cloned());
        v.sort();
        v
    }

    /// Feeds one event of watch `slot`.
    pub fn on_event(&mut self, slot: usize, ev: Ev) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        match ev {
            Ev::Init => s.relist = Some(BTreeSet::new()),
            Ev::InitApply(v) => {
                let resource = s.resource.clone();
                if let Some(key) = self.upsert(&resource, v) {
                    let s = &mut self.slots[slot];
                    s.keys.insert(key.clone());
                    if let Some(r) = s.relist.as_mut() {
                        r.insert(key);
                    }
                }
            }
            Ev::InitDone => {
                let listed = s.relist.take().unwrap_or_default();
                let gone: Vec<ObjectKey> = s.keys.difference(&listed).cloned().collect();
                s.keys = listed;
                s.synced = true;
                s.missing = false;
                for key in gone {
                    self.delete(key);
                }
            }
            Ev::Apply(v) => {
                let resource = s.resource.clone();
                if let Some(key) = self.upsert(&resource, v) {
                    self.slots[slot].keys.insert(key);
                }
            }
            Ev::Delete(v) => {
                if let Some(key) = key_of(&s.resource, &v) {
                    s.keys.remove(&key);
                    self.delete(key);
                }
            }
            Ev::Missing => {
                s.missing = true;
                s.synced = true;
                s.relist = None;
                let gone = std::mem::take(&mut s.keys);
                for key in gone {
                    self.delete(key);
                }
            }
            Ev::Fallback => {
                if let Some(f) = fallback_of(&s.resource) {
                    s.resource = f;
                    s.relist = None;
                }
            }
        }
    }

    /// Parses and records an object; returns its key when it has one we can name.
    fn upsert(&mut self, resource: &Resource, mut v: serde_json::Value) -> Option<ObjectKey> {
        // List items of built-in kinds come without apiVersion/kind: the resource says.
        if let Some(obj) = v.as_object_mut() {
            obj.insert("apiVersion".into(), resource.api_version().into());
            obj.insert("kind".into(), resource.api_kind.into());
        }
        if resource.kind == Kind::ConfigMap {
            let name = v.pointer("/metadata/name").and_then(|n| n.as_str());
            if !name.is_some_and(|n| CONFIG_MAPS.contains(&n)) {
                return None;
            }
        }
        let key = key_of(resource, &v);
        match parse_object(v) {
            Ok(Some(object)) => {
                let key = object.key();
                self.errors.remove(&key);
                let changed = self
                    .current
                    .get(&key)
                    .is_none_or(|old| old.object != object);
                if changed {
                    let entry = Arc::new(Entry {
                        object,
                        origin: None,
                    });
                    self.current.insert(key.clone(), entry.clone());
                    self.pending.insert(key.clone(), Change::Upsert(entry));
                }
                Some(key)
            }
            Ok(None) => None,
            Err(e) => {
                let message = match e {
                    ParseError::Invalid { message, .. } => message,
                    ParseError::NoKind => "object has no kind".to_string(),
                };
                match key {
                    Some(key) => {
                        let message = if self.current.contains_key(&key) {
                            format!("{message}; its previous version is still served")
                        } else {
                            message
                        };
                        self.errors.insert(
                            key.clone(),
                            InputError {
                                object: Some(key.clone()),
                                origin: None,
                                message,
                                code: crate::source::ErrorCode::Invalid,
                                subject: None,
                            },
                        );
                        Some(key)
                    }
                    None => {
                        self.anonymous.insert(
                            resource.path(),
                            InputError {
                                object: None,
                                origin: None,
                                message: format!("{}: {message}", resource.api_kind),
                                code: crate::source::ErrorCode::Parse,
                                subject: None,
                            },
                        );
                        None
                    }
                }
            }
        }
    }

    fn delete(&mut self, key: ObjectKey) {
        self.errors.remove(&key);
        if self.current.remove(&key).is_some() {
            self.pending.insert(key.clone(), Change::Delete(key));
        }
    }
}

fn fallback_of(r: &Resource) -> Option<Resource> {
    (*r == ENDPOINT_SLICE).then_some(ENDPOINTS)
}

/// The key an API object has (namespace and name from its metadata).
fn key_of(resource: &Resource, v: &serde_json::Value) -> Option<ObjectKey> {
    let name = v.pointer("/metadata/name")?.as_str()?;
    if name.is_empty() {
        return None;
    }
    let namespace = v
        .pointer("/metadata/namespace")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    Some(ObjectKey {
        kind: kind_from_name(resource.api_kind).unwrap_or(resource.kind),
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

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
    'restart: loop {
        let mut config = watcher::Config::default();
        if let Some(f) = resource.fields {
            config = config.fields(f);
        }
        let api = api_for(&client, &slot, &resource);
        let mut stream = watcher(api, config).boxed();
        let mut backoff = watcher::DefaultBackoff::default();
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
                    continue;
                }
                Err(e) => {
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(
                        resource = %resource.path(),
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "watch error"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
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
    let slots = slots(&namespaces);
    let mut state = KubeState::new(&slots);
    let (mut rx, watches) = start_watches(&client, &slots, Duration::from_secs(3600));
    initial_lists(&mut state, &mut rx).await;
    drop(watches);
    (state.take_changes(), state.errors())
}

/// Runs the kube source: starts a watch per slot, waits until every initial list is done, hands
/// everything to the hub in one [`Hub::apply`], then batches further events (quiet `quiet`
/// after the last one, at most `max` after the first) until the process ends.
pub async fn run(
    client: kube::Client,
    namespaces: Vec<String>,
    hub: Arc<Hub>,
    quiet: Duration,
    max: Duration,
    missing_retry: Duration,
) {
    let slots = slots(&namespaces);
    let mut state = KubeState::new(&slots);
    let started = Instant::now();
    let (mut rx, _tasks) = start_watches(&client, &slots, missing_retry);
    if !initial_lists(&mut state, &mut rx).await {
        return;
    }
    let changes = state.take_changes();
    tracing::info!(
        objects = changes.len(),
        errors = state.errors().len(),
        missing = ?state.missing(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "initial lists done"
    );
    let mut applied_errors = state.errors();
    let errors = applied_errors.clone();
    tokio::task::block_in_place(|| hub.apply(changes, errors));

    loop {
        let Some((slot, ev)) = rx.recv().await else {
            return;
        };
        state.on_event(slot, ev);
        let first = Instant::now();
        let mut last = first;
        loop {
            let deadline = (last + quiet).min(first + max);
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((slot, ev))) => {
                    state.on_event(slot, ev);
                    last = Instant::now();
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let errors = state.errors();
        if !state.has_pending() && errors == applied_errors {
            continue;
        }
        applied_errors = errors.clone();
        let changes = state.take_changes();
        tracing::info!(changes = changes.len(), "inputs changed");
        tokio::task::block_in_place(|| hub.apply(changes, errors));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, port: i64) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
               "spec": {"ports": [{"name": "http", "port": port}]}})
    }

    fn state() -> (KubeState, usize, usize) {
        let slots = slots(&[]);
        let svc = slots.iter().position(|s| s.resource == SERVICE).unwrap();
        let es = slots
            .iter()
            .position(|s| s.resource == ENDPOINT_SLICE)
            .unwrap();
        (KubeState::new(&slots), svc, es)
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Upsert(e) => format!("+{}", e.object.key()),
                Change::Delete(k) => format!("-{k}"),
            })
            .collect()
    }

    fn sync_all(st: &mut KubeState) {
        for i in 0..st.slots.len() {
            if !st.slots[i].synced {
                st.on_event(i, Ev::Init);
                st.on_event(i, Ev::InitDone);
            }
        }
    }

    #[test]
    fn synced_only_after_every_initial_list_and_missing_counts_as_empty() {
        let (mut st, s, es) = state();
        st.on_event(s, Ev::Init);
        st.on_event(s, Ev::InitApply(svc("a", 80)));
        assert!(!st.all_synced());
        st.on_event(s, Ev::InitDone);
        st.on_event(es, Ev::Missing);
        assert!(!st.all_synced());
        sync_all(&mut st);
        assert!(st.all_synced());
        assert_eq!(st.missing(), vec!["discovery.k8s.io/v1/endpointslices"]);
        assert_eq!(names(&st.take_changes()), vec!["+Service ns/a"]);
    }

    #[test]
    fn relist_deletes_what_vanished_and_keeps_unchanged_objects_quiet() {
        let (mut st, s, _) = state();
        st.on_event(s, Ev::Init);
        st.on_event(s, Ev::InitApply(svc("a", 80)));
        st.on_event(s, Ev::InitApply(svc("b", 80)));
        st.on_event(s, Ev::InitDone);
        sync_all(&mut st);
        st.take_changes();
        // 410 Gone: relist; b was deleted and a changed while we were away, c is new.
        st.on_event(s, Ev::Init);
        st.on_event(s, Ev::InitApply(svc("a", 81)));
        st.on_event(s, Ev::InitApply(svc("c", 80)));
        assert!(
            !st.has_pending()
                || names(&st.pending.values().cloned().collect::<Vec<_>>())
                    .iter()
                    .all(|n| n.starts_with('+')),
            "nothing is deleted before the relist is complete"
        );
        st.on_event(s, Ev::InitDone);
        assert_eq!(
            names(&st.take_changes()),
            vec!["+Service ns/a", "-Service ns/b", "+Service ns/c"]
        );
        // The same list again changes nothing.
        st.on_event(s, Ev::Init);
        st.on_event(s, Ev::InitApply(svc("a", 81)));
        st.on_event(s, Ev::InitApply(svc("c", 80)));
        st.on_event(s, Ev::InitDone);
        assert!(st.take_changes().is_empty());
    }

    #[test]
    fn a_bad_update_keeps_the_last_good_version_and_names_the_object() {
        let (mut st, s, _) = state();
        sync_all(&mut st);
        st.on_event(s, Ev::Apply(svc("a", 80)));
        st.take_changes();
        st.on_event(
            s,
            Ev::Apply(json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"ports": 7}})),
        );
        assert!(st.take_changes().is_empty());
        let errors = st.errors();
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(text.starts_with("Service ns/a: "), "{text}");
        assert!(
            text.ends_with("its previous version is still served"),
            "{text}"
        );
        st.on_event(s, Ev::Delete(svc("a", 80)));
        assert_eq!(names(&st.take_changes()), vec!["-Service ns/a"]);
        assert!(st.errors().is_empty());
    }

    #[test]
    fn endpoint_slices_fall_back_to_endpoints_and_config_maps_are_filtered() {
        let (mut st, _, es) = state();
        st.on_event(es, Ev::Fallback);
        st.on_event(es, Ev::Init);
        st.on_event(
            es,
            Ev::InitApply(json!({"metadata": {"name": "e", "namespace": "ns"}, "subsets": []})),
        );
        st.on_event(es, Ev::InitDone);
        let cm = st
            .slots
            .iter()
            .position(|s| s.resource == CONFIG_MAP)
            .unwrap();
        st.on_event(cm, Ev::Init);
        for name in ["config-network", "config-autoscaler"] {
            st.on_event(
                cm,
                Ev::InitApply(
                    json!({"metadata": {"name": name, "namespace": "knative-serving"}, "data": {}}),
                ),
            );
        }
        st.on_event(cm, Ev::InitDone);
        sync_all(&mut st);
        assert_eq!(
            names(&st.take_changes()),
            vec![
                "+Endpoints ns/e",
                "+ConfigMap knative-serving/config-network"
            ]
        );
    }

    #[test]
    fn namespaces_make_one_watch_per_namespace() {
        let s = slots(&["b".to_string(), "a".to_string(), "a".to_string()]);
        let routes: Vec<Option<String>> = s
            .iter()
            .filter(|s| s.resource == ROUTE)
            .map(|s| s.namespace.clone())
            .collect();
        assert_eq!(routes, vec![Some("a".to_string()), Some("b".to_string())]);
    }
}
