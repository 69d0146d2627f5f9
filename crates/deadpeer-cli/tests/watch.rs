//! `deadpeer watch --json`, run as a child process, against connections of a real Python 3
//! server in a lab:
//!
//! - a peer reset (our client aborts with `SO_LINGER` 0): `reset`;
//! - a blackholed idle connection on which Python set keepalive 1 s / 1 s / 2 itself:
//!   `keepalive_timeout`;
//! - a blackholed connection on which Python, with `TCP_USER_TIMEOUT` 2 s, sends data:
//!   `retransmit_timeout`;
//!
//! each with the Python process as owner, the server's namespace, and a line read by this test
//! within 10 ms of the tracepoint's timestamp (both on CLOCK_MONOTONIC). Likewise a Python
//! client, with `TCP_USER_TIMEOUT` 2 s, whose data the router rejects with ICMP port
//! unreachable: `refused` (`ECONNREFUSED`), owned by the client in the client's namespace. Our
//! own aborting client is not a death. Then a burst of 5000 connections reset at once: every one is
//! reported, owned by this test process; an IPv6 reset in a namespace no process is in. Each
//! watch must remove its tracing instance when stopped with SIGTERM or SIGINT.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use deadpeer_testkit::{Lab, Netns, Reject, Tool, lab_or_skip};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::{BIN, Python, TempBin, one_line_error, skip};

const TRACEFS: &str = "/sys/kernel/tracing";
/// The goal: a line within 10 ms of the kernel's decision.
const DELAY_MS: f64 = 10.0;

/// The tests measure delays and a burst: each holds this lock, so that they do not load the
/// machine under each other (every watch sees every test's deaths).
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn measuring() -> std::sync::MutexGuard<'static, ()> {
    MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CLOCK_MONOTONIC, the clock of watch's `kernel_ts`, in seconds.
fn mono() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

/// A line of watch's stdout and when this test read it.
struct Line {
    at: f64,
    v: Value,
}

/// `deadpeer watch --json` in this process's namespace (the host's view: it sees every
/// namespace). Stopped with SIGTERM, and killed if that fails, on drop (also on panic).
struct Watch {
    child: Child,
    /// Whether tracefs was mounted before this watch started.
    mounted_before: bool,
    lines: Receiver<Line>,
    stderr: Receiver<String>,
}

impl Watch {
    /// Starts it and waits for its "watching" line; `None` (skipped) when it cannot trace.
    fn start(test: &str, args: &[&str]) -> Option<Self> {
        let mounted_before = tracefs_mounted();
        let mut child = Command::new(BIN)
            .arg("watch")
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run deadpeer watch");
        let (tx, lines) = channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                let at = mono();
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if tx.send(Line { at, v }).is_err() {
                    return;
                }
            }
        });
        let (etx, stderr) = channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let mut w = Self {
            child,
            mounted_before,
            lines,
            stderr,
        };
        match w.stderr.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.starts_with("watching every TCP death") => Some(w),
            Ok(l) => {
                let _ = w.child.wait();
                skip(test, &format!("deadpeer watch cannot trace here: {l}"));
                None
            }
            Err(e) => panic!("no line from deadpeer watch within 10 s: {e}"),
        }
    }

    fn instance(&self) -> String {
        format!("{TRACEFS}/instances/deadpeer-watch-{}", self.child.id())
    }

    /// Deaths until `done` says enough, or `within` runs out.
    fn collect(&self, within: Duration, mut done: impl FnMut(&[Line]) -> bool) -> Vec<Line> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => break,
            }
        }
        got
    }

    /// Sends `signal` (SIGTERM, or SIGINT as Ctrl-C does); asserts exit status 0, no warning, the instance gone, and tracefs unmounted if
    /// it was not mounted before and no other watch runs.
    fn stop(mut self, signal: Signal) {
        let instance = self.instance();
        assert!(Path::new(&instance).is_dir(), "{instance} while running");
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "watch exited with {status:?}");
        let rest: Vec<String> = self.stderr.try_iter().collect();
        assert!(rest.is_empty(), "watch warned: {rest:?}");
        assert!(!Path::new(&instance).exists(), "{instance} left behind");
        let others = std::fs::read_dir(format!("{TRACEFS}/instances"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("deadpeer-watch-")
            });
        if !self.mounted_before && !others {
            assert!(!tracefs_mounted(), "watch left tracefs mounted");
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Listens on `PORT` and accepts connections, configuring each as told: `accept ka` sets
/// keepalive 1 s / 1 s / 2, `accept rtx` a 2 s `TCP_USER_TIMEOUT`; `send NAME` sends 1000 bytes
/// on one.
const SERVER: &str = r#"
import os, socket, sys
print(os.getpid())
l = socket.socket()
l.bind((ADDR, PORT)); l.listen()
print("listening")
conns = {}
for line in sys.stdin:
    cmd, name = line.split()
    if cmd == "accept":
        c, peer = l.accept()
        if name == "ka":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
        if name == "rtx":
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2000)
        conns[name] = c
        print(peer[1])
    elif cmd == "send":
        conns[name].send(b"x" * 1000)
        print("sent")
