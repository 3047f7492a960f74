//! A synthetic Knative cluster of N services, for benchmarks and equivalence tests.
//!
//! Each service `svc-<i>` in namespace `ns-<i % namespaces>` has a Route whose status splits
//! 90/10 over two revisions and tags the second one `latest` (so it has a tag host); every tenth
//! service is cluster-local, the others external (and, as Knative does, also cluster-local
//! hosts). Each revision has its Service (`http` 80 -> 8012) and Endpoints with three ready
//! addresses. The traffic is given as Routes (translated through the KIngress Knative would
//! build), as KIngresses of our class, as VirtualServices shaped as net-istio writes them, or as
//! HTTPRoutes shaped as net-gateway-api writes them.
//! The two gateway Services map port 80 to 8080 (external) and 8081 (cluster-local).

use std::path::Path;

use serde_json::{json, Value};

use crate::model::kingress::{IngressSpec, CLASS_ANNOTATION, DEFAULT_CLASS};
use crate::model::{knative, parse_object, Object};
use crate::source::{Origin, Sourced};
use crate::state::Inputs;

/// How the traffic of each service is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// Knative Routes (with status), translated through the KIngress Knative would build.
    #[default]
    Route,
    /// KIngresses of our class.
    Kingress,
    /// VirtualServices as net-istio writes them for a KIngress.
    Virtualservice,
    /// Gateway API HTTPRoutes as net-gateway-api writes them for a KIngress (one per rule),
    /// with our GatewayClass and its Gateways `knative-serving/knative-gateway` (HTTP 80) and
    /// `knative-serving/knative-local-gateway` (HTTP 8081).
    Httproute,
}

/// The Gateway API Gateways of [`Form::Httproute`]: (name, listener port).
pub const GATEWAY_API_GATEWAYS: [(&str, u32); 2] =
    [("knative-gateway", 80), ("knative-local-gateway", 8081)];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synth {
    pub services: usize,
    pub namespaces: usize,
    pub form: Form,
}

impl Synth {
    pub fn new(services: usize, form: Form) -> Synth {
        Synth {
            services,
            namespaces: services.div_ceil(100).max(1),
            form,
        }
    }

    pub fn namespace(&self, i: usize) -> String {
        format!("ns-{}", i % self.namespaces)
    }

