//! The on-demand route layout's two rules for Delta subscriptions (issue 15), kept apart from
//! the push logic:
//!
//! * a wildcard CDS subscription stands for the snapshot's `wildcard_clusters` (the clusters
//!   no request fetches by name), not every cluster: it becomes a subscription to those names,
//!   and the service clusters are subscribed one by one by Envoy's on-demand CDS;
//! * a name subscribed that the snapshot does not have (a cluster or route configuration) is
//!   answered at once in `removed_resources`, the Delta protocol's "does not exist", so Envoy's
//!   on-demand CDS does not wait for its timeout. It is marked held at an unknown version, so
//!   the next push of the type (the regular sequence: one outstanding response per type)
//!   lists it as removed.

use super::core::{Core, UNKNOWN};
use crate::xds::resource::{CLUSTER, ROUTE};

/// The names a wildcard subscription of `type_url` stands for, when not every resource.
pub(super) fn wildcard_names(core: &Core, type_url: &str) -> Option<Vec<String>> {
    if type_url != CLUSTER {
        return None;
    }
    core.target.wildcard_clusters.as_ref().map(|n| n.to_vec())
}

/// Marks the `added` names of `type_url` the target does not have (nor retains) as held at an
/// unknown version, so the next response says they do not exist (on-demand snapshots only).
pub(super) fn answer_absent(core: &mut Core, type_url: &str, added: &[String]) {
    if core.target.wildcard_clusters.is_none() || (type_url != CLUSTER && type_url != ROUTE) {
        return;
    }
    let target = core.target.of_type(type_url);
    let retained = core.retained.get(type_url);
    let absent: Vec<String> = added
        .iter()
        .filter(|n| !target.is_some_and(|m| m.contains_key(*n)))
        .filter(|n| !retained.is_some_and(|m| m.contains_key(*n)))
        .cloned()
        .collect();
    if absent.is_empty() {
        return;
    }
    let Some(st) = core.types.get_mut(type_url) else {
        return;
    };
    st.held.mark_unknown(&st.sub, &absent, UNKNOWN);
    if let Some(p) = core.pending.get_mut(type_url) {
        // Taken as held once the outstanding response is ACKed: the mark must survive it.
        p.held.mark_unknown(&st.sub, &absent, UNKNOWN);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    };

    use super::super::DeltaConnection;
    use crate::xds::resource::{resource, Snapshot, CLUSTER, ROUTE};

    fn snapshot(generation: u64, clusters: &[&str], on_demand: bool) -> Arc<Snapshot> {
        let all = clusters.iter().map(|n| {
            let c = Cluster {
                name: n.to_string(),
                ..Default::default()
            };
            (CLUSTER, resource(n, &c))
        });
        Arc::new(Snapshot {
            wildcard_clusters: on_demand.then(|| Arc::from(vec!["blackhole".to_string()])),
            ..Snapshot::from_resources(generation, all)
        })
    }

    fn req(t: &str, sub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: t.into(),
            resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn one(mut v: Vec<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
        assert_eq!(v.len(), 1, "expected one response, got {v:?}");
        v.remove(0)
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_wildcard_gets_the_wildcard_clusters_and_names_are_fetched_one_by_one() {
        let mut c = DeltaConnection::new(snapshot(1, &["a", "b", "blackhole"], true));
        let cds = one(c.on_request(req(CLUSTER, &[], "")).responses);
        assert_eq!(names(&cds), ["blackhole"]);
        // Envoy's on-demand CDS adds a name (with the wildcard, explicitly).
        assert!(c
            .on_request(req(CLUSTER, &["*", "a"], ""))
            .responses
            .is_empty());
        let a = one(c.on_request(req(CLUSTER, &[], &cds.nonce)).responses);
        assert_eq!(names(&a), ["a"]);
        assert!(a.removed_resources.is_empty());
        assert!(c
            .on_request(req(CLUSTER, &[], &a.nonce))
            .responses
            .is_empty());
        // A change of a cluster it never fetched is not sent; of one it holds, it is.
        let next = c.on_snapshot(snapshot(2, &["a", "blackhole", "c"], true));
        assert!(next.responses.is_empty(), "{:?}", next.responses);
        let gone = one(c
            .on_snapshot(snapshot(3, &["blackhole", "c"], true))
            .responses);
        assert!(gone.resources.is_empty());
        assert_eq!(gone.removed_resources, ["a"]);
    }

    #[test]
    fn an_unknown_name_is_answered_as_removed_at_once() {
        let mut c = DeltaConnection::new(snapshot(1, &["a", "blackhole"], true));
        let cds = one(c.on_request(req(CLUSTER, &[], "")).responses);
        assert!(c
            .on_request(req(CLUSTER, &[], &cds.nonce))
            .responses
            .is_empty());
        let r = one(c.on_request(req(CLUSTER, &["nope"], "")).responses);
        assert!(r.resources.is_empty());
        assert_eq!(r.removed_resources, ["nope"]);
        assert!(c
            .on_request(req(CLUSTER, &[], &r.nonce))
            .responses
            .is_empty());
        // Created later: sent, since the name is still subscribed.
        let later = one(c
            .on_snapshot(snapshot(2, &["a", "blackhole", "nope"], true))
            .responses);
        assert_eq!(names(&later), ["nope"]);
        // Also a route configuration, and a name subscribed while a response is outstanding.
        let mut c = DeltaConnection::new(snapshot(1, &["a", "blackhole"], true));
        let cds = one(c.on_request(req(CLUSTER, &[], "")).responses);
        assert!(c
            .on_request(req(CLUSTER, &["nope"], ""))
            .responses
            .is_empty());
        let r = one(c.on_request(req(CLUSTER, &[], &cds.nonce)).responses);
        assert_eq!(r.removed_resources, ["nope"]);
        assert!(c
            .on_request(req(CLUSTER, &[], &r.nonce))
            .responses
            .is_empty());
        let rds = one(c.on_request(req(ROUTE, &["http.80/nope"], "")).responses);
        assert_eq!(rds.removed_resources, ["http.80/nope"]);
    }

    #[test]
    fn eager_snapshots_keep_the_wildcard_and_the_silence() {
        let mut c = DeltaConnection::new(snapshot(1, &["a", "blackhole"], false));
        let cds = one(c.on_request(req(CLUSTER, &[], "")).responses);
        assert_eq!(names(&cds), ["a", "blackhole"]);
        assert!(c
            .on_request(req(CLUSTER, &[], &cds.nonce))
            .responses
            .is_empty());
        assert!(c
            .on_request(req(CLUSTER, &["nope"], ""))
            .responses
            .is_empty());
    }
}
