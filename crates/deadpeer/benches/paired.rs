//! Interleaved ratios for the micro workloads, robust to a shared, noisy machine.
//!
//! Each round runs one batch of every variant back to back (the order rotates from round to
//! round), and the ratio variant / raw is taken within the round. The report gives, per
//! variant, the median time per operation and the median ratio with its 25th–75th percentiles
//! over the rounds.
//!
//! `cargo bench -p deadpeer --bench paired` (`PAIRED_ROUNDS=N` to change the 40 rounds;
//! `PAIRED_ONLY=accept,connect,echo,rtt,fin` to pick workloads).
//!
//! `fin` times the peer's clean close: from the peer's `close` (a FIN, on another thread, as a
//! remote peer's arrives) to the wake-up of a task waiting on a raw tokio `read()` (EOF) or on
//! `Liveness::gone()` with nothing reading; it also prints the distribution of every single FIN,
//! since a goal on it is a latency, not a ratio.
//!
//! With `--features metrics`, each workload gains a variant run with a Prometheus recorder
//! (`metrics-exporter-prometheus`) installed as this thread's recorder for the batch; the
//! deadpeer variants without it run with the feature on and no recorder. Compare them with a run
//! without the feature (docs/benchmarks.md, "Metrics").

// Each batch borrows the clients inside its own `block_on` on one thread: no other borrow can
// happen while the borrow is held across an await.
#![allow(clippy::await_holding_refcell_ref)]

mod common;

use std::time::{Duration, Instant};

/// A batch runner: runs one batch and returns its time and how many operations it did.
type Batch<'a> = &'a mut dyn FnMut() -> (Duration, u64);

use common::{AcceptBench, AcceptKind, BLOCK, Clients, FinKind, Server};

/// Runs `rounds` rounds of `variants` (name, batch runner returning (time, ops)) and prints the
/// table. The first variant is the baseline.
fn paired(title: &str, unit: &str, rounds: usize, variants: &mut [(&str, Batch<'_>)]) {
    let k = variants.len();
    // Warm-up round, discarded.
    for (_, run) in variants.iter_mut() {
        run();
    }
    let mut per_op: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut diff: Vec<Vec<f64>> = vec![Vec::new(); k];
    for r in 0..rounds {
        let mut this = vec![0f64; k];
        for j in 0..k {
            let i = (j + r) % k;
            let (t, ops) = (variants[i].1)();
            this[i] = t.as_nanos() as f64 / ops as f64;
        }
        for i in 0..k {
            per_op[i].push(this[i]);
            ratio[i].push(this[i] / this[0]);
            diff[i].push(this[i] - this[0]);
        }
    }
    println!("\n## {title} ({rounds} interleaved rounds)");
    println!(
        "| variant | median {unit} | p25–p75 {unit} | time ratio vs {} (median) | p25–p75 | \
         difference (median) | p25–p75 |",
        variants[0].0
    );
    println!("|---|---|---|---|---|---|---|");
    for i in 0..k {
        let (m, lo, hi) = common::quartiles(&mut per_op[i]);
        let (rm, rlo, rhi) = common::quartiles(&mut ratio[i]);
        let (dm, dlo, dhi) = common::quartiles(&mut diff[i]);
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.3} | {:.3}–{:.3} | {:+.0} | {:+.0}–{:+.0} |",
            variants[i].0, m, lo, hi, rm, rlo, rhi, dm, dlo, dhi
        );
    }
    println!("(rate ratio = 1 / time ratio)");
}

fn wanted(name: &str) -> bool {
    match std::env::var("PAIRED_ONLY") {
        Ok(list) => list.split(',').any(|w| w.trim() == name),
        Err(_) => true,
    }
}

