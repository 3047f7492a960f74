//! The per-object stage: one VirtualService, KIngress or Route translated on its own against a
//! proxy's servers, into a [`Fragment`]: its virtual hosts per (route configuration, host)
//! slot, the clusters they need, the Services it read, or the error that left it out. The full
//! [`super::translate`] and the incremental engine both build fragments this way and hand them
//! to [`super::claims`] and [`super::assemble`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::model::diag::InputError;
use crate::model::{HashMap, Kind, Object, ObjectKey};
use crate::parallel::{self, Cores};
use crate::state::{Entry, Inputs};

use super::backend::{Backends, SharedCluster, SvcKey};
use super::claims::{self, Name, Order, Precedence, Slot};
use super::gateway::{Context, ServerCtx};
use super::ir::{RouteIr, VirtualHostIr};
use super::{kingress, ownership, route, virtual_service, Options};

/// What every object of one proxy is translated against (read-only).
pub(crate) struct ObjectCx<'a> {
    pub inputs: &'a Inputs,
    pub opts: &'a Options,
    pub servers: &'a [ServerCtx],
    /// The gateways (`ns/name`) serving ExternalIP and ClusterLocal rules, chosen once per
    /// context (`Options::external_gateway`, `Options::local_gateway`).
    pub external: &'a str,
    pub local: &'a str,
}

impl ObjectCx<'_> {
    /// The plain-HTTP (or HTTPS) servers of one gateway.
    pub fn gateway_servers(&self, gateway: &str, https: bool) -> Vec<&ServerCtx> {
        self.servers
            .iter()
            .filter(|s| s.gateway == gateway && s.https == https)
            .collect()
    }
}

/// A virtual host's worth of routes produced by one object, before it is placed.
pub(crate) struct Placement {
    pub route_name: Name,
    pub host: String,
    pub port: u32,
    /// Shared by the placements of one rule's hosts (cloning it copies no route).
    pub routes: Arc<Vec<RouteIr>>,
    pub require_tls: bool,
}

/// One object translated on its own: its virtual hosts merged per (route configuration, host),
/// the clusters it references, the Services it read, or the error that left it out.
#[derive(Debug, Clone)]
pub(crate) struct Fragment {
    pub vhosts: BTreeMap<Slot, Arc<VirtualHostIr>>,
    /// Shared by the engines of every proxy (see [`Shared`]).
    pub clusters: Arc<[SharedCluster]>,
    /// Sorted, without repeats.
    pub services: Arc<[SvcKey]>,
    /// Boxed: a fragment is held inline in the engine's hash table, and almost none fail.
    pub error: Option<Box<InputError>>,
    /// Full translation order: VirtualServices, KIngresses, Routes, each oldest first.
    pub order: Order,
    /// Duplicate-host precedence (smallest wins).
    pub precedence: Precedence,
}

impl Fragment {
    pub fn key(&self) -> &ObjectKey {
        &self.order.2
    }
}

/// The part of a KIngress's or a Route's translation no proxy changes: its rules and routes
/// (or the error that leaves it out), the clusters they need and the Services it read.
#[derive(Debug)]
pub(crate) struct Prepared {
    rules: Result<kingress::Rules, InputError>,
    clusters: Arc<[SharedCluster]>,
    services: Arc<[SvcKey]>,
}

/// [`Prepared`] for a KIngress or Route entry; `None` for other kinds.
fn prepare(inputs: &Inputs, opts: &Options, key: &ObjectKey, entry: &Entry) -> Option<Prepared> {
    let mut b = Backends::new(inputs, opts);
    let rules = match &entry.object {
        Object::KIngress(ing) => kingress::rules(&mut b, key, &ing.spec, false),
        Object::Route(r) => route::rules(inputs, opts, &mut b, key, r),
        _ => return None,
    };
    let (clusters, services) = b.into_parts();
    Some(match rules {
        Ok(rules) => Prepared {
            rules: Ok(rules),
            clusters: clusters.into(),
            services: services.into(),
        },
        // An invalid object places nothing and needs no cluster.
        Err(e) => Prepared {
            rules: Err(e.against(inputs, key)),
            clusters: Arc::new([]),
            services: services.into(),
        },
    })
}

/// The proxy-independent translations ([`Prepared`]) of the KIngresses and Routes of one set of
/// inputs, each computed once and shared by every proxy's engine translating those inputs (the
/// gateways' first load; each change, applied to one engine after the other). Holds the inputs
/// and options, so an engine cannot be given translations of other inputs.
pub struct Shared<'a> {
    pub(crate) inputs: &'a Inputs,
    pub(crate) opts: &'a Options,
    prepared: Mutex<HashMap<ObjectKey, Arc<Prepared>>>,
    /// The cores the engines' large steps may share ([`parallel::run`]); the calling thread
    /// occupies one.
    pub(crate) cores: Cores,
}

