//! Incremental translation for one proxy: the same output as [`super::translate`], with work
//! proportional to the change.
//!
//! The [`Engine`] keeps, per proxy label set:
//! - the proxy's [`Context`] (servers, listeners, secrets, served route configurations): rebuilt
//!   from scratch when a Gateway, a ConfigMap, a Secret, a gateway Service (one whose selector
//!   picks this proxy) or a KIngress with TLS entries changes: those are rare;
//! - one [`Fragment`] per VirtualService / KIngress / Route: its virtual hosts, its clusters and
//!   the Services it read, so that a Service change re-translates only its dependents;
//! - per (route configuration, host) slot, the objects claiming it, so the duplicate-host rule
//!   (oldest object wins, the others are reported) is re-decided only for touched slots;
//! - the clusters with reference counts (from fragments, and from winning virtual hosts on
//!   served route configurations), indexed by Service, so an endpoint change re-reads only the
//!   endpoints of that Service's clusters;
//! - the resources as persistent maps: a change re-encodes only what it touched.
//!
//! The Istio-shaped layout keeps every virtual host of a port in one RouteConfiguration
//! (`http.80`): a change to a virtual host re-encodes that whole RouteConfiguration. In the
//! scoped layout ([`super::RouteLayout::Scoped`]) a changed host re-encodes only its own scope
//! and RouteConfiguration (`http.80/<host>`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{Kind, Object, ObjectKey};
use crate::source::InputError;
use crate::state::{Entry, Inputs, SERVICE_NAME_LABEL};
use crate::xds::resource::SNAPSHOT_TYPES;
use crate::xds::resource::{resource, resource_from_bytes};
use crate::xds::resource::{
    ResourceMap, Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET,
};
use prost::Message;

use super::envoy;
use super::ir::{ClusterKind, VirtualHostIr};
use super::{
    context, is_subset, kingress_class_matches, ready_endpoints_of, translate_one, ClusterIr,
    ClusterSource, Context, Fragment, Options,
};

type Labels = BTreeMap<String, String>;
/// (route configuration name, host).
type Slot = (String, String);
/// (namespace, name) of a Service.
type SvcKey = (String, String);
type Order = (u8, String, ObjectKey);

/// One change as the engine sees it: the key, the entry before and the entry after.
#[derive(Debug, Clone)]
pub struct ObjectChange {
    pub key: ObjectKey,
    pub old: Option<Arc<Entry>>,
    pub new: Option<Arc<Entry>>,
}

#[derive(Debug, Clone)]
struct ClusterEntry {
    ir: ClusterIr,
    src: ClusterSource,
    /// Fragments that reference it.
    frag_refs: usize,
    /// References from winning virtual hosts on served route configurations.
    served_refs: usize,
}

/// Incremental translation state for one proxy label set.
#[derive(Debug, Clone)]
pub struct Engine {
    opts: Options,
    labels: Labels,
    ctx: Context,
    frags: BTreeMap<ObjectKey, Fragment>,
    by_service: BTreeMap<SvcKey, BTreeSet<ObjectKey>>,
    slots: BTreeMap<Slot, BTreeSet<Order>>,
    slot_errors: BTreeMap<Slot, Vec<InputError>>,
    /// Winning virtual hosts: route configuration -> host -> virtual host.
    vhosts: BTreeMap<String, BTreeMap<String, Arc<VirtualHostIr>>>,
    /// The same, encoded: route configuration -> virtual host name -> `VirtualHost` bytes.
    encoded: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    clusters: BTreeMap<String, ClusterEntry>,
    /// Clusters whose fragment references dropped to zero during the current change.
    unreferenced: BTreeSet<String>,
    /// Objects whose translation failed (their fragment's error).
    failed: BTreeSet<ObjectKey>,
    clusters_by_service: BTreeMap<SvcKey, BTreeSet<String>>,
    /// VirtualServices labelled for a Route: route name -> (routeNamespace label, VS key).
    vs_by_route: BTreeMap<String, BTreeSet<(Option<String>, ObjectKey)>>,
    /// VirtualServices labelled for a KIngress: (ns, ingress name) -> VS keys.
    vs_by_ingress: BTreeMap<SvcKey, BTreeSet<ObjectKey>>,
    /// Route name -> namespaces that have a Route of that name.
    routes_by_name: BTreeMap<String, BTreeSet<String>>,
    res: BTreeMap<&'static str, ResourceMap>,
}

/// What one change touched, to re-encode.
#[derive(Default)]
struct Touched {
    slots: BTreeSet<Slot>,
    routes: BTreeSet<String>,
    /// Hosts whose virtual host changed on a scoped route configuration.
    scoped_hosts: BTreeSet<String>,
    clusters: BTreeSet<String>,
    assignments: BTreeSet<String>,
}

