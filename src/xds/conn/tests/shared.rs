//! The diffs shared by a service's streams (`diffs.rs`) give every stream exactly what it would
//! compute on its own: random snapshot sequences (maps evolving as the hub's do, sharing their
//! unchanged subtrees), random subscriptions and subscription changes, ACKs, NACKs, responses
//! left outstanding, and streams that fall behind (they skip snapshots). Each stream of a group
//! sharing one `SharedDiffs` is checked against a twin that computes its own, SotW and Delta:
//! the same responses (nonces included), events, refusals and status after every input.

use std::collections::BTreeSet;

use super::*;
use crate::xds::conn::{SharedDiffs, Step, Wire};
use crate::xds::limits::Limits;

/// xorshift64: deterministic, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// A random subset of `names`.
    fn subset(&mut self, names: &[&'static str]) -> Vec<&'static str> {
        names.iter().copied().filter(|_| self.chance(60)).collect()
    }
}

const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

fn universe(t: &str) -> &'static [&'static str] {
    match t {
        CLUSTER | ENDPOINT => &["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"],
        LISTENER => &["l0", "l1"],
        _ => &["r0", "r1", "r2", "r3"],
    }
}

fn type_of(t: &str) -> &'static str {
    TYPES.into_iter().find(|x| *x == t).expect("a served type")
}

/// The next snapshot: one to three resources added, changed or removed; every other entry (and
/// every untouched map) shared with `prev`, as the hub's snapshots are.
fn evolve(rng: &mut Rng, prev: &Snapshot) -> Arc<Snapshot> {
    let mut next = prev.clone();
    next.generation += 1;
    for _ in 0..1 + rng.below(3) {
        let t = TYPES[rng.below(TYPES.len())];
        let names = universe(t);
        let name = names[rng.below(names.len())];
        let m = next.resources.entry(t).or_default();
        if rng.chance(25) {
            m.remove(name);
        } else {
            m.insert(name.to_string(), res(t, name, rng.below(4) as u32));
        }
    }
    Arc::new(next)
}

fn first(rng: &mut Rng) -> Arc<Snapshot> {
    let mut s = Snapshot {
        generation: 1,
        ..Default::default()
    };
    for t in TYPES {
        let m = s.resources.entry(t).or_default();
        for name in rng.subset(universe(t)) {
            m.insert(name.to_string(), res(t, name, 0));
        }
    }
    Arc::new(s)
}

enum Conn {
    Sotw(SotwConnection),
    Delta(DeltaConnection),
}

impl Conn {
    fn new(delta: bool, s: Arc<Snapshot>, diffs: Arc<SharedDiffs>) -> Conn {
        if delta {
            Conn::Delta(DeltaConnection::shared(s, Limits::default(), diffs))
        } else {
            Conn::Sotw(SotwConnection::shared(s, Limits::default(), diffs))
        }
    }
    fn snapshot(&mut self, s: Arc<Snapshot>) -> Step<Wire> {
        match self {
            Conn::Sotw(c) => c.on_snapshot_wire(s),
            Conn::Delta(c) => c.on_snapshot_wire(s),
        }
    }
    fn status(&self) -> ConnStatus {
        match self {
            Conn::Sotw(c) => c.status(),
            Conn::Delta(c) => c.status(),
        }
    }
}

/// One request, in the flavour of the stream.
enum Req {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

/// A stream on the shared diffs, its twin on its own, and what the scripted Envoy knows.
struct Pair {
    shared: Conn,
    own: Conn,
    delta: bool,
    /// Per type: the latest response, and whether it is still to be answered.
    latest: BTreeMap<&'static str, (Wire, bool)>,
    /// Per type: the names subscribed (empty with `wildcard`).
    names: BTreeMap<&'static str, BTreeSet<&'static str>>,
}

impl Pair {
    /// Feeds the same input to both and checks they answer alike.
    fn step(&mut self, what: &str, input: impl Fn(&mut Conn) -> Step<Wire>) {
        let a = input(&mut self.shared);
        let b = input(&mut self.own);
        assert_eq!(a.responses, b.responses, "{what}: responses");
        assert_eq!(a.events, b.events, "{what}: events");
        assert_eq!(a.refused, b.refused, "{what}: refused");
        assert_eq!(self.shared.status(), self.own.status(), "{what}: status");
        for w in a.responses {
            let t = type_of(&w.type_url);
            self.latest.insert(t, (w, true));
        }
    }

