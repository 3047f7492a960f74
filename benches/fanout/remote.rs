//! The fan-out figure with the clients in a child process (this bench binary again,
//! `fanout-clients`), beside its floor measured in the same run: the same number of loopback TCP
//! sockets between the same two processes, each written the same number of bytes as the change's
//! ADS response by a task of its own woken by one `watch` (the shape of the server's streams),
//! and read by the child.
//!
//! Parent and child talk over the child's stdin/stdout, one line per step:
//! `ready` (every stream synced) → parent `go` → `armed` → the parent takes its clock and applies
//! the change (or wakes the floor's writers) → `times SIZE T...` (wall-clock nanoseconds at which
//! each stream or socket had it; both processes read the same `CLOCK_REALTIME`); after the ADS
//! rounds, `close` → `closed` (the child's streams ended, and the parent waits until the server
//! has let go of them) before the floor's sockets are opened.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use knative_pilot::hub::Hub;
use knative_pilot::model::parse_object;
use knative_pilot::state::{Change, Entry};
use knative_pilot::tools::synth::{Form, Synth};
use knative_pilot::translate::Options;
use knative_pilot::xds::server::{AdsService, ConnectionRegistry};
use knative_pilot::xds::{CLUSTER, ENDPOINT, ROUTE};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::util::cpu_ns;

/// gRPC's 5-byte message prefix and an HTTP/2 DATA frame header: what the floor adds to the
/// response's encoded size so that both write the same bytes.
const FRAMING: usize = 5 + 9;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The child process, spoken to line by line.
struct Clients {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Clients {
    fn spawn(args: &[String]) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .arg("fanout-clients")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client process");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn expect(&mut self, word: &str) -> String {
        loop {
            match self.lines.next() {
                Some(Ok(l)) if l.split_whitespace().next() == Some(word) => return l,
                Some(Ok(_)) => {}
                _ => panic!("client process ended before `{word}`"),
            }
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the client process");
        self.stdin.flush().expect("flush");
    }