/// Runs `f` with a Prometheus recorder as this thread's recorder (feature `metrics`), so that
/// every metric deadpeer records on this thread goes to a real registry.
#[cfg(feature = "metrics")]
fn recorded<T>(f: impl FnOnce() -> T) -> T {
    static RECORDER: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusRecorder> =
        std::sync::OnceLock::new();
    let recorder = RECORDER
        .get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
    metrics::with_local_recorder(recorder, f)
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let rounds: usize = std::env::var("PAIRED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let rt = common::runtime();

    if wanted("accept") {
        let bench = rt.block_on(async { AcceptBench::new() });
        let n = common::ACCEPT_BATCH;
        let mut a = || (rt.block_on(bench.batch(AcceptKind::Raw, n)), n as u64);
        let mut b = || {
            (
                rt.block_on(bench.batch(AcceptKind::HandWritten, n)),
                n as u64,
            )
        };
        let mut c = || (rt.block_on(bench.batch(AcceptKind::Deadpeer, n)), n as u64);
        let mut d = || {
            (
                rt.block_on(bench.batch(AcceptKind::RawInherited, n)),
                n as u64,
            )
        };
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut variants: Vec<(&str, Batch<'_>)> = vec![
            (AcceptKind::Raw.name(), &mut a),
            (AcceptKind::HandWritten.name(), &mut b),
            (AcceptKind::Deadpeer.name(), &mut c),
            (AcceptKind::RawInherited.name(), &mut d),
        ];
        #[cfg(feature = "metrics")]
        let mut e = || recorded(|| (rt.block_on(bench.batch(AcceptKind::Deadpeer, n)), n as u64));
        #[cfg(feature = "metrics")]
        variants.push(("keepalive_listener + recorder", &mut e));
        paired(
            "accept of a queued loopback connection (server side only)",
            "ns/accept",
            rounds,
            &mut variants,
        );
    }

    if wanted("fin") {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closer = common::Closer::start();
        let n = 50;
        let samples = std::cell::RefCell::new([Vec::new(), Vec::new()]);
        let timed = |kind: FinKind| {
            let mut samples = samples.borrow_mut();
            let out = &mut samples[kind as usize];
            let took = rt.block_on(common::fin_batch(kind, &listener, &closer, n, out));
            (took, n as u64)
        };
        let (mut a, mut b) = (|| timed(FinKind::RawRead), || timed(FinKind::Gone));
        paired(
            "the peer's FIN: from its close to the waiting task's wake-up, loopback",
            "ns/FIN",
            rounds,
            &mut [
                ("raw TcpStream, pending read() (EOF)", &mut a),
                ("KeepaliveStream, nothing reading, pending gone()", &mut b),
            ],
        );
        let mut samples = samples.into_inner();
        println!("\nevery FIN (the warm-up round included), µs:");
        println!("| waiter | FINs | p50 | p90 | p99 | max | over 1 ms |");
        println!("|---|---|---|---|---|---|---|");
        for (kind, v) in [FinKind::RawRead, FinKind::Gone].iter().zip(&mut samples) {
            let mut us: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e6).collect();
            us.sort_by(|x, y| x.partial_cmp(y).expect("no NaN"));
            let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
            println!(
                "| {kind:?} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                us.len(),
                at(0.5),
                at(0.9),
                at(0.99),
                at(1.0),
                us.iter().filter(|&&t| t > 1000.0).count()
            );
        }
    }

    let server = Server::start();

    if wanted("connect") {
        let n = 200;
        let addr = server.raw;
        let mut a = || {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..n {
                    t += common::connect_raw(addr).await;
                }
                (t, n)
            })
        };
        let mut b = || {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..n {
                    t += common::connect_deadpeer(addr).await;
                }
                (t, n)
            })
        };
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut variants: Vec<(&str, Batch<'_>)> = vec![
            ("raw TcpStream::connect", &mut a),
            ("deadpeer::connect", &mut b),
        ];
        #[cfg(feature = "metrics")]
        let mut c = || {
            recorded(|| {
                rt.block_on(async {
                    let mut t = Duration::ZERO;
                    for _ in 0..n {
                        t += common::connect_deadpeer(addr).await;
                    }
                    (t, n)
                })
            })
        };
        #[cfg(feature = "metrics")]
        variants.push(("deadpeer::connect + recorder", &mut c));
        paired(
            "connect + first byte echoed, loopback",
            "ns/connection",
            rounds,
            &mut variants,
        );
    }

    if wanted("echo") || wanted("rtt") {
        let clients = std::cell::RefCell::new(rt.block_on(Clients::connect(&server)));
        let buf = std::cell::RefCell::new(vec![0u8; BLOCK]);
        if wanted("echo") {
            let n = 100usize;
            let timed = |which: u8| {
                rt.block_on(async {
                    let mut c = clients.borrow_mut();
                    let mut buf = buf.borrow_mut();
                    let start = Instant::now();
                    match which {
                        0 => common::echo_blocks(&mut c.raw, &mut buf, n).await,
                        1 => common::echo_blocks(&mut c.deadpeer, &mut buf, n).await,
                        _ => common::echo_blocks(&mut c.watched, &mut buf, n).await,
                    }
                    (start.elapsed(), n as u64)
                })
            };
            let (mut a, mut b, mut c) = (|| timed(0), || timed(1), || timed(2));
            #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
            let mut variants: Vec<(&str, Batch<'_>)> = vec![
                ("raw TcpStream", &mut a),
                ("KeepaliveStream", &mut b),
                ("KeepaliveStream + pending dead() and gone()", &mut c),
            ];
            #[cfg(feature = "metrics")]
            let mut d = || recorded(|| timed(1));
            #[cfg(feature = "metrics")]
            variants.push(("KeepaliveStream + recorder", &mut d));
            paired(
                "echo of 64 KiB blocks (write 64 KiB, read 64 KiB back)",
                "ns/block",
                rounds,
                &mut variants,
            );
        }
        if wanted("rtt") {
            let n = 2000usize;
            let timed = |which: u8| {
                rt.block_on(async {
                    let mut c = clients.borrow_mut();
                    let start = Instant::now();
                    match which {
                        0 => common::round_trips(&mut c.raw, n).await,
                        1 => common::round_trips(&mut c.deadpeer, n).await,
                        _ => common::round_trips(&mut c.watched, n).await,
                    }
                    (start.elapsed(), n as u64)
                })
            };
            let (mut a, mut b, mut c) = (|| timed(0), || timed(1), || timed(2));
            #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
            let mut variants: Vec<(&str, Batch<'_>)> = vec![
                ("raw TcpStream", &mut a),
                ("KeepaliveStream", &mut b),
                ("KeepaliveStream + pending dead() and gone()", &mut c),
            ];
            #[cfg(feature = "metrics")]
            let mut d = || recorded(|| timed(1));
            #[cfg(feature = "metrics")]
            variants.push(("KeepaliveStream + recorder", &mut d));
            paired(
                "round trip of a 64-byte message",
                "ns/round trip",
                rounds,
                &mut variants,
            );
        }
    }
}
