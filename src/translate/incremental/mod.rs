//! Incremental translation for one proxy: the same output as [`super::translate`], with work
//! proportional to the change.
//!
//! The [`Engine`] keeps, per proxy label set:
//! - the proxy's gateway `Context` (servers, listeners, secrets, served route configurations):
//!   rebuilt from scratch when a Gateway, a ConfigMap, a Secret, a gateway Service (one whose
//!   selector picks this proxy) or a KIngress with TLS entries changes: those are rare;
//! - one `Fragment` per VirtualService / KIngress / Route: its virtual hosts, its clusters and
//!   the Services it read, so that a Service change re-translates only its dependents;
//! - per (route configuration, host) slot, the objects claiming it, so the duplicate-host rule
//!   (oldest object wins, the others are reported; HTTPRoutes merge) is re-decided only for
//!   touched slots, by the same `claims::resolve` the full translation uses;
//! - the clusters with reference counts (from fragments, and from winning virtual hosts on
//!   served route configurations), indexed by Service, so an endpoint change re-reads only the
//!   endpoints of that Service's clusters;
//! - the resources as persistent maps: a change re-encodes only what it touched, through the
//!   same assembly steps (`assemble::Sink`) a rebuild walks.
//!
//! The Istio-shaped layout keeps every virtual host of a port in one RouteConfiguration
//! (`http.80`): a change to a virtual host re-encodes that whole RouteConfiguration. In the
//! scoped layout ([`super::RouteLayout::Scoped`]) a changed host re-encodes only its own scope
//! and RouteConfiguration (`http.80/<host>`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::diag::InputError;
use crate::model::{HashMap, Kind, Object, ObjectKey};
use crate::parallel::{self, Cores};
use crate::state::{Entry, Inputs, SERVICE_NAME_LABEL};
use crate::xds::resource::{ResourceMap, Snapshot};
use crate::xds::resource::{CLUSTER, ENDPOINT, ROUTE, SCOPED_ROUTE, SNAPSHOT_TYPES};

use super::assemble::{self, Sink, VirtualHosts};
use super::backend::{ready_endpoints_of, SharedCluster, SvcKey};
use super::claims::{Order, Slot};
use super::envoy;
pub use super::fragment::Shared;
use super::fragment::{self, translate_shared, Fragment, FRAGMENT_KINDS, PIECE};
use super::gateway::{context, is_subset, Context};
use super::ir::ClusterKind;
use super::Options;

type Labels = BTreeMap<String, String>;

/// One change as the engine sees it: the key, the entry before and the entry after.
#[derive(Debug, Clone)]
pub struct ObjectChange {
    pub key: ObjectKey,
    pub old: Option<Arc<Entry>>,
    pub new: Option<Arc<Entry>>,
}

