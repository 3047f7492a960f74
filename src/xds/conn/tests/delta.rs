//! Delta: the startup sequence, changed-only responses, removals after routes, initial resource versions, stale nonces, (un)subscriptions, unserved and empty wildcard types.

use super::*;

#[test]
fn delta_initial_sequence() {
    let e = delta_started();
    let st = e.c.status();
    assert_eq!(st.mode, crate::xds::conn::Mode::Delta);
    assert!(st.types[CLUSTER].wildcard);
    assert!(st.types[LISTENER].wildcard);
    assert!(!st.types[ROUTE].wildcard);
    assert_eq!(st.types[ENDPOINT].resources_held, 2);
}

#[test]
fn delta_endpoint_only_change_sends_only_changed_assignment() {
    let mut e = delta_started();
    let mut s2 = (*gen1()).clone();
    s2.generation = 2;
    s2.resources
        .get_mut(ENDPOINT)
        .unwrap()
        .insert("b".into(), res(ENDPOINT, "b", 2));
    let eds = one(e.c.on_snapshot(Arc::new(s2)).responses);
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(dnames(&eds), ["b"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "b", 2));
    assert!(eds.removed_resources.is_empty());
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_cluster_removal_waits_for_route_ack() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 2),
        ],
    );
    // Clusters unchanged apart from the removal: no CDS/EDS yet, routes first.
    let rds = one(e.c.on_snapshot(s2).responses);
    assert_eq!(rds.type_url, ROUTE);
    assert_eq!(dnames(&rds), ["r"]);
    let out = e.ack(&rds);
    assert_eq!(dtypes(&out), [CLUSTER, ENDPOINT]);
    let (cds, eds) = two(out);
    assert!(cds.resources.is_empty());
    assert_eq!(cds.removed_resources, ["b"]);
    // b's assignment is removed with its cluster.
    assert!(eds.resources.is_empty());
    assert_eq!(eds.removed_resources, ["b"]);
    // Envoy drops its EDS watch for b: nothing more to send for it.
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_removed_assignment_of_still_subscribed_cluster_is_removed_after_routes() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 2),
        ],
    );
    let lds = one(e.c.on_snapshot(s2).responses);
    assert_eq!(lds.type_url, LISTENER);
    assert!(lds.removed_resources.is_empty());
    let rds = one(e.ack(&lds));
    assert_eq!(rds.type_url, ROUTE);
    // The Envoy (misbehaving) keeps the EDS watch for b: EDS removes it explicitly, with the
    // CDS removal.
    let (cds, eds) = two(e.ack(&rds));
    assert_eq!(cds.removed_resources, ["b"]);
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(eds.removed_resources, ["b"]);
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_initial_resource_versions_skip_known_and_remove_gone() {
    let mut e = Delta {
        c: DeltaConnection::new(gen1()),
    };
    let mut q = dreq(CLUSTER, &[], &[], "");
    q.initial_resource_versions = [
        ("a".to_string(), ver(CLUSTER, "a", 1)),
        ("b".to_string(), "outdated".to_string()),
        ("z".to_string(), "whatever".to_string()),
    ]
    .into_iter()
    .collect();
    let cds = one(e.send(q));
    assert_eq!(dnames(&cds), ["b"], "a is already current on the Envoy");
    // z is gone from our config, but a reconnecting Envoy may still route to it: it is removed
    // only once the Envoy has taken listeners and routes from us.
    assert!(
        cds.removed_resources.is_empty(),
        "{:?}",
        cds.removed_resources
    );
    assert_eq!(e.c.status().retained_removals, 1);
    // EDS re-subscription with everything current: nothing to send after the CDS ACK.
    let mut q = dreq(ENDPOINT, &["a", "b"], &[], "");
    q.initial_resource_versions = [
        ("a".to_string(), ver(ENDPOINT, "a", 1)),
        ("b".to_string(), ver(ENDPOINT, "b", 1)),
    ]
    .into_iter()
    .collect();
    assert!(e.send(q).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), None, "z still to be removed");
    let lds = one(e.sub(LISTENER, &[]));
    assert_eq!(dnames(&lds), ["l"]);
    assert!(e.ack(&lds).is_empty(), "routes not asked for yet: z stays");
    let rds = one(e.sub(ROUTE, &["r"]));
    assert_eq!(rds.type_url, ROUTE);
    let removal = one(e.ack(&rds));
    assert_eq!(removal.type_url, CLUSTER);
    assert!(removal.resources.is_empty());
    assert_eq!(removal.removed_resources, ["z"]);
    assert!(e.ack(&removal).is_empty());
    assert_eq!(e.acked(), Some(1));
}

