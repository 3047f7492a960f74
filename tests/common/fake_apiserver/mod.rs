//! A fake Kubernetes API server for the kube source's tests.
//!
//! There is no real API server on these machines, so this one speaks the real wire format over
//! HTTP/1.1 on 127.0.0.1:0, enough for kube-rs's real client and watcher code to run unchanged:
//!
//! - `GET /api/v1/[namespaces/<ns>/]<plural>` and `/apis/<group>/<version>/...`: a list
//!   (`<Kind>List`, `metadata.resourceVersion`; built-in kinds' items come without
//!   apiVersion/kind, as the real server sends them), pages (`limit`, `continue`),
//!   `fieldSelector` `type=` / `metadata.name=` / `metadata.namespace=`.
//! - `?watch=true&resourceVersion=N`: a chunked stream of `{"type": ADDED|MODIFIED|DELETED|ERROR,
//!   "object": ...}` lines, starting after N; a resourceVersion older than the compaction point
//!   gets an `ERROR` event with a `Status` of code 410 (reason `Expired`), which is how the real
//!   server expires watches; `timeoutSeconds` ends the stream.
//! - `GET/POST/PUT .../<name>` (Leases), with `resourceVersion` conflicts answered 409.
//! - `.../<name>/status`: `PUT`, and `PATCH` with merge, strategic-merge or apply patches (all
//!   merged into `status` only), 409 when a given `metadata.resourceVersion` is stale.
//! - Resources marked missing answer 404 (an uninstalled CRD).
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` (TokenReview: tokens registered with
//!   [`FakeApiServer::add_token`], audiences intersected as the real server does) and
//!   `POST /apis/authorization.k8s.io/v1/subjectaccessreviews` (SubjectAccessReview: allowed
//!   for the (user, verb, resource, namespace) tuples granted with [`FakeApiServer::grant`]).
//!
//! Tests can hold list responses (to observe the not-ready window), drop every watch
//! connection, and compact history (expire resourceVersions) while deleting objects, so that a
//! client must relist. Every write is recorded with the bearer token that made it, so a test
//! can tell which server process wrote.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

mod handle;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// One stored object's address: resource path (`api/v1/services`,
/// `apis/networking.istio.io/v1beta1/gateways`), namespace, name.
type Key = (String, String, String);

/// One write as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub method: String,
    pub path: String,
    /// The bearer token of the request (which client wrote).
    pub token: String,
    /// The HTTP status answered.
    pub code: u16,
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    resource: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches resuming from before this resourceVersion get 410 Gone.
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<Event>,
    missing: BTreeSet<String>,
    /// Resources answering 500 (an API server in trouble).
    failing: BTreeSet<String>,
    writes: Vec<Write>,
    requests: Vec<String>,
    /// Status PATCH/PUTs to answer with 409 before letting one through.
    forced_conflicts: usize,
    /// TokenReview: token -> (username, audiences it is valid for).
    tokens: BTreeMap<String, (String, Vec<String>)>,
    /// SubjectAccessReview: (user, verb, resource, namespace) allowed.
    grants: BTreeSet<(String, String, String, String)>,
    token_reviews: usize,
    access_reviews: usize,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    /// Bumped to end every open watch stream (dropped connections).
    epoch: watch::Sender<u64>,
    /// While true, list requests wait.
    hold_lists: watch::Sender<bool>,
}

/// The fake API server; stops when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `api/v1/<plural>` or `apis/<group>/<version>/<plural>`.
pub fn resource_path(api_version: &str, plural: &str) -> String {
    if api_version.contains('/') {
        format!("apis/{api_version}/{plural}")
    } else {
        format!("api/{api_version}/{plural}")
    }
}

/// The plural of the kinds the tests use.
pub fn plural(kind: &str) -> String {
    match kind {
        "Endpoints" => "endpoints".to_string(),
        "Ingress" => "ingresses".to_string(),
        "GatewayClass" => "gatewayclasses".to_string(),
        k => format!("{}s", k.to_ascii_lowercase()),
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource.rsplit('/').next().unwrap_or("") {
        "routes" => "Route",
        "revisions" => "Revision",
        "ingresses" => "Ingress",
        "virtualservices" => "VirtualService",
        "gateways" => "Gateway",
        "services" => "Service",
        "endpoints" => "Endpoints",
        "endpointslices" => "EndpointSlice",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "leases" => "Lease",
        "gatewayclasses" => "GatewayClass",
        "httproutes" => "HTTPRoute",
        "referencegrants" => "ReferenceGrant",
        "namespaces" => "Namespace",
        _ => "Unknown",
    }
}

fn api_version_of(resource: &str) -> String {
    let parts: Vec<&str> = resource.split('/').collect();
    match parts.as_slice() {
        ["api", v, _] => v.to_string(),
        ["apis", g, v, _] => format!("{g}/{v}"),
        _ => String::new(),
    }
}

/// The cluster-scoped resources the tests use.
fn is_cluster_scoped(resource: &str) -> bool {
    resource.ends_with("/gatewayclasses") || resource == "api/v1/namespaces"
}

/// Built-in kinds' list items come without apiVersion/kind from the real server.
fn is_builtin(resource: &str) -> bool {
    resource.starts_with("api/")
        || resource.starts_with("apis/discovery.k8s.io/")
        || resource.starts_with("apis/coordination.k8s.io/")
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake api");
        let port = listener.local_addr().expect("addr").port();
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 100,
                ..Store::default()
            }),
            events,
            epoch: watch::channel(0).0,
            hold_lists: watch::channel(false).0,
        });
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = s2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle::handle(shared, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeApiServer {
            shared,
            port,
            task,
            dir: tempfile::Builder::new()
                .prefix("fake-apiserver-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Writes a kubeconfig that points at this server with bearer token `token`; returns its
    /// path (for the `KUBECONFIG` environment variable).
    pub fn kubeconfig(&self, token: &str) -> String {
        let path = self.dir.path().join(format!("kubeconfig-{token}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\n\
             users:\n- name: {token}\n  user: {{token: {token}}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: {token}, namespace: default}}\n\
             current-context: fake\n",
            self.port
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path.to_string_lossy().into_owned()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Creates or replaces objects (YAML, several documents), as a controller would.
    pub fn apply_yaml(&self, yaml: &str) {
        for v in serde_saphyr::from_multiple::<Value>(yaml).expect("yaml") {
            self.apply(v);
        }
    }

    /// Creates or replaces one object (spec changes bump metadata.generation).
    pub fn apply(&self, mut obj: Value) {
        let api_version = obj["apiVersion"].as_str().unwrap_or("v1").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let resource = resource_path(&api_version, &plural(&kind));
        // Cluster-scoped objects are stored (and addressed) without a namespace.
        let ns = if is_cluster_scoped(&resource) {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        } else {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            obj["metadata"]["namespace"] = ns.clone().into();
            ns
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut store = self.store();
        let key = (resource.clone(), ns, name);
        let old = store.objects.get(&key).cloned();
        let kind_ev = if old.is_some() { "MODIFIED" } else { "ADDED" };
        if let Some(old) = &old {
            let gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let bump = old.get("spec") != obj.get("spec");
            obj["metadata"]["generation"] = (if bump { gen + 1 } else { gen }).into();
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            if obj.get("status").is_none() {
                if let Some(s) = old.get("status") {
                    obj["status"] = s.clone();
                }
            }
        } else {
            obj["metadata"]["generation"] = 1.into();
            obj["metadata"]["uid"] = format!("uid-{}", store.rv + 1).into();
            obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        commit(&self.shared, &mut store, key, obj, kind_ev);
    }

    /// Deletes an object (a DELETED event).
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) {
        let mut store = self.store();
        let key = (
            resource_path(api_version, &plural(kind)),
            ns.to_string(),
            name.to_string(),
        );
        delete_locked(&self.shared, &mut store, &key);
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let key = (
            resource_path(api_version, &plural(kind)),
            ns.to_string(),
            name.to_string(),
        );
        self.store().objects.get(&key).cloned()
    }

    /// Makes a resource (e.g. `apis/networking.istio.io/v1beta1/gateways`) answer 404.
    pub fn set_missing(&self, resource: &str, missing: bool) {
        let mut s = self.store();
        if missing {
            s.missing.insert(resource.to_string());
        } else {
            s.missing.remove(resource);
        }
    }

    /// Makes a resource answer 500 Internal Server Error (or stop doing so).
    pub fn set_failing(&self, resource: &str, failing: bool) {
        let mut s = self.store();
        if failing {
            s.failing.insert(resource.to_string());
        } else {
            s.failing.remove(resource);
        }
    }

    /// While held, list requests wait (watches of already listed kinds go on).
    pub fn hold_lists(&self, hold: bool) {
        self.shared.hold_lists.send_replace(hold);
    }

    /// Ends every open watch stream (the connection drops mid-stream).
    pub fn drop_watches(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// While disconnected: ends every watch, deletes these objects (api_version, kind, ns,
    /// name) and compacts history past the deletions, so a client resuming from its
    /// resourceVersion gets 410 Gone and must relist to see them gone.
    pub fn delete_while_disconnected_and_compact(&self, objects: &[(&str, &str, &str, &str)]) {
        let mut store = self.store();
        self.shared.epoch.send_modify(|e| *e += 1);
        for (av, kind, ns, name) in objects {
            let key = (
                resource_path(av, &plural(kind)),
                ns.to_string(),
                name.to_string(),
            );
            if store.objects.remove(&key).is_some() {
                store.rv += 1;
            }
        }
        store.rv += 1;
        store.compacted = store.rv;
        let rv = store.rv;
        store.log.retain(|e| e.rv >= rv);
    }

    /// The next `n` status writes are answered 409 Conflict.
    pub fn force_status_conflicts(&self, n: usize) {
        self.store().forced_conflicts = n;
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.store().writes.clone()
    }

    /// A token TokenReview accepts for `username` (e.g. `system:serviceaccount:ns:sa`), valid
    /// for these audiences.
    pub fn add_token(&self, token: &str, username: &str, audiences: &[&str]) {
        self.store().tokens.insert(
            token.to_string(),
            (
                username.to_string(),
                audiences.iter().map(|a| a.to_string()).collect(),
            ),
        );
    }

    /// SubjectAccessReview allows `user` to `verb` `resource` in `namespace`.
    pub fn grant(&self, user: &str, verb: &str, resource: &str, namespace: &str) {
        self.store().grants.insert((
            user.to_string(),
            verb.to_string(),
            resource.to_string(),
            namespace.to_string(),
        ));
    }

    /// (TokenReviews, SubjectAccessReviews) answered so far.
    pub fn review_counts(&self) -> (usize, usize) {
        let s = self.store();
        (s.token_reviews, s.access_reviews)
    }

    /// Every request line so far (`METHOD path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.store().requests.clone()
    }
}

/// An EndpointSlice of Service `svc` (port `http`) with one ready endpoint on 127.0.0.1 at
/// `port`, as the EndpointSlice controller writes it.
pub fn endpoint_slice(ns: &str, name: &str, svc: &str, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    })
}

fn commit(shared: &Shared, store: &mut Store, key: Key, mut obj: Value, kind: &'static str) {
    store.rv += 1;
    obj["metadata"]["resourceVersion"] = store.rv.to_string().into();
    let ev = Event {
        rv: store.rv,
        resource: key.0.clone(),
        kind,
        object: obj.clone(),
    };
    store.objects.insert(key, obj);
    store.log.push(ev.clone());
    let _ = shared.events.send(ev);
}

fn delete_locked(shared: &Shared, store: &mut Store, key: &Key) -> Option<Value> {
    let mut obj = store.objects.remove(key)?;
    store.rv += 1;
    obj["metadata"]["resourceVersion"] = store.rv.to_string().into();
    let ev = Event {
        rv: store.rv,
        resource: key.0.clone(),
        kind: "DELETED",
        object: obj.clone(),
    };
    store.log.push(ev.clone());
    let _ = shared.events.send(ev);
    Some(obj)
}
