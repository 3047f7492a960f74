//! The status writer: every [`TICK`](super::TICK) it looks at the hub and the connections,
//! publishes this replica's progress, and, only while this replica holds the Lease, writes the
//! status of each KIngress of our class whose desired status differs from its current one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::gateway_api_write::{GatewayApiWriter, TrackedGateway};
use super::progress::{fetch_progress, ProgressShared};
use super::{
    combine, desired_status, gateway_progress, needed_gateways, peer_addresses, rfc3339_now, Facts,
    GatewayProgress, LeftOut, LoadBalancers, PeerReports, ProgressMap, ReplicaProgress, TICK,
};
use crate::hub::Hub;
use crate::model::{KIngress, Kind, Object, ObjectKey};
use crate::runtime::config::StatusConfig;
use crate::source::InputError;
use crate::translate;
use crate::xds::server::{ConnectionInfo, ConnectionRegistry};

/// Per KIngress: its spec's identity (`metadata.generation`, which the API server bumps on
/// every spec change; the spec's JSON when absent) and the hub generation that first carried it.
type Tracked = BTreeMap<ObjectKey, (SpecId, u64)>;

/// What one writer pass looked at: hub generation, (connection, ACKed generation), leading,
/// the other replicas' reports.
type Pass = (u64, Vec<(u64, Option<u64>)>, bool, PeerReports);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SpecId {
    Generation(i64),
    Json(String),
}

impl SpecId {
    /// `metadata.generation`, which the API server bumps on every spec change; the spec's JSON
    /// when absent.
    pub(super) fn of(generation: Option<i64>, spec: &impl serde::Serialize) -> SpecId {
        match generation {
            Some(g) => SpecId::Generation(g),
            None => SpecId::Json(serde_json::to_string(spec).unwrap_or_default()),
        }
    }
}

fn spec_id(ing: &KIngress) -> SpecId {
    SpecId::of(ing.metadata.generation, &ing.spec)
}

/// One KIngress of our class, as this pass sees it: the hub generation that first carried its
/// spec and this replica's progress per needed gateway.
struct Ours<'a> {
    key: &'a ObjectKey,
    ing: &'a KIngress,
    first: u64,
    gateways: Vec<GatewayProgress>,
}

/// Aborts the task when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The status writer. Runs until `stop` turns true; writes only while this replica holds the
/// Lease. On stop it releases the Lease if it holds it, so another replica takes over at once
/// instead of after the lease duration.
pub async fn run(
    client: kube::Client,
    hub: Arc<Hub>,
    registry: Arc<ConnectionRegistry>,
    config: StatusConfig,
    shared: Arc<ProgressShared>,
    mut stop: watch::Receiver<bool>,
) {
    let (leader_tx, leader_rx) = watch::channel(false);
    let (lease_ns, lease_name) = match config.lease.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => ("default".to_string(), config.lease.clone()),
    };
    let me = config.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "knative-pilot".to_string());
        format!("{host}-{}", std::process::id())
    });
    let lease_api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &lease_ns);
    let lease = Abort(tokio::spawn(crate::runtime::lease::run(
        lease_api.clone(),
        lease_name.clone(),
        me.clone(),
        config.lease_duration,
        config.lease_renew,
        leader_tx,
    )));
    let mut writer = Writer {
        client,
        hub,
        registry,
        shared,
        lbs: LoadBalancers {
            public_domain: config.public_lb_domain.clone(),
            private_domain: config.private_lb_domain.clone(),
        },
        config,
        me,
        tracked: BTreeMap::new(),
        last_pass: None,
        retry: Retries::default(),
        gateway_api: GatewayApiWriter::default(),
    };
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(TICK) => false,
            // The stop signal only ever turns true (or its sender goes away).
            _ = stop.changed() => true,
        };
        if stopping {
            drop(lease);
            let leading = *leader_rx.borrow();
            if leading {
                crate::runtime::lease::release(&lease_api, &lease_name, &writer.me).await;
            }
            return;
        }
        let leading = *leader_rx.borrow();
        writer.pass(leading).await;
    }
}

/// What the writer keeps between passes.
struct Writer {
    client: kube::Client,
    hub: Arc<Hub>,
    registry: Arc<ConnectionRegistry>,
    shared: Arc<ProgressShared>,
    lbs: LoadBalancers,
    config: StatusConfig,
    /// Our identity in the Lease (and our pod, among the peers).
    me: String,
    tracked: Tracked,
    /// What the last pass looked at: a pass with the same hub generation, the same ACK progress
    /// and the same leadership, with no retry due, would find nothing new.
    last_pass: Option<Pass>,
    retry: Retries,
    /// GatewayClass, Gateway and HTTPRoute status.
    gateway_api: GatewayApiWriter,
}

