//! What `deadpeer watch` costs, how late it is, and whether it loses deaths.
//!
//! A lab (testkit namespaces): this process holds both ends of every connection, the client in
//! the lab's client namespace, the server in the server namespace, and kills the client's end
//! by closing the server's with `SO_LINGER` 0 (a reset: one death per connection, owned by this
//! process). The binary under test is the bench profile's (optimized) `deadpeer watch --json
//! --port 7460`, a child process; its CPU time is `utime + stime` of `/proc/PID/stat` (every
//! thread), its delay is the time this process reads a line minus the line's `kernel_ts`
//! (the tracepoint's timestamp), both CLOCK_MONOTONIC.
//!
//! 1. idle: 10 s with no deaths of ours (other processes on the machine still make events);
//! 2. steady rates: `WATCH_RATES` (1000,5000) deaths per second for 10 s each, paced every ms;
//! 3. bursts: `WATCH_BURSTS` (3) times, 5000 connections reset in one loop.
//!
//! Run: `sudo -E cargo bench -p deadpeer-cli --bench watch`. Without root or tracefs it prints
//! one `skipped watch bench: …` line and exits 0.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use deadpeer_testkit::Lab;

const BIN: &str = env!("CARGO_BIN_EXE_deadpeer");
const PORT: u16 = 7460;
const BURST: usize = 5000;

fn mono() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

/// utime + stime of a process, in clock ticks.
fn ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (USER_HZ): 100 on Linux.
const HZ: f64 = 100.0;

struct Death {
    local: String,
    delay_ms: f64,
}

struct Watch {
    child: Child,
    lines: Receiver<Death>,
    warnings: Receiver<String>,
}

impl Watch {
    fn start() -> Result<Self, String> {
        let mut child = Command::new(BIN)
            .args(["watch", "--json", "--port", &PORT.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let (tx, lines) = channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let at = mono();
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let d = Death {
                    local: v["local_addr"].as_str().unwrap().to_owned(),
                    delay_ms: (at - v["kernel_ts"].as_f64().unwrap()) * 1e3,
                };
                if tx.send(d).is_err() {
                    return;
                }
            }
        });
        let (etx, warnings) = channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                let _ = etx.send(l);
            }
        });
        match warnings.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.starts_with("watching") => Ok(Self {
                child,
                lines,
                warnings,
            }),
            Ok(l) => {
                let _ = child.wait();
                Err(l)
            }
            Err(e) => Err(format!("no line from watch: {e}")),
        }
    }

    fn take(&self, n: usize, within: Duration) -> Vec<Death> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(d) => got.push(d),
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn delays(deaths: &[Death]) -> String {
    let mut d: Vec<f64> = deaths.iter().map(|d| d.delay_ms).collect();
    d.sort_by(f64::total_cmp);
    format!(
        "delay ms p50 {:.2} p99 {:.2} max {:.2}",
        pct(&d, 0.5),
        pct(&d, 0.99),
        pct(&d, 1.0)
    )
}

/// Connects, accepts, and returns (client, server).
fn pair(lab: &Lab, listener: &TcpListener, addr: SocketAddr) -> (TcpStream, TcpStream) {
    let c = lab.client().tcp_connect(addr).unwrap();
    let (s, _) = listener.accept().unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    (c, s)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let lab = match Lab::new() {
        Ok(l) => l,
        Err(e) => return println!("skipped watch bench: {e}"),
    };
    let watch = match Watch::start() {
        Ok(w) => w,
        Err(e) => return println!("skipped watch bench: {e}"),
    };
    let pid = watch.child.id();
    let addr = SocketAddr::new(lab.server_addr(), PORT);
    let listener = lab.server().tcp_listener(addr).unwrap();

    std::thread::sleep(Duration::from_secs(2));
    let t0 = ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle = (ticks(pid) - t0) as f64 / HZ / 10.0 * 100.0;
    println!("idle: {idle:.2}% of a CPU over 10 s");

    let rates: Vec<usize> = std::env::var("WATCH_RATES")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|r| r.parse().ok())
        .collect();
    for rate in rates {
        let secs = 10.0;
        let start = Instant::now();
        let t0 = ticks(pid);
        let mut made = 0usize;
        let mut held = std::collections::VecDeque::new();
        while start.elapsed().as_secs_f64() < secs {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as usize;
            while made < due {
                let (c, s) = pair(&lab, &listener, addr);
                drop(s);
                held.push_back(c);
                if held.len() > 2000 {
                    held.pop_front();
                }
                made += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let deaths = watch.take(made, Duration::from_secs(10));
        let cpu = (ticks(pid) - t0) as f64 / HZ / elapsed * 100.0;
        let achieved = made as f64 / elapsed;
        println!(
            "rate {rate}/s: made {made} deaths ({achieved:.0}/s), reported {}; watch {cpu:.1}% of a CPU, \
             {:.2}% per 1000 deaths/s above idle; {}",
            deaths.len(),
            (cpu - idle) / (achieved / 1000.0),
            delays(&deaths)
        );
        drop(held);
    }

    let bursts: usize = std::env::var("WATCH_BURSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for i in 0..bursts {
        let mut clients = Vec::with_capacity(BURST);
        let mut servers = Vec::with_capacity(BURST);
        for _ in 0..BURST {
            let (c, s) = pair(&lab, &listener, addr);
            clients.push(c);
            servers.push(s);
        }
        // Let the owners' index see them.
        std::thread::sleep(Duration::from_millis(1500));
        let _ = watch.take(usize::MAX, Duration::from_millis(10));
        let t0 = ticks(pid);
        let start = mono();
        drop(servers);
        let sent_ms = (mono() - start) * 1e3;
        let deaths = watch.take(BURST, Duration::from_secs(20));
        let cpu_s = (ticks(pid) - t0) as f64 / HZ;
        let mut locals: Vec<&str> = deaths.iter().map(|d| d.local.as_str()).collect();
        locals.sort_unstable();
        locals.dedup();
        let warned: Vec<String> = watch.warnings.try_iter().collect();
        println!(
            "burst {}: {BURST} resets in {sent_ms:.1} ms, reported {} distinct, lost {} \
             (watch warnings: {warned:?}); watch CPU {cpu_s:.2} s; {}",
            i + 1,
            locals.len(),
            BURST - locals.len(),
            delays(&deaths)
        );
        drop(clients);
    }
}
