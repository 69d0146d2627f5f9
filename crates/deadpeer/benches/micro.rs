//! Criterion micro-benchmarks on loopback: accept, connect + first byte, 64 KiB echo, 64 B round
//! trip. Each group holds the raw tokio baseline next to the deadpeer variant(s).
//!
//! `cargo bench -p deadpeer --bench micro`. Criterion runs the functions of a group one after the
//! other; for ratios on a noisy machine use the `paired` bench, which interleaves them.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

mod common;

use std::time::Duration;

use common::{AcceptBench, AcceptKind, BLOCK, Clients, MSG, Server};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn accept(c: &mut Criterion) {
    let rt = common::runtime();
    let bench = rt.block_on(async { AcceptBench::new() });
    // Warm up: the first deadpeer accept verifies inheritance.
    for kind in AcceptKind::ALL {
        rt.block_on(bench.batch(kind, 10));
    }
    let mut g = c.benchmark_group("accept");
    g.throughput(Throughput::Elements(1));
    for kind in AcceptKind::ALL {
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(common::ACCEPT_BATCH);
                    total += rt.block_on(bench.batch(kind, n));
                    left -= n;
                }
                total
            });
        });
    }
    g.finish();
}

fn connect(c: &mut Criterion) {
    let rt = common::runtime();
    let server = Server::start();
    let mut g = c.benchmark_group("connect_first_byte");
    g.bench_function("raw_tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    t += common::connect_raw(server.raw).await;
                }
                t
            })
        });
    });
    g.bench_function("deadpeer_connect", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    t += common::connect_deadpeer(server.raw).await;
                }
                t
            })
        });
    });
    g.finish();
}

fn echo_and_rtt(c: &mut Criterion) {
    let rt = common::runtime();
    let server = Server::start();
    let mut clients = rt.block_on(Clients::connect(&server));
    let mut buf = vec![0u8; BLOCK];

    let mut g = c.benchmark_group("echo_64KiB");
    g.throughput(Throughput::Bytes(2 * BLOCK as u64));
    g.bench_function("raw_tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                common::echo_blocks(&mut clients.raw, &mut buf, iters as usize).await;
                start.elapsed()
            })
        });
    });
    g.bench_function("keepalive_stream", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                common::echo_blocks(&mut clients.deadpeer, &mut buf, iters as usize).await;
                start.elapsed()
            })
        });
    });
    g.bench_function("keepalive_stream_with_pending_dead", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                common::echo_blocks(&mut clients.watched, &mut buf, iters as usize).await;
                start.elapsed()
            })
        });
    });
    g.finish();

    let mut g = c.benchmark_group("rtt_64B");
    g.throughput(Throughput::Bytes(MSG as u64));
    g.bench_function("raw_tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                common::round_trips(&mut clients.raw, iters as usize).await;
                start.elapsed()
            })
        });
    });
    g.bench_function("keepalive_stream", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                common::round_trips(&mut clients.deadpeer, iters as usize).await;
                start.elapsed()
            })
        });
    });
    g.bench_function("keepalive_stream_with_pending_dead", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                common::round_trips(&mut clients.watched, iters as usize).await;
                start.elapsed()
            })
        });
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = accept, connect, echo_and_rtt
}
criterion_main!(benches);