    /// The two gateway Services (and, for [`Form::Httproute`], the GatewayClass and Gateways).
    pub fn gateway_services(&self) -> Vec<Value> {
        let mut out = self.gateway_api_gateways();
        out.extend(
            [
                ("istio-ingressgateway", "ingressgateway", 8080),
                ("cluster-local-gateway", "cluster-local-gateway", 8081),
            ]
            .into_iter()
            .map(|(name, istio, target)| {
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": "istio-system"},
                    "spec": {"selector": {"istio": istio},
                             "ports": [{"name": "http2", "port": 80, "targetPort": target}]}
                })
            }),
        );
        out
    }

    fn gateway_api_gateways(&self) -> Vec<Value> {
        if self.form != Form::Httproute {
            return Vec::new();
        }
        let mut out = vec![json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "knative-pilot"},
            "spec": {"controllerName": crate::model::gateway_api::DEFAULT_CONTROLLER}
        })];
        for (name, port) in GATEWAY_API_GATEWAYS {
            out.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": name, "namespace": "knative-serving"},
                "spec": {"gatewayClassName": "knative-pilot", "listeners": [{
                    "name": "http", "port": port, "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "All"}}}]}
            }));
        }
        out
    }

    /// The objects of service `i` (traffic object first, then revision Services and Endpoints),
    /// with `split` percent to the first revision (90 normally).
    pub fn service(&self, i: usize, split: i64) -> Vec<Value> {
        let ns = self.namespace(i);
        let name = format!("svc-{i}");
        let local = i % 10 == 9;
        let revs = [format!("{name}-00001"), format!("{name}-00002")];
        let mut out = Vec::new();
        let route = self.route(&ns, &name, &revs, split, local);
        // HTTPRoutes after the first go last: the first object is the traffic object and the
        // revision objects follow it (the property tests rely on that order).
        let mut later = Vec::new();
        match self.form {
            Form::Route => out.push(route),
            Form::Httproute => {
                let mut routes = http_routes(&ns, &self.kingress_spec(&route)).into_iter();
                out.extend(routes.next());
                later.extend(routes);
            }
            Form::Kingress | Form::Virtualservice => {
                let spec = self.kingress_spec(&route);
                if self.form == Form::Kingress {
                    out.push(json!({
                        "apiVersion": "networking.internal.knative.dev/v1alpha1",
                        "kind": "Ingress",
                        "metadata": {"name": name, "namespace": ns,
                                     "annotations": {CLASS_ANNOTATION: DEFAULT_CLASS},
                                     "labels": {"serving.knative.dev/route": name,
                                                "serving.knative.dev/routeNamespace": ns}},
                        "spec": spec,
                    }));
                } else {
                    out.push(virtual_service(&ns, &name, &spec));
                }
            }
        }
        for (r, rev) in revs.iter().enumerate() {
            out.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": rev, "namespace": ns,
                             "labels": {"serving.knative.dev/revision": rev}},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8012}]}
            }));
            out.push(self.endpoints(i, r, 0));
        }
        out.extend(later);
        out
    }

    /// The Endpoints of revision `r` of service `i`; `variant` changes one address.
    pub fn endpoints(&self, i: usize, r: usize, variant: usize) -> Value {
        let ns = self.namespace(i);
        let rev = format!("svc-{i}-0000{}", r + 1);
        let base = i * 2 + r;
        let addrs: Vec<Value> = (0..3)
            .map(|k| {
                let n = base * 3 + k + if k == 0 { variant * 7919 } else { 0 };
                json!({"ip": format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)})
            })
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": rev, "namespace": ns},
            "subsets": [{"addresses": addrs, "ports": [{"name": "http", "port": 8012}]}]
        })
    }

    fn route(&self, ns: &str, name: &str, revs: &[String; 2], split: i64, local: bool) -> Value {
        let (url, turl) = if local {
            (
                format!("http://{name}.{ns}.svc.cluster.local"),
                format!("http://latest-{name}.{ns}.svc.cluster.local"),
            )
        } else {
            (
                format!("http://{name}.{ns}.example.com"),
                format!("http://latest-{name}.{ns}.example.com"),
            )
        };
        let mut meta = json!({"name": name, "namespace": ns});
        if local {
            meta["labels"] = json!({"networking.knative.dev/visibility": "cluster-local"});
        }
        json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": meta,
            "status": {"url": url, "traffic": [
                {"revisionName": revs[0], "percent": split},
                {"revisionName": revs[1], "percent": 100 - split},
                {"revisionName": revs[1], "percent": 0, "tag": "latest", "url": turl},
            ]}
        })
    }

    fn kingress_spec(&self, route: &Value) -> IngressSpec {
        match parse_object(route.clone()) {
            Ok(Some(Object::Route(r))) => {
                let opts = knative::RouteOptions {
                    domain: "example.com".to_string(),
                    cluster_domain: "cluster.local".to_string(),
                    ..Default::default()
                };
                knative::ingress_from_route(&r, &opts).unwrap_or_default()
            }
            _ => IngressSpec::default(),
        }
    }

    /// Every object.
    pub fn values(&self) -> Vec<Value> {
        let mut out = self.gateway_services();
        for i in 0..self.services {
            out.extend(self.service(i, 90));
        }
        out
    }

    /// The inputs, as a source would give them.
    pub fn inputs(&self) -> Inputs {
        let objects = self
            .values()
            .into_iter()
            .enumerate()
            .filter_map(|(doc, v)| {
                let object = parse_object(v).ok().flatten()?;
                Some(Sourced {
                    object,
                    origin: Origin {
                        file: "synth".into(),
                        doc: doc + 1,
                        item: None,
                    },
                })
            })
            .collect::<Vec<_>>();
        Inputs::from_sourced(objects).0
    }

    /// Writes a manifest directory: `gateways.json` and one JSON `List` per namespace.
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let list = |items: Vec<Value>| json!({"apiVersion": "v1", "kind": "List", "items": items});
        std::fs::write(
            dir.join("gateways.json"),
            serde_json::to_vec(&list(self.gateway_services()))?,
        )?;
        for n in 0..self.namespaces {
            std::fs::write(
                dir.join(format!("ns-{n}.json")),
                serde_json::to_vec(&self.namespace_list(n, 0))?,
            )?;
        }
        Ok(())
    }

    /// The `List` of namespace `n`'s objects, as [`Synth::write_dir`] writes it to
    /// `ns-<n>.json`, with one address of the first revision of its first service moved to
    /// `variant` (0: as written).
    pub fn namespace_list(&self, n: usize, variant: usize) -> Value {
        let items: Vec<Value> = (n..self.services)
            .step_by(self.namespaces)
            .flat_map(|i| {
                let mut objs = self.service(i, 90);
                if i == n && variant != 0 {
                    let moved = self.endpoints(i, 0, variant);
                    let same = |o: &&mut Value| {
                        o["kind"] == "Endpoints" && o["metadata"] == moved["metadata"]
                    };
                    if let Some(o) = objs.iter_mut().find(same) {
                        *o = moved;
                    }
                }
                objs
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }
}

/// The HTTPRoutes net-gateway-api writes for a KIngress (`resources/httproute.go`): one per
/// rule, named after its longest host, parented to the external or local Gateway; each path a
/// rule with its splits as weighted backendRefs carrying their appendHeaders.
fn http_routes(ns: &str, spec: &IngressSpec) -> Vec<Value> {
    let mut out = Vec::new();
    for rule in &spec.rules {
        let gateway = if rule.visibility.as_deref() == Some("ClusterLocal") {
            GATEWAY_API_GATEWAYS[1].0
        } else {
            GATEWAY_API_GATEWAYS[0].0
        };
        let name = rule
            .hosts
            .iter()
            .max_by(|a, b| a.len().cmp(&b.len()).then(b.cmp(a)))
            .cloned()
            .unwrap_or_default();
        let rules: Vec<Value> = rule
            .http
            .iter()
            .flat_map(|h| h.paths.iter())
            .map(|path| {
                let backends: Vec<Value> = path
                    .splits
                    .iter()
                    .map(|s| {
                        let set: Vec<Value> = s
                            .append_headers
                            .iter()
                            .flatten()
                            .map(|(k, v)| json!({"name": k, "value": v}))
                            .collect();
                        json!({"group": "", "kind": "Service", "name": s.service_name,
                               "port": 80, "weight": s.percent,
                               "filters": [{"type": "RequestHeaderModifier",
                                            "requestHeaderModifier": {"set": set}}]})
                    })
                    .collect();
                let prefix = path.path.clone().filter(|p| !p.is_empty());
                json!({
                    "matches": [{"path": {"type": "PathPrefix",
                                          "value": prefix.unwrap_or_else(|| "/".to_string())}}],
                    "backendRefs": backends,
                    "timeouts": {"request": "0s"}
                })
            })
            .collect();
        out.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                "name": gateway, "namespace": "knative-serving"}],
                "hostnames": rule.hosts,
                "rules": rules
            }
        }));
    }
    out
}

