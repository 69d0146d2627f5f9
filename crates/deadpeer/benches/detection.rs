//! Detection latency on real dead peers: 3 policies × 4 causes, in the testkit's network
//! namespaces. Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN); without it, prints one `skipped` line
//! and exits successfully.
//!
//! `cargo bench -p deadpeer --bench detection` (`DETECT_RUNS=N`, default 5).
//!
//! For every (policy, cause) two connections die in the same lab at the same moment:
//! - a `deadpeer::connect` client with a pending `Liveness::dead()` and nothing reading;
//! - the baseline: a plain tokio `TcpStream` with the same options set by hand with socket2 and
//!   a pending `read()`, which reports the kernel's own verdict.
//!
//! Latencies are measured from the fault (for keepalive timeout and reset: right after the last
//! byte was received; for the two unacked-data causes: from the unacknowledged write).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpeer::{Cause, KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::{Lab, send_nowait};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// Blackhole, idle socket: keepalive probes go unanswered.
    Keepalive,
    /// Blackhole, then an unacknowledged write: the user timeout fires.
    Retransmit,
    /// The peer forgets the connection (TCP_REPAIR close): the first probe meets a RST.
    Reset,
    /// ICMP host unreachable, then an unacknowledged write.
    Unreachable,
}

impl Fault {
    const ALL: [Fault; 4] = [
        Fault::Keepalive,
        Fault::Retransmit,
        Fault::Reset,
        Fault::Unreachable,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::Keepalive => "keepalive timeout (blackhole)",
            Fault::Retransmit => "retransmit timeout (blackhole + unacked write)",
            Fault::Reset => "reset (forget)",
            Fault::Unreachable => "unreachable (unreachable + unacked write)",
        }
    }

    fn cause(self) -> Cause {
        match self {
            Fault::Keepalive => Cause::KeepaliveTimeout,
            Fault::Retransmit => Cause::RetransmitTimeout,
            Fault::Reset => Cause::Reset,
            Fault::Unreachable => Cause::Unreachable,
        }
    }

    /// When the kernel is expected to act, from the fault: the bound for the timeouts, the first
    /// keepalive probe (one idle time after the last receive) for a forgotten connection.
    fn expected(self, p: &KeepalivePolicy) -> Duration {
        match self {
            Fault::Reset => p.idle(),
            _ => p.detection_bound(),
        }
    }
}

fn policies() -> [KeepalivePolicy; 3] {
    let p = |i, v, n| {
        KeepalivePolicy::new(Duration::from_secs(i), Duration::from_secs(v), n).expect("policy")
    };
    [p(1, 1, 3), p(2, 1, 2), p(2, 2, 2)]
}

/// One run's result for one (policy, fault).
#[derive(Debug, Clone)]
struct Sample {
    deadpeer: Option<Duration>,
    deadpeer_cause: Option<Cause>,
    deadpeer_errno: Option<i32>,
    raw: Option<Duration>,
    raw_errno: Option<i32>,
}

fn set_by_hand(s: &TcpStream, p: &KeepalivePolicy) {
    let sock = SockRef::from(s);
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(p.idle())
            .with_interval(p.interval())
            .with_retries(p.probes()),
    )
    .expect("keepalive");
    sock.set_tcp_user_timeout(p.effective_user_timeout())
        .expect("user timeout");
}

async fn exchange(
    client: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin),
    server: &mut TcpStream,
) {
    let mut b = [0u8; 1];
    client.write_all(b"x").await.unwrap();
    server.read_exact(&mut b).await.unwrap();
    server.write_all(b"y").await.unwrap();
    client.read_exact(&mut b).await.unwrap();
}

struct Pair {
    policy: KeepalivePolicy,
    dp: KeepaliveStream,
    dp_server: TcpStream,
    raw: TcpStream,
    raw_server: TcpStream,
}

