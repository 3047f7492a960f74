//! Per-stream limits (type URLs, subscribed names, NACK messages) and the status rewritten in place.

use super::*;

#[test]
fn distinct_type_urls_beyond_the_limit_end_the_stream() {
    use crate::xds::limits::LimitExceeded;
    let mut c = SotwConnection::with_limits(snap(1, &[(CLUSTER, "c", 1)]), small_limits());
    let step = c.on_request(sotw_req(CLUSTER, &[], ""));
    assert!(step.refused.is_none());
    assert_eq!(types(&step.responses), [CLUSTER]);
    for t in ["type.example/a", "type.example/b"] {
        let step = c.on_request(sotw_req(t, &[], ""));
        assert!(step.refused.is_none(), "{t}");
        assert_eq!(step.responses.len(), 1, "unknown types are answered empty");
    }
    // Asking again for a type it named costs nothing new.
    assert!(c
        .on_request(sotw_req("type.example/a", &[], ""))
        .refused
        .is_none());
    let step = c.on_request(sotw_req("type.example/c", &[], ""));
    assert!(step.responses.is_empty(), "nothing echoed");
    assert_eq!(
        step.refused,
        Some(LimitExceeded::TypeUrls {
            limit: 3,
            type_url: "type.example/c".into()
        })
    );
    assert_eq!(c.status().types.len(), 3, "the refused type left no state");
    let long = format!("type.example/{}", "x".repeat(100));
    let step = c.on_request(sotw_req(&long, &[], ""));
    assert!(step.responses.is_empty());
    assert_eq!(
        step.refused,
        Some(LimitExceeded::TypeUrlLength {
            len: long.len(),
            limit: 80
        })
    );
}

#[test]
fn subscribed_names_beyond_the_limit_end_the_stream() {
    use crate::xds::limits::LimitExceeded;
    let s = snap(1, &[(CLUSTER, "c", 1), (ENDPOINT, "c", 1)]);
    // Delta: subscriptions accumulate over requests.
    let mut d = DeltaConnection::with_limits(s.clone(), small_limits());
    let sub = |names: &[&str]| DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    };
    // Only names the config lacks count: `c` is free, `d` to `h` are five.
    let first = d.on_request(sub(&["c", "d"]));
    assert!(first.refused.is_none(), "{:?}", first.refused);
    assert!(d.on_request(sub(&["e", "f"])).refused.is_none());
    assert!(d.on_request(sub(&["g"])).refused.is_none());
    let step = d.on_request(sub(&["h"]));
    assert!(step.responses.is_empty());
    assert!(
        matches!(
            step.refused,
            Some(LimitExceeded::ResourceNames {
                names: 5,
                max_names: 4,
                ..
            })
        ),
        "{:?}",
        step.refused
    );
    // SotW: bytes count too (one 41-byte name).
    let mut c = SotwConnection::with_limits(s, small_limits());
    let long = "n".repeat(41);
    let step = c.on_request(sotw_req(ENDPOINT, &[&long], ""));
    assert!(
        matches!(
            step.refused,
            Some(LimitExceeded::ResourceNames { bytes: 41, .. })
        ),
        "{:?}",
        step.refused
    );
}