/// The VirtualService net-istio writes for a KIngress (`<name>-ingress`, both gateways, one
/// HTTP route per rule and path, matched by `:authority` prefix and gateway).
fn virtual_service(ns: &str, name: &str, spec: &IngressSpec) -> Value {
    let ext = "knative-serving/knative-ingress-gateway";
    let local = "knative-serving/cluster-local-gateway";
    let mut hosts: Vec<String> = Vec::new();
    let mut http = Vec::new();
    for rule in &spec.rules {
        let gw = if rule.visibility.as_deref() == Some("ClusterLocal") {
            local
        } else {
            ext
        };
        hosts.extend(rule.hosts.iter().cloned());
        for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
            let matches: Vec<Value> = rule
                .hosts
                .iter()
                .map(|h| json!({"authority": {"prefix": h}, "gateways": [gw]}))
                .collect();
            let route: Vec<Value> = path
                .splits
                .iter()
                .map(|s| {
                    json!({
                        "destination": {
                            "host": format!("{}.{}.svc.cluster.local", s.service_name, s.service_namespace),
                            "port": {"number": 80}
                        },
                        "headers": {"request": {"set": s.append_headers.clone().unwrap_or_default()}},
                        "weight": s.percent
                    })
                })
                .collect();
            let mut r = json!({"match": matches, "route": route, "retries": {}, "timeout": "900s"});
            if let Some(h) = &path.append_headers {
                r["headers"] = json!({"request": {"set": h}});
            }
            http.push(r);
        }
    }
    hosts.sort();
    hosts.dedup();
    json!({
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": format!("{name}-ingress"), "namespace": ns,
                     "labels": {"networking.internal.knative.dev/ingress": name,
                                "serving.knative.dev/route": name,
                                "serving.knative.dev/routeNamespace": ns}},
        "spec": {"gateways": [local, ext], "hosts": hosts, "http": http}
    })
}