async fn pairs(lab: &Lab) -> Vec<Pair> {
    let mut out = Vec::new();
    for (i, policy) in policies().into_iter().enumerate() {
        let port = 7300 + 2 * i as u16;
        let addr = SocketAddr::new(lab.server_addr(), port);
        let l = lab.server().tokio_listener(addr).expect("listener");
        let mut dp = {
            let _inside = lab.client().enter().expect("enter client netns");
            deadpeer::connect(addr, policy).await.expect("connect")
        };
        let (mut dp_server, _) = l.accept().await.expect("accept");
        exchange(&mut dp, &mut dp_server).await;

        let addr = SocketAddr::new(lab.server_addr(), port + 1);
        let l = lab.server().tokio_listener(addr).expect("listener");
        let mut raw = lab.client().tokio_connect(addr).await.expect("connect");
        set_by_hand(&raw, &policy);
        let (mut raw_server, _) = l.accept().await.expect("accept");
        exchange(&mut raw, &mut raw_server).await;
        out.push(Pair {
            policy,
            dp,
            dp_server,
            raw,
            raw_server,
        });
    }
    out
}

type Results = Arc<Mutex<BTreeMap<(Fault, usize), Sample>>>;

async fn one_run(labs: &[(Fault, Lab)], results: Results) {
    let mut setups = Vec::new();
    for (fault, lab) in labs {
        setups.push((*fault, lab, pairs(lab).await));
    }
    let mut tasks = Vec::new();
    // Fault injection: everything at (nearly) the same moment, right after the exchanges.
    for (fault, lab, pairs) in setups {
        let t0 = match fault {
            Fault::Keepalive | Fault::Retransmit => {
                lab.blackhole().expect("blackhole");
                Instant::now()
            }
            Fault::Unreachable => {
                lab.unreachable().expect("unreachable");
                Instant::now()
            }
            Fault::Reset => Instant::now(),
        };
        for (i, pair) in pairs.into_iter().enumerate() {
            let Pair {
                policy,
                dp,
                dp_server,
                mut raw,
                raw_server,
            } = pair;
            let (mut t_dp, mut t_raw) = (t0, t0);
            match fault {
                Fault::Retransmit | Fault::Unreachable => {
                    t_dp = Instant::now();
                    assert!(send_nowait(dp.get_ref(), 1000).expect("send") > 0);
                    t_raw = Instant::now();
                    assert!(send_nowait(&raw, 1000).expect("send") > 0);
                }
                Fault::Reset => {
                    t_dp = Instant::now();
                    lab.forget(dp_server.into_std().expect("into_std"))
                        .expect("forget");
                    t_raw = Instant::now();
                    lab.forget(raw_server.into_std().expect("into_std"))
                        .expect("forget");
                }
                Fault::Keepalive => drop((dp_server, raw_server)),
            }
            let limit = policy.detection_bound() + Duration::from_secs(10);
            let results = Arc::clone(&results);
            tasks.push(tokio::spawn(async move {
                let liveness = dp.liveness();
                let dp_fut = async {
                    let d = tokio::time::timeout(limit, liveness.dead())
                        .await
                        .ok()
                        .flatten();
                    (
                        d.as_ref().map(|_| t_dp.elapsed()),
                        d.as_ref().map(|d| d.cause()),
                        d.and_then(|d| d.raw_os_error()),
                    )
                };
                let raw_fut = async {
                    let mut b = [0u8; 16];
                    match tokio::time::timeout(limit, raw.read(&mut b)).await {
                        Ok(Err(e)) => (Some(t_raw.elapsed()), e.raw_os_error()),
                        _ => (None, None),
                    }
                };
                let ((deadpeer, deadpeer_cause, deadpeer_errno), (raw_t, raw_errno)) =
                    tokio::join!(dp_fut, raw_fut);
                results.lock().unwrap().insert(
                    (fault, i),
                    Sample {
                        deadpeer,
                        deadpeer_cause,
                        deadpeer_errno,
                        raw: raw_t,
                        raw_errno,
                    },
                );
                drop(dp);
            }));
        }
    }
    for t in tasks {
        t.await.expect("watcher task");
    }
}