#[test]
fn delta_stale_nonce_still_applies_subscriptions_and_nack_not_resent() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
            (ROUTE, "r2", 1),
        ],
    );
    let lds = one(e.c.on_snapshot(s2).responses);
    assert_eq!(lds.type_url, LISTENER);
    // Subscribe r2 with a stale nonce: not an ACK, but the subscription counts.
    assert!(e.send(dreq(ROUTE, &["r2"], &[], "1")).is_empty());
    assert_eq!(e.c.status().types[ROUTE].stale_requests, 1);
    let rds = one(e.ack(&lds));
    assert_eq!(dnames(&rds), ["r2"]);
    assert!(e.nack(&rds, "bad r2").is_empty());
    let st = e.c.status();
    assert_eq!(
        st.types[ROUTE].last_nack.as_ref().unwrap().message,
        "bad r2"
    );
    assert_eq!(e.acked(), Some(1));
    // An unrelated change: only EDS, the rejected r2 is not resent.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
            (ROUTE, "r2", 1),
        ],
    );
    let eds = one(e.c.on_snapshot(s3).responses);
    assert_eq!(eds.type_url, ENDPOINT);
    assert!(e.ack(&eds).is_empty());
    // r2 fixed: sent and acked.
    let s4 = snap(
        4,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
            (ROUTE, "r2", 2),
        ],
    );
    let rds = one(e.c.on_snapshot(s4).responses);
    assert_eq!(dnames(&rds), ["r2"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(4));
}

#[test]
fn delta_unsubscribe_sends_no_removal_and_resubscribe_resends() {
    let mut e = delta_started();
    assert!(e.send(dreq(ROUTE, &[], &["r"], "")).is_empty());
    assert_eq!(e.c.status().types[ROUTE].resources_held, 0);
    let rds = one(e.sub(ROUTE, &["r"]));
    assert_eq!(dnames(&rds), ["r"]);
}

#[test]
fn delta_outstanding_response_of_fully_unsubscribed_type_does_not_stall() {
    let mut e = delta_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 2),
        ],
    );
    let lds = one(e.c.on_snapshot(s2).responses);
    assert!(e.ack(&lds).into_iter().any(|r| r.type_url == ROUTE));
    // The Envoy drops its last route watch and will never ACK that RDS response.
    assert!(e.send(dreq(ROUTE, &[], &["r"], "")).is_empty());
    assert!(e.c.status().outstanding.is_none());
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 5),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 2),
        ],
    );
    let eds = one(e.c.on_snapshot(s3).responses);
    assert_eq!(eds.type_url, ENDPOINT);
}

#[test]
fn delta_unknown_type_gets_empty_response() {
    let mut e = delta_started();
    let pc = one(e.sub(PROXY_CONFIG, &[]));
    assert_eq!(pc.type_url, PROXY_CONFIG);
    assert!(pc.resources.is_empty() && pc.removed_resources.is_empty());
    assert!(e.ack(&pc).is_empty());
    assert_eq!(e.acked(), Some(1));
}

#[test]
fn delta_empty_wildcard_type_is_answered() {
    let mut e = Delta {
        c: DeltaConnection::new(snap(1, &[(CLUSTER, "a", 1)])),
    };
    let cds = one(e.sub(CLUSTER, &[]));
    let lds = one(e
        .ack(&cds)
        .into_iter()
        .chain(e.sub(LISTENER, &[]))
        .collect());
    assert_eq!(lds.type_url, LISTENER);
    assert!(lds.resources.is_empty());
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(1));
}
