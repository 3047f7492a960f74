//! SotW: the startup sequence, versions, subscriptions by name, stale nonces, NACKs, removals held for make before break, unserved types.

use super::*;

#[test]
fn sotw_initial_sequence_and_status() {
    let e = sotw_started();
    let st = e.c.status();
    assert_eq!(st.target_generation, 1);
    assert!(st.outstanding.is_none());
    let cds = &st.types[CLUSTER];
    assert!(cds.wildcard);
    assert_eq!(cds.responses_sent, 1);
    assert_eq!(cds.acks, 1);
    assert!(cds.bytes_sent > 0);
    assert_eq!(cds.last_acked_version, cds.last_sent_version);
    let eds = &st.types[ENDPOINT];
    assert!(!eds.wildcard);
    assert_eq!(eds.subscribed, ["a", "b"]);
    assert!(eds.in_sync);
    // Serializable for the debug endpoint.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["acked_generation"], 1);
    assert_eq!(json["mode"], "sotw");
}

#[test]
fn sotw_version_is_deterministic_and_content_based() {
    let mut a = sotw_started();
    let mut b = sotw_started();
    let ra = one(a.snapshot(snap(2, &[(CLUSTER, "a", 2), (CLUSTER, "b", 1)])));
    let rb = one(b.snapshot(snap(2, &[(CLUSTER, "a", 2), (CLUSTER, "b", 1)])));
    assert_eq!(ra.version_info, rb.version_info);
    let st = a.c.status();
    assert_ne!(
        Some(&ra.version_info),
        st.types[CLUSTER].last_acked_version.as_ref()
    );
}

#[test]
fn sotw_only_subscribed_eds_names_are_sent() {
    let mut e = Sotw::new(gen1());
    let cds = one(e.request(CLUSTER, &[]));
    let eds = one(e.request(ENDPOINT, &["a", "missing"]));
    assert_eq!(names(&eds), ["a"]);
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty(), "no listener requested");
    // Subscribing to one more name (with the latest nonce) is answered at once.
    let eds = one(e.request(ENDPOINT, &["a", "b"]));
    assert_eq!(names(&eds), ["b"], "a is held");
}

#[test]
fn sotw_endpoint_only_change_sends_only_eds() {
    let mut e = sotw_started();
    let mut s2 = (*gen1()).clone();
    s2.generation = 2;
    s2.resources
        .get_mut(ENDPOINT)
        .unwrap()
        .insert("a".into(), res(ENDPOINT, "a", 2));
    let eds = one(e.snapshot(Arc::new(s2)));
    assert_eq!(eds.type_url, ENDPOINT);
    // Envoy hands a SotW EDS response to the watch of each assignment it names; b's is kept.
    assert_eq!(names(&eds), ["a"], "SotW EDS carries only what changed");
    assert_eq!(e.acked(), Some(1));
    assert!(e.ack(&eds).is_empty(), "nothing else changed");
    assert_eq!(e.acked(), Some(2));
    let st = e.c.status();
    assert_eq!(st.types[CLUSTER].responses_sent, 1);
    assert_eq!(st.types[LISTENER].responses_sent, 1);
    assert_eq!(st.types[ROUTE].responses_sent, 1);
    assert_eq!(st.types[ENDPOINT].responses_sent, 2);
}

#[test]
fn sotw_same_snapshot_again_sends_nothing() {
    let mut e = sotw_started();
    let mut s = (*gen1()).clone();
    s.generation = 2;
    assert!(e.snapshot(Arc::new(s)).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_stale_nonce_is_ignored_entirely() {
    let mut e = sotw_started();
    let old_rds_nonce = e.nonces[ROUTE].clone();
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
    let lds = one(e.snapshot(s2));
    assert_eq!(lds.type_url, LISTENER);
    // A request with an old nonce for LDS (e.g. "1") is stale: no ACK, no response.
    assert!(e
        .send(DiscoveryRequest {
            type_url: LISTENER.into(),
            response_nonce: "1".into(),
            ..Default::default()
        })
        .is_empty());
    let st = e.c.status();
    assert_eq!(st.types[LISTENER].stale_requests, 1);
    assert_eq!(st.outstanding.as_ref().unwrap().nonce, lds.nonce);
    let rds = one(e.ack(&lds));
    assert_eq!(rds.type_url, ROUTE);
    // A stale RDS request changing the names is ignored entirely in SotW.
    assert!(e
        .send(DiscoveryRequest {
            type_url: ROUTE.into(),
            resource_names: vec!["other".into()],
            response_nonce: old_rds_nonce,
            ..Default::default()
        })
        .is_empty());
    assert_eq!(e.c.status().types[ROUTE].subscribed, ["r"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_nack_is_recorded_not_resent_and_does_not_block_later_types() {
    let mut e = sotw_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
        ],
    );
    // Cluster a is updated: its (unchanged) assignment goes with the CDS response.
    let out = e.snapshot(s2);
    assert_eq!(types(&out), [CLUSTER, ENDPOINT]);
    let (cds, eds) = two(out);
    assert_eq!(names(&eds), ["a"]);
    // NACK of CDS: the next type in the push order still goes out.
    assert!(e.nack(&cds, "bad cluster a").is_empty(), "EDS outstanding");
    let lds = one(e.ack(&eds));
    assert_eq!(lds.type_url, LISTENER);
    let st = e.c.status();
    let nack = st.types[CLUSTER].last_nack.as_ref().unwrap();
    assert_eq!(nack.message, "bad cluster a");
    assert_eq!(nack.nonce, cds.nonce);
    assert_eq!(nack.resources, ["a"]);
    assert_eq!(st.types[CLUSTER].nacks, 1);
    // After the LDS ACK the rejected CDS is not sent again.
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(1), "generation 2 is not fully acked");
    // A later snapshot that does not touch cluster a: only EDS, no CDS loop.
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
        ],
    );
    let eds = one(e.snapshot(s3));
    assert_eq!(eds.type_url, ENDPOINT);
    assert!(e.ack(&eds).is_empty());
    assert_eq!(e.c.status().types[CLUSTER].responses_sent, 2);
    // Cluster a changes again: sent.
    let s4 = snap(
        4,
        &[
            (CLUSTER, "a", 4),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 3),
            (ENDPOINT, "b", 1),
            (LISTENER, "l", 2),
            (ROUTE, "r", 1),
        ],
    );
    let (cds, eds) = two(e.snapshot(s4));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["a", "b"]);
    assert_eq!(eds.type_url, ENDPOINT);
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(4));
}