fn vs_route_labels(entry: &Entry) -> (Option<(String, Option<String>)>, Option<String>) {
    let labels = entry.object.metadata().labels.clone().unwrap_or_default();
    let by_route = labels.get("serving.knative.dev/route").map(|r| {
        (
            r.clone(),
            labels.get("serving.knative.dev/routeNamespace").cloned(),
        )
    });
    let by_ingress = labels
        .get("networking.internal.knative.dev/ingress")
        .cloned();
    (by_route, by_ingress)
}

fn slice_service(entry: &Entry) -> Option<SvcKey> {
    let Object::EndpointSlice(slice) = &entry.object else {
        return None;
    };
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((entry.object.key().namespace, svc.clone()))
}

fn has_tls(entry: &Entry) -> bool {
    matches!(&entry.object, Object::KIngress(i) if !i.spec.tls.is_empty())
}

impl Engine {
    /// Translates everything for a proxy with these labels.
    pub fn new(inputs: &Inputs, opts: &Options, labels: &Labels) -> Engine {
        let mut e = Engine {
            opts: opts.clone(),
            labels: labels.clone(),
            ctx: Context::default(),
            frags: BTreeMap::new(),
            by_service: BTreeMap::new(),
            slots: BTreeMap::new(),
            slot_errors: BTreeMap::new(),
            vhosts: BTreeMap::new(),
            encoded: BTreeMap::new(),
            clusters: BTreeMap::new(),
            unreferenced: BTreeSet::new(),
            failed: BTreeSet::new(),
            clusters_by_service: BTreeMap::new(),
            vs_by_route: BTreeMap::new(),
            vs_by_ingress: BTreeMap::new(),
            routes_by_name: BTreeMap::new(),
            res: BTreeMap::new(),
        };
        e.rebuild(inputs);
        e
    }

    /// Gateways (`ns/name`) that apply to this proxy.
    pub fn gateways(&self) -> &[String] {
        &self.ctx.gateways
    }

    /// The current resources as a snapshot (O(1): the maps are persistent).
    pub fn snapshot(&self, generation: u64) -> Snapshot {
        Snapshot {
            generation,
            resources: self.res.clone(),
        }
    }

    /// Every translation error, sorted.
    pub fn errors(&self) -> Vec<InputError> {
        let mut out: Vec<InputError> = self.ctx.errors.clone();
        out.extend(
            self.failed
                .iter()
                .filter_map(|k| self.frags.get(k).and_then(|f| f.error.clone())),
        );
        out.extend(self.slot_errors.values().flatten().cloned());
        out.sort();
        out.dedup();
        out
    }