    /// `go`, `armed`, then `act` at the parent's clock, then the child's `times`: the delay of
    /// each stream (sorted) and the size of what it received.
    fn round(&mut self, act: impl FnOnce()) -> Round {
        self.say("go");
        self.expect("armed");
        let cpu0 = (cpu_ns(std::process::id()), cpu_ns(self.child.id()));
        let t0 = now_ns();
        act();
        let line = self.expect("times");
        let cpu = (
            cpu_ns(std::process::id()) - cpu0.0,
            cpu_ns(self.child.id()) - cpu0.1,
        );
        let mut words = line.split_whitespace().skip(1);
        let size = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let mut times: Vec<Duration> = words
            .filter_map(|w| w.parse::<u128>().ok())
            .map(|t| Duration::from_nanos(t.saturating_sub(t0) as u64))
            .collect();
        times.sort();
        Round { size, times, cpu }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// One round: the size of the response, each stream's delay (sorted), and the CPU time (ns)
/// of this process and of the client process from the change until every stream had it.
struct Round {
    size: usize,
    times: Vec<Duration>,
    cpu: (u64, u64),
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The server side: STREAMS Delta streams from the child, ROUNDS endpoint changes, then the
/// floor for ROUNDS rounds on as many sockets.
pub async fn run(streams: usize, n: usize, rounds: usize) {
    let synth = Synth::new(n, Form::Route);
    let hub = Hub::new(Options::default());
    hub.update(synth.inputs(), Vec::new());
    let registry = Arc::new(ConnectionRegistry::new());
    let svc = AdsService::new(hub.clone(), registry.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc.server())
            .serve_with_incoming(knative_pilot::xds::server::plain_incoming(listener)),
    );
    let mid = n / 2;
    let target = format!(
        "outbound|80||svc-{mid}-00001.{}.svc.cluster.local",
        synth.namespace(mid)
    );
    let floor_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let floor_addr = floor_listener.local_addr().expect("addr");
    let mut clients = Clients::spawn(&[
        addr.to_string(),
        streams.to_string(),
        target,
        floor_addr.to_string(),
    ]);
    let t_setup = std::time::Instant::now();
    tokio::task::block_in_place(|| clients.expect("ready"));
    let setup = t_setup.elapsed();
    for _ in 0..600 {
        if registry.len() == streams && registry.all_acked(hub.generation()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ads = Vec::new();
    let mut size = 0;
    // On stderr, for a profiler attached to this process over the rounds' window.
    eprintln!("fanout: ADS rounds begin");
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = synth.endpoints(mid, 0, round + 1);
        let object = parse_object(v).ok().flatten().expect("endpoints");
        let change = vec![Change::Upsert(Arc::new(Entry {
            object,
            origin: None,
        }))];
        let r = tokio::task::block_in_place(|| {
            clients.round(|| {
                hub.apply(change, Vec::new());
            })
        });
        size = r.size;
        ads.push(r);
        // Every stream ACKs before the next round.
        for _ in 0..600 {
            if registry.all_acked(hub.generation()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!("fanout: ADS rounds end");
    // The ADS streams are closed first (on both sides) so that the floor's sockets fit in
    // each process's file limit (20,000 here) at 10,000 streams too.
    tokio::task::block_in_place(|| {
        clients.say("close");
        clients.expect("closed");
    });
    for _ in 0..600 {
        if registry.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The floor: as many sockets, each written `size + FRAMING` bytes by its own task.
    let bytes = Arc::new(vec![7u8; size + FRAMING]);
    let (go_tx, go_rx) = watch::channel(0usize);
    let accept = tokio::spawn(async move {
        for _ in 0..streams {
            let (mut sock, _) = floor_listener.accept().await.expect("accept");
            sock.set_nodelay(true).expect("nodelay");
            let (bytes, mut go) = (bytes.clone(), go_rx.clone());
            tokio::spawn(async move {
                while go.changed().await.is_ok() {
                    if sock.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    tokio::task::block_in_place(|| {
        clients.say(&format!("floor {}", size + FRAMING));
        clients.expect("floor-ready");
    });
    accept.await.expect("accepted every floor socket");
    let mut floor = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = tokio::task::block_in_place(|| {
            clients.round(|| {
                let _ = go_tx.send(round + 1);
            })
        });
        floor.push(r);
    }
    drop(clients);
    report(streams, n, setup, size, &ads, &floor);
}

/// Median and max per round, then the median over the rounds of each, and the ratio.
fn report(streams: usize, n: usize, setup: Duration, size: usize, ads: &[Round], floor: &[Round]) {
    let summary = |rounds: &[Round]| -> (usize, Duration, Duration, Duration) {
        let mut p50s: Vec<Duration> = rounds
            .iter()
            .filter_map(|r| r.times.get(r.times.len() / 2).copied())
            .collect();
        let mut maxes: Vec<Duration> = rounds
            .iter()
            .filter_map(|r| r.times.last().copied())
            .collect();
        p50s.sort();
        maxes.sort();
        let got = rounds.iter().map(|r| r.times.len()).min().unwrap_or(0);
        let mid = |v: &[Duration]| v.get(v.len() / 2).copied().unwrap_or_default();
        (
            got,
            mid(&p50s),
            mid(&maxes),
            maxes.first().copied().unwrap_or_default(),
        )
    };
    let (a_got, a_p50, a_max, a_min_max) = summary(ads);
    let (f_got, f_p50, f_max, f_min_max) = summary(floor);
    println!(
        "| fan-out, {streams} Delta streams in a child process, {n} services, {} rounds | ADS | floor: {streams} loopback sockets, {} B each | ratio |",
        ads.len(),
        size + FRAMING
    );
    println!("|---|---|---|---|");
    println!(
        "| streams connected and synced, one at a time | {:.1} s | | |",
        setup.as_secs_f64()
    );
    println!(
        "| streams that received it in every round (fewest) | {a_got} of {streams} | {f_got} of {streams} | |"
    );
    println!(
        "| until half the streams have it (median of rounds) | {:.1} ms | {:.1} ms | {:.1} |",
        ms(a_p50),
        ms(f_p50),
        ms(a_p50) / ms(f_p50).max(1e-3)
    );
    println!(
        "| until every stream has it (median of rounds) | {:.1} ms | {:.1} ms | {:.1} |",
        ms(a_max),
        ms(f_max),
        ms(a_max) / ms(f_max).max(1e-3)
    );
    println!(
        "| until every stream has it (best round) | {:.1} ms | {:.1} ms | {:.1} |",
        ms(a_min_max),
        ms(f_min_max),
        ms(a_min_max) / ms(f_min_max).max(1e-3)
    );
    let cpu = |rounds: &[Round], side: fn(&Round) -> u64| -> f64 {
        let mut v: Vec<u64> = rounds.iter().map(side).collect();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64 / 1e6
    };
    let (a_srv, f_srv) = (cpu(ads, |r| r.cpu.0), cpu(floor, |r| r.cpu.0));
    let (a_cli, f_cli) = (cpu(ads, |r| r.cpu.1), cpu(floor, |r| r.cpu.1));
    println!(
        "| CPU of the server process per round (median; floor: the writers) | {a_srv:.1} ms | {f_srv:.1} ms | {:.1} |",
        a_srv / f_srv.max(1e-3)
    );
    println!(
        "| CPU of the client process per round (median; ADS: decode and ACK) | {a_cli:.1} ms | {f_cli:.1} ms | {:.1} |",
        a_cli / f_cli.max(1e-3)
    );
}

/// The child: `fanout-clients ADDR STREAMS TARGET FLOOR_ADDR`.
pub async fn clients(args: &[String]) {
    let addr: std::net::SocketAddr = args[0].parse().expect("address");
    let streams: usize = args[1].parse().expect("streams");
    let target = args[2].clone();
    let floor_addr: std::net::SocketAddr = args[3].parse().expect("floor address");
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(streams);
    let (got_tx, mut got_rx) = mpsc::unbounded_channel::<(u128, usize)>();
    let (armed_tx, armed_rx) = watch::channel(0usize);
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let istio = if i % 2 == 0 {
            "ingressgateway"
        } else {
            "cluster-local-gateway"
        };
        let mut client = AggregatedDiscoveryServiceClient::new(super::channel(addr, None).await)
            .max_decoding_message_size(usize::MAX);
        let (ready_tx, got_tx, armed) = (ready_tx.clone(), got_tx.clone(), armed_rx.clone());
        let (node, target) = (super::node(i, istio, None), target.clone());
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
            let _ = tx.send(DeltaDiscoveryRequest {
                node: Some(node),
                type_url: CLUSTER.to_string(),
                ..Default::default()
            });
            let mut resp = client
                .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    rx,
                ))
                .await
                .expect("stream")
                .into_inner();
            let (mut subscribed, mut ready, mut seen) = (false, false, 0usize);
            while let Ok(Some(r)) = resp.message().await {
                let at = now_ns();
                let round = *armed.borrow();
                if r.type_url == ENDPOINT
                    && ready
                    && round > seen
                    && r.resources.iter().any(|x| x.name == target)
                {
                    seen = round;
                    let _ = got_tx.send((at, r.encoded_len()));
                }
                super::answer_as_envoy(&tx, &r, &mut subscribed);
                if r.type_url == ROUTE && !ready {
                    ready = true;
                    let _ = ready_tx.send(()).await;
                }
            }
            drop(client);
        }));
    }
    for _ in 0..streams {
        ready_rx.recv().await.expect("stream ready");
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut round = 0;
    let mut floor_size = None;
    while let Some(line) = line_rx.recv().await {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("go") => {
                round += 1;
                let _ = armed_tx.send(round);
                let _ = writeln!(stdout, "armed");
                let _ = stdout.flush();
                let mut times = Vec::with_capacity(streams);
                let mut size = floor_size.unwrap_or(0);
                while times.len() < streams {
                    match tokio::time::timeout(Duration::from_secs(60), got_rx.recv()).await {
                        Ok(Some((t, s))) => {
                            times.push(t.to_string());
                            size = size.max(s);
                        }
                        _ => break,
                    }
                }
                let _ = writeln!(stdout, "times {size} {}", times.join(" "));
                let _ = stdout.flush();
            }
            Some("close") => {
                for task in tasks.drain(..) {
                    task.abort();
                    let _ = task.await;
                }
                let _ = writeln!(stdout, "closed");
                let _ = stdout.flush();
            }
            Some("floor") => {
                let size: usize = words.next().and_then(|w| w.parse().ok()).expect("size");
                floor_size = Some(size);
                let (conn_tx, mut conn_rx) = mpsc::channel::<()>(streams);
                for _ in 0..streams {
                    let mut sock = tokio::net::TcpStream::connect(floor_addr)
                        .await
                        .expect("floor connect");
                    sock.set_nodelay(true).expect("nodelay");
                    let (got_tx, conn_tx) = (got_tx.clone(), conn_tx.clone());
                    tokio::spawn(async move {
                        let _ = conn_tx.send(()).await;
                        let mut buf = vec![0u8; size];
                        while sock.read_exact(&mut buf).await.is_ok() {
                            let _ = got_tx.send((now_ns(), size));
                        }
                    });
                }
                for _ in 0..streams {
                    conn_rx.recv().await.expect("floor socket");
                }
                let _ = writeln!(stdout, "floor-ready");
                let _ = stdout.flush();
            }
            _ => break,
        }
    }
}
