//! Route precedence, indexed: which VirtualServices name a Route (by its name, or by its
//! KIngress's), so that a VirtualService change re-decides only the Routes it names. The rule
//! itself is [`crate::translate::fragment::is_translated`]; the index only finds its candidates.

use crate::model::{Kind, ObjectKey};
use crate::state::{Entry, Inputs};

use super::super::claims::RouteLabels;
use super::Engine;

fn vs_route_labels(entry: &Entry) -> (Option<(String, Option<String>)>, Option<String>) {
    let labels = RouteLabels::of(entry.object.metadata());
    (labels.route, labels.ingress)
}

impl Engine {
    /// Routes whose precedence a VirtualService's labels affect.
    pub(super) fn vs_routes(&self, vs: &Entry) -> Vec<ObjectKey> {
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

    pub(super) fn index_vs(&mut self, key: &ObjectKey, vs: &Entry) {
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

    pub(super) fn unindex_vs(&mut self, key: &ObjectKey, vs: &Entry) {
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

    /// The VirtualServices (namespace, labels) the index names as possibly describing the
    /// Route `key` (asked by [`super::super::fragment::is_translated`]).
    pub(super) fn describing<'e>(
        &'e self,
        inputs: &'e Inputs,
        key: &ObjectKey,
    ) -> impl Iterator<Item = (&'e str, RouteLabels)> + 'e {
        let by_route = self
            .vs_by_route
            .get(&key.name)
            .into_iter()
            .flatten()
            .map(|(_, k)| k);
        let by_ingress = self
            .vs_by_ingress
            .get(&(key.namespace.clone(), key.name.clone()))
            .into_iter()
            .flatten();
        by_route.chain(by_ingress).filter_map(|k| {
            let e = inputs.get(k.kind, &k.namespace, &k.name)?;
            Some((k.namespace.as_str(), RouteLabels::of(e.object.metadata())))
        })
    }
}