impl Writer {
    /// One look at the hub and the connections; writes what differs when `leading`.
    async fn pass(&mut self, leading: bool) {
        if !self.hub.is_ready() {
            return;
        }
        // Inputs first, then the generation: the hub stores the generation before the inputs it
        // translated, so this generation is at least the one that carried these inputs.
        let inputs = self.hub.inputs();
        let generation = self.hub.generation();
        let errors = self.hub.errors();
        let conns = self.registry.list();
        let acks: Vec<(u64, Option<u64>)> = conns
            .iter()
            .map(|c| (c.conn_id, c.status.acked_generation))
            .collect();
        // The other replicas' progress, when we write.
        let peers: PeerReports = if leading {
            let addrs = peer_addresses(&inputs, &self.config.peers, &self.me);
            let reports = futures::future::join_all(addrs.iter().map(|a| fetch_progress(a))).await;
            addrs.into_iter().zip(reports).collect()
        } else {
            Vec::new()
        };
        let pass = Some((generation, acks, leading, peers.clone()));
        if pass == self.last_pass && self.retry.is_empty() && !self.gateway_api.retry_pending() {
            return;
        }
        self.last_pass = pass;
        let (ours, gateways) = self.track(&inputs, generation, &conns);
        if !leading {
            return;
        }
        for one in ours {
            self.write_one(one, &peers, &errors).await;
        }
        self.gateway_api
            .write(
                &self.client,
                &inputs,
                &self.hub.opts,
                gateways,
                &peers,
                &errors,
            )
            .await;
    }

    /// The KIngresses of our class and the Gateway API Gateways of ours with their progress;
    /// publishes this replica's progress and forgets the objects that are gone.
    fn track<'a>(
        &mut self,
        inputs: &'a crate::state::Inputs,
        generation: u64,
        conns: &[ConnectionInfo],
    ) -> (Vec<Ours<'a>>, Vec<TrackedGateway>) {
        let opts = &self.hub.opts;
        let ext = translate::gateway_labels(inputs, opts, "external");
        let local = translate::gateway_labels(inputs, opts, "local");
        let (ext_id, local_id) = (opts.external_gateway(inputs), opts.local_gateway(inputs));
        let mut own: ProgressMap = BTreeMap::new();
        let mut seen: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut ours = Vec::new();
        for (key, entry) in inputs.of_kind(Kind::KIngress) {
            let Object::KIngress(ing) = &entry.object else {
                continue;
            };
            if !translate::ownership::is_ours(inputs, &ing.metadata, &opts.ingress_class) {
                continue;
            }
            seen.insert(key.clone());
            let spec = spec_id(ing);
            let first = match self.tracked.get(key) {
                Some((s, g)) if *s == spec => *g,
                _ => {
                    self.tracked.insert(key.clone(), (spec, generation));
                    generation
                }
            };
            let (need_ext, need_local) = needed_gateways(ing);
            let mut gateways = Vec::new();
            if need_ext {
                gateways.push(gateway_progress(&ext_id, ext.as_ref(), conns, first));
            }
            if need_local {
                gateways.push(gateway_progress(&local_id, local.as_ref(), conns, first));
            }
            own.insert(
                format!("{}/{}", key.namespace, key.name),
                ReplicaProgress {
                    generation: ing.metadata.generation,
                    gateways: gateways.clone(),
                },
            );
            ours.push(Ours {
                key,
                ing,
                first,
                gateways,
            });
        }
        let gateways = self
            .gateway_api
            .track(inputs, opts, generation, conns, &mut own);
        self.shared.set(own);
        self.tracked.retain(|k, _| seen.contains(k));
        self.retry.retain(&seen);
        (ours, gateways)
    }

    /// Writes one KIngress's status if it differs from the desired one (unless a retry of it is
    /// not due yet); a failed write is retried with a growing delay.
    async fn write_one(&mut self, one: Ours<'_>, peers: &PeerReports, errors: &[InputError]) {
        let Ours {
            key,
            ing,
            first,
            gateways,
        } = one;
        if self.retry.waiting(key) {
            return;
        }
        let (gateways, replicas_waiting) = combine(
            &gateways,
            &format!("{}/{}", key.namespace, key.name),
            ing.metadata.generation,
            peers,
        );
        let translate_error = errors
            .iter()
            .find(|e| e.object.as_ref() == Some(key))
            .map(LeftOut::of);
        let facts = Facts {
            generation: first,
            gateways,
            translate_error,
            replicas_waiting,
        };
        let desired = desired_status(ing, &facts, &self.lbs, &rfc3339_now());
        if ing.status.as_ref() == Some(&desired) {
            self.retry.done(key);
            return;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &kingress_resource());
        match write(&api, ing, &facts, &self.lbs).await {
            Ok(()) => {
                self.retry.done(key);
                tracing::info!(ingress = %key, ready = facts_ready(&desired), "KIngress status written");
            }
            Err(e) => {
                let wait = self.retry.failed(key);
                tracing::warn!(ingress = %key, error = %e, retry_in_ms = wait.as_millis() as u64, "writing KIngress status failed");
            }
        }
    }
}

