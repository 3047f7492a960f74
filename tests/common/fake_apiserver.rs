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

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn full(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status_body(code, reason, message),
    )
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn field_selector_matches(sel: &str, obj: &Value) -> bool {
    sel.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v, neg) = match term.split_once("!=") {
            Some((k, v)) => (k, v, true),
            None => match term.split_once('=') {
                Some((k, v)) => (k.trim_end_matches('='), v, false),
                None => return true,
            },
        };
        let have = match k {
            "type" => obj["type"].as_str(),
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            _ => None,
        }
        .unwrap_or("");
        (have == v) != neg
    })
}

fn query(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match h.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(c) => {
                        out.push(c);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed request path.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix_len, rest) = match *parts.first()? {
        "api" if parts.len() >= 3 => (2, &parts[2..]),
        "apis" if parts.len() >= 4 => (3, &parts[3..]),
        _ => return None,
    };
    let prefix = parts[..prefix_len].join("/");
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let plural = rest.first()?;
    Some(Target {
        resource: format!("{prefix}/{plural}"),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        status: rest.get(2) == Some(&"status"),
    })
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
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
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

fn with_type_meta(resource: &str, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), api_version_of(resource).into());
        m.insert("kind".into(), kind_of(resource).into());
    }
    obj
}

fn matches(ev_resource: &str, obj: &Value, t: &Target, fields: &str) -> bool {
    ev_resource == t.resource
        && t.namespace
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
        && field_selector_matches(fields, obj)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let q = query(&uri);
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    shared
        .store
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {uri}"));
    let Some(t) = parse_path(uri.path()) else {
        return error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if shared.store.lock().unwrap().missing.contains(&t.resource) {
        return error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    if shared.store.lock().unwrap().failing.contains(&t.resource) {
        return error(500, "InternalError", "etcdserver: request timed out");
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if method == Method::POST && t.resource == "apis/authentication.k8s.io/v1/tokenreviews" {
        return token_review(&shared, &body);
    }
    if method == Method::POST && t.resource == "apis/authorization.k8s.io/v1/subjectaccessreviews" {
        return access_review(&shared, &body);
    }
    let fields = q.get("fieldSelector").cloned().unwrap_or_default();
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    match (&method, &t.name) {
        (&Method::GET, None) if is_watch => watch_response(shared, t, q, fields),
        (&Method::GET, None) => {
            let mut hold = shared.hold_lists.subscribe();
            let _ = hold.wait_for(|h| !*h).await;
            let store = shared.store.lock().unwrap();
            // Pages: `limit`, and `continue` = "<resourceVersion>:<offset>" (opaque to clients).
            let limit: usize = q
                .get("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let (list_rv, offset) = q
                .get("continue")
                .and_then(|c| c.split_once(':'))
                .and_then(|(rv, off)| Some((rv.parse::<u64>().ok()?, off.parse::<usize>().ok()?)))
                .unwrap_or((store.rv, 0));
            let matching = store
                .objects
                .iter()
                .filter(|((r, _, _), o)| matches(r, o, &t, &fields));
            let total = matching.clone().count();
            let next = (offset.saturating_add(limit) < total)
                .then(|| format!("{list_rv}:{}", offset + limit));
            let items: Vec<Value> = matching
                .skip(offset)
                .take(limit)
                .map(|(_, o)| {
                    let mut o = o.clone();
                    if is_builtin(&t.resource) {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("apiVersion");
                            m.remove("kind");
                        }
                    }
                    o
                })
                .collect();
            full(
                StatusCode::OK,
                &json!({
                    "kind": format!("{}List", kind_of(&t.resource)),
                    "apiVersion": api_version_of(&t.resource),
                    "metadata": match next {
                        Some(c) => json!({"resourceVersion": list_rv.to_string(), "continue": c}),
                        None => json!({"resourceVersion": list_rv.to_string()}),
                    },
                    "items": items,
                }),
            )
        }
        (&Method::GET, Some(name)) => {
            let store = shared.store.lock().unwrap();
            let key = (
                t.resource.clone(),
                t.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            match store.objects.get(&key) {
                Some(o) => full(StatusCode::OK, &with_type_meta(&t.resource, o.clone())),
                None => error(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", kind_of(&t.resource)),
                ),
            }
        }
        (&Method::POST, None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return error(400, "BadRequest", "body is not JSON");
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let ns = t.namespace.clone().unwrap_or_default();
            let mut store = shared.store.lock().unwrap();
            let key = (t.resource.clone(), ns.clone(), name.clone());
            let code = if store.objects.contains_key(&key) {
                409
            } else {
                201
            };
            store.writes.push(Write {
                method: "POST".into(),
                path: uri.path().to_string(),
                token,
                code,
            });
            if code == 409 {
                return error(409, "AlreadyExists", &format!("\"{name}\" already exists"));
            }
            obj["metadata"]["namespace"] = ns.into();
            obj["metadata"]["uid"] = format!("uid-{}", store.rv + 1).into();
            let obj = with_type_meta(&t.resource, obj);
            commit(&shared, &mut store, key.clone(), obj, "ADDED");
            let o = store.objects.get(&key).cloned().unwrap_or_default();
            full(StatusCode::CREATED, &o)
        }
        (&Method::PUT | &Method::PATCH, Some(name)) => {
            let Ok(input) = serde_json::from_slice::<Value>(&body) else {
                return error(400, "BadRequest", "body is not JSON");
            };
            let mut store = shared.store.lock().unwrap();
            let key = (
                t.resource.clone(),
                t.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let mut write = Write {
                method: method.to_string(),
                path: uri.path().to_string(),
                token,
                code: 200,
            };
            let Some(current) = store.objects.get(&key).cloned() else {
                write.code = 404;
                store.writes.push(write);
                return error(404, "NotFound", &format!("\"{name}\" not found"));
            };
            let stale = input["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|rv| Some(rv) != current["metadata"]["resourceVersion"].as_str());
            let forced = t.status && store.forced_conflicts > 0;
            if stale || forced {
                if forced {
                    store.forced_conflicts -= 1;
                }
                write.code = 409;
                store.writes.push(write);
                return error(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        kind_of(&t.resource)
                    ),
                );
            }
            let mut next = current.clone();
            match (t.status, &method) {
                (true, &Method::PUT) => {
                    next["status"] = input["status"].clone();
                }
                (true, _) => {
                    let mut status = current.get("status").cloned().unwrap_or(json!({}));
                    merge(&mut status, &input["status"]);
                    next["status"] = status;
                }
                (false, &Method::PUT) => {
                    next = input.clone();
                    next["metadata"]["uid"] = current["metadata"]["uid"].clone();
                    next["metadata"]["namespace"] = current["metadata"]["namespace"].clone();
                    next = with_type_meta(&t.resource, next);
                }
                (false, _) => merge(&mut next, &input),
            }
            store.writes.push(write);
            commit(&shared, &mut store, key.clone(), next, "MODIFIED");
            let o = store.objects.get(&key).cloned().unwrap_or_default();
            full(StatusCode::OK, &with_type_meta(&t.resource, o))
        }
        _ => error(405, "MethodNotAllowed", "not supported by the fake"),
    }
}

/// authentication.k8s.io/v1 TokenReview, as the real server answers it: the review echoed with
/// `status` (`authenticated`, `user`, `audiences` = the requested ones the token is valid for;
/// without requested audiences the API server's own, here `https://kubernetes.default.svc`).
fn token_review(shared: &Shared, body: &[u8]) -> Response<Body> {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return error(400, "BadRequest", "body is not JSON");
    };
    let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut store = shared.store.lock().unwrap();
    store.token_reviews += 1;
    let status = match store.tokens.get(&token) {
        None => {
            json!({"user": {}, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"})
        }
        Some((user, valid)) => {
            let wanted = if wanted.is_empty() {
                vec!["https://kubernetes.default.svc".to_string()]
            } else {
                wanted
            };
            let both: Vec<&String> = wanted.iter().filter(|a| valid.contains(a)).collect();
            if both.is_empty() {
                json!({"user": {}, "error": "[invalid bearer token, token audiences [...] is invalid for the target audiences]"})
            } else {
                let ns = user.split(':').nth(2).unwrap_or("");
                json!({
                    "authenticated": true,
                    "user": {
                        "username": user,
                        "uid": format!("uid-{user}"),
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                    },
                    "audiences": both,
                })
            }
        }
    };
    review["apiVersion"] = "authentication.k8s.io/v1".into();
    review["kind"] = "TokenReview".into();
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = status;
    full(StatusCode::CREATED, &review)
}

/// authorization.k8s.io/v1 SubjectAccessReview: `status.allowed` from the grants.
fn access_review(shared: &Shared, body: &[u8]) -> Response<Body> {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return error(400, "BadRequest", "body is not JSON");
    };
    let spec = &review["spec"];
    let ra = &spec["resourceAttributes"];
    let key = (
        spec["user"].as_str().unwrap_or("").to_string(),
        ra["verb"].as_str().unwrap_or("").to_string(),
        ra["resource"].as_str().unwrap_or("").to_string(),
        ra["namespace"].as_str().unwrap_or("").to_string(),
    );
    let mut store = shared.store.lock().unwrap();
    store.access_reviews += 1;
    let allowed = store.grants.contains(&key);
    review["apiVersion"] = "authorization.k8s.io/v1".into();
    review["kind"] = "SubjectAccessReview".into();
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding"})
    } else {
        json!({"allowed": false})
    };
    full(StatusCode::CREATED, &review)
}

fn watch_response(
    shared: Arc<Shared>,
    t: Target,
    q: BTreeMap<String, String>,
    fields: String,
) -> Response<Body> {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    // Subscribe before reading the backlog, so nothing falls between the two.
    let mut live = shared.events.subscribe();
    let mut epoch = shared.epoch.subscribe();
    let (backlog, expired, compacted) = {
        let store = shared.store.lock().unwrap();
        let expired = from != 0 && from < store.compacted;
        let backlog: Vec<Event> = store
            .log
            .iter()
            .filter(|e| e.rv > from && matches(&e.resource, &e.object, &t, &fields))
            .cloned()
            .collect();
        (backlog, expired, store.compacted)
    };
    let line = |kind: &str, object: &Value| {
        let mut s = json!({"type": kind, "object": object}).to_string();
        s.push('\n');
        Ok::<_, Infallible>(Frame::data(Bytes::from(s)))
    };
    let stream = async_stream::stream! {
        if expired {
            let st = status_body(410, "Expired", &format!("too old resource version: {from} ({compacted})"));
            yield line("ERROR", &st);
            return;
        }
        let mut last = from;
        for e in backlog {
            last = e.rv;
            yield line(e.kind, &with_type_meta(&e.resource, e.object));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if e.rv > last && matches(&e.resource, &e.object, &t, &fields) {
                            last = e.rv;
                            yield line(e.kind, &with_type_meta(&e.resource, e.object));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = epoch.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(StreamBody::new(stream.boxed()).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}