/// A scripted Envoy for measuring what goes on the wire: drives an in-process
/// [`crate::xds::conn`] state machine (SotW or Delta) the way Envoy does (wildcard clusters,
/// listeners and scopes, load assignments, routes and secrets by name, following what the snapshot names),
/// ACKs every response, and counts the encoded bytes of the responses.
pub struct ScriptedEnvoy {
    conn: Conn,
    target: std::sync::Arc<crate::xds::Snapshot>,
    /// Per by-name type, the map whose keys it subscribes to (the snapshot's, as of the last
    /// [`ScriptedEnvoy::follow`]): a change is found by a diff of two maps in O(changes).
    names: std::collections::BTreeMap<&'static str, crate::xds::ResourceMap>,
    nonces: std::collections::BTreeMap<String, String>,
}

enum Conn {
    Sotw(crate::xds::conn::SotwConnection),
    Delta(crate::xds::conn::DeltaConnection),
}

/// Bytes and responses of one exchange.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    pub responses: usize,
    /// Protobuf-encoded response bytes (gRPC adds 5 bytes of framing per response).
    pub bytes: usize,
    pub resources: usize,
}

impl ScriptedEnvoy {
    /// Connects and takes everything; returns the initial exchange.
    pub fn connect(
        mode: crate::xds::conn::Mode,
        snapshot: std::sync::Arc<crate::xds::Snapshot>,
    ) -> (ScriptedEnvoy, Wire) {
        use crate::xds::conn::{DeltaConnection, Mode, SotwConnection};
        let conn = match mode {
            Mode::Sotw => Conn::Sotw(SotwConnection::new(snapshot.clone())),
            Mode::Delta => Conn::Delta(DeltaConnection::new(snapshot.clone())),
        };
        let mut e = ScriptedEnvoy {
            conn,
            target: snapshot,
            names: Default::default(),
            nonces: Default::default(),
        };
        let mut wire = Wire::default();
        // Scoped route layout: Envoy's scoped RDS subscription is a wildcard too.
        let scoped = e
            .target
            .of_type(crate::xds::SCOPED_ROUTE)
            .is_some_and(|m| !m.is_empty());
        for t in [
            crate::xds::CLUSTER,
            crate::xds::LISTENER,
            crate::xds::SCOPED_ROUTE,
        ] {
            if t == crate::xds::SCOPED_ROUTE && !scoped {
                continue;
            }
            let out = e.request(t, Vec::new(), Vec::new());
            e.settle(out, &mut wire);
        }
        e.follow(&mut wire);
        (e, wire)
    }

    /// A new snapshot: everything sent until the Envoy holds it.
    pub fn push(&mut self, snapshot: std::sync::Arc<crate::xds::Snapshot>) -> Wire {
        self.target = snapshot.clone();
        let mut wire = Wire::default();
        let out = match &mut self.conn {
            Conn::Sotw(c) => c.on_snapshot_wire(snapshot).responses,
            Conn::Delta(c) => c.on_snapshot_wire(snapshot).responses,
        };
        self.settle(out, &mut wire);
        self.follow(&mut wire);
        wire
    }