/// An Envoy subscribing to every resource of a config larger than the name limits is served:
/// the names its config holds cost the stream nothing (the cluster-local gateway at 100,000
/// services names 200,001 resources, the default limit is 200,000).
#[test]
fn names_the_config_holds_do_not_count_against_the_limit() {
    let names = ["c1", "c2", "c3", "c4", "c5", "c6"];
    let all: Vec<(&'static str, &str, u32)> = names
        .iter()
        .flat_map(|n| [(CLUSTER, *n, 1), (ENDPOINT, *n, 1)])
        .collect();
    let s = snap(1, &all);
    let mut d = DeltaConnection::with_limits(s.clone(), small_limits());
    let cds = d.on_request(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    });
    assert!(cds.refused.is_none());
    let eds = d.on_request(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    });
    assert!(eds.refused.is_none(), "{:?}", eds.refused);
    let sent: usize = eds.responses.iter().map(|r| r.resources.len()).sum();
    assert_eq!(sent, 6, "every assignment is sent");
    let mut c = SotwConnection::with_limits(s, small_limits());
    let _ = c.on_request(sotw_req(CLUSTER, &[], ""));
    let step = c.on_request(sotw_req(ENDPOINT, &names, ""));
    assert!(step.refused.is_none(), "{:?}", step.refused);
    // Names the config lacks still count, on top of the free ones.
    let mut more: Vec<&str> = names.to_vec();
    more.extend(["x1", "x2", "x3", "x4", "x5"]);
    let step = c.on_request(sotw_req(ENDPOINT, &more, ""));
    assert!(
        matches!(
            step.refused,
            Some(crate::xds::limits::LimitExceeded::ResourceNames { names: 5, .. })
        ),
        "{:?}",
        step.refused
    );
}

#[test]
fn nack_messages_are_kept_truncated() {
    let mut c = SotwConnection::with_limits(snap(1, &[(CLUSTER, "c", 1)]), small_limits());
    let step = c.on_request(sotw_req(CLUSTER, &[], ""));
    let nonce = step.responses[0].nonce.clone();
    let step = c.on_request(DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "x".repeat(10_000),
            details: vec![],
        }),
        ..sotw_req(CLUSTER, &[], &nonce)
    });
    let Some(Event::Nack { nack, .. }) = step.events.first() else {
        panic!("no NACK event: {:?}", step.events);
    };
    assert_eq!(nack.message, format!("{}…", "x".repeat(8)));
    let st = c.status();
    assert_eq!(
        st.types[CLUSTER]
            .last_nack
            .as_ref()
            .map(|n| n.message.len()),
        Some(8 + '…'.len_utf8())
    );
}

#[test]
fn a_status_kept_and_rewritten_after_every_input_equals_a_fresh_one() {
    // The stream's task rewrites the registry's status in place (`status_into`); after every
    // input it must be exactly what a fresh `status()` says: NACKs come and go, names are
    // subscribed and unsubscribed (the shown list grows and shrinks), types are added.
    let mut e = Delta {
        c: DeltaConnection::new(gen1()),
    };
    let mut kept = e.c.status();
    let check = |e: &Delta, kept: &mut ConnStatus| {
        e.c.status_into(kept);
        assert_eq!(*kept, e.c.status());
    };
    let cds = one(e.sub(CLUSTER, &[]));
    check(&e, &mut kept);
    let eds = one(e.sub(ENDPOINT, &["a", "b"]));
    check(&e, &mut kept);
    assert!(e.nack(&eds, "bad assignment").is_empty());
    check(&e, &mut kept);
    assert!(kept.types[ENDPOINT].last_nack.is_some());
    assert!(e.ack(&cds).iter().all(|r| r.type_url != CLUSTER));
    check(&e, &mut kept);
    e.send(dreq(ENDPOINT, &[], &["b"], ""));
    check(&e, &mut kept);
    assert_eq!(kept.types[ENDPOINT].subscribed, ["a"]);
    let many: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    e.sub(ENDPOINT, &refs);
    check(&e, &mut kept);
    assert_eq!(
        kept.types[ENDPOINT].subscribed.len(),
        crate::xds::conn::SUBSCRIBED_SHOWN
    );
    e.send(dreq(ENDPOINT, &[], &refs, ""));
    check(&e, &mut kept);
    assert_eq!(kept.types[ENDPOINT].subscribed, ["a"]);
    let _ =
        e.c.on_snapshot(snap(2, &[(CLUSTER, "a", 2), (ENDPOINT, "a", 2)]));
    check(&e, &mut kept);
    e.sub(ROUTE, &["r"]);
    check(&e, &mut kept);
    assert!(kept.types.contains_key(ROUTE));
}