#[test]
fn sotw_cluster_removal_waits_for_lds_and_rds_ack() {
    let mut e = sotw_started();
    // b goes away, c comes in, the route moves from b to c.
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "c", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "c", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 2),
        ],
    );
    let cds = one(e.snapshot(s2));
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(names(&cds), ["a", "b", "c"], "b kept until routes moved");
    // Envoy asks for c's assignment while c warms and ACKs CDS only once c has warmed (it pauses
    // CDS ACKs while clusters warm): EDS goes out with CDS still outstanding.
    let eds = one(e.request(ENDPOINT, &["a", "b", "c"]));
    assert_eq!(names(&eds), ["c"], "a and b are held");
    assert!(
        e.ack(&eds).is_empty(),
        "nothing else while CDS is outstanding"
    );
    let rds = one(e.ack(&cds));
    assert_eq!(rds.type_url, ROUTE, "LDS unchanged, not resent");
    assert_eq!(e.c.status().retained_removals, 2);
    // Routes ACKed: now the final CDS push removes b. (A SotW EDS response would not remove
    // b's assignment: the Envoy drops it by unsubscribing.)
    let cds = one(e.ack(&rds));
    assert_eq!(names(&cds), ["a", "c"]);
    assert_eq!(e.acked(), Some(1));
    // Envoy drops the EDS watch for b (before acking CDS): nothing to send for that.
    assert!(e.request(ENDPOINT, &["a", "c"]).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    assert_eq!(e.c.status().retained_removals, 0);
}

#[test]
fn sotw_removal_kept_while_rds_is_nacked() {
    let mut e = sotw_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 2),
        ],
    );
    let rds = one(e.snapshot(s2));
    assert_eq!(rds.type_url, ROUTE);
    assert!(e.nack(&rds, "route rejected").is_empty());
    // The Envoy still runs the old routes (which use b): b must stay.
    assert_eq!(e.c.status().retained_removals, 2);
    let s3 = snap(
        3,
        &[
            (CLUSTER, "a", 1),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", 1),
            (ROUTE, "r", 3),
        ],
    );
    let rds = one(e.snapshot(s3));
    let cds = one(e.ack(&rds));
    assert_eq!(names(&cds), ["a"]);
}

#[test]
fn sotw_listener_removed_directly() {
    let mut e = sotw_started();
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 1),
            (CLUSTER, "b", 1),
            (ENDPOINT, "a", 1),
            (ENDPOINT, "b", 1),
            (ROUTE, "r", 1),
        ],
    );
    let lds = one(e.snapshot(s2));
    assert_eq!(lds.type_url, LISTENER);
    assert!(lds.resources.is_empty());
    assert!(e.ack(&lds).is_empty());
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn sotw_unknown_type_gets_one_empty_response() {
    let mut e = Sotw::new(gen1());
    let cds = one(e.request(CLUSTER, &[]));
    // While CDS is outstanding, an unserved type is still answered at once, empty.
    let pc = one(e.request(PROXY_CONFIG, &[]));
    assert_eq!(pc.type_url, PROXY_CONFIG);
    assert!(pc.resources.is_empty());
    assert!(!pc.version_info.is_empty());
    assert_ne!(pc.nonce, cds.nonce);
    // Its ACK produces nothing, and the push sequence is unaffected.
    assert!(e.ack(&pc).is_empty());
    assert!(e.request(LISTENER, &[]).is_empty());
    let lds = one(e.ack(&cds));
    assert_eq!(lds.type_url, LISTENER);
    let st = e.c.status();
    assert!(!st.types[PROXY_CONFIG].served);
    assert_eq!(st.types[PROXY_CONFIG].acks, 1);
}
