//! The Gateway API half of the status writer (`writer.rs` calls it every pass): tracks the hub
//! generation that first carried each Gateway of ours, publishes this replica's Envoys'
//! progress with them, and, while this replica holds the Lease, patches the status
//! subresource of our GatewayClasses, Gateways and HTTPRoutes whose desired status
//! (`gateway_api.rs`) differs in a field we own. Merge patches carry the `resourceVersion`
//! read; a 409 re-reads the status (an HTTPRoute's other controllers' entries included) and
//! computes again.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::Value;

use super::gateway_api::{
    gateway_class_status, gateway_status, http_route_status, needs_write, progress_key,
    GatewayFacts,
};
use super::writer::{patch_status, Retries, SpecId};
use super::ReplicaProgress;
use super::{combine, gateway_progress, rfc3339_now, GatewayProgress, PeerReports, ProgressMap};
use crate::model::gateway_api::{GATEWAY_NAME_LABEL, GROUP};
use crate::model::{Kind, Object, ObjectKey};
use crate::source::InputError;
use crate::state::Inputs;
use crate::translate::gateway_api::attach::attached_routes;
use crate::translate::gateway_api::http_route::NOT_ATTACHED;
use crate::translate::gateway_api::our_gateways;
use crate::translate::Options;
use crate::xds::server::ConnectionInfo;

/// One Gateway of ours as this pass sees it.
pub(super) struct TrackedGateway {
    key: ObjectKey,
    progress: GatewayProgress,
}

/// What the Gateway API writer keeps between passes.
#[derive(Default)]
pub(super) struct GatewayApiWriter {
    /// Per Gateway: its spec's identity and the hub generation that first carried it.
    tracked: BTreeMap<ObjectKey, (SpecId, u64)>,
    retry: Retries,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

impl GatewayApiWriter {
    /// A failed write waits for its retry.
    pub(super) fn retry_pending(&self) -> bool {
        !self.retry.is_empty()
    }