    /// The errors that name one object.
    pub fn errors_of(&self, key: &ObjectKey) -> Vec<InputError> {
        let mut out: Vec<InputError> = self
            .ctx
            .errors
            .iter()
            .filter(|e| e.object.as_ref() == Some(key))
            .cloned()
            .collect();
        if let Some(f) = self.frags.get(key) {
            out.extend(f.error.clone());
            for slot in f.vhosts.keys() {
                out.extend(
                    self.slot_errors
                        .get(slot)
                        .into_iter()
                        .flatten()
                        .filter(|e| e.object.as_ref() == Some(key))
                        .cloned(),
                );
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn selects_this_proxy(&self, entry: &Entry) -> bool {
        let Object::Service(svc) = &entry.object else {
            return false;
        };
        let selector: Labels = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        !selector.is_empty() && is_subset(&selector, &self.labels)
    }

    /// Applies changes; `inputs` are the inputs after them.
    pub fn apply(&mut self, inputs: &Inputs, changes: &[ObjectChange]) {
        let mut full = false;
        let mut redo: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut endpoint_services: BTreeSet<SvcKey> = BTreeSet::new();
        for c in changes {
            let entries = || c.old.iter().chain(c.new.iter());
            let k = &c.key;
            match k.kind {
                Kind::Gateway | Kind::ConfigMap | Kind::Secret => full = true,
                Kind::Service => {
                    if entries().any(|e| self.selects_this_proxy(e)) {
                        full = true;
                    }
                    let svc = (k.namespace.clone(), k.name.clone());
                    redo.extend(self.by_service.get(&svc).into_iter().flatten().cloned());
                }
                Kind::Endpoints => {
                    endpoint_services.insert((k.namespace.clone(), k.name.clone()));
                }
                Kind::EndpointSlice => {
                    endpoint_services.extend(entries().filter_map(|e| slice_service(e)));
                }
                Kind::KIngress => {
                    if entries().any(|e| has_tls(e)) {
                        full = true;
                    }
                    redo.insert(k.clone());
                    redo.insert(ObjectKey {
                        kind: Kind::Route,
                        namespace: k.namespace.clone(),
                        name: k.name.clone(),
                    });
                }
                Kind::VirtualService => {
                    if let Some(old) = &c.old {
                        redo.extend(self.vs_routes(old));
                        self.unindex_vs(k, old);
                    }
                    if let Some(new) = &c.new {
                        self.index_vs(k, new);
                        redo.extend(self.vs_routes(new));
                    }
                    redo.insert(k.clone());
                }
                Kind::Route => {
                    if c.old.is_some() && c.new.is_none() {
                        if let Some(set) = self.routes_by_name.get_mut(&k.name) {
                            set.remove(&k.namespace);
                            if set.is_empty() {
                                self.routes_by_name.remove(&k.name);
                            }
                        }
                    }
                    if c.new.is_some() {
                        self.routes_by_name
                            .entry(k.name.clone())
                            .or_default()
                            .insert(k.namespace.clone());
                    }
                    redo.insert(k.clone());
                }
                Kind::Revision => {}
            }
        }
        if full {
            self.rebuild(inputs);
            return;
        }
        let mut touched = Touched::default();
        for key in &redo {
            self.remove_fragment(key, &mut touched);
            self.add_fragment(inputs, key, &mut touched);
        }
        for svc in &endpoint_services {
            let names: Vec<String> = self
                .clusters_by_service
                .get(svc)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for name in names {
                let Some(c) = self.clusters.get_mut(&name) else {
                    continue;
                };
                if let ClusterKind::Eds { endpoints } = &mut c.ir.kind {
                    let now = ready_endpoints_of(inputs, &self.opts, &c.src);
                    if *endpoints != now {
                        *endpoints = now;
                        touched.assignments.insert(name);
                    }
                }
            }
        }
        self.resolve_slots(inputs, &mut touched);
        self.emit(&touched);
        self.collect_clusters();
    }

    /// Routes whose precedence a VirtualService's labels affect.
    fn vs_routes(&self, vs: &Entry) -> Vec<ObjectKey> {
        let (by_route, by_ingress) = vs_route_labels(vs);
        let mut out = Vec::new();
        let route = |ns: &str, name: &str| ObjectKey {
            kind: Kind::Route,
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        if let Some((name, ns)) = by_route {
            match ns {
                Some(ns) => out.push(route(&ns, &name)),
                None => {
                    for ns in self.routes_by_name.get(&name).into_iter().flatten() {
                        out.push(route(ns, &name));
                    }
                }
            }
        }
        if let Some(name) = by_ingress {
            out.push(route(&vs.object.key().namespace, &name));
        }
        out
    }

    fn index_vs(&mut self, key: &ObjectKey, vs: &Entry) {
        let (by_route, by_ingress) = vs_route_labels(vs);
        if let Some((name, ns)) = by_route {
            self.vs_by_route
                .entry(name)
                .or_default()
                .insert((ns, key.clone()));
        }
        if let Some(name) = by_ingress {
            self.vs_by_ingress
                .entry((key.namespace.clone(), name))
                .or_default()
                .insert(key.clone());
        }
    }

    fn unindex_vs(&mut self, key: &ObjectKey, vs: &Entry) {
        let (by_route, by_ingress) = vs_route_labels(vs);
        if let Some((name, ns)) = by_route {
            if let Some(set) = self.vs_by_route.get_mut(&name) {
                set.remove(&(ns, key.clone()));
                if set.is_empty() {
                    self.vs_by_route.remove(&name);
                }
            }
        }
        if let Some(name) = by_ingress {
            let ik = (key.namespace.clone(), name);
            if let Some(set) = self.vs_by_ingress.get_mut(&ik) {
                set.remove(key);
                if set.is_empty() {
                    self.vs_by_ingress.remove(&ik);
                }
            }
        }
    }

    /// A KIngress or a VirtualService labelled for this Route describes its traffic.
    fn route_has_ingress(&self, inputs: &Inputs, key: &ObjectKey) -> bool {
        inputs
            .get(Kind::KIngress, &key.namespace, &key.name)
            .is_some()
            || self.vs_by_route.get(&key.name).is_some_and(|s| {
                s.iter()
                    .any(|(ns, _)| ns.as_ref().is_none_or(|ns| ns == &key.namespace))
            })
            || self
                .vs_by_ingress
                .contains_key(&(key.namespace.clone(), key.name.clone()))
    }

    fn remove_fragment(&mut self, key: &ObjectKey, touched: &mut Touched) {
        let Some(f) = self.frags.remove(key) else {
            return;
        };
        for slot in f.vhosts.keys() {
            if let Some(set) = self.slots.get_mut(slot) {
                set.remove(&f.order);
                if set.is_empty() {
                    self.slots.remove(slot);
                }
            }
            touched.slots.insert(slot.clone());
        }
        for svc in &f.services {
            if let Some(set) = self.by_service.get_mut(svc) {
                set.remove(key);
                if set.is_empty() {
                    self.by_service.remove(svc);
                }
            }
        }
        for (c, _) in &f.clusters {
            if let Some(e) = self.clusters.get_mut(&c.name) {
                e.frag_refs = e.frag_refs.saturating_sub(1);
                if e.frag_refs == 0 {
                    self.unreferenced.insert(c.name.clone());
                }
            }
        }
        self.failed.remove(key);
    }

    fn add_fragment(&mut self, inputs: &Inputs, key: &ObjectKey, touched: &mut Touched) {
        let Some(entry) = inputs.get(key.kind, &key.namespace, &key.name) else {
            return;
        };
        let wanted = match (&entry.object, key.kind) {
            (Object::VirtualService(_), _) => true,
            (Object::KIngress(i), _) => kingress_class_matches(inputs, &self.opts, &i.metadata),
            (Object::Route(_), _) => !self.route_has_ingress(inputs, key),
            _ => false,
        };
        if !wanted {
            return;
        }
        let Some(f) = translate_one(inputs, &self.opts, &self.ctx.servers, key) else {
            return;
        };
        for slot in f.vhosts.keys() {
            self.slots
                .entry(slot.clone())
                .or_default()
                .insert(f.order.clone());
            touched.slots.insert(slot.clone());
        }
        for svc in &f.services {
            self.by_service
                .entry(svc.clone())
                .or_default()
                .insert(key.clone());
        }
        for (c, src) in &f.clusters {
            match self.clusters.get_mut(&c.name) {
                Some(e) => {
                    e.frag_refs += 1;
                    if e.ir != *c {
                        e.ir = c.clone();
                        e.src = src.clone();
                        touched.clusters.insert(c.name.clone());
                    }
                }
                None => {
                    self.clusters_by_service
                        .entry((src.namespace.clone(), src.service.clone()))
                        .or_default()
                        .insert(c.name.clone());
                    self.clusters.insert(
                        c.name.clone(),
                        ClusterEntry {
                            ir: c.clone(),
                            src: src.clone(),
                            frag_refs: 1,
                            served_refs: 0,
                        },
                    );
                }
            }
        }
        if f.error.is_some() {
            self.failed.insert(key.clone());
        }
        self.frags.insert(key.clone(), f);
    }

    /// Re-decides the owner of each touched slot (the same sequence of claims as a full
    /// translation, so the same errors), and updates the winning virtual hosts and the cluster
    /// reference counts.
    fn resolve_slots(&mut self, inputs: &Inputs, touched: &mut Touched) {
        let slots: Vec<Slot> = touched.slots.iter().cloned().collect();
        for slot in slots {
            let (route, host) = &slot;
            let mut owner: Option<&Fragment> = None;
            let mut errors = Vec::new();
            let error = |key: &ObjectKey, message: String| InputError {
                object: Some(key.clone()),
                origin: inputs
                    .get(key.kind, &key.namespace, &key.name)
                    .and_then(|e| e.origin.clone()),
                message,
            };
            for (_, _, k) in self.slots.get(&slot).into_iter().flatten() {
                let Some(f) = self.frags.get(k) else { continue };
                match owner {
                    None => owner = Some(f),
                    Some(o) => {
                        let (ok, fk) = (&o.order.2, &f.order.2);
                        if f.precedence < o.precedence {
                            errors.push(error(
                                ok,
                                format!("host {host} is also claimed by older {fk}; left out here"),
                            ));
                            owner = Some(f);
                        } else {
                            errors.push(error(
                                fk,
                                format!("host {host} is already claimed by {ok}; left out here"),
                            ));
                        }
                    }
                }
            }
            let new_vh = owner.and_then(|f| f.vhosts.get(&slot)).cloned();
            if errors.is_empty() {
                self.slot_errors.remove(&slot);
            } else {
                self.slot_errors.insert(slot.clone(), errors);
            }
            let old_vh = self.vhosts.get(route).and_then(|m| m.get(host));
            if old_vh == new_vh.as_ref() {
                continue;
            }
            let served = self.ctx.route_ports.contains_key(route);
            if served {
                if let Some(old) = old_vh {
                    for c in envoy::vhost_clusters(old) {
                        if let Some(e) = self.clusters.get_mut(c) {
                            e.served_refs = e.served_refs.saturating_sub(1);
                            if e.served_refs == 0 {
                                touched.clusters.insert(c.to_string());
                            }
                        }
                    }
                }
                if let Some(new) = &new_vh {
                    for c in envoy::vhost_clusters(new) {
                        if let Some(e) = self.clusters.get_mut(c) {
                            e.served_refs += 1;
                            if e.served_refs == 1 {
                                touched.clusters.insert(c.to_string());
                            }
                        }
                    }
                }
                if self.ctx.scoped_route.as_ref() == Some(route) {
                    touched.scoped_hosts.insert(host.clone());
                } else {
                    touched.routes.insert(route.clone());
                }
            }
            if let Some(old) = old_vh {
                let name = envoy::vhost_name(old);
                if let Some(m) = self.encoded.get_mut(route) {
                    m.remove(&name);
                    if m.is_empty() {
                        self.encoded.remove(route);
                    }
                }
            }
            if let Some(vh) = new_vh
                .as_ref()
                .filter(|_| self.ctx.scoped_route.as_ref() != Some(route))
            {
                self.encoded.entry(route.clone()).or_default().insert(
                    envoy::vhost_name(vh),
                    envoy::virtual_host(vh).encode_to_vec(),
                );
            }
            match new_vh {
                Some(vh) => {
                    self.vhosts
                        .entry(route.clone())
                        .or_default()
                        .insert(host.clone(), vh);
                }
                None => {
                    if let Some(m) = self.vhosts.get_mut(route) {
                        m.remove(host);
                        if m.is_empty() {
                            self.vhosts.remove(route);
                        }
                    }
                }
            }
        }
    }

    /// A route configuration from its encoded virtual hosts.
    fn route_resource(&self, route: &str, port: u32) -> Arc<crate::xds::resource::Resource> {
        let vhs = self.encoded.get(route);
        let bytes = envoy::route_config_bytes(
            route,
            port,
            vhs.into_iter()
                .flat_map(|m| m.values())
                .map(Vec::as_slice)
                .collect::<Vec<_>>()
                .into_iter(),
        );
        resource_from_bytes(route, ROUTE, bytes)
    }

    /// Re-encodes what was touched.
    fn emit(&mut self, touched: &Touched) {
        for route in &touched.routes {
            let Some(port) = self.ctx.route_ports.get(route) else {
                continue;
            };
            let r = self.route_resource(route, *port);
            self.res.entry(ROUTE).or_default().insert(route.clone(), r);
        }
        for host in &touched.scoped_hosts {
            self.emit_scoped_host(host);
        }
        for name in touched.clusters.union(&touched.assignments) {
            let served = self
                .clusters
                .get(name)
                .filter(|e| e.served_refs > 0)
                .map(|e| e.ir.clone());
            let cds = self.res.entry(CLUSTER).or_default();
            match &served {
                Some(ir) if touched.clusters.contains(name) => {
                    cds.insert(name.clone(), resource(name, &envoy::cluster_resource(ir)));
                }
                Some(_) => {}
                None => {
                    cds.remove(name);
                }
            }
            let eds = self.res.entry(ENDPOINT).or_default();
            match served.as_ref().and_then(envoy::assignment) {
                Some(cla) => {
                    eds.insert(name.clone(), resource(name, &cla));
                }
                None => {
                    eds.remove(name);
                }
            }
        }
    }

    /// Scoped layout: the scope and RouteConfiguration of `host` on the scoped route
    /// configuration.
    fn emit_scoped_host(&mut self, host: &str) {
        let Some(route) = self.ctx.scoped_route.clone() else {
            return;
        };
        let name = envoy::scoped_name(&route, host);
        let vh = self
            .vhosts
            .get(&route)
            .and_then(|m| m.get(host))
            .filter(|_| envoy::scopable(host));
        match vh {
            Some(vh) => {
                let rc = resource(&name, &envoy::scoped_route_configuration(&route, vh));
                let sc = resource(&name, &envoy::scope(&route, host));
                self.res.entry(ROUTE).or_default().insert(name.clone(), rc);
                self.res.entry(SCOPED_ROUTE).or_default().insert(name, sc);
            }
            None => {
                self.res.entry(ROUTE).or_default().remove(&name);
                self.res.entry(SCOPED_ROUTE).or_default().remove(&name);
            }
        }
    }

    /// Forgets clusters no fragment references any more.
    fn collect_clusters(&mut self) {
        for name in std::mem::take(&mut self.unreferenced) {
            if self.clusters.get(&name).is_none_or(|e| e.frag_refs > 0) {
                continue;
            }
            if let Some(e) = self.clusters.remove(&name) {
                let svc = (e.src.namespace.clone(), e.src.service.clone());
                if let Some(set) = self.clusters_by_service.get_mut(&svc) {
                    set.remove(&name);
                    if set.is_empty() {
                        self.clusters_by_service.remove(&svc);
                    }
                }
            }
        }
    }

    /// Translates everything again (the context changed).
    fn rebuild(&mut self, inputs: &Inputs) {
        self.ctx = context(inputs, &self.opts, &self.labels);
        self.frags.clear();
        self.by_service.clear();
        self.slots.clear();
        self.slot_errors.clear();
        self.vhosts.clear();
        self.encoded.clear();
        self.clusters.clear();
        self.unreferenced.clear();
        self.failed.clear();
        self.clusters_by_service.clear();
        self.vs_by_route.clear();
        self.vs_by_ingress.clear();
        self.routes_by_name.clear();
        for (k, e) in inputs.of_kind(Kind::VirtualService) {
            self.index_vs(&k.clone(), e);
        }
        for (k, _) in inputs.of_kind(Kind::Route) {
            self.routes_by_name
                .entry(k.name.clone())
                .or_default()
                .insert(k.namespace.clone());
        }
        let mut touched = Touched::default();
        let keys: Vec<ObjectKey> = [Kind::VirtualService, Kind::KIngress, Kind::Route]
            .into_iter()
            .flat_map(|kind| inputs.of_kind(kind).map(|(k, _)| k.clone()))
            .collect();
        // Fragments agree on a cluster's content (it depends on the Service, the port number
        // and the endpoints only), short of a Service listing one port number twice.
        for key in &keys {
            self.add_fragment(inputs, key, &mut touched);
        }
        self.resolve_slots(inputs, &mut touched);
        let mut res: BTreeMap<&'static str, ResourceMap> = BTreeMap::new();
        for t in SNAPSHOT_TYPES {
            res.insert(t, ResourceMap::new());
        }
        let put = |res: &mut BTreeMap<&'static str, ResourceMap>, t, name: &str, r| {
            if let Some(m) = res.get_mut(t) {
                m.insert(name.to_string(), r);
            }
        };
        for l in &self.ctx.listeners {
            put(&mut res, LISTENER, &l.name, resource(&l.name, l));
        }
        for s in &self.ctx.secrets {
            put(&mut res, SECRET, &s.name, resource(&s.name, s));
        }
        for (route, port) in &self.ctx.route_ports {
            if self.ctx.scoped_route.as_ref() != Some(route) {
                put(&mut res, ROUTE, route, self.route_resource(route, *port));
                continue;
            }
            for (host, vh) in self.vhosts.get(route).into_iter().flatten() {
                if envoy::scopable(host) {
                    let name = envoy::scoped_name(route, host);
                    let rc = envoy::scoped_route_configuration(route, vh);
                    put(&mut res, ROUTE, &name, resource(&name, &rc));
                    let sc = envoy::scope(route, host);
                    put(&mut res, SCOPED_ROUTE, &name, resource(&name, &sc));
                }
            }
        }
        let blackhole = envoy::blackhole();
        put(
            &mut res,
            CLUSTER,
            &blackhole.name,
            resource(&blackhole.name, &blackhole),
        );
        for (name, e) in &self.clusters {
            if e.served_refs == 0 {
                continue;
            }
            put(
                &mut res,
                CLUSTER,
                name,
                resource(name, &envoy::cluster_resource(&e.ir)),
            );
            if let Some(cla) = envoy::assignment(&e.ir) {
                put(&mut res, ENDPOINT, name, resource(name, &cla));
            }
        }
        self.res = res;
        self.collect_clusters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub as cache;
    use crate::model::parse_object;
    use crate::source::Origin;
    use crate::state::Change;
    use crate::tools::synth::{Form, Synth};
    use serde_json::{json, Value};

    fn labels(istio: &str) -> Labels {
        BTreeMap::from([("istio".to_string(), istio.to_string())])
    }

    fn entry(v: Value, doc: usize) -> Arc<Entry> {
        let object = parse_object(v).ok().flatten().expect("synth objects parse");
        Arc::new(Entry {
            object,
            origin: Some(Origin {
                file: "step".into(),
                doc,
                item: None,
            }),
        })
    }

    /// xorshift: deterministic pseudo-random steps without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// One random change: upserts/deletes of traffic objects, Services, Endpoints, and the rarer
    /// context changes (gateway Service, ConfigMap, KIngress TLS), plus broken objects and
    /// duplicate hosts.
    fn random_change(rng: &mut Rng, synth: &Synth, inputs: &Inputs, step: usize) -> Vec<Change> {
        let n = synth.services + 5;
        let i = rng.next(n);
        let objs = synth.service(i, 90);
        let key_of = |v: &Value| entry(v.clone(), 0).object.key();
        match rng.next(12) {
            // Traffic split changes (sometimes invalid: 95 + 10).
            0 | 1 => {
                let split = [90, 50, 0, 100, 95][rng.next(5)];
                let mut v = synth.service(i, split)[0].clone();
                if split == 95 {
                    if let Some(t) = v.pointer_mut("/status/traffic/1/percent") {
                        *t = json!(10);
                    }
                    if let Some(t) = v.pointer_mut("/spec/rules/0/http/paths/0/splits/1/percent") {
                        *t = json!(10);
                    }
                }
                vec![Change::Upsert(entry(v, step))]
            }
            // Add a whole service, or delete its traffic object.
            2 => objs
                .into_iter()
                .map(|v| Change::Upsert(entry(v, step)))
                .collect(),
            3 => vec![Change::Delete(key_of(&objs[0]))],
            // Endpoints change / disappear.
            4 | 5 => vec![Change::Upsert(entry(
                synth.endpoints(i, rng.next(2), step),
                step,
            ))],
            6 => vec![Change::Delete(key_of(&objs[2]))],
            // A revision Service changes its port (breaks its dependents) or comes back.
            7 => {
                let mut v = objs[1].clone();
                if rng.next(2) == 0 {
                    v["spec"]["ports"][0]["port"] = json!(81);
                }
                vec![Change::Upsert(entry(v, step))]
            }
            // Duplicate hosts: a second object claims service i's hosts.
            8 => {
                let mut v = objs[0].clone();
                v["metadata"]["name"] = json!(format!("dup-{i}"));
                v["metadata"]["creationTimestamp"] = json!(if rng.next(2) == 0 {
                    "2020-01-01T00:00:00Z"
                } else {
                    "2030-01-01T00:00:00Z"
                });
                vec![Change::Upsert(entry(v, step))]
            }
            // A KIngress (of our class or another) next to a Route: precedence.
            9 => {
                let ns = synth.namespace(i);
                let class = if rng.next(2) == 0 {
                    "other"
                } else {
                    crate::model::kingress::DEFAULT_CLASS
                };
                let v = json!({
                    "apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
                    "metadata": {"name": format!("svc-{i}"), "namespace": ns,
                                 "annotations": {"networking.knative.dev/ingress.class": class}},
                    "spec": {"rules": [{"hosts": [format!("k-{i}.example.com")], "visibility": "ExternalIP",
                        "http": {"paths": [{"splits": [{"serviceNamespace": ns,
                            "serviceName": format!("svc-{i}-00001"), "servicePort": 80, "percent": 100}]}]}}]}
                });
                if inputs
                    .get(Kind::KIngress, &ns, &format!("svc-{i}"))
                    .is_some()
                    && rng.next(2) == 0
                {
                    vec![Change::Delete(key_of(&v))]
                } else {
                    vec![Change::Upsert(entry(v, step))]
                }
            }
            // Context: the external gateway Service moves its port, or config-domain changes.
            10 => {
                let mut v = synth.gateway_services()[0].clone();
                v["spec"]["ports"][0]["targetPort"] = json!(8080 + rng.next(3));
                vec![Change::Upsert(entry(v, step))]
            }
            _ => {
                let domain = ["example.com", "example.org"][rng.next(2)];
                let v = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "config-domain", "namespace": "knative-serving"},
                    "data": {domain: ""}});
                vec![Change::Upsert(entry(v, step))]
            }
        }
    }

    fn check(engine: &Engine, inputs: &Inputs, opts: &Options, l: &Labels, what: &str) {
        let full = crate::translate::translate(inputs, opts, l);
        let want = cache::snapshot(7, &full.config);
        let got = engine.snapshot(7);
        if got != want {
            for (t, m) in &want.resources {
                let g = got.resources.get(t).cloned().unwrap_or_default();
                for (n, r) in m {
                    if g.get(n).map(|x| &x.version) != Some(&r.version) {
                        panic!("{what}: {t} {n} differs (or is missing) from a full translation");
                    }
                }
                for n in g.keys() {
                    assert!(m.contains_key(n), "{what}: {t} {n} should not be there");
                }
            }
            panic!("{what}: snapshots differ");
        }
        assert_eq!(engine.errors(), full.errors, "{what}: errors");
    }

    pub(super) fn scoped() -> Options {
        Options {
            route_layout: crate::translate::RouteLayout::Scoped,
            ..Options::default()
        }
    }

    #[test]
    fn incremental_changes_give_the_snapshot_of_a_full_translation() {
        for (form, seed, opts) in [
            (Form::Route, 1u64, Options::default()),
            (Form::Kingress, 2, Options::default()),
            (Form::Virtualservice, 3, Options::default()),
            (Form::Route, 4, Options::default()),
            (Form::Route, 5, scoped()),
            (Form::Kingress, 6, scoped()),
            (Form::Virtualservice, 7, scoped()),
        ] {
            let synth = Synth::new(12, form);
            let mut inputs = synth.inputs();
            let gws = [labels("ingressgateway"), labels("cluster-local-gateway")];
            let mut engines: Vec<Engine> =
                gws.iter().map(|l| Engine::new(&inputs, &opts, l)).collect();
            for (e, l) in engines.iter().zip(&gws) {
                check(e, &inputs, &opts, l, "initial");
            }
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for step in 1..=150 {
                let changes = random_change(&mut rng, &synth, &inputs, step);
                let what = format!("{form:?} {:?} step {step}: {changes:?}", opts.route_layout);
                let mut oc = Vec::new();
                for c in changes {
                    let key = match &c {
                        Change::Upsert(e) => e.object.key(),
                        Change::Delete(k) => k.clone(),
                    };
                    let old = inputs
                        .get(key.kind, &key.namespace, &key.name)
                        .map(|e| Arc::new(e.clone()));
                    inputs.apply([c.clone()]);
                    let new = inputs
                        .get(key.kind, &key.namespace, &key.name)
                        .map(|e| Arc::new(e.clone()));
                    oc.push(ObjectChange { key, old, new });
                }
                for (e, l) in engines.iter_mut().zip(&gws) {
                    e.apply(&inputs, &oc);
                    check(e, &inputs, &opts, l, &what);
                }
            }
        }
    }

    #[test]
    fn an_endpoint_change_touches_only_its_assignment() {
        let synth = Synth::new(50, Form::Route);
        let mut inputs = synth.inputs();
        let l = labels("ingressgateway");
        let mut engine = Engine::new(&inputs, &Options::default(), &l);
        let before = engine.snapshot(1);
        let e = entry(synth.endpoints(3, 0, 1), 1);
        let key = e.object.key();
        let old = inputs
            .get(key.kind, &key.namespace, &key.name)
            .map(|e| Arc::new(e.clone()));
        inputs.apply([Change::Upsert(e.clone())]);
        engine.apply(
            &inputs,
            &[ObjectChange {
                key,
                old,
                new: Some(e),
            }],
        );
        let after = engine.snapshot(2);
        let mut changed = Vec::new();
        for (t, m) in &after.resources {
            for (n, r) in m {
                if before.resources[t].get(n).map(|x| &x.version) != Some(&r.version) {
                    changed.push(n.clone());
                }
            }
        }
        assert_eq!(changed, ["outbound|80||svc-3-00001.ns-0.svc.cluster.local"]);
    }
}

#[cfg(test)]
mod golden_inputs {
    use super::*;
    use crate::hub as cache;
    use crate::state::Change;
    use std::path::Path;