fn ms(d: f64) -> String {
    format!("{:+.0}", d * 1e3)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    match Lab::new() {
        Ok(lab) => drop(lab),
        Err(e) => {
            eprintln!("skipped detection bench: {e}");
            return;
        }
    }
    let runs: usize = std::env::var("DETECT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut all: BTreeMap<(Fault, usize), Vec<Sample>> = BTreeMap::new();
    for run in 0..runs {
        let labs: Vec<(Fault, Lab)> = Fault::ALL
            .iter()
            .map(|f| (*f, Lab::new().expect("lab")))
            .collect();
        let results: Results = Arc::default();
        let start = Instant::now();
        rt.block_on(one_run(&labs, Arc::clone(&results)));
        eprintln!(
            "run {}/{runs}: {:.1} s",
            run + 1,
            start.elapsed().as_secs_f64()
        );
        for (k, s) in results.lock().unwrap().iter() {
            all.entry(*k).or_default().push(s.clone());
        }
        drop(labs);
    }

    let ps = policies();
    println!("\n## detection latency ({runs} runs; ms; median [min, max])");
    println!(
        "| cause | policy (idle/intvl/probes, UT) | bound | expected kernel event | raw read − expected | deadpeer dead() − expected | deadpeer − bound | deadpeer − raw (same lab, same moment) | causes seen (deadpeer) | deadpeer errno | raw errno |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for ((fault, i), samples) in &all {
        let p = &ps[*i];
        let exp = fault.expected(p).as_secs_f64();
        let bound = p.detection_bound().as_secs_f64();
        let mut dp: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.deadpeer.map(|d| d.as_secs_f64()))
            .collect();
        let mut raw: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.raw.map(|d| d.as_secs_f64()))
            .collect();
        let mut diff: Vec<f64> = samples
            .iter()
            .filter_map(|s| Some(s.deadpeer?.as_secs_f64() - s.raw?.as_secs_f64()))
            .collect();
        let stat = |v: &mut Vec<f64>, off: f64| -> String {
            if v.is_empty() {
                return "none".into();
            }
            let m = median(v);
            format!(
                "{} [{}, {}]",
                ms(m - off),
                ms(v[0] - off),
                ms(v[v.len() - 1] - off)
            )
        };
        let mut causes: BTreeMap<String, usize> = BTreeMap::new();
        for s in samples {
            let c = s
                .deadpeer_cause
                .map_or("none".to_owned(), |c| c.as_str().to_owned());
            *causes.entry(c).or_default() += 1;
        }
        let mut dp_errnos: BTreeMap<String, usize> = BTreeMap::new();
        for s in samples {
            *dp_errnos
                .entry(s.deadpeer_errno.map_or("none".into(), |e| e.to_string()))
                .or_default() += 1;
        }
        let mut errnos: BTreeMap<String, usize> = BTreeMap::new();
        for s in samples {
            *errnos
                .entry(s.raw_errno.map_or("none".into(), |e| e.to_string()))
                .or_default() += 1;
        }
        let fmt_counts = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let ut = p
            .effective_user_timeout()
            .map_or("off".into(), |d| format!("{:.1}s", d.as_secs_f64()));
        println!(
            "| {} | {}/{}/{}, {} | {:.0} s | {:.0} s | {} | {} | {} | {} | {} (want {}) | {} | {} |",
            fault.name(),
            p.idle().as_secs(),
            p.interval().as_secs(),
            p.probes(),
            ut,
            bound,
            exp,
            stat(&mut raw, exp),
            stat(&mut dp.clone(), exp),
            stat(&mut dp, bound),
            stat(&mut diff, 0.0),
            fmt_counts(&causes),
            fault.cause().as_str(),
            fmt_counts(&dp_errnos),
            fmt_counts(&errnos),
        );
    }
}