"#;

fn netns_inode(ns: &Netns) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(ns.path()).unwrap().ino()
}

/// Whether tracefs is mounted now.
fn tracefs_mounted() -> bool {
    Path::new(TRACEFS).join("instances").is_dir()
}

#[test]
fn python_deaths_are_classified_and_owned() {
    let _serial = measuring();
    let Some(lab) = lab_or_skip!() else { return };
    let Some(watch) = Watch::start(
        "python_deaths_are_classified_and_owned",
        &["--port", "7400"],
    ) else {
        return;
    };
    let saddr = lab.server_addr();
    let script = SERVER
        .replace("ADDR", &format!("'{saddr}'"))
        .replace("PORT", "7400");
    let Some(mut py) = Python::start(
        "python_deaths_are_classified_and_owned",
        lab.server(),
        &script,
    ) else {
        return;
    };
    assert_eq!(py.line(), "listening");
    let comm = py.comm();
    let server = SocketAddr::new(saddr, 7400);
    let mut clients: HashMap<&str, TcpStream> = HashMap::new();
    let mut ports: HashMap<u16, &str> = HashMap::new();
    for name in ["rst", "ka", "rtx"] {
        let c = lab.client().tcp_connect(server).unwrap();
        let port: u16 = py.ask(&format!("accept {name}")).parse().unwrap();
        assert_eq!(port, c.local_addr().unwrap().port());
        ports.insert(port, name);
        clients.insert(name, c);
    }
    // Let the owners' index catch up with the new connections: it is rebuilt within 100 ms of
    // a connection opening when the machine is idle, and at least once a second however busy
    // it is (docs/cli.md), and a rebuild reads every process's descriptors (on a loaded 2-core
    // machine, up to about a second in a debug build). Connections that die sooner after
    // opening may have no owner, as documented.
    std::thread::sleep(Duration::from_millis(2500));

    let rst_client = clients.remove("rst").unwrap();
    let rst_local = rst_client.local_addr().unwrap();
    let reset_at = mono();
    lab.reset(rst_client).unwrap();
    lab.blackhole().unwrap();
    let blackholed_at = mono();
    assert_eq!(py.ask("send rtx"), "sent");
    let sent_at = mono();

    let lines = watch.collect(Duration::from_secs(15), |got| {
        let mut seen: Vec<&str> = got
            .iter()
            .filter(|l| l.v["local_addr"] == server.to_string())
            .filter_map(|l| {
                ports.get(
                    &(l.v["peer_addr"]
                        .as_str()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()?),
                )
            })
            .copied()
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() == 3
    });
    let mut found: HashMap<&str, &Line> = HashMap::new();
    for l in &lines {
        // Our own abort (SO_LINGER 0) is not a dead peer.
        assert_ne!(
            l.v["local_addr"],
            rst_local.to_string(),
            "our own abort reported: {}",
            l.v
        );
        if l.v["local_addr"] != server.to_string() {
            continue;
        }
        let port: u16 = l.v["peer_addr"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let name = ports[&port];
        assert!(found.insert(name, l).is_none(), "{name} reported twice");
    }
    let all: Vec<&Value> = lines.iter().map(|l| &l.v).collect();
    // The client's own abort had nothing of the server's outstanding: an ending, no death.
    for (name, cause, errno, ending) in [
        ("rst", "reset", 104, "aborted"),
        ("ka", "keepalive_timeout", 110, "vanished"),
        ("rtx", "retransmit_timeout", 110, "vanished"),
    ] {
        let l = found
            .get(name)
            .unwrap_or_else(|| panic!("no death for {name} within 15 s: {all:#?}"));
        let v = &l.v;
        // Shown with --nocapture, for docs/cli.md.
        println!("{v}");
        assert_eq!(v["cause"], cause, "{v:#}");
        assert_eq!(v["ending"], ending, "{v:#}");
        assert_eq!(v["is_death"], ending != "aborted", "{v:#}");
        assert_eq!(v["errno"], errno, "{v:#}");
        assert_eq!(v["pid"], py.pid, "{v:#}");
        assert_eq!(v["process"], comm.as_str(), "{v:#}");
        assert_eq!(v["netns"], netns_inode(lab.server()), "{v:#}");
        assert_eq!(v["netns_name"], lab.server().name(), "{v:#}");
        assert_eq!(v["state_before"], "established", "{v:#}");
        // Opened after watch started: it saw the handshake.
        assert!(v["open_for_ms"].as_f64().unwrap() >= 500.0, "{v:#}");
        let ts = v["kernel_ts"].as_f64().unwrap();
        let delay = (l.at - ts) * 1000.0;
        assert!(
            (0.0..DELAY_MS).contains(&delay),
            "{name}: read {delay:.2} ms after the kernel's decision: {v:#}"
        );
        assert!(v["delay_ms"].as_f64().unwrap() <= delay, "{v:#}");
    }
    // When the kernel decided: the reset at once, the retransmissions at the user timeout
    // (2 s, the kernel clamps the last RTO to it), keepalive within its bound (1 + 1 × 2 s)
    // of the blackhole.
    let ts = |name: &str| found[name].v["kernel_ts"].as_f64().unwrap();
    let rst = ts("rst") - reset_at;
    assert!(
        (0.0..0.1).contains(&rst),
        "reset {rst:.3} s after the abort"
    );
    let rtx = ts("rtx") - sent_at;
    assert!(
        (1.9..3.5).contains(&rtx),
        "retransmit timeout {rtx:.3} s after the send"
    );
    let ka = ts("ka") - blackholed_at;
    assert!(
        (1.0..=3.5).contains(&ka),
        "keepalive timeout {ka:.3} s after the blackhole"
    );
    assert!(
        found["rtx"].v["retransmits"].as_u64().unwrap() >= 2,
        "{}",
        found["rtx"].v
    );
    assert_eq!(found["ka"].v["retransmits"], 0);
    assert_eq!(found["rst"].v["retransmits"], 0);

    watch.stop(Signal::SIGTERM);
    drop(clients);
}

/// Connects to `ADDR` port 7403 with a 2 s `TCP_USER_TIMEOUT` and prints its local port; each
/// line read then sends 1000 bytes.
const CLIENT: &str = r#"
import os, socket, sys
print(os.getpid())
c = socket.socket()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2000)
c.connect((ADDR, 7403))
print(c.getsockname()[1])
for line in sys.stdin:
    c.send(b"x" * 1000)
    print("sent")
