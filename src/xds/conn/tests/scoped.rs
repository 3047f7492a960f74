//! Scoped RDS (scoped route layout): SRDS order, wildcard, changed-only RDS, removals.

use super::*;

/// Scopes `s1`, `s2` with one RouteConfiguration each.
fn scoped_gen(generation: u64, r1: u32, r2: u32, scope2: bool) -> Arc<Snapshot> {
    let mut items = vec![
        (CLUSTER, "a", 1),
        (ENDPOINT, "a", 1),
        (LISTENER, "l", 1),
        (SCOPED_ROUTE, "s1", 1),
        (ROUTE, "s1", r1),
        (ROUTE, "s2", r2),
    ];
    if scope2 {
        items.push((SCOPED_ROUTE, "s2", 1));
    }
    snap(generation, &items)
}

/// SotW: SRDS asked without names is a wildcard and goes after LDS, before RDS; RDS may go while
/// SRDS is outstanding; a change to one scope's RouteConfiguration resends only that one.
#[test]
fn sotw_scoped_routes_order_wildcard_and_changed_only_rds() {
    let mut e = Sotw::new(scoped_gen(1, 1, 1, true));
    let cds = one(e.request(CLUSTER, &[]));
    let eds = one(e.request(ENDPOINT, &["a"]));
    assert!(e.ack(&eds).is_empty());
    assert!(e.request(LISTENER, &[]).is_empty());
    let lds = one(e.ack(&cds));
    assert_eq!(lds.type_url, LISTENER);
    assert!(e.request(SCOPED_ROUTE, &[]).is_empty(), "LDS outstanding");
    let srds = one(e.ack(&lds));
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert_eq!(names(&srds), ["s1", "s2"]);
    // The Envoy asks for the scopes' RouteConfigurations before it ACKs SRDS: answered.
    let rds = one(e.request(ROUTE, &["s1", "s2"]));
    assert_eq!(names(&rds), ["s1", "s2"]);
    assert!(e.ack(&srds).is_empty());
    assert_eq!(e.acked(), None);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(1));
    assert!(e.c.status().types[SCOPED_ROUTE].wildcard);

    // One RouteConfiguration changes: only it is sent (Envoy leaves the other watch alone).
    let rds = one(e.snapshot(scoped_gen(2, 1, 2, true)));
    assert_eq!(rds.type_url, ROUTE);
    assert_eq!(names(&rds), ["s2"]);
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let st = e.c.status();
    assert_eq!(st.types[SCOPED_ROUTE].responses_sent, 1);
    assert_eq!(st.types[LISTENER].responses_sent, 1);

    // A scope goes away: SRDS is resent without it (state of the world), RDS not at all.
    let srds = one(e.snapshot(scoped_gen(3, 1, 2, false)));
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert_eq!(names(&srds), ["s1"]);
    assert!(e.ack(&srds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

/// Delta: a wildcard SRDS subscription gets the scopes, and removed scopes are listed.
#[test]
fn delta_scoped_routes_wildcard_and_removal() {
    let mut e = Delta {
        c: DeltaConnection::new(scoped_gen(1, 1, 1, true)),
    };
    let cds = one(e.sub(CLUSTER, &[]));
    let eds = one(e.sub(ENDPOINT, &["a"]));
    assert!(e.ack(&eds).is_empty());
    assert!(e.sub(LISTENER, &[]).is_empty());
    let lds = one(e.ack(&cds));
    assert!(e.sub(SCOPED_ROUTE, &[]).is_empty());
    let srds = one(e.ack(&lds));
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert_eq!(dnames(&srds), ["s1", "s2"]);
    let rds = one(e.sub(ROUTE, &["s1", "s2"]));
    assert_eq!(dnames(&rds), ["s1", "s2"]);
    assert!(e.ack(&srds).is_empty());
    assert!(e.ack(&rds).is_empty());
    assert_eq!(e.acked(), Some(1));
    let srds = one(e.c.on_snapshot(scoped_gen(2, 1, 1, false)).responses);
    assert_eq!(srds.type_url, SCOPED_ROUTE);
    assert!(srds.resources.is_empty());
    assert_eq!(srds.removed_resources, ["s2"]);
    assert!(e.ack(&srds).is_empty());
    assert_eq!(e.acked(), Some(2));
}
