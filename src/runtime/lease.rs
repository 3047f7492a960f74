//! Leader election over a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection
//! does it: get, then create or replace with the `resourceVersion` read (so two replicas never
//! both win: the API server answers the loser 409 Conflict).
//!
//! Expiry is judged by the local clock since *we* last saw the Lease record change, never by
//! comparing its `renewTime` with our clock (no clock-skew assumptions between replicas).
//! The decision is [`decide`] (pure, unit tested); [`run`] is the I/O loop around it and
//! publishes whether we hold the Lease in a `watch` channel.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// The parts of a Lease record that show a holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    pub renew_time: Option<String>,
    pub transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            renew_time: spec
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string()),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No Lease yet: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds it and is alive.
    Follow,
}

/// Decides from the Lease record and when we first saw it in this state (`observed_at`).
pub fn decide(
    me: &str,
    current: Option<&Record>,
    observed_at: Instant,
    now: Instant,
    lease_duration: Duration,
) -> Action {
    match current {
        None => Action::Create,
        Some(r) if r.holder == me => Action::Renew,
        Some(r) if r.holder.is_empty() => Action::Acquire,
        Some(_) if now.saturating_duration_since(observed_at) >= lease_duration => Action::Acquire,
        Some(_) => Action::Follow,
    }
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Campaigns for the Lease `namespace/name` forever, renewing every `renew`; `is_leader` says
/// whether we hold it. A failed renewal (conflict, API error) drops leadership at once: the
/// status writer stops before another replica can have taken over.
pub async fn run(
    api: Api<Lease>,
    name: String,
    me: String,
    lease_duration: Duration,
    renew: Duration,
    is_leader: watch::Sender<bool>,
) {
    let mut observed: Option<(Record, Instant)> = None;
    loop {
        let leading = match api.get_opt(&name).await {
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "reading the Lease failed");
                false
            }
            Ok(lease) => {
                let record = lease.as_ref().map(Record::of);
                let now = Instant::now();
                let observed_at = match (&observed, &record) {
                    (Some((prev, at)), Some(r)) if prev == r => *at,
                    _ => now,
                };
                observed = record.clone().map(|r| (r, observed_at));
                let action = decide(&me, record.as_ref(), observed_at, now, lease_duration);
                let secs = i32::try_from(lease_duration.as_secs())
                    .unwrap_or(i32::MAX)
                    .max(1);
                let result = match (action, lease) {
                    (Action::Follow, _) => Ok(false),
                    (Action::Create, _) => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(name.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(LeaseSpec {
                                holder_identity: Some(me.clone()),
                                lease_duration_seconds: Some(secs),
                                acquire_time: Some(now_micro()),
                                renew_time: Some(now_micro()),
                                lease_transitions: Some(0),
                                ..LeaseSpec::default()
                            }),
                        };
                        api.create(&PostParams::default(), &lease)
                            .await
                            .map(|_| true)
                    }
                    (action, Some(mut lease)) => {
                        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                        if action == Action::Acquire {
                            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                            spec.acquire_time = Some(now_micro());
                            spec.holder_identity = Some(me.clone());
                        }
                        spec.lease_duration_seconds = Some(secs);
                        spec.renew_time = Some(now_micro());
                        // `lease.metadata.resourceVersion` is what we read: a concurrent writer
                        // makes this a 409.
                        api.replace(&name, &PostParams::default(), &lease)
                            .await
                            .map(|l| {
                                observed = Some((Record::of(&l), Instant::now()));
                                true
                            })
                    }
                    (_, None) => Ok(false),
                };
                match result {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::info!(lease = %name, error = %e, "Lease not taken (another replica wrote it first?)");
                        false
                    }
                }
            }
        };
        is_leader.send_if_modified(|v| {
            if *v != leading {
                tracing::info!(lease = %name, identity = %me, leading, "Lease leadership changed");
                *v = leading;
                true
            } else {
                false
            }
        });
        tokio::time::sleep(renew).await;
    }
}

/// Gives the Lease up if we hold it (holder cleared, as client-go's ReleaseOnCancel), so that
/// another replica acquires it on its next try.
pub async fn release(api: &Api<Lease>, name: &str, me: &str) {
    let Ok(Some(mut lease)) = api.get_opt(name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(me) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now_micro());
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %name, identity = %me, "Lease released"),
        Err(e) => tracing::warn!(lease = %name, error = %e, "releasing the Lease failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str) -> Record {
        Record {
            holder: holder.into(),
            renew_time: Some("t1".into()),
            transitions: 0,
        }
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        assert_eq!(decide("a", None, t0, t0, d), Action::Create);
        assert_eq!(decide("a", Some(&rec("a")), t0, t0, d), Action::Renew);
        assert_eq!(decide("a", Some(&rec("")), t0, t0, d), Action::Acquire);
        assert_eq!(
            decide("a", Some(&rec("b")), t0, t0 + d / 2, d),
            Action::Follow
        );
        // b stopped renewing: after a full lease duration with no change we take over.
        assert_eq!(decide("a", Some(&rec("b")), t0, t0 + d, d), Action::Acquire);
    }
}