"#;

/// ICMP port unreachable on data in flight: the connection dies at its user timeout with the
/// ICMP error's `ECONNREFUSED` (docs/kernel.md, "How connections die"), reported as `refused`.
#[test]
fn python_client_refused_by_icmp_is_reported() {
    const TEST: &str = "python_client_refused_by_icmp_is_reported";
    let _serial = measuring();
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
        return;
    };
    let Some(watch) = Watch::start(TEST, &["--port", "7403"]) else {
        return;
    };
    let saddr = lab.server_addr();
    let server = SocketAddr::new(saddr, 7403);
    let script = SERVER
        .replace("ADDR", &format!("'{saddr}'"))
        .replace("PORT", "7403");
    let Some(mut py_server) = Python::start(TEST, lab.server(), &script) else {
        return;
    };
    assert_eq!(py_server.line(), "listening");
    let script = CLIENT.replace("ADDR", &format!("'{saddr}'"));
    let Some(mut py) = Python::start(TEST, lab.client(), &script) else {
        return;
    };
    let port: u16 = py.line().parse().unwrap();
    assert_eq!(py_server.ask("accept refused"), port.to_string());
    let comm = py.comm();
    let local = SocketAddr::new(lab.client_addr(), port);
    // Let the owners' index catch up with the new connection (see above).
    std::thread::sleep(Duration::from_millis(2500));

    lab.reject(Reject::PortUnreachable).unwrap();
    assert_eq!(py.ask("send"), "sent");
    let sent_at = mono();

    let ours = |l: &&Line| l.v["local_addr"] == local.to_string();
    let lines = watch.collect(Duration::from_secs(10), |got| got.iter().any(|l| ours(&l)));
    let all: Vec<&Value> = lines.iter().map(|l| &l.v).collect();
    let mine: Vec<&Line> = lines.iter().filter(ours).collect();
    let [l] = mine[..] else {
        panic!("not one death for {local} within 10 s: {all:#?}")
    };
    let v = &l.v;
    // Shown with --nocapture.
    println!("{v}");
    assert_eq!(v["cause"], "refused", "{v:#}");
    assert_eq!(v["ending"], "refused", "{v:#}");
    assert_eq!(v["errno"], 111, "{v:#}");
    assert_eq!(v["peer_addr"], server.to_string(), "{v:#}");
    assert_eq!(v["pid"], py.pid, "{v:#}");
    assert_eq!(v["process"], comm.as_str(), "{v:#}");
    assert_eq!(v["netns"], netns_inode(lab.client()), "{v:#}");
    assert_eq!(v["netns_name"], lab.client().name(), "{v:#}");
    assert_eq!(v["state_before"], "established", "{v:#}");
    assert!(v["open_for_ms"].as_f64().unwrap() >= 500.0, "{v:#}");
    assert!(v["retransmits"].as_u64().unwrap() >= 2, "{v:#}");
    let ts = v["kernel_ts"].as_f64().unwrap();
    let delay = (l.at - ts) * 1000.0;
    assert!(
        (0.0..DELAY_MS).contains(&delay),
        "read {delay:.2} ms after the kernel's decision: {v:#}"
    );
    assert!(v["delay_ms"].as_f64().unwrap() <= delay, "{v:#}");
    // At the user timeout (2 s), not at once: the ICMP errors are soft errors.
    let died = ts - sent_at;
    assert!(
        (1.9..3.5).contains(&died),
        "refused {died:.3} s after the send"
    );
    println!("refused {died:.3} s after the send, line read {delay:.2} ms after");

    watch.stop(Signal::SIGTERM);
    drop(py);
    drop(py_server);
}