    /// Every golden case's inputs, fed object by object (then removed object by object) into an
    /// engine per gateway: after each step the engine holds what a full translation gives.
    #[test]
    fn golden_inputs_fed_one_object_at_a_time_match_full_translation() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let mut cases = 0;
        for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let input = dir.path().join("input");
            if !input.is_dir() {
                continue;
            }
            cases += 1;
            let (all, _) = crate::pipeline::load(&input);
            for opts in [Options::default(), super::tests::scoped()] {
                let mut labels: Vec<Labels> = crate::translate::gateways(&all, &opts)
                    .into_iter()
                    .map(|g| g.spec.selector)
                    .collect();
                labels.dedup();
                let entries: Vec<Arc<Entry>> = all.entries().map(|(_, e)| e.clone()).collect();
                let mut inputs = Inputs::default();
                let mut engines: Vec<Engine> = labels
                    .iter()
                    .map(|l| Engine::new(&inputs, &opts, l))
                    .collect();
                let steps = entries
                    .iter()
                    .map(|e| Change::Upsert(e.clone()))
                    .chain(entries.iter().rev().map(|e| Change::Delete(e.object.key())));
                for (n, c) in steps.enumerate() {
                    let key = match &c {
                        Change::Upsert(e) => e.object.key(),
                        Change::Delete(k) => k.clone(),
                    };
                    let old = inputs.entry(&key).cloned();
                    inputs.apply([c]);
                    let new = inputs.entry(&key).cloned();
                    let oc = [ObjectChange { key, old, new }];
                    for (e, l) in engines.iter_mut().zip(&labels) {
                        e.apply(&inputs, &oc);
                        let full = crate::translate::translate(&inputs, &opts, l);
                        assert_eq!(
                            e.snapshot(1),
                            cache::snapshot(1, &full.config),
                            "{}: step {n}, labels {l:?}",
                            dir.path().display()
                        );
                        assert_eq!(
                            e.errors(),
                            full.errors,
                            "{}: step {n}",
                            dir.path().display()
                        );
                    }
                }
            }
        }
        assert!(cases >= 10, "golden cases found: {cases}");
    }
}