    /// Our Gateways with this replica's Envoys' progress, also added to `own` (what this
    /// replica publishes); forgets Gateways that are gone.
    pub(super) fn track(
        &mut self,
        inputs: &Inputs,
        opts: &Options,
        generation: u64,
        conns: &[ConnectionInfo],
        own: &mut ProgressMap,
    ) -> Vec<TrackedGateway> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, spec) in our_gateways(inputs, opts) {
            let meta_generation = inputs
                .get(Kind::K8sGateway, &key.namespace, &key.name)
                .and_then(|e| e.object.metadata().generation);
            let id = SpecId::of(meta_generation, spec);
            let first = match self.tracked.get(key) {
                Some((s, g)) if *s == id => *g,
                _ => {
                    self.tracked.insert(key.clone(), (id, generation));
                    generation
                }
            };
            let selector = BTreeMap::from([(GATEWAY_NAME_LABEL.to_string(), key.name.clone())]);
            let name = format!("{}/{}", key.namespace, key.name);
            let progress = gateway_progress(&name, Some(&selector), conns, first);
            own.insert(
                progress_key(key),
                ReplicaProgress {
                    generation: meta_generation,
                    gateways: vec![progress.clone()],
                },
            );
            seen.insert(key.clone());
            out.push(TrackedGateway {
                key: key.clone(),
                progress,
            });
        }
        self.tracked.retain(|k, _| seen.contains(k));
        out
    }

    /// Writes every status of ours that differs (the Lease holder only).
    pub(super) async fn write(
        &mut self,
        client: &kube::Client,
        inputs: &Inputs,
        opts: &Options,
        gateways: Vec<TrackedGateway>,
        peers: &PeerReports,
        errors: &[InputError],
    ) {
        let mut seen = BTreeSet::new();
        let classes: Api<DynamicObject> =
            Api::all_with(client.clone(), &resource("GatewayClass", "gatewayclasses"));
        for (key, e) in inputs.of_kind(Kind::GatewayClass) {
            let Object::GatewayClass(c) = &e.object else {
                continue;
            };
            if c.spec.controller_name != opts.gateway_controller {
                continue;
            }
            seen.insert(key.clone());
            let generation = c.metadata.generation;
            let desired =
                |cur: Option<&Value>| Some(gateway_class_status(cur, generation, &rfc3339_now()));
            self.one(&classes, key, &c.metadata, c.status.as_ref(), desired)
                .await;
        }
        let attached = attached_routes(inputs, opts);
        for t in gateways {
            let Some(Object::K8sGateway(gw)) = inputs
                .get(Kind::K8sGateway, &t.key.namespace, &t.key.name)
                .map(|e| &e.object)
            else {
                continue;
            };
            seen.insert(t.key.clone());
            let generation = gw.metadata.generation;
            let (total, replicas_waiting) =
                combine(&[t.progress], &progress_key(&t.key), generation, peers);
            let Some(progress) = total.into_iter().next() else {
                continue;
            };
            let facts = GatewayFacts {
                progress,
                replicas_waiting,
            };
            let desired = |cur: Option<&Value>| {
                Some(gateway_status(
                    inputs,
                    &t.key,
                    &gw.spec,
                    generation,
                    cur,
                    &facts,
                    &attached,
                    &rfc3339_now(),
                ))
            };
            let api = Api::namespaced_with(
                client.clone(),
                &t.key.namespace,
                &resource("Gateway", "gateways"),
            );
            self.one(&api, &t.key, &gw.metadata, gw.status.as_ref(), desired)
                .await;
        }
        for (key, e) in inputs.of_kind(Kind::HttpRoute) {
            let Object::HttpRoute(route) = &e.object else {
                continue;
            };
            let route_error = errors
                .iter()
                .find(|e| e.object.as_ref() == Some(key) && !e.message.starts_with(NOT_ATTACHED))
                .map(|e| e.message.as_str());
            let desired = |cur: Option<&Value>| {
                http_route_status(inputs, opts, key, route, route_error, cur, &rfc3339_now())
            };
            if desired(route.status.as_ref()).is_none() {
                continue;
            }
            seen.insert(key.clone());
            let api = Api::namespaced_with(
                client.clone(),
                &key.namespace,
                &resource("HTTPRoute", "httproutes"),
            );
            self.one(&api, key, &route.metadata, route.status.as_ref(), desired)
                .await;
        }
        self.retry.retain(&seen);
    }

    /// Writes one object's status when it differs (unless its retry is not due); a failed
    /// write is retried with a growing delay.
    async fn one(
        &mut self,
        api: &Api<DynamicObject>,
        key: &ObjectKey,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        current: Option<&Value>,
        desired: impl Fn(Option<&Value>) -> Option<Value>,
    ) {
        if self.retry.waiting(key) {
            return;
        }
        if desired(current).is_none_or(|d| !needs_write(current, &d)) {
            self.retry.done(key);
            return;
        }
        match patch(api, meta, current, &desired).await {
            Ok(()) => {
                self.retry.done(key);
                tracing::info!(object = %key, "Gateway API status written");
            }
            Err(e) => {
                let wait = self.retry.failed(key);
                tracing::warn!(object = %key, error = %e, retry_in_ms = wait.as_millis() as u64, "writing Gateway API status failed");
            }
        }
    }
}

/// Writes the status `desired` computes from the current one ([`patch_status`]); on 409 computes
/// again from what the object holds now. A spec changed meanwhile is left to the next pass.
async fn patch(
    api: &Api<DynamicObject>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    current: Option<&Value>,
    desired: &impl Fn(Option<&Value>) -> Option<Value>,
) -> anyhow::Result<()> {
    let name = meta.name.clone().unwrap_or_default();
    let to_write =
        |current: Option<&Value>| desired(current).filter(|status| needs_write(current, status));
    let Some(status) = to_write(current) else {
        return Ok(());
    };
    patch_status(api, &name, meta.resource_version.clone(), status, |fresh| {
        if fresh.metadata.generation != meta.generation {
            return Ok(None);
        }
        Ok(to_write(fresh.data.get("status")))
    })
    .await
}