/// Connections in the burst: the issue's 5000.
const BURST: usize = 5000;

#[test]
fn a_burst_of_resets_loses_none() {
    let _serial = measuring();
    let Some(lab) = lab_or_skip!() else { return };
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let need = (2 * BURST + 100) as u64;
    if hard < need {
        skip(
            "a_burst_of_resets_loses_none",
            &format!("RLIMIT_NOFILE hard limit {hard} < {need}: raise it (ulimit -Hn)"),
        );
        return;
    }
    if soft < need {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, need, hard)
            .unwrap();
    }
    let Some(watch) = Watch::start("a_burst_of_resets_loses_none", &["--port", "7401"]) else {
        return;
    };
    let server = SocketAddr::new(lab.server_addr(), 7401);
    let listener = lab.server().tcp_listener(server).unwrap();
    let mut clients = Vec::with_capacity(BURST);
    let mut accepted = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        clients.push(lab.client().tcp_connect(server).unwrap());
        accepted.push(listener.accept().unwrap().0);
    }
    for s in &accepted {
        socket2::SockRef::from(s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    // The owners' index is rebuilt after connections open, every 100 ms at most and, to use at
    // most a tenth of a CPU, no sooner than 9 times the last rebuild's duration: reading 10,000
    // descriptors and two 5000-row tables takes a debug build on a loaded machine up to a few
    // hundred ms, so the rebuilds space out to seconds. Deaths sooner after the opening are
    // reported without an owner (docs/cli.md).
    std::thread::sleep(Duration::from_millis(4000));
    let started = mono();
    drop(accepted); // 5000 RSTs
    let sent = mono() - started;
    // Other tests on the machine may use the port too: count ours, by the server's address.
    let ours = |l: &&Line| l.v["peer_addr"] == server.to_string();
    let lines = watch.collect(Duration::from_secs(20), |got| {
        got.iter().filter(ours).count() >= BURST
    });
    let lines: Vec<Line> = lines.into_iter().filter(|l| ours(&l)).collect();
    let mut locals: Vec<String> = lines
        .iter()
        .map(|l| l.v["local_addr"].as_str().unwrap().to_owned())
        .collect();
    locals.sort_unstable();
    locals.dedup();
    assert_eq!(locals.len(), BURST, "deaths reported of {BURST}");
    assert!(lines.iter().all(|l| l.v["cause"] == "reset"));
    // Owners are best effort (an index rebuilt at most a tenth of a CPU): how many of a burst
    // get one is a speed, measured by the bench (docs/benchmarks.md). What is asserted is that
    // no death is given a wrong owner.
    let owned = lines.iter().filter(|l| !l.v["pid"].is_null()).count();
    assert!(
        lines
            .iter()
            .filter(|l| !l.v["pid"].is_null())
            .all(|l| l.v["pid"] == std::process::id()),
        "a death of this test process was given another owner"
    );
    println!("owned: {owned} of {BURST}");
    let first = lines
        .iter()
        .map(|l| l.v["kernel_ts"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    let last = lines
        .iter()
        .map(|l| l.v["kernel_ts"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let max_delay = lines
        .iter()
        .map(|l| l.at - l.v["kernel_ts"].as_f64().unwrap())
        .fold(0.0, f64::max);
    println!(
        "burst: {BURST} resets sent in {:.1} ms, deaths over {:.1} ms, all {} reported; \
         largest delay {:.1} ms",
        sent * 1e3,
        (last - first) * 1e3,
        locals.len(),
        max_delay * 1e3
    );
    watch.stop(Signal::SIGINT);
    drop(clients);
}

/// The IPv6 path (the `saddr_v6` fields, `/proc/net/tcp6`), from a namespace no process is in:
/// both sockets are held by this test process, created inside the lab's namespaces.
#[test]
fn ipv6_reset_is_reported_with_owner_and_namespace() {
    let _serial = measuring();
    let Some(lab) = lab_or_skip!() else { return };
    let Some(watch) = Watch::start(
        "ipv6_reset_is_reported_with_owner_and_namespace",
        &["--port", "7402"],
    ) else {
        return;
    };
    let server = SocketAddr::new(lab.server_addr_for(deadpeer_testkit::Family::V6), 7402);
    let listener = lab.server().tcp_listener(server).unwrap();
    let client = lab.client().tcp_connect(server).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    // Let the owners' index catch up with the new connection (see above).
    std::thread::sleep(Duration::from_millis(2500));
    lab.reset(accepted).unwrap();
    let lines = watch.collect(Duration::from_secs(5), |got| !got.is_empty());
    let v = &lines.first().expect("the reset is reported").v;
    println!("{v}");
    assert_eq!(v["cause"], "reset", "{v:#}");
    assert_eq!(
        v["local_addr"],
        client.local_addr().unwrap().to_string(),
        "{v:#}"
    );
    assert_eq!(v["peer_addr"], server.to_string(), "{v:#}");
    assert_eq!(v["pid"], std::process::id(), "{v:#}");
    assert_eq!(v["netns"], netns_inode(lab.client()), "{v:#}");
    assert_eq!(v["netns_name"], lab.client().name(), "{v:#}");
    let delay = (lines[0].at - v["kernel_ts"].as_f64().unwrap()) * 1000.0;
    assert!(
        (0.0..DELAY_MS).contains(&delay),
        "read {delay:.2} ms after: {v:#}"
    );
    assert_eq!(
        lines.len(),
        1,
        "only the client's death: {lines:#?}",
        lines = lines.iter().map(|l| &l.v).collect::<Vec<_>>()
    );
    watch.stop(Signal::SIGTERM);
}

#[test]
fn without_root_it_says_what_is_missing() {
    let Some(lab) = lab_or_skip!() else { return };
    let bin = match TempBin::new("watch") {
        Ok(b) => b,
        Err(e) => panic!("copy the binary: {e}"),
    };
    let o = bin.run_as_nobody(lab.client(), &["watch"]);
    if o.status.code() == Some(127) || String::from_utf8_lossy(&o.stderr).contains("setpriv:") {
        skip(
            "without_root_it_says_what_is_missing",
            "setpriv cannot run: install util-linux",
        );
        return;
    }
    let line = one_line_error(&o, 1);
    assert!(line.contains("deadpeer watch needs root"), "{line}");
    assert!(line.contains(TRACEFS), "{line}");
}
