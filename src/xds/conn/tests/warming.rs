//! Clusters changed in place: an updated EDS cluster warms until its assignment is answered.

use super::*;

/// gen1 with cluster a updated (e.g. its Service port renamed: new upstream protocol) and the
/// given variant of a's assignment.
fn gen_a_updated(generation: u64, eds_variant: u32, listener_variant: u32) -> Arc<Snapshot> {
    snap(
        generation,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", eds_variant),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", listener_variant),
            (ROUTE, "r", 1),
        ],
    )
}

#[test]
fn sotw_updated_cluster_gets_its_unchanged_assignment_and_does_not_stall() {
    let mut e = sotw_started();
    let (cds, eds) = two(e.snapshot(gen_a_updated(2, 1, 1)));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(
        eds.type_url, ENDPOINT,
        "the assignment goes right after CDS"
    );
    assert_eq!(names(&eds), ["a"], "only the updated cluster's assignment");
    // The Envoy re-requests EDS for the new cluster with the latest nonce (an ACK), then ACKs
    // CDS once a has warmed.
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    // Later changes still flow.
    let lds = one(e.snapshot(gen_a_updated(3, 1, 2)));
    assert_eq!(lds.type_url, LISTENER);
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_updated_cluster_gets_its_unchanged_assignment() {
    let mut e = delta_started();
    let (cds, eds) = two(e.c.on_snapshot(gen_a_updated(2, 1, 1)).responses);
    assert_eq!(dnames(&cds), ["a"]);
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(dnames(&eds), ["a"], "only the updated cluster's assignment");
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 1));
    // No request from the Envoy is needed for it: its subscriptions did not change.
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let lds = one(e.c.on_snapshot(gen_a_updated(3, 1, 2)).responses);
    assert_eq!(lds.type_url, LISTENER);
}

#[test]
fn delta_cluster_and_assignment_changed_together_go_out_together() {
    let mut e = delta_started();
    let (cds, eds) = two(e.c.on_snapshot(gen_a_updated(2, 5, 1)).responses);
    assert_eq!(dnames(&cds), ["a"]);
    assert_eq!(dnames(&eds), ["a"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 5));
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_updated_cluster_while_eds_is_outstanding_is_answered_after_its_ack() {
    let mut e = sotw_started();
    // An endpoint change goes out first and stays un-acked ...
    let mut s2 = (*gen1()).clone();
    s2.generation = 2;
    s2.resources
        .get_mut(ENDPOINT)
        .unwrap()
        .insert("b".into(), res(ENDPOINT, "b", 2));
    let eds = one(e.snapshot(Arc::new(s2)));
    // ... then cluster a is updated: CDS may not go while EDS is outstanding.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 2),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    assert!(e.snapshot(s3).is_empty());
    let (cds, eds2) = two(e.ack(&eds));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(
        eds2.type_url, ENDPOINT,
        "a's assignment is resent although b's was acked"
    );
    assert!(e.ack(&eds2).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_resubscribing_a_held_name_resends_it() {
    let mut e = delta_started();
    let eds = one(e.sub(ENDPOINT, &["a"]));
    assert_eq!(dnames(&eds), ["a"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 1));
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.acked(), Some(1));
}

#[test]
fn delta_cluster_turning_from_eds_to_dns_and_back() {
    let mut e = delta_started();
    // a becomes a DNS cluster (ExternalName): a new cluster body, no assignment any more.
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    // Routes are unchanged, so nothing still needs a's assignment: it is removed with the CDS
    // update.
    let (cds, eds) = two(e.c.on_snapshot(s2).responses);
    assert_eq!(dnames(&cds), ["a"]);
    assert!(eds.resources.is_empty());
    assert_eq!(eds.removed_resources, ["a"]);
    // The DNS cluster has no EDS watch: the Envoy unsubscribes a.
    assert!(e.send(dreq(ENDPOINT, &[], &["a"], "")).is_empty());
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    // Back to EDS: the Envoy subscribes to a's assignment again, which is sent.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 3),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let cds = one(e.c.on_snapshot(s3).responses);
    assert_eq!(dnames(&cds), ["a"]);
    let eds = one(e.sub(ENDPOINT, &["a"]));
    assert_eq!(dnames(&eds), ["a"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "a", 3));
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_name_subscribed_while_a_response_is_outstanding_is_sent_after_its_ack() {
    let mut e = delta_started();
    let items = [
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (ENDPOINT, "a", 1),
        (ENDPOINT, "b", 1),
        (LISTENER, "l", 1),
        (ROUTE, "r", 2),
        (ROUTE, "r2", 1),
    ];
    let rds = one(e.c.on_snapshot(snap(2, &items)).responses);
    assert_eq!(dnames(&rds), ["r"], "r2 is not subscribed yet");
    // The Envoy subscribes to r2 before it ACKs (e.g. a new scope names it).
    assert!(e.sub(ROUTE, &["r2"]).is_empty(), "RDS is outstanding");
    let rds2 = one(e.ack(&rds));
    assert_eq!(dnames(&rds2), ["r2"]);
    assert!(e.ack(&rds2).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_name_in_the_synced_map_but_never_sent_is_sent_when_subscribed() {
    let mut e = delta_started();
    let items = [
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (ENDPOINT, "a", 1),
        (ENDPOINT, "b", 1),
        (LISTENER, "l", 1),
        (ROUTE, "r", 2),
        (ROUTE, "r2", 1),
    ];
    // The Envoy ACKs a response built from a map that holds r2, which it does not watch.
    let rds = one(e.c.on_snapshot(snap(2, &items)).responses);
    assert_eq!(dnames(&rds), ["r"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let rds2 = one(e.sub(ROUTE, &["r2"]));
    assert_eq!(dnames(&rds2), ["r2"]);
    assert!(e.ack(&rds2).is_empty());
    assert_eq!(e.c.status().types[ROUTE].resources_held, 2);
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_unsubscribed_names_are_forgotten_while_synced() {
    let mut e = delta_started();
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    let st = e.c.status();
    assert_eq!(st.types[ENDPOINT].resources_held, 1);
    assert_eq!(st.types[ENDPOINT].subscribed, ["a"]);
    assert_eq!(st.acked_generation, Some(1));
    // b changes: nothing to send; a changes: only a. Subscribing to b again sends it.
    let mut items = vec![
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (ENDPOINT, "a", 2),
        (ENDPOINT, "b", 2),
        (LISTENER, "l", 1),
        (ROUTE, "r", 1),
    ];
    let eds = one(e.c.on_snapshot(snap(2, &items)).responses);
    assert_eq!(dnames(&eds), ["a"]);
    assert!(e.ack(&eds).is_empty());
    items[3].2 = 3;
    assert!(e.c.on_snapshot(snap(3, &items)).responses.is_empty());
    let eds = one(e.sub(ENDPOINT, &["b"]));
    assert_eq!(dnames(&eds), ["b"]);
    assert_eq!(eds.resources[0].version, ver(ENDPOINT, "b", 3));
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.c.status().types[ENDPOINT].resources_held, 2);
}

#[test]
fn sotw_and_delta_versions_agree_after_subscription_changes() {
    // The same holdings reached two ways give the same set version.
    let mut e = delta_started();
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 2),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let out = e.c.on_snapshot(s2.clone()).responses;
    let eds = out.iter().find(|r| r.type_url == ENDPOINT).unwrap();
    let mut fresh = Delta {
        c: DeltaConnection::new(s2),
    };
    let _ = fresh.sub(CLUSTER, &[]);
    let direct = one(fresh.sub(ENDPOINT, &["a"]));
    assert_eq!(eds.system_version_info, direct.system_version_info);
}