    fn request(&mut self, what: &str, req: Req) {
        self.step(what, |c| match (c, &req) {
            (Conn::Sotw(c), Req::Sotw(r)) => c.on_request_wire(r.clone()),
            (Conn::Delta(c), Req::Delta(r)) => c.on_request_wire(r.clone()),
            _ => unreachable!("one flavour per pair"),
        });
    }

    /// A SotW request for `t` naming its whole subscription, answering the latest response.
    fn sotw(&self, t: &'static str, error: Option<&str>) -> Req {
        let (version, nonce) = self
            .latest
            .get(t)
            .map(|(w, _)| (w.version.clone(), w.nonce.clone()))
            .unwrap_or_default();
        Req::Sotw(DiscoveryRequest {
            type_url: t.into(),
            version_info: version,
            resource_names: self.names[t].iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce,
            error_detail: error.map(rpc_error),
            ..Default::default()
        })
    }

    fn start(&mut self, rng: &mut Rng) {
        for t in TYPES {
            // Clusters and listeners by wildcard, assignments and routes by name.
            let names: BTreeSet<&'static str> = if t == CLUSTER || t == LISTENER {
                BTreeSet::new()
            } else {
                rng.subset(universe(t)).into_iter().collect()
            };
            self.names.insert(t, names.clone());
            let req = if self.delta {
                let sub: Vec<&str> = if names.is_empty() && (t == ENDPOINT || t == ROUTE) {
                    // An explicit subscription to nothing yet: a name the config lacks.
                    vec!["missing"]
                } else {
                    names.into_iter().collect()
                };
                Req::Delta(dreq(t, &sub, &[], ""))
            } else {
                self.sotw(t, None)
            };
            self.request("start", req);
        }
    }

    /// The scripted Envoy answers some of its outstanding responses (ACK or NACK) and leaves
    /// the others, and sometimes changes a by-name subscription.
    fn act(&mut self, rng: &mut Rng) {
        let due: Vec<&'static str> = self
            .latest
            .iter()
            .filter(|(_, (_, open))| *open)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            if rng.chance(30) {
                continue;
            }
            let nack = rng.chance(15).then_some("rejected");
            if let Some((_, open)) = self.latest.get_mut(t) {
                *open = false;
            }
            let req = if self.delta {
                let nonce = self.latest[t].0.nonce.clone();
                let mut r = dreq(t, &[], &[], &nonce);
                r.error_detail = nack.map(rpc_error);
                Req::Delta(r)
            } else {
                self.sotw(t, nack)
            };
            self.request("ack", req);
        }
        if rng.chance(25) {
            let t = if rng.chance(50) { ENDPOINT } else { ROUTE };
            let names = universe(t);
            let name = names[rng.below(names.len())];
            let subscribed = self.names.entry(t).or_default();
            let add = !subscribed.contains(name);
            if add {
                subscribed.insert(name);
            } else {
                subscribed.remove(name);
            }
            let req = if self.delta {
                let (sub, unsub): (&[&str], &[&str]) =
                    if add { (&[name], &[]) } else { (&[], &[name]) };
                Req::Delta(dreq(t, sub, unsub, ""))
            } else {
                if let Some((_, open)) = self.latest.get_mut(t) {
                    *open = false;
                }
                self.sotw(t, None)
            };
            self.request("subscription change", req);
        }
    }
}

#[test]
fn streams_on_shared_diffs_answer_as_streams_computing_their_own() {
    let mut hits = 0;
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let diffs = Arc::new(SharedDiffs::new());
        let mut target = first(&mut rng);
        let mut pairs: Vec<Pair> = (0..6)
            .map(|i| Pair {
                shared: Conn::new(i % 2 == 0, target.clone(), diffs.clone()),
                own: Conn::new(
                    i % 2 == 0,
                    target.clone(),
                    Arc::new(SharedDiffs::unshared()),
                ),
                delta: i % 2 == 0,
                latest: BTreeMap::new(),
                names: BTreeMap::new(),
            })
            .collect();
        for p in &mut pairs {
            p.start(&mut rng);
        }
        for _ in 0..25 {
            if rng.chance(85) {
                target = evolve(&mut rng, &target);
            }
            for (i, p) in pairs.iter_mut().enumerate() {
                // The first two streams see every snapshot; the others fall behind at times
                // (they skip to the latest when they next take one).
                if i < 2 || rng.chance(60) {
                    let s = target.clone();
                    p.step("snapshot", |c| c.snapshot(s.clone()));
                }
                p.act(&mut rng);
            }
        }
        hits += diffs.kept();
    }
    assert!(
        hits > 0,
        "the streams never shared a diff: the test checks nothing"
    );
}
