//! How long `deadpeer audit` takes over 10,000 connections.
//!
//! A lab (testkit namespaces, so nothing touches the host's network): this process opens
//! `AUDIT_CONNS` (10,000) TCP connections from the lab's client namespace to a server process
//! in the server namespace, which accepts and holds them. Each process holds one end, so each
//! needs about 10,000 descriptors, under the 20,000 RLIMIT_NOFILE hard limit (the soft limit is
//! raised to the hard one). Every other connection has SO_KEEPALIVE on.
//!
//! Then, interleaved, `AUDIT_RUNS` (21) times each, it times whole runs of the binary in the
//! client namespace, spawn to exit with stdout read: `audit --json`, `audit` (text),
//! `audit --pid 1` (the dump, the /proc scan for owners and the verdicts, nothing to print),
//! `audit --port 1` (the dump alone: no socket matches, so there is no owner to look up), and
//! `ss -tnoi` and `ss -tnoip` (with owners, from the same /proc scan) as references for what the
//! kernel and iproute2 take for the same table.
//!
//! Run: `sudo -E cargo bench -p deadpeer-cli --bench audit`. Without root it prints one
//! `skipped audit bench: …` line and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deadpeer_testkit::Lab;

const BIN: &str = env!("CARGO_BIN_EXE_deadpeer");
const PORT: u16 = 7100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The server process: accepts `n` connections on `addr`, holds them until stdin closes.
fn server(addr: SocketAddr, n: usize) {
    raise_nofile();
    // A deep backlog, so that no SYN is dropped while the accept loop catches up.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).expect("bind");
    socket.listen(4096).expect("listen");
    let listener = TcpListener::from(socket);
    let mut out = std::io::stdout();
    writeln!(out, "listening").unwrap();
    out.flush().unwrap();
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        held.push(listener.accept().expect("accept").0);
    }
    writeln!(out, "accepted {}", held.len()).unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[derive(Debug)]
struct Stats {
    name: &'static str,
    ms: Vec<f64>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i]
    }
}

fn main() {
    if let Ok(addr) = std::env::var("AUDIT_BENCH_SERVER") {
        let n = env_usize("AUDIT_CONNS", 10_000);
        return server(addr.parse().expect("AUDIT_BENCH_SERVER=ADDR"), n);
    }
    let lab = match Lab::new() {
        Ok(lab) => lab,
        Err(e) => {
            println!("skipped audit bench: {e}");
            return;
        }
    };
    raise_nofile();
    let n = env_usize("AUDIT_CONNS", 10_000);
    let runs = env_usize("AUDIT_RUNS", 21);
    let addr = SocketAddr::new(lab.server_addr(), PORT);

    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.server().name()])
        .arg(std::env::current_exe().unwrap())
        .env("AUDIT_BENCH_SERVER", addr.to_string())
        .env("AUDIT_CONNS", n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");

    let setup = Instant::now();
    let mut clients = Vec::with_capacity(n);
    {
        let _inside = lab.client().enter().expect("enter the client namespace");
        for i in 0..n {
            let s = TcpStream::connect(addr).expect("connect");
            if i % 2 == 0 {
                socket2::SockRef::from(&s).set_keepalive(true).unwrap();
            }
            clients.push(s);
        }
    }
    let accepted = lines.next().unwrap().unwrap();
    println!(
        "{n} connections open ({accepted} by the server process) in {:.2}s",
        setup.elapsed().as_secs_f64()
    );

    let variants: [(&'static str, &str, &[&str]); 6] = [
        ("deadpeer audit --json", BIN, &["audit", "--json"]),
        ("deadpeer audit", BIN, &["audit"]),
        ("deadpeer audit --pid 1", BIN, &["audit", "--pid", "1"]),
        ("deadpeer audit --port 1", BIN, &["audit", "--port", "1"]),
        ("ss -tnoi", "ss", &["-tnoi"]),
        ("ss -tnoip", "ss", &["-tnoip"]),
    ];
    let mut stats: Vec<Stats> = variants
        .iter()
        .map(|(name, ..)| Stats {
            name,
            ms: Vec::new(),
        })
        .collect();
    let _inside = lab.client().enter().expect("enter the client namespace");
    // A child forked from this thread starts in its network namespace.
    let time = |program: &str, args: &[&str]| -> (Duration, Vec<u8>) {
        let start = Instant::now();
        let out = Command::new(program).args(args).output().expect("run");
        let took = start.elapsed();
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
        (took, out.stdout)
    };
    // Check once that every connection is audited.
    let (_, json) = time(BIN, &["audit", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let audited = v["summary"]["connections"].as_u64().unwrap();
    assert_eq!(audited, n as u64, "{}", v["summary"]);
    println!(
        "audited {audited} connections: {} protected, {} unprotected ({} bytes of JSON)",
        v["summary"]["verdicts"]["protected"],
        v["summary"]["verdicts"]["unprotected"],
        json.len()
    );
    for _ in 0..2 {
        for (_, program, args) in &variants {
            time(program, args);
        }
    }
    for round in 0..runs {
        for k in 0..variants.len() {
            let (_, program, args) = variants[(k + round) % variants.len()];
            let (took, _) = time(program, args);
            stats[(k + round) % variants.len()]
                .ms
                .push(took.as_secs_f64() * 1000.0);
        }
    }
    println!("{runs} runs each, interleaved, ms (spawn to exit, stdout read):");
    println!("| command | median | p25 | p75 | min | max |");
    println!("|---|---|---|---|---|---|");
    for s in &stats {
        println!(
            "| `{}` | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.name,
            s.pct(0.5),
            s.pct(0.25),
            s.pct(0.75),
            s.pct(0.0),
            s.pct(1.0)
        );
    }
    drop(clients);
    drop(child.stdin.take());
    let _ = child.wait();
}
