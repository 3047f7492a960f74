//! The per-object stage: one VirtualService, KIngress or Route translated on its own against a
//! proxy's servers, into a [`Fragment`]: its virtual hosts per (route configuration, host)
//! slot, the clusters they need, the Services it read, or the error that left it out. The full
//! [`super::translate`] and the incremental engine both build fragments this way and hand them
//! to [`super::claims`] and [`super::assemble`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::diag::InputError;
use crate::model::{Kind, Object, ObjectKey};
use crate::state::Inputs;

use super::backend::{Backends, ClusterSource, SvcKey};
use super::claims::{self, Order, Precedence, Slot};
use super::gateway::{Context, ServerCtx};
use super::ir::{ClusterIr, RouteIr, VirtualHostIr};
use super::{kingress, route, virtual_service, Options};

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
    pub route_name: String,
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
    pub clusters: Vec<(ClusterIr, ClusterSource)>,
    /// Sorted, without repeats.
    pub services: Vec<SvcKey>,
    pub error: Option<InputError>,
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

/// Translates one VirtualService, KIngress (any class: the caller checks) or Route (the caller
/// checks it is not shadowed) on its own, against a proxy's servers. `None` for other kinds and
/// for keys not in the inputs.
pub(crate) fn translate_one(
    inputs: &Inputs,
    opts: &Options,
    ctx: &Context,
    key: &ObjectKey,
) -> Option<Fragment> {
    let entry = inputs.get(key.kind, &key.namespace, &key.name)?;
    let cx = ObjectCx {
        inputs,
        opts,
        servers: &ctx.servers,
        external: &ctx.external,
        local: &ctx.local,
    };
    let mut b = Backends::new(inputs, opts);
    let result = match &entry.object {
        Object::VirtualService(vs) => virtual_service::placements(&cx, &mut b, key, &vs.spec),
        Object::KIngress(ing) => kingress::placements(&cx, &mut b, key, &ing.spec, false),
        Object::Route(r) => route::placements(&cx, &mut b, key, r),
        Object::HttpRoute(r) => super::gateway_api::http_route::placements(&cx, &mut b, key, r),
        _ => return None,
    };
    let meta = entry.object.metadata();
    // What Envoy would reject leaves the object out like any other error (`check`).
    let result = result.map(merge).and_then(|vhosts| {
        vhosts
            .values()
            .try_for_each(|vh| super::check::virtual_host(vh))
            .map(|()| vhosts)
    });
    let (clusters, services) = b.into_parts();
    let (vhosts, clusters, error) = match result {
        Ok(vhosts) => (vhosts, clusters, None),
        // An invalid object places nothing and needs no cluster.
        Err(e) => (BTreeMap::new(), Vec::new(), Some(e.against(inputs, key))),
    };
    Some(Fragment {
        vhosts,
        clusters,
        services,
        error,
        order: claims::order(key, meta),
        precedence: claims::precedence(key, meta),
    })
}

/// An object's placements merged per slot (several rules for one host append their routes).
fn merge(placements: Vec<Placement>) -> BTreeMap<Slot, Arc<VirtualHostIr>> {
    let mut vhosts: BTreeMap<Slot, VirtualHostIr> = BTreeMap::new();
    for mut p in placements {
        // Envoy compares domains without case and rejects a route configuration with two
        // that differ only in case: hosts are claimed (and served) in lower case.
        p.host.make_ascii_lowercase();
        match vhosts.entry((p.route_name, p.host.clone())) {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let vh = o.get_mut();
                Arc::make_mut(&mut vh.routes).extend(p.routes.iter().cloned());
                vh.require_tls |= p.require_tls;
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(VirtualHostIr {
                    host: p.host,
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

/// The objects a full translation translates for a proxy: every VirtualService and HTTPRoute,
/// the KIngresses of our class, and the Routes no KIngress or VirtualService shadows.
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
    .filter(|(k, e)| match &e.object {
        Object::VirtualService(_) | Object::HttpRoute(_) => true,
        Object::KIngress(i) => super::ownership::is_ours(inputs, &i.metadata, &opts.ingress_class),
        Object::Route(_) => !claims::route_is_shadowed(
            inputs.get(Kind::KIngress, &k.namespace, &k.name).is_some(),
            inputs.of_kind(Kind::VirtualService).map(|(vk, v)| {
                (
                    vk.namespace.as_str(),
                    claims::RouteLabels::of(v.object.metadata()),
                )
            }),
            k,
        ),
        _ => false,
    })
    .map(|(k, _)| k.clone())
}
