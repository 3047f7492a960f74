//! The fake's HTTP side: each request parsed (path, query, field selectors) and answered from
//! the store as the real API server answers it (lists, watches, writes, status patches, token
//! and access reviews, `Status` errors).

use super::*;

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

pub(super) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
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
