//! The events a step returns (ACK, NACK, converged once), and EDS responses to an Envoy that stopped watching (clusters turning from EDS to DNS).

use super::*;

#[test]
fn steps_return_acks_nacks_and_convergence_once() {
    let mut c = SotwConnection::new(snap(1, &[(CLUSTER, "a", 1)]));
    let step = c.on_request(DiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    });
    assert!(step.events.is_empty(), "{:?}", step.events);
    let cds = one(step.responses);
    let ack = |c: &mut SotwConnection, r: &DiscoveryResponse, error: Option<&str>| {
        c.on_request(DiscoveryRequest {
            type_url: CLUSTER.into(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: error.map(rpc_error),
            ..Default::default()
        })
    };
    let step = ack(&mut c, &cds, None);
    assert!(step.responses.is_empty());
    assert_eq!(
        step.events,
        [
            Event::Ack {
                type_url: CLUSTER.into(),
                version: cds.version_info.clone(),
                generation: 1,
            },
            Event::Converged { generation: 1 }
        ]
    );
    // A new snapshot, NACKed: one NACK event (the machine itself logs nothing), no convergence.
    let step = c.on_snapshot(snap(2, &[(CLUSTER, "a", 2)]));
    assert!(step.events.is_empty(), "{:?}", step.events);
    let cds2 = one(step.responses);
    let step = ack(&mut c, &cds2, Some("bad cluster"));
    match &step.events[..] {
        [Event::Nack {
            type_url,
            nack,
            generation,
        }] => {
            assert_eq!(type_url, CLUSTER);
            assert_eq!(*generation, 2, "the NACKed response's snapshot");
            assert_eq!(nack.message, "bad cluster");
            assert_eq!(nack.nonce, cds2.nonce);
            assert_eq!(nack.resources, ["a"]);
        }
        other => panic!("expected one NACK event, got {other:?}"),
    }
    // Fixed: the ACK converges on generation 3, once.
    let cds3 = one(c.on_snapshot(snap(3, &[(CLUSTER, "a", 3)])).responses);
    let step = ack(&mut c, &cds3, None);
    assert_eq!(step.events.len(), 2, "{:?}", step.events);
    assert_eq!(step.events[1], Event::Converged { generation: 3 });
    let step = c.on_snapshot(snap(3, &[(CLUSTER, "a", 3)]));
    assert!(step.responses.is_empty() && step.events.is_empty());
}

#[test]
fn sotw_cluster_turning_from_eds_to_dns_and_back_does_not_stall() {
    let mut e = sotw_started();
    // a becomes a DNS cluster: no assignment any more. No EDS response goes out for that (the
    // Envoy stops watching a's assignment, and would accept an empty EDS response for a type it
    // no longer watches without ACKing it).
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
    let cds = one(e.snapshot(s2));
    assert_eq!(cds.type_url, CLUSTER);
    assert!(e.request(ENDPOINT, &["b"]).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    // Back to EDS: the Envoy asks for a's assignment, which is sent.
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
    let cds = one(e.snapshot(s3));
    assert_eq!(cds.type_url, CLUSTER);
    let eds = one(e.request(ENDPOINT, &["a", "b"]));
    assert_eq!(names(&eds), ["a"], "b's watch is unchanged");
    assert!(e.ack(&eds).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(3));
}

#[test]
fn sotw_eds_removal_to_an_envoy_that_stopped_watching_is_not_sent() {
    let mut e = sotw_started();
    // Both clusters become DNS clusters: the Envoy watches no assignment at all.
    let s2 = snap(
        2,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 2),
            (LISTENER, "l", 1),
            (ROUTE, "r", 1),
        ],
    );
    let cds = one(e.snapshot(s2));
    // Its EDS request naming nothing carries an EDS nonce older than any we might have sent.
    assert!(e.request(ENDPOINT, &[]).is_empty());
    assert!(e.ack(&cds).is_empty());
    assert_eq!(e.acked(), Some(2));
    let lds = one(e.snapshot(snap(
        3,
        &[
            (CLUSTER, "a", 2),
            (CLUSTER, "b", 2),
            (LISTENER, "l", 3),
            (ROUTE, "r", 1),
        ],
    )));
    assert_eq!(lds.type_url, LISTENER, "later pushes are not stalled");
}