    /// Subscribes by name to the load assignments, routes and secrets the snapshot has, as
    /// Envoy does once it holds the clusters and listeners naming them. A Delta Envoy names only
    /// the names it adds and removes (found in O(changes)); a SotW one names them all, as the
    /// protocol says.
    fn follow(&mut self, wire: &mut Wire) {
        use crate::xds::{ENDPOINT, ROUTE, SECRET};
        for t in [ENDPOINT, ROUTE, SECRET] {
            let want = self.target.of_type(t).cloned().unwrap_or_default();
            let (added, removed) = match self.names.get(t) {
                None if want.is_empty() && t == SECRET => continue,
                None => (want.keys().cloned().collect(), Vec::new()),
                Some(have) if have.ptr_eq(&want) => continue,
                Some(have) => {
                    let (mut added, mut removed) = (Vec::new(), Vec::new());
                    for d in have.diff(&want) {
                        match d {
                            imbl::ordmap::DiffItem::Add(n, _) => added.push(n.clone()),
                            imbl::ordmap::DiffItem::Remove(n, _) => removed.push(n.clone()),
                            imbl::ordmap::DiffItem::Update { .. } => {}
                        }
                    }
                    if added.is_empty() && removed.is_empty() {
                        self.names.insert(t, want);
                        continue;
                    }
                    (added, removed)
                }
            };
            self.names.insert(t, want);
            let out = match &self.conn {
                Conn::Sotw(_) => self.request(t, subscribed(&self.names, t), Vec::new()),
                Conn::Delta(_) => self.request(t, added, removed),
            };
            self.settle(out, wire);
        }
    }

    fn request(&mut self, t: &str, names: Vec<String>, unsubscribe: Vec<String>) -> Vec<Out> {
        use envoy_types::pb::envoy::service::discovery::v3::{
            DeltaDiscoveryRequest, DiscoveryRequest,
        };
        let nonce = self.nonces.get(t).cloned().unwrap_or_default();
        match &mut self.conn {
            Conn::Sotw(c) => {
                c.on_request_wire(DiscoveryRequest {
                    type_url: t.to_string(),
                    resource_names: names,
                    response_nonce: nonce,
                    ..Default::default()
                })
                .responses
            }
            Conn::Delta(c) => {
                c.on_request_wire(DeltaDiscoveryRequest {
                    type_url: t.to_string(),
                    resource_names_subscribe: names,
                    resource_names_unsubscribe: unsubscribe,
                    response_nonce: nonce,
                    ..Default::default()
                })
                .responses
            }
        }
    }

    /// Counts the responses (as the ADS shell encodes them) and ACKs them until the connection
    /// has nothing more to send.
    fn settle(&mut self, mut out: Vec<Out>, wire: &mut Wire) {
        use envoy_types::pb::envoy::service::discovery::v3::{
            DeltaDiscoveryRequest, DiscoveryRequest,
        };
        while !out.is_empty() {
            let mut next = Vec::new();
            for r in out {
                wire.responses += 1;
                wire.bytes += r.encoded_len();
                wire.resources += r.resources.len() + r.removed.len();
                self.nonces.insert(r.type_url.clone(), r.nonce.clone());
                let step = match &mut self.conn {
                    Conn::Sotw(c) => c.on_request_wire(DiscoveryRequest {
                        resource_names: subscribed(&self.names, &r.type_url),
                        type_url: r.type_url,
                        version_info: r.version,
                        response_nonce: r.nonce,
                        ..Default::default()
                    }),
                    Conn::Delta(c) => c.on_request_wire(DeltaDiscoveryRequest {
                        type_url: r.type_url,
                        response_nonce: r.nonce,
                        ..Default::default()
                    }),
                };
                next.extend(step.responses);
            }
            out = next;
        }
    }
}

/// Every name a scripted Envoy subscribes to of a type (what each SotW request of it names).
fn subscribed(
    names: &std::collections::BTreeMap<&'static str, crate::xds::ResourceMap>,
    t: &str,
) -> Vec<String> {
    names
        .iter()
        .find(|(k, _)| **k == t)
        .map(|(_, m)| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// A response as the connection machine returns it (what the ADS shell encodes).
type Out = crate::xds::conn::Wire;
