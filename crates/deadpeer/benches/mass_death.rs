//! Mass endings: how long after the kernel do 2000 simultaneous resets reach `Liveness::dead()`,
//! and 2000 simultaneous clean closes `Liveness::gone()`, with and without a slow log sink.
//!
//! `cargo bench -p deadpeer --bench mass_death`. Environment:
//! - `MASS_CONNS=2000` connections of each kind;
//! - `MASS_RUNS=5` runs of each variant (interleaved: plain, slow, fin, fin_slow, plain, …);
//! - `MASS_ONLY=plain,slow,fin,fin_slow` to pick variants (default: all four).
//!
//! Each run opens, on loopback, `MASS_CONNS` `deadpeer::connect` clients, each with a pending
//! `dead()` (`gone()` in the `fin` variants) and **no reader**, and as many raw tokio
//! `TcpStream` clients with the same keepalive options set by hand and a pending `read()`: the
//! kernel's own verdict, as the baseline. The server side (plain std sockets) is then closed,
//! deadpeer's and raw peers interleaved, in one loop: with `SO_LINGER` 0, an RST each (`plain`,
//! `slow`: the raw read fails with `ECONNRESET`, `dead()` is an `aborted` reset, since nothing
//! of the clients' was outstanding), or cleanly, a FIN each (`fin`, `fin_slow`: the raw read
//! returns EOF, `gone()` is `closed`), all within a few milliseconds. Every waiter records when
//! it resolved, on the same current-thread runtime.
//!
//! `slow` and `fin_slow` have a tracing subscriber whose one layer sleeps 1 ms in `on_event` (a
//! slow pipe or a blocking file writer), current where the connections were watched, so that
//! every ending's event (`connection ended`, one per connection) takes 1 ms to log. The
//! figure: the last waiter of deadpeer minus the last raw waiter, in the same run.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpeer::{Cause, Ending, KeepalivePolicy};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing_subscriber::layer::SubscriberExt;

const POLICY: KeepalivePolicy = KeepalivePolicy::FAST;

/// A layer that takes 1 ms per line, and counts the endings it was told about (the events
/// with a `deadpeer.ending` field: a death's, an abort's, a FIN's).
struct Slow {
    endings: Arc<AtomicUsize>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Slow {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        std::thread::sleep(Duration::from_millis(1));
        let meta = event.metadata();
        if meta.target() == "deadpeer" && meta.fields().field("deadpeer.ending").is_some() {
            self.endings.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One variant: how the peers close, and whether the subscriber is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variant {
    fin: bool,
    slow: bool,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant {
            fin: false,
            slow: false,
        },
        Variant {
            fin: false,
            slow: true,
        },
        Variant {
            fin: true,
            slow: false,
        },
        Variant {
            fin: true,
            slow: true,
        },
    ];

    fn name(self) -> &'static str {
        match (self.fin, self.slow) {
            (false, false) => "plain",
            (false, true) => "slow",
            (true, false) => "fin",
            (true, true) => "fin_slow",
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

async fn one_run(n: usize, v: Variant) -> Run {
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
    // An RST from each peer; or a FIN from each peer, and the clients closed with RST once the
    // run is over (no TIME_WAIT left behind).
    let rst: Vec<SockRef<'_>> = if v.fin {
        let clients = dps.iter().map(|d| SockRef::from(d.get_ref()));
        clients.chain(raws.iter().map(SockRef::from)).collect()
    } else {
        peers.iter().map(SockRef::from).collect()
    };
    for s in rst {
        s.set_linger(Some(Duration::ZERO)).expect("linger");
    }

    let endings = Arc::new(AtomicUsize::new(0));
    let guard = v.slow.then(|| {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(Slow {
            endings: Arc::clone(&endings),
        }))
    });
    let fin = v.fin;
    let mut tasks = Vec::with_capacity(2 * n);
    for dp in dps {
        // Watched here, with the slow subscriber current (if any).
        let liveness = dp.liveness();
        tasks.push(tokio::spawn(async move {
            let (t, right) = if fin {
                let ending = liveness.gone().await;
                (Instant::now(), ending == Some(Ending::Closed))
            } else {
                let dead = liveness.dead().await;
                let t = Instant::now();
                // A reset with nothing of ours outstanding: the peer application quit.
                let right = dead
                    .is_some_and(|d| (d.cause(), d.ending()) == (Cause::Reset, Ending::Aborted));
                (t, right)
            };
            // A clean close leaves the stream to close after the run: a task that closes
            // it here would delay the next waiters.
            let held: Option<Box<dyn Send>> = if fin { Some(Box::new(dp)) } else { None };
            (true, t, right, held)
        }));
    }
    for mut raw in raws {
        tasks.push(tokio::spawn(async move {
            let mut b = [0u8; 16];
            let r = raw.read(&mut b).await;
            let t = Instant::now();
            let right = match &r {
                Ok(0) => fin,
                Err(e) => !fin && e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
            let held: Option<Box<dyn Send>> = if fin { Some(Box::new(raw)) } else { None };
            (false, t, right, held)
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
    let mut held = Vec::with_capacity(2 * n);
    for t in tasks {
        let (is_dp, at, right, h) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a waiter hung")
            .expect("task");
        let d = at.duration_since(t0);
        if !right {
            run.wrong += 1;
        }
        held.push(h);
        if is_dp {
            run.last_dp = run.last_dp.max(d);
            run.first_dp = run.first_dp.min(d);
        } else {
            run.last_raw = run.last_raw.max(d);
            run.first_raw = run.first_raw.min(d);
        }
    }
    if v.slow {
        let until = Instant::now() + Duration::from_secs(60);
        while endings.load(Ordering::SeqCst) < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        run.events_done = Some(t0.elapsed());
        run.events = endings.load(Ordering::SeqCst);
    }
    drop(guard);
    drop(held);
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
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| only.is_empty() || only.split(',').any(|w| w.trim() == v.name()))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results: Vec<(Variant, Vec<Run>)> = variants.iter().map(|v| (*v, Vec::new())).collect();
    for r in 0..runs {
        for (v, out) in &mut results {
            let run = rt.block_on(one_run(n, *v));
            eprintln!(
                "run {}/{runs} {}: last raw {:.1} ms, last deadpeer {:.1} ms, events {}, wrong {}",
                r + 1,
                v.name(),
                ms(run.last_raw),
                ms(run.last_dp),
                run.events,
                run.wrong
            );
            out.push(run);
            // Let the sockets of the run close before the next.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!(
        "\n## mass endings: {n} deadpeer + {n} raw connections whose peers close at once ({runs} runs; ms from the first close; median [min, max] over the runs)"
    );
    println!(
        "| variant | peers close with | subscriber | first raw | last raw | first deadpeer | last deadpeer | **last deadpeer − last raw** | last event written | events | wrong verdicts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (v, rs) in &results {
        let f = |g: &dyn Fn(&Run) -> f64| stat(rs.iter().map(g).collect());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.name(),
            if v.fin {
                "FIN (`gone()`, raw EOF)"
            } else {
                "RST (`dead()`, raw ECONNRESET)"
            },
            if v.slow { "1 ms per line" } else { "none" },
            f(&|r| ms(r.first_raw)),
            f(&|r| ms(r.last_raw)),
            f(&|r| ms(r.first_dp)),
            f(&|r| ms(r.last_dp)),
            f(&|r| ms(r.last_dp) - ms(r.last_raw)),
            if v.slow {
                f(&|r| r.events_done.map_or(f64::NAN, ms))
            } else {
                "—".into()
            },
            if v.slow {
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