/// Objects per piece of work handed to [`parallel::run`] (large enough that a piece costs far
/// more than taking it).
pub(crate) const PIECE: usize = 512;

impl<'a> Shared<'a> {
    pub fn new(inputs: &'a Inputs, opts: &'a Options) -> Shared<'a> {
        Shared::with_cores(inputs, opts, Cores::with_caller())
    }

    /// [`Shared::new`] with these cores (the caller should occupy one).
    pub(crate) fn with_cores(inputs: &'a Inputs, opts: &'a Options, cores: Cores) -> Shared<'a> {
        Shared {
            inputs,
            opts,
            prepared: Mutex::new(HashMap::default()),
            cores,
        }
    }

    /// Prepares every KIngress of our class and every Route without a KIngress (the objects
    /// the engines of a first load translate through [`Prepared`]), on every free core, so
    /// engines built in parallel afterwards do not prepare the same objects at the same time.
    /// A superset ([`is_translated`] asked of no VirtualService): a Route that a VirtualService
    /// describes is prepared too, and unused (finding those as [`translated_keys`] does scans
    /// every VirtualService per Route; the engines use their own index of them).
    pub fn prepare_all(&self) {
        let keys: Vec<(&ObjectKey, &Entry)> = self
            .inputs
            .of_kind(Kind::KIngress)
            .chain(self.inputs.of_kind(Kind::Route))
            .filter(|(k, e)| is_translated(self.inputs, self.opts, k, &e.object, std::iter::empty))
            .collect();
        let done = parallel::pieces(&self.cores, &keys, PIECE, |part| {
            part.iter()
                .filter_map(|(k, e)| {
                    let p = prepare(self.inputs, self.opts, k, e)?;
                    Some(((*k).clone(), Arc::new(p)))
                })
                .collect::<Vec<_>>()
        });
        let mut map = self.lock();
        for (k, p) in done.into_iter().flatten() {
            map.insert(k, p);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Arc<Prepared>>> {
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The object's [`Prepared`], computed now if no engine needed it yet.
    fn get(&self, key: &ObjectKey, entry: &Entry) -> Option<Arc<Prepared>> {
        if let Some(p) = self.lock().get(key) {
            return Some(p.clone());
        }
        let p = Arc::new(prepare(self.inputs, self.opts, key, entry)?);
        Some(self.lock().entry(key.clone()).or_insert(p).clone())
    }
}

/// Translates one VirtualService, KIngress (any class: the caller checks) or Route (the caller
/// checks it is not shadowed) on its own, against a proxy's servers. `None` for other kinds and
/// for keys not in the inputs.
pub(crate) fn translate_one(
    inputs: &Inputs,
    opts: &Options,
    ctx: &Context,
    key: &ObjectKey,
) -> Option<Fragment> {
    place_one(inputs, opts, ctx, key, None)
}

/// [`translate_one`] for the inputs of `shared`, taking KIngresses and Routes from it.
pub(crate) fn translate_shared(
    shared: &Shared<'_>,
    ctx: &Context,
    key: &ObjectKey,
) -> Option<Fragment> {
    place_one(shared.inputs, shared.opts, ctx, key, Some(shared))
}

fn place_one(
    inputs: &Inputs,
    opts: &Options,
    ctx: &Context,
    key: &ObjectKey,
    shared: Option<&Shared<'_>>,
) -> Option<Fragment> {
    let entry = inputs.get(key.kind, &key.namespace, &key.name)?;
    let cx = ObjectCx {
        inputs,
        opts,
        servers: &ctx.servers,
        external: &ctx.external,
        local: &ctx.local,
    };
    let meta = entry.object.metadata();
    let fragment = |vhosts, clusters, services, error: Option<InputError>| {
        let (order, precedence) = claims::order_and_precedence(key, meta);
        Fragment {
            vhosts,
            clusters,
            services,
            error: error.map(Box::new),
            order,
            precedence,
        }
    };
    let (result, clusters, services) = match &entry.object {
        Object::KIngress(_) | Object::Route(_) => {
            let prepared = match shared {
                Some(shared) => shared.get(key, entry)?,
                None => Arc::new(prepare(inputs, opts, key, entry)?),
            };
            let rules = match &prepared.rules {
                Ok(rules) => rules,
                Err(e) => {
                    return Some(fragment(
                        BTreeMap::new(),
                        prepared.clusters.clone(),
                        prepared.services.clone(),
                        Some(e.clone()),
                    ))
                }
            };
            let placed = kingress::place(&cx, rules);
            (
                Ok(placed),
                prepared.clusters.clone(),
                prepared.services.clone(),
            )
        }
        Object::VirtualService(_) | Object::HttpRoute(_) => {
            let mut b = Backends::new(inputs, opts);
            let result = match &entry.object {
                Object::VirtualService(vs) => {
                    virtual_service::placements(&cx, &mut b, key, &vs.spec)
                }
                Object::HttpRoute(r) => {
                    super::gateway_api::http_route::placements(&cx, &mut b, key, r)
                }
                _ => return None,
            };
            let (clusters, services) = b.into_parts();
            (result, clusters.into(), services.into())
        }
        _ => return None,
    };
    // What Envoy would reject leaves the object out like any other error (`check`).
    let result = result.map(merge).and_then(|vhosts| {
        // A rule's hosts share one list of routes: checked once (each host still is).
        let mut checked = Vec::new();
        vhosts
            .values()
            .try_for_each(|vh| super::check::virtual_host(vh, &mut checked))
            .map(|()| vhosts)
    });
    Some(match result {
        Ok(vhosts) => fragment(vhosts, clusters, services, None),
        // An invalid object places nothing and needs no cluster.
        Err(e) => fragment(
            BTreeMap::new(),
            Arc::new([]),
            services,
            Some(e.against(inputs, key)),
        ),
    })
}

/// An object's placements merged per slot (several rules for one host append their routes).
fn merge(placements: Vec<Placement>) -> BTreeMap<Slot, Arc<VirtualHostIr>> {
    let mut vhosts: BTreeMap<Slot, VirtualHostIr> = BTreeMap::new();
    for mut p in placements {
        // Envoy compares domains without case and rejects a route configuration with two
        // that differ only in case: hosts are claimed (and served) in lower case.
        p.host.make_ascii_lowercase();
        // One copy of the host, shared by the slot, the virtual host and the engine's indexes.
        let host = Name::from(p.host);
        match vhosts.entry((p.route_name, host.clone())) {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let vh = o.get_mut();
                Arc::make_mut(&mut vh.routes).extend(p.routes.iter().cloned());
                vh.require_tls |= p.require_tls;
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(VirtualHostIr {
                    host,
                    port: p.port,
                    routes: p.routes,
                    require_tls: p.require_tls,
                });
            }
        }
    }
    vhosts.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

/// The kinds translated one object per fragment, in full translation order.
pub(crate) const FRAGMENT_KINDS: [Kind; 4] = [
    Kind::VirtualService,
    Kind::HttpRoute,
    Kind::KIngress,
    Kind::Route,
];

/// Whether a translation for a proxy translates `object` (at `key`) itself: every
/// VirtualService and HTTPRoute, the KIngresses of our class, and the Routes that no KIngress
/// and no VirtualService shadows ([`claims::route_is_shadowed`]). `describing` gives the
/// VirtualServices (namespace, labels) that may describe a Route: every VirtualService (a full
/// translation, [`translated_keys`]), those the engine's index names (`Engine::add_fragment`),
/// or none (a superset: [`Shared::prepare_all`]). The one place this rule is written.
pub(crate) fn is_translated<'v, I>(
    inputs: &Inputs,
    opts: &Options,
    key: &ObjectKey,
    object: &Object,
    describing: impl FnOnce() -> I,
) -> bool
where
    I: Iterator<Item = (&'v str, claims::RouteLabels)>,
{
    match object {
        Object::VirtualService(_) | Object::HttpRoute(_) => true,
        Object::KIngress(i) => ownership::is_ours(inputs, &i.metadata, &opts.ingress_class),
        Object::Route(_) => !claims::route_is_shadowed(
            inputs
                .get(Kind::KIngress, &key.namespace, &key.name)
                .is_some(),
            describing(),
            key,
        ),
        _ => false,
    }
}

/// The objects a full translation translates for a proxy ([`is_translated`], asked of every
/// VirtualService).
pub(crate) fn translated_keys<'a>(
    inputs: &'a Inputs,
    opts: &'a Options,
) -> impl Iterator<Item = ObjectKey> + 'a {
    [
        Kind::VirtualService,
        Kind::KIngress,
        Kind::Route,
        Kind::HttpRoute,
    ]
    .into_iter()
    .flat_map(|kind| inputs.of_kind(kind))
    .filter(|(k, e)| {
        is_translated(inputs, opts, k, &e.object, || {
            inputs.of_kind(Kind::VirtualService).map(|(vk, v)| {
                (
                    vk.namespace.as_str(),
                    claims::RouteLabels::of(v.object.metadata()),
                )
            })
        })
    })
    .map(|(k, _)| k.clone())
}