/// A Gateway API object (or Namespace) of which only what translation never reads changed:
/// its status (our own status writes), resourceVersion, managedFields. Translation reads
/// their spec, labels, annotations and creation time (Namespaces: labels), and where they were
/// read.
fn only_status_changed(c: &ObjectChange) -> bool {
    use crate::model::Object;
    let (Some(old), Some(new)) = (&c.old, &c.new) else {
        return false;
    };
    // Errors name where an object was read.
    if old.origin != new.origin {
        return false;
    }
    fn meta_same(
        a: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        b: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> bool {
        a.labels == b.labels
            && a.annotations == b.annotations
            && a.creation_timestamp == b.creation_timestamp
    }
    match (&old.object, &new.object) {
        (Object::GatewayClass(a), Object::GatewayClass(b)) => {
            a.spec == b.spec && meta_same(&a.metadata, &b.metadata)
        }
        (Object::K8sGateway(a), Object::K8sGateway(b)) => {
            a.spec == b.spec && meta_same(&a.metadata, &b.metadata)
        }
        (Object::HttpRoute(a), Object::HttpRoute(b)) => {
            a.spec == b.spec && meta_same(&a.metadata, &b.metadata)
        }
        (Object::Namespace(a), Object::Namespace(b)) => a.metadata.labels == b.metadata.labels,
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct ClusterEntry {
    /// The fragment's (no copy), until its endpoints change here.
    cluster: SharedCluster,
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
    // Looked up by key only (never iterated where order shows): hash maps, as a B-tree of
    // String keys spends most of its lookups comparing the common prefixes of names.
    frags: HashMap<ObjectKey, Fragment>,
    by_service: HashMap<SvcKey, SmallSet<ObjectKey>>,
    slots: HashMap<Slot, SmallSet<Order>>,
    slot_errors: BTreeMap<Slot, Vec<InputError>>,
    /// The objects whose routes each slot's winning virtual host holds (several HTTPRoutes
    /// share one), kept only where that is not the slot's one claimant (see
    /// [`Engine::owners_of`]): at 10,000 services ~80,000 slots, nearly all held by one object.
    owners: HashMap<Slot, Vec<ObjectKey>>,
    /// Winning virtual hosts: route configuration -> host -> virtual host.
    vhosts: VirtualHosts,
    /// The same, by name (route configuration -> virtual host name): where each one's bytes are
    /// in the served RouteConfiguration, or the virtual host to encode at the next splice.
    encoded: BTreeMap<String, BTreeMap<String, sink::VhostBytes>>,
    /// Small entries: the cluster itself is shared with the fragments (and the other engines).
    clusters: HashMap<String, ClusterEntry>,
    /// Clusters whose fragment references dropped to zero during the current change.
    unreferenced: BTreeSet<String>,
    /// Objects whose translation failed (their fragment's error).
    failed: BTreeSet<ObjectKey>,
    clusters_by_service: HashMap<SvcKey, SmallSet<String>>,
    /// VirtualServices labelled for a Route: route name -> (routeNamespace label, VS key).
    vs_by_route: BTreeMap<String, BTreeSet<(Option<String>, ObjectKey)>>,
    /// VirtualServices labelled for a KIngress: (ns, ingress name) -> VS keys.
    vs_by_ingress: BTreeMap<SvcKey, BTreeSet<ObjectKey>>,
    /// Route name -> namespaces that have a Route of that name.
    routes_by_name: BTreeMap<String, BTreeSet<String>>,
    res: BTreeMap<&'static str, ResourceMap>,
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
        Engine::new_shared(&Shared::new(inputs, opts), labels)
    }

    /// [`Engine::new`] for the inputs and options of `shared`, taking the translations no proxy
    /// changes from it (computing and keeping there those it lacks).
    pub fn new_shared(shared: &Shared<'_>, labels: &Labels) -> Engine {
        let mut e = Engine {
            opts: shared.opts.clone(),
            labels: labels.clone(),
            ctx: Context::default(),
            frags: HashMap::default(),
            by_service: HashMap::default(),
            slots: HashMap::default(),
            slot_errors: BTreeMap::new(),
            owners: HashMap::default(),
            vhosts: BTreeMap::new(),
            encoded: BTreeMap::new(),
            clusters: HashMap::default(),
            unreferenced: BTreeSet::new(),
            failed: BTreeSet::new(),
            clusters_by_service: HashMap::default(),
            vs_by_route: BTreeMap::new(),
            vs_by_ingress: BTreeMap::new(),
            routes_by_name: BTreeMap::new(),
            res: BTreeMap::new(),
        };
        e.rebuild(shared);
        e
    }

    /// The translation settings it was built with.
    pub fn options(&self) -> &Options {
        &self.opts
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
            wildcard_clusters: super::wildcard_clusters(self.ctx.on_demand),
        }
    }

    /// Every translation error, sorted.
    pub fn errors(&self) -> Vec<InputError> {
        let mut out: Vec<InputError> = self.ctx.errors.clone();
        out.extend(
            self.failed
                .iter()
                .filter_map(|k| self.frags.get(k).and_then(|f| f.error.as_deref().cloned())),
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
            out.extend(f.error.as_deref().cloned());
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

    /// The objects whose translation produced these resources of this type (the names of a
    /// response Envoy rejected): the owners of the winning virtual hosts of a route
    /// configuration or of one scoped host (`http.80/<host>`, the name of its scope and its
    /// RouteConfiguration), and the objects whose fragments reference a cluster (or its load
    /// assignment). Listeners and secrets come from the gateway context: none.
    pub fn contributors(&self, type_url: &str, names: &[String]) -> BTreeSet<ObjectKey> {
        let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut out = BTreeSet::new();
        for (key, f) in &self.frags {
            let hit = match type_url {
                ROUTE | SCOPED_ROUTE => f.vhosts.keys().any(|slot| {
                    let (route, host) = slot;
                    let named = names.contains(&**route)
                        || names.contains(envoy::scoped_name(route, host).as_str());
                    named && self.owners_of(slot).contains(&key)
                }),
                CLUSTER | ENDPOINT => f.clusters.iter().any(|c| names.contains(c.0.name.as_str())),
                _ => false,
            };
            if hit {
                out.insert(key.clone());
            }
        }
        out
    }

    /// The objects whose routes the winning virtual host of `slot` holds: those recorded, else
    /// (a slot won by its one claimant, the common case, not recorded) that claimant, else none.
    fn owners_of(&self, slot: &Slot) -> Vec<&ObjectKey> {
        if let Some(owners) = self.owners.get(slot) {
            return owners.iter().collect();
        }
        let won = self
            .vhosts
            .get(&slot.0)
            .is_some_and(|m| m.contains_key(&slot.1));
        match self.slots.get(slot).map(|set| set.as_slice()) {
            Some([(_, _, only)]) if won => vec![only],
            _ => Vec::new(),
        }
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
        let opts = self.opts.clone();
        self.apply_shared(&Shared::new(inputs, &opts), changes);
    }

    /// [`Engine::apply`] with the inputs after the changes in `shared` (made with this engine's
    /// options), taking the translations no proxy changes from it: the engines of several
    /// proxies applying one change prepare each changed object once.
    pub fn apply_shared(&mut self, shared: &Shared<'_>, changes: &[ObjectChange]) {
        debug_assert!(*shared.opts == self.opts, "a Shared of other options");
        let inputs = shared.inputs;
        let mut full = false;
        let mut redo: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut endpoint_services: BTreeSet<SvcKey> = BTreeSet::new();
        for c in changes {
            let entries = || c.old.iter().chain(c.new.iter());
            let k = &c.key;
            if only_status_changed(c) {
                continue;
            }
            match k.kind {
                Kind::Gateway
                | Kind::ConfigMap
                | Kind::Secret
                | Kind::GatewayClass
                | Kind::K8sGateway
                | Kind::ReferenceGrant => full = true,
                Kind::HttpRoute => {
                    redo.insert(k.clone());
                }
                // Its labels decide where the HTTPRoutes in it may attach (`allowedRoutes`
                // selectors); nothing else reads a Namespace.
                Kind::Namespace => {
                    redo.extend(
                        inputs
                            .of_kind(Kind::HttpRoute)
                            .filter(|(r, _)| r.namespace == k.name)
                            .map(|(r, _)| r.clone()),
                    );
                }
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
            self.rebuild(shared);
            return;
        }
        let mut touched = Touched::default();
        for key in &redo {
            self.remove_fragment(key, &mut touched);
            self.add_fragment(shared, key, &mut touched);
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
                let (ir, src) = &*c.cluster;
                let ClusterKind::Eds { endpoints } = &ir.kind else {
                    continue;
                };
                let now = ready_endpoints_of(inputs, src);
                if *endpoints != now {
                    // The fragments keep the cluster they were translated with.
                    if let ClusterKind::Eds { endpoints } =
                        &mut Arc::make_mut(&mut c.cluster).0.kind
                    {
                        *endpoints = now;
                    }
                    touched.assignments.insert(name);
                }
            }
        }
        self.resolve_slots(inputs, &shared.cores, &mut touched);
        self.emit(&touched, &shared.cores);
        self.collect_clusters();
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
            touched.slot(slot);
        }
        for svc in f.services.iter() {
            if let Some(set) = self.by_service.get_mut(svc) {
                set.remove(key);
                if set.is_empty() {
                    self.by_service.remove(svc);
                }
            }
        }
        for (c, _) in f.clusters.iter().map(|c| &**c) {
            if let Some(e) = self.clusters.get_mut(&c.name) {
                e.frag_refs = e.frag_refs.saturating_sub(1);
                if e.frag_refs == 0 {
                    self.unreferenced.insert(c.name.clone());
                }
            }
        }
        self.failed.remove(key);
    }

    fn add_fragment(&mut self, shared: &Shared<'_>, key: &ObjectKey, touched: &mut Touched) {
        if let Some(f) = self.fragment_of(shared, key) {
            self.index_fragment(key, f, touched);
        }
    }

    /// The fragment of `key`, if this engine translates it.
    fn fragment_of(&self, shared: &Shared<'_>, key: &ObjectKey) -> Option<Fragment> {
        let inputs = shared.inputs;
        let entry = inputs.get(key.kind, &key.namespace, &key.name)?;
        let wanted = fragment::is_translated(inputs, &self.opts, key, &entry.object, || {
            self.describing(inputs, key)
        });
        if !wanted {
            return None;
        }
        translate_shared(shared, &self.ctx, key)
    }

    /// Takes `key`'s fragment into the indexes.
    fn index_fragment(&mut self, key: &ObjectKey, f: Fragment, touched: &mut Touched) {
        for slot in f.vhosts.keys() {
            self.slots
                .entry(slot.clone())
                .or_default()
                .insert(f.order.clone());
            touched.slot(slot);
        }
        for svc in f.services.iter() {
            self.by_service
                .entry(svc.clone())
                .or_default()
                .insert(key.clone());
        }
        for shared in f.clusters.iter() {
            let (c, src) = &**shared;
            match self.clusters.get_mut(&c.name) {
                Some(e) => {
                    e.frag_refs += 1;
                    if !Arc::ptr_eq(&e.cluster, shared) && e.cluster.0 != *c {
                        e.cluster = shared.clone();
                        touched.cluster(&c.name);
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
                            cluster: shared.clone(),
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

    /// Re-encodes what was touched, through the same [`Sink`] steps as a rebuild.
    fn emit(&mut self, touched: &Touched, cores: &Cores) {
        let mut sink = MapSink {
            res: &mut self.res,
            encoded: &mut self.encoded,
            cores,
        };
        for route in &touched.routes {
            if let Some(port) = self.ctx.route_ports.get(route) {
                sink.route_configuration(route, *port, None);
            }
        }
        if let Some(route) = &self.ctx.scoped_route {
            for host in &touched.scoped_hosts {
                let vh = self
                    .vhosts
                    .get(route.as_str())
                    .and_then(|m| m.get(host.as_str()))
                    .filter(|_| envoy::scopable(host));
                match vh {
                    Some(vh) => sink.scoped_host(route, vh, self.ctx.on_demand),
                    None => sink.remove_scoped_host(route, host),
                }
            }
        }
        for name in touched.clusters.union(&touched.assignments) {
            let served = self.clusters.get(name).filter(|e| e.served_refs > 0);
            match served {
                Some(e) if touched.clusters.contains(name) => sink.cluster(&e.cluster.0),
                Some(e) => sink.assignment(&e.cluster.0),
                None => sink.remove_cluster(name),
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
                let src = &e.cluster.1;
                let svc = (src.namespace.clone(), src.service.clone());
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
    fn rebuild(&mut self, shared: &Shared<'_>) {
        let inputs = shared.inputs;
        self.ctx = context(inputs, &self.opts, &self.labels);
        self.frags.clear();
        self.by_service.clear();
        self.slots.clear();
        self.slot_errors.clear();
        self.owners.clear();
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
        // Everything is resolved and encoded below: nothing to record.
        let mut touched = Touched::for_rebuild();
        let keys: Vec<ObjectKey> = FRAGMENT_KINDS
            .into_iter()
            .flat_map(|kind| inputs.of_kind(kind).map(|(k, _)| k.clone()))
            .collect();
        // Fragments agree on a cluster's content (it depends on the Service, the port number
        // and the endpoints only), short of a Service listing one port number twice. All
        // fragments first, so that the indexes are sized once instead of grown step by step.
        // On the free cores (a fragment is a function of the inputs and the context).
        let this = &*self;
        let frags: Vec<(&ObjectKey, Fragment)> =
            parallel::pieces(&shared.cores, &keys, PIECE, |part| {
                part.iter()
                    .filter_map(|k| Some((k, this.fragment_of(shared, k)?)))
                    .collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect();
        let (slots, services, clusters) = frags.iter().fold((0, 0, 0), |(s, v, c), (_, f)| {
            (
                s + f.vhosts.len(),
                v + f.services.len(),
                c + f.clusters.len(),
            )
        });
        self.frags.reserve(frags.len());
        self.slots.reserve(slots);
        self.by_service.reserve(services);
        self.clusters_by_service.reserve(services);
        self.clusters.reserve(clusters);
        for (key, f) in frags {
            self.index_fragment(key, f, &mut touched);
        }
        self.resolve_slots(inputs, &shared.cores, &mut touched);
        let mut res: BTreeMap<&'static str, ResourceMap> = BTreeMap::new();
        for t in SNAPSHOT_TYPES {
            res.insert(t, ResourceMap::new());
        }
        let mut sink = MapSink {
            res: &mut res,
            encoded: &mut self.encoded,
            cores: &shared.cores,
        };
        let served = self
            .clusters
            .values()
            .filter(|e| e.served_refs > 0)
            .map(|e| &e.cluster.0);
        assemble::assemble(&self.ctx, &self.vhosts, served, &mut sink);
        self.res = res;
        self.collect_clusters();
    }
}

mod precedence;
mod sink;
mod slots;
mod small_set;
#[cfg(test)]
mod tests;
mod touched;

use sink::MapSink;
use small_set::SmallSet;
use touched::Touched;

/// Slots whose claims are made before any of them is applied (a batch held at once).
const CLAIM_BATCH: usize = 16 * PIECE;
