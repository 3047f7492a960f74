//! The Kubernetes API as a source: one `kube::runtime::watcher` per watched kind (and
//! namespace, with `--namespace`), whose events become [`Change`]s, sent as [`Batch`]es.
//!
//! ```text
//!  watcher(Route) ─┐                      KubeState (pure)                 Batch channel
//!  watcher(...)   ─┼─ mpsc<(slot, Ev)> ──> per-slot keys, relist diffs, ──> Vec<Change> ──> runtime::debounce
//!  watcher(Secret)─┘                       parse errors (kind ns/name)
//! ```
//!
//! - Every object goes through [`parse_object`], the parser the manifest files use, so the two
//!   sources can never translate differently. Kube objects have no file origin (`origin: None`):
//!   errors name `kind ns/name`.
//! - Nothing is sent until every watch has finished its initial list (an uninstalled CRD counts
//!   as an empty, finished list); then one batch carries everything. Afterwards every run of
//!   queued events is one batch (sent only when it changed something or the errors); the
//!   runtime's debouncer batches them as it does the files' (`--debounce-after/max`).
//! - A relist (`Init` .. `InitDone`: first start, 410 Gone, or a watch that could not resume)
//!   replaces the slot's objects: objects that vanished while disconnected are deleted, objects
//!   still there are kept (and not re-sent when unchanged).
//! - A 404 on the list means the resource is not served (CRD not installed): logged once, the
//!   kind counts as empty (when it was never listed) and synced, and the list is retried every `--missing-retry`
//!   ([`MISSING_RETRY`] by default) without
//!   logging. Where `discovery.k8s.io/v1` EndpointSlices are not served, Endpoints are watched
//!   instead. Other watch errors are logged and retried with kube-runtime's default backoff.
//! - A watch that fails, or a resource that answers 404 after it was listed, never deletes
//!   anything: its last objects stay served until a relist completes (which then deletes what
//!   vanished); [`KubeState::stale`] says so, for `/ready` and a WARN line.
//! - An object that stops parsing keeps its last good version served, with an error saying so.
//! - Secrets: only `type=kubernetes.io/tls` (a field selector the API server supports), the kind
//!   Gateways and KIngresses reference. ConfigMaps: only `knative-serving`'s `config-network`,
//!   `config-domain` and `config-istio`, the three translation reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{parse_object, Kind, ObjectKey, ParseError};
use crate::source::InputError;
use crate::state::{keep_last_good, Change, Entry, PREVIOUS_VERSION_SERVED};

mod resources;
mod watch;

pub use resources::*;
pub use watch::{list_once, run};

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
    /// The list or watch failed (other than 404); it is retried.
    Error(String),
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
    /// Why the watch does not follow its resource now (an error, or 404 after a list).
    trouble: Option<String>,
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
                    trouble: None,
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

    /// The synced watches that do not follow their resource now, and how many objects each
    /// keeps serving: a watch that fails, or a resource that stops being served after it was
    /// listed, keeps its last objects (never "everything deleted") until a relist succeeds.
    pub fn stale(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.synced)
            .filter_map(|s| {
                s.trouble.as_ref().map(|why| {
                    format!(
                        "{}: {why}; serving its last {} objects",
                        s.resource.path(),
                        s.keys.len()
                    )
                })
            })
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
        if matches!(
            ev,
            Ev::InitApply(_) | Ev::InitDone | Ev::Apply(_) | Ev::Delete(_)
        ) {
            s.trouble = None;
        }
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
                // Listed before: the objects stay until the resource is listed again (a CRD
                // briefly not served during an upgrade must not delete every object of it).
                if !s.keys.is_empty() {
                    s.trouble = Some("not served (404) after it was listed".to_string());
                }
            }
            Ev::Error(e) => s.trouble = Some(format!("watch failing ({e})")),
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
                        let mut error = InputError {
                            object: Some(key.clone()),
                            origin: None,
                            message,
                            code: crate::source::ErrorCode::Invalid,
                            subject: None,
                        };
                        // The current version (if any) stays as it is: nothing to change.
                        let last = self.current.get(&key);
                        keep_last_good([&mut error], last, PREVIOUS_VERSION_SERVED);
                        self.errors.insert(key.clone(), error);
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
        // The resource's own kind: `kind_from_name` cannot tell Istio's Gateway from the
        // Gateway API's.
        kind: resource.kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
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

    #[test]
    fn a_failing_or_unserved_watch_keeps_its_objects_and_says_so() {
        let (mut st, s, _) = state();
        st.on_event(s, Ev::Init);
        st.on_event(s, Ev::InitApply(svc("a", 80)));
        st.on_event(s, Ev::InitApply(svc("b", 80)));
        st.on_event(s, Ev::InitDone);
        sync_all(&mut st);
        st.take_changes();
        assert!(st.stale().is_empty());
        // The watch fails: nothing is deleted, and it says so.
        st.on_event(s, Ev::Error("503 Service Unavailable".into()));
        assert!(st.take_changes().is_empty());
        assert_eq!(
            st.stale(),
            vec![
                "v1/services: watch failing (503 Service Unavailable); serving its last 2 objects"
            ]
        );
        // The resource answers 404 (a CRD briefly not served): still nothing deleted.
        st.on_event(s, Ev::Missing);
        assert!(st.take_changes().is_empty());
        assert_eq!(st.stale().len(), 1);
        // Listed again: what vanished meanwhile goes, and the watch is healthy.
        st.on_event(s, Ev::Init);
        st.on_event(s, Ev::InitApply(svc("a", 80)));
        st.on_event(s, Ev::InitDone);
        assert_eq!(names(&st.take_changes()), vec!["-Service ns/b"]);
        assert!(st.stale().is_empty());
    }
}