/// Per object, when a failed status write may be tried again: 500 ms after the first failure,
/// doubling up to 30 s; a success (or nothing left to write) forgets it.
#[derive(Default)]
pub(super) struct Retries(BTreeMap<ObjectKey, (Instant, Duration)>);

impl Retries {
    /// Whether `key`'s retry is not due yet.
    pub(super) fn waiting(&self, key: &ObjectKey) -> bool {
        self.0.get(key).is_some_and(|(at, _)| Instant::now() < *at)
    }

    pub(super) fn done(&mut self, key: &ObjectKey) {
        self.0.remove(key);
    }

    /// A write of `key` failed: how long until it is tried again.
    pub(super) fn failed(&mut self, key: &ObjectKey) -> Duration {
        let wait = self
            .0
            .get(key)
            .map(|(_, w)| (*w * 2).min(Duration::from_secs(30)))
            .unwrap_or(Duration::from_millis(500));
        self.0.insert(key.clone(), (Instant::now() + wait, wait));
        wait
    }

    /// Forgets the objects no longer seen.
    pub(super) fn retain(&mut self, seen: &BTreeSet<ObjectKey>) {
        self.0.retain(|k, _| seen.contains(k));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn kingress_resource() -> ApiResource {
    ApiResource {
        group: "networking.internal.knative.dev".into(),
        version: "v1alpha1".into(),
        api_version: "networking.internal.knative.dev/v1alpha1".into(),
        kind: "Ingress".into(),
        plural: "ingresses".into(),
    }
}

fn facts_ready(status: &Value) -> bool {
    status["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Patches the status subresource with the `resourceVersion` we computed from; on 409 re-reads
/// the object and retries (a few times) against its current status and version.
async fn write(
    api: &Api<DynamicObject>,
    ing: &KIngress,
    facts: &Facts,
    lbs: &LoadBalancers,
) -> anyhow::Result<()> {
    let name = ing.metadata.name.clone().unwrap_or_default();
    let status = desired_status(ing, facts, lbs, &rfc3339_now());
    let version = ing.metadata.resource_version.clone();
    patch_status(api, &name, version, status, |fresh| {
        let fresh: KIngress = serde_json::from_value(serde_json::to_value(fresh)?)?;
        if fresh.spec != ing.spec || fresh.metadata.generation != ing.metadata.generation {
            // Changed under us: the next round computes from the new spec.
            return Ok(None);
        }
        Ok(Some(desired_status(&fresh, facts, lbs, &rfc3339_now())))
    })
    .await
}

/// How both status writers (KIngress, Gateway API) write a status: a merge patch of the status
/// subresource carrying the `resourceVersion` it was computed from, so that a concurrent writer
/// makes it a 409. On 409 (a few times) the object is read again and `again` computes the
/// status to write against it (`None`: nothing to write, or left to the next pass).
pub(super) async fn patch_status(
    api: &Api<DynamicObject>,
    name: &str,
    mut version: Option<String>,
    mut status: Value,
    mut again: impl FnMut(&DynamicObject) -> anyhow::Result<Option<Value>>,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let body = json!({"metadata": {"resourceVersion": version}, "status": status});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 3 => {
                attempt += 1;
                let fresh = api.get_status(name).await?;
                match again(&fresh)? {
                    Some(next) => {
                        status = next;
                        version = fresh.metadata.resource_version.clone();
                    }
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
