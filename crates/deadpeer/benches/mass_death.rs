//! Mass death: how long after the kernel do 2000 simultaneous deaths reach `Liveness::dead()`,
//! with and without a slow log sink.
//!
//! `cargo bench -p deadpeer --bench mass_death`. Environment:
//! - `MASS_CONNS=2000` connections of each kind;
//! - `MASS_RUNS=5` runs of each variant (interleaved: plain, slow, plain, slow, …);
//! - `MASS_ONLY=plain` or `MASS_ONLY=slow` (default: both).
//!
//! Each run opens, on loopback, `MASS_CONNS` `deadpeer::connect` clients, each with a pending
//! `dead()` and **no reader**, and as many raw tokio `TcpStream` clients with the same keepalive
//! options set by hand and a pending `read()`: the kernel's own verdict, as the baseline. The
//! server side (plain std sockets) is then closed with `SO_LINGER` 0, deadpeer's and raw peers
//! interleaved, in one loop: an RST each, all within a few milliseconds. Every waiter records
//! when it resolved, on the same current-thread runtime.
//!
//! Variants: `plain` has no subscriber; `slow` has a tracing subscriber whose one layer sleeps
//! 1 ms in `on_event` (a slow pipe or a blocking file writer), current where the connections
//! were watched, so that every `dead peer detected` (one per death) takes 1 ms to log. The
//! figure: the last `dead()` minus the last raw read error, in the same run.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpeer::{Cause, KeepalivePolicy};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing_subscriber::layer::SubscriberExt;

const POLICY: KeepalivePolicy = KeepalivePolicy::FAST;

/// A layer that takes 1 ms per line, and counts the deaths it was told about.
struct Slow {
    deaths: Arc<AtomicUsize>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Slow {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        std::thread::sleep(Duration::from_millis(1));
        if event.metadata().target() == "deadpeer"
            && *event.metadata().level() == tracing::Level::WARN
        {
            self.deaths.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn set_by_hand(s: &TcpStream) {
    let sock = SockRef::from(s);
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(POLICY.idle())
            .with_interval(POLICY.interval())
            .with_retries(POLICY.probes()),
    )
    .expect("keepalive");
    sock.set_tcp_user_timeout(POLICY.effective_user_timeout())
        .expect("user timeout");
}

fn raise_nofile() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

struct Run {
    last_raw: Duration,
    last_dp: Duration,
    first_raw: Duration,
    first_dp: Duration,
    /// When the last `dead peer detected` line was written (slow variant), from the kill.
    events_done: Option<Duration>,
    events: usize,
    wrong: usize,
}

async fn one_run(n: usize, slow: bool) -> Run {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let mut dps = Vec::with_capacity(n);
    let mut raws = Vec::with_capacity(n);
    let mut peers: Vec<StdStream> = Vec::with_capacity(2 * n);
    for _ in 0..n {
        dps.push(deadpeer::connect(addr, POLICY).await.expect("connect"));
        peers.push(listener.accept().expect("accept").0);
        let raw = TcpStream::connect(addr).await.expect("connect");
        set_by_hand(&raw);
        raws.push(raw);
        peers.push(listener.accept().expect("accept").0);
    }
    for p in &peers {
        SockRef::from(p)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
    }

    let deaths = Arc::new(AtomicUsize::new(0));
    let guard = slow.then(|| {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(Slow {
            deaths: Arc::clone(&deaths),
        }))
    });
    let mut tasks = Vec::with_capacity(2 * n);
    for dp in dps {
        // Watched here, with the slow subscriber current (if any).
        let liveness = dp.liveness();
        tasks.push(tokio::spawn(async move {
            let dead = liveness.dead().await;
            let t = Instant::now();
            drop(dp);
            (true, t, dead.map(|d| d.cause()))
        }));
    }
    for mut raw in raws {
        tasks.push(tokio::spawn(async move {
            let mut b = [0u8; 16];
            let r = raw.read(&mut b).await;
            let t = Instant::now();
            let ok = matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
            (false, t, ok.then_some(Cause::Reset))
        }));
    }
    // Let every task reach its pending await.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }

    let t0 = Instant::now();
    drop(peers);
    let mut run = Run {
        last_raw: Duration::ZERO,
        last_dp: Duration::ZERO,
        first_raw: Duration::MAX,
        first_dp: Duration::MAX,
        events_done: None,
        events: 0,
        wrong: 0,
    };
    for t in tasks {
        let (is_dp, at, cause) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a waiter hung")
            .expect("task");
        let d = at.duration_since(t0);
        if cause != Some(Cause::Reset) {
            run.wrong += 1;
        }
        if is_dp {
            run.last_dp = run.last_dp.max(d);
            run.first_dp = run.first_dp.min(d);
        } else {
            run.last_raw = run.last_raw.max(d);
            run.first_raw = run.first_raw.min(d);
        }
    }
    if slow {
        let until = Instant::now() + Duration::from_secs(60);
        while deaths.load(Ordering::SeqCst) < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        run.events_done = Some(t0.elapsed());
        run.events = deaths.load(Ordering::SeqCst);
    }
    drop(guard);
    run
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stat(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    format!("{median:.1} [{:.1}, {:.1}]", v[0], v[n - 1])
}

fn main() {
    raise_nofile();
    let n: usize = std::env::var("MASS_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let runs: usize = std::env::var("MASS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("MASS_ONLY").unwrap_or_default();
    let variants: Vec<bool> = [false, true]
        .into_iter()
        .filter(|slow| {
            only.is_empty()
                || only
                    .split(',')
                    .any(|w| w.trim() == if *slow { "slow" } else { "plain" })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results: Vec<(bool, Vec<Run>)> = variants.iter().map(|s| (*s, Vec::new())).collect();
    for r in 0..runs {
        for (slow, out) in &mut results {
            let run = rt.block_on(one_run(n, *slow));
            eprintln!(
                "run {}/{runs} {}: last raw {:.1} ms, last dead() {:.1} ms, events {}",
                r + 1,
                if *slow { "slow" } else { "plain" },
                ms(run.last_raw),
                ms(run.last_dp),
                run.events
            );
            out.push(run);
            // Let the sockets of the run close before the next.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!(
        "\n## mass death: {n} deadpeer + {n} raw connections reset at once ({runs} runs; ms from the kill; median [min, max])"
    );
    println!(
        "| subscriber | first raw read error | last raw read error | first dead() | last dead() | last dead() − last raw | last event written | events | wrong verdicts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (slow, rs) in &results {
        let f = |g: &dyn Fn(&Run) -> f64| stat(rs.iter().map(g).collect());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if *slow { "1 ms per line" } else { "none" },
            f(&|r| ms(r.first_raw)),
            f(&|r| ms(r.last_raw)),
            f(&|r| ms(r.first_dp)),
            f(&|r| ms(r.last_dp)),
            f(&|r| ms(r.last_dp) - ms(r.last_raw)),
            if *slow {
                f(&|r| r.events_done.map_or(f64::NAN, ms))
            } else {
                "—".into()
            },
            if *slow {
                rs.iter()
                    .map(|r| r.events.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                "—".into()
            },
            rs.iter().map(|r| r.wrong).sum::<usize>(),
        );
    }
}
