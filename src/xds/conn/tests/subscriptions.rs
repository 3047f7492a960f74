//! Subscription changes kept in sync without the full comparison: names subscribed and
//! unsubscribed while a response is outstanding, after a NACK, names the target lacks, retained
//! removals; SotW and Delta. Each checks what the Envoy is sent and what the stream reports it
//! holding, and that the versions agree with a fresh stream that subscribed the same names.

use super::*;

/// gen1's resources with the given assignment variants (and extra assignments).
fn with_eds(generation: u64, eds: &[(&'static str, u32)]) -> Arc<Snapshot> {
    let mut items = vec![
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (LISTENER, "l", 1),
        (ROUTE, "r", 1),
    ];
    items.extend(eds.iter().map(|(n, v)| (ENDPOINT, *n, *v)));
    snap(generation, &items)
}

/// The EDS version a fresh Delta stream gets when it subscribes to `names` of `s`.
fn fresh_eds_version(s: Arc<Snapshot>, names: &[&str]) -> String {
    let mut fresh = Delta {
        c: DeltaConnection::new(s),
    };
    let _ = fresh.sub(CLUSTER, &[]);
    one(fresh.sub(ENDPOINT, names)).system_version_info
}

fn held(c: &ConnStatus, t: &str) -> usize {
    c.types[t].resources_held
}

#[test]
fn delta_name_unsubscribed_while_a_response_is_outstanding_is_not_held_after_its_ack() {
    let mut e = delta_started();
    let eds = one(e
        .c
        .on_snapshot(with_eds(2, &[("a", 2), ("b", 2)]))
        .responses);
    assert_eq!(dnames(&eds), ["a", "b"]);
    // The Envoy drops b before it ACKs: no response (nothing to send for an unsubscription).
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    assert!(e.ack(&eds).is_empty());
    let st = e.c.status();
    assert_eq!(held(&st, ENDPOINT), 1);
    assert_eq!(st.types[ENDPOINT].subscribed, ["a"]);
    assert_eq!(st.acked_generation, Some(2));
    // b changes: not watched, nothing sent. Subscribed again: sent, at its new version.
    let s3 = with_eds(3, &[("a", 2), ("b", 3)]);
    assert!(e.c.on_snapshot(s3.clone()).responses.is_empty());
    assert_eq!(e.acked(), Some(3));
    let again = one(e.sub(ENDPOINT, &["b"]));
    assert_eq!(dnames(&again), ["b"]);
    assert_eq!(again.resources[0].version, ver(ENDPOINT, "b", 3));
    assert_eq!(
        again.system_version_info,
        fresh_eds_version(s3, &["a", "b"])
    );
    assert!(e.ack(&again).is_empty());
    assert_eq!(held(&e.c.status(), ENDPOINT), 2);
}

#[test]
fn delta_name_subscribed_and_unsubscribed_in_one_request_is_not_held() {
    let mut e = delta_started();
    // A response built from a map that has c (not watched) is ACKed: c is in the map the
    // stream holds against, but the Envoy does not hold it.
    let s2 = with_eds(2, &[("a", 2), ("b", 1), ("c", 1)]);
    let eds = one(e.c.on_snapshot(s2.clone()).responses);
    assert_eq!(dnames(&eds), ["a"]);
    assert!(e.ack(&eds).is_empty());
    assert!(e.send(dreq(ENDPOINT, &["c"], &["c"], "")).is_empty());
    let st = e.c.status();
    assert_eq!(held(&st, ENDPOINT), 2);
    assert_eq!(st.types[ENDPOINT].subscribed, ["a", "b"]);
    let c = one(e.sub(ENDPOINT, &["c"]));
    assert_eq!(dnames(&c), ["c"]);
    assert_eq!(
        c.system_version_info,
        fresh_eds_version(s2, &["a", "b", "c"])
    );
    assert!(e.ack(&c).is_empty());
    assert_eq!(held(&e.c.status(), ENDPOINT), 3);
    assert_eq!(e.acked(), Some(2));
}

#[test]
fn delta_subscription_changes_after_a_nack() {
    let mut e = delta_started();
    let s2 = with_eds(2, &[("a", 2), ("b", 1), ("c", 1)]);
    let eds = one(e.c.on_snapshot(s2.clone()).responses);
    assert_eq!(dnames(&eds), ["a"]);
    assert!(
        e.nack(&eds, "bad a").is_empty(),
        "the NACKed set is not resent"
    );
    // Then it drops b and watches c: c is sent (with a, whose state the NACK left unknown), b
    // is not.
    let out = one(e.send(dreq(ENDPOINT, &["c"], &["b"], "")));
    assert!(dnames(&out).contains(&"c".to_string()), "{out:?}");
    assert!(!dnames(&out).contains(&"b".to_string()));
    assert!(out.removed_resources.is_empty());
    assert_eq!(out.system_version_info, fresh_eds_version(s2, &["a", "c"]));
    assert!(e.ack(&out).is_empty());
    let st = e.c.status();
    assert_eq!(held(&st, ENDPOINT), 2);
    assert_eq!(st.acked_generation, Some(2));
    // b is not watched any more: its change sends nothing; a's does.
    assert!(e
        .c
        .on_snapshot(with_eds(3, &[("a", 2), ("b", 4), ("c", 1)]))
        .responses
        .is_empty());
    let a = one(e
        .c
        .on_snapshot(with_eds(4, &[("a", 5), ("b", 4), ("c", 1)]))
        .responses);
    assert_eq!(dnames(&a), ["a"]);
}

#[test]
fn delta_name_the_target_lacks_is_sent_when_it_appears_and_not_after_it_is_dropped() {
    let mut e = delta_started();
    assert!(e.sub(ENDPOINT, &["z"]).is_empty(), "nothing to send yet");
    let st = e.c.status();
    assert_eq!(st.types[ENDPOINT].subscribed_count, 3);
    assert_eq!(held(&st, ENDPOINT), 2);
    assert_eq!(st.acked_generation, Some(1), "still holds all there is");
    let s2 = with_eds(2, &[("a", 1), ("b", 1), ("z", 1)]);
    let z = one(e.c.on_snapshot(s2.clone()).responses);
    assert_eq!(dnames(&z), ["z"]);
    assert_eq!(
        z.system_version_info,
        fresh_eds_version(s2, &["a", "b", "z"])
    );
    assert!(e.ack(&z).is_empty());
    assert_eq!(held(&e.c.status(), ENDPOINT), 3);
    assert!(e.send(dreq(ENDPOINT, &[], &["z"], "")).is_empty());
    assert!(e
        .c
        .on_snapshot(with_eds(3, &[("a", 1), ("b", 1), ("z", 2)]))
        .responses
        .is_empty());
    assert_eq!(held(&e.c.status(), ENDPOINT), 2);
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_retained_removal_does_not_hold_back_other_changes() {
    let mut e = delta_started();
    // b goes; the new route is NACKed, so b is kept (make before break) ...
    let items = |eds_a: u32, route: u32| {
        snap(
            0,
            &[
                (CLUSTER, "a", 1),
                (ENDPOINT, "a", eds_a),
                (LISTENER, "l", 1),
                (ROUTE, "r", route),
            ],
        )
    };
    let at = |generation: u64, s: Arc<Snapshot>| {
        let mut s = (*s).clone();
        s.generation = generation;
        Arc::new(s)
    };
    let rds = one(e.c.on_snapshot(at(2, items(1, 2))).responses);
    assert_eq!(rds.type_url, ROUTE);
    assert!(e.nack(&rds, "bad route").is_empty());
    assert_eq!(e.c.status().retained_removals, 2);
    // ... and a's new assignment still goes out alone, b neither resent nor removed.
    let eds = one(e.c.on_snapshot(at(3, items(3, 2))).responses);
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(dnames(&eds), ["a"]);
    assert!(eds.removed_resources.is_empty());
    assert!(e.ack(&eds).is_empty());
    let st = e.c.status();
    assert_eq!((held(&st, CLUSTER), held(&st, ENDPOINT)), (2, 2));
    // A good route: ACKed, then b is removed.
    let rds = one(e.c.on_snapshot(at(4, items(3, 3))).responses);
    let (cds, eds) = two(e.ack(&rds));
    assert_eq!(
        (cds.removed_resources.clone(), cds.resources.len()),
        (vec!["b".to_string()], 0)
    );
    assert_eq!(eds.removed_resources, ["b"]);
    assert!(e.send(dreq(ENDPOINT, &[], &["b"], "")).is_empty());
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    let st = e.c.status();
    assert_eq!((held(&st, CLUSTER), held(&st, ENDPOINT)), (1, 1));
    assert_eq!((st.retained_removals, st.acked_generation), (0, Some(4)));
    let s4 = at(4, items(3, 3));
    assert_eq!(eds.system_version_info, fresh_eds_version(s4, &["a"]));
}

#[test]
fn sotw_subscription_changes_keep_what_is_held() {
    let mut e = sotw_started();
    let eds = one(e.snapshot(with_eds(2, &[("a", 2), ("b", 2)])));
    assert_eq!(names(&eds), ["a", "b"]);
    // The ACK names only a: b is forgotten.
    assert!(e.request(ENDPOINT, &["a"]).is_empty());
    let st = e.c.status();
    assert_eq!(held(&st, ENDPOINT), 1);
    assert_eq!(st.acked_generation, Some(2));
    assert!(e.snapshot(with_eds(3, &[("a", 2), ("b", 3)])).is_empty());
    // b watched again: sent at its new version. A name the target lacks: nothing for it.
    let b = one(e.request(ENDPOINT, &["a", "b", "z"]));
    assert_eq!(names(&b), ["b"]);
    assert!(e.ack(&b).is_empty());
    assert_eq!(held(&e.c.status(), ENDPOINT), 2);
    let z = one(e.snapshot(with_eds(4, &[("a", 2), ("b", 3), ("z", 1)])));
    assert_eq!(names(&z), ["z"]);
    assert!(e.ack(&z).is_empty());
    assert_eq!(held(&e.c.status(), ENDPOINT), 3);
    assert_eq!(e.acked(), Some(4));
}

#[test]
fn sotw_name_dropped_after_a_nack_is_not_resent() {
    let mut e = sotw_started();
    let eds = one(e.snapshot(with_eds(2, &[("a", 2), ("b", 2)])));
    assert!(e.nack(&eds, "bad").is_empty());
    // The Envoy drops b: a (its state unknown since the NACK) may be tried again, b never.
    for r in e.request(ENDPOINT, &["a"]) {
        assert_eq!(names(&r), ["a"]);
        assert!(e.ack(&r).is_empty());
    }
    let eds = one(e.snapshot(with_eds(3, &[("a", 3), ("b", 3)])));
    assert_eq!(names(&eds), ["a"]);
    assert!(e.ack(&eds).is_empty());
    assert_eq!(held(&e.c.status(), ENDPOINT), 1);
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn delta_unsubscribing_frees_the_name_budget() {
    use crate::xds::limits::LimitExceeded;
    let s = snap(1, &[(CLUSTER, "c", 1), (ENDPOINT, "c", 1)]);
    let mut d = DeltaConnection::with_limits(s, small_limits());
    let req = |sub: &[&str], unsub: &[&str]| dreq(ENDPOINT, sub, unsub, "");
    assert!(d
        .on_request(req(&["c", "d", "e", "f"], &[]))
        .refused
        .is_none());
    assert!(d.on_request(req(&[], &["d", "e"])).refused.is_none());
    assert!(d.on_request(req(&["g", "h"], &[])).refused.is_none());
    // `c` is in the config and free: f, g, h, i, j are the five that count.
    let step = d.on_request(req(&["i", "j"], &[]));
    assert!(
        matches!(
            step.refused,
            Some(LimitExceeded::ResourceNames {
                names: 5,
                bytes: 5,
                ..
            })
        ),
        "{:?}",
        step.refused
    );
}
